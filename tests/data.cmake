# data: the byte-level BPE tokenizer against HF tokenizers' ids (GPT-2, Llama-3, SmolLM,
# Qwen2 layouts, from tokenizer.json and from GGUF metadata; fixtures from
# tests/fixtures/gen_tokenizer_fixtures.py), and bad tokenizer.json / GGUF files.
qt_test(test_tokenizer LABEL data SOURCES test_tokenizer.c LIBS qt_data qt_formats qt_autograd)
qt_test(test_dataset LABEL data SOURCES test_dataset.c LIBS qt_data qt_formats qt_autograd)
