# model: Llama / Qwen2 / GPT-2 layers and Hugging Face checkpoints against transformers
# (fixtures and their generator in tests/fixtures/gen_model_fixtures.py).
qt_test(test_model LABEL model SOURCES test_model.c LIBS qt_layers qt_formats qt_autograd)
