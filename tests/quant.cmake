# quant: the quantizer core (ptq/): INT, NF4/FP4 and FP8 against bitsandbytes / torch
# fixtures, and fake_quant == dequantize(quantize) for every format incl. GGUF.
qt_test(test_quant LABEL quant SOURCES test_quant.c LIBS qt_ptq qt_formats qt_autograd)
