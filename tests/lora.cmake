# LoRA / QLoRA (label lora).
if(TARGET qt_lora)
  qt_test(test_lora LABEL lora SOURCES test_lora.c LIBS qt_lora qt_optim qt_ptq qt_layers qt_autograd)
  target_include_directories(test_lora PRIVATE ${PROJECT_SOURCE_DIR}/lora)
endif()
