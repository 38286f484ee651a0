# ctest -L lora: a LoRA / QLoRA checkpoint as a model (eval, export with the adapter merged,
# export --merge ADAPTER_DIR of a base), the losses equal to the training run's
add_test(NAME test_lora_export COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_lora_export.sh $<TARGET_FILE:qtrain>)
set_tests_properties(test_lora_export PROPERTIES LABELS lora TIMEOUT 600)
