# formats: safetensors reader/writer (round trip, a file from the Python package,
# malformed, truncated and mutated inputs).
qt_test(test_safetensors LABEL formats SOURCES test_safetensors.c LIBS qt_formats)
