# gguf model: Llama / Qwen2 models loaded from GGUF (layers/gguf_load.c) against the HF
# loader and transformers (fixtures from tests/fixtures/gen_gguf_model_fixture.py).
qt_test(test_gguf_model LABEL model SOURCES test_gguf_model.c LIBS qt_layers qt_formats qt_autograd)

# Real-model checks (not in CI; they need files downloaded by tests/real/*.sh).
option(QT_REAL_MODEL_TESTS "Build the programs in tests/real/ that check downloaded models" OFF)
if(QT_REAL_MODEL_TESTS OR "$ENV{QT_REAL_MODEL_TESTS}")
  add_executable(smollm2_logits real/smollm2_logits.c)
  target_compile_options(smollm2_logits PRIVATE ${QT_WARN})
  target_link_libraries(smollm2_logits PRIVATE qt_layers qt_formats qt_autograd)
endif()
