# formats: GGUF reader and ggml block dequantizers (a file from gguf-py, values against
# gguf-py's dequantize bit for bit, malformed, truncated and mutated inputs).
qt_test(test_gguf LABEL formats SOURCES test_gguf.c LIBS qt_formats)
