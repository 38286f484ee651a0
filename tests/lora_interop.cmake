# LoRA adapters in PEFT's layout (lora/peft.c): adapters PEFT saved load onto a tiny Llama
# with PEFT's logits, qtrain's saves reload bit-identically, bad files fail by name
# (fixtures: tests/fixtures/gen_lora_peft.py). The reverse direction, PEFT loading what
# qtrain saved, is tests/lora_peft_reverse.py, run by hand (needs torch and peft).
if(TARGET qt_lora)
  qt_test(test_lora_peft LABEL interop SOURCES test_lora_peft.c
          LIBS qt_lora qt_layers qt_formats qt_autograd)
  target_include_directories(test_lora_peft PRIVATE ${QT_CJSON_INCLUDE})
  target_link_libraries(test_lora_peft PRIVATE ${QT_CJSON_LIB} m)
  set_tests_properties(test_lora_peft PROPERTIES LABELS "interop;lora")
endif()
