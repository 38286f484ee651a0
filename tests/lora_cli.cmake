# ctest -L lora: LoRA / QLoRA through the command line (recipe keys, training, PEFT files)
add_test(NAME test_lora_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_lora_cli.sh $<TARGET_FILE:qtrain>)
set_tests_properties(test_lora_cli PROPERTIES LABELS lora TIMEOUT 600)
