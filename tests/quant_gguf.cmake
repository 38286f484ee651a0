# quant: the ggml block quantizers (ptq/quant_gguf.c) byte for byte against llama.cpp's
# llama_model_quantize (K-quants) and gguf-py (Q4_0..Q8_0); fixture from
# fixtures/gen_gguf_quant_fixtures.py.
qt_test(test_quant_gguf LABEL quant SOURCES test_quant_gguf.c LIBS qt_ptq qt_formats qt_autograd)
