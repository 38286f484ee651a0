# quant: the ggml block quantizers (ptq/quant_gguf.c) byte for byte against llama.cpp's
# llama_model_quantize (K-quants) and gguf-py (Q4_0..Q8_0); fixture from
# fixtures/gen_gguf_quant_fixtures.py.
qt_test(test_quant_gguf LABEL quant SOURCES test_quant_gguf.c LIBS qt_ptq qt_formats qt_autograd)
# quant: the same quantizers, with and without an importance matrix, against llama.cpp's
# ggml_quantize_chunk (libggml-base.so of PyPI llama-cpp-python, through ctypes) on many
# row lengths and adversarial rows; dequantization against ggml and gguf-py. Registered
# whether or not Python is found: a missing interpreter or package fails it.
add_executable(ggml_quant_tool ggml_quant_tool.c)
target_compile_options(ggml_quant_tool PRIVATE ${QT_WARN})
target_link_libraries(ggml_quant_tool PRIVATE qt_ptq qt_formats qt_autograd)
find_package(Python3 COMPONENTS Interpreter)
set(QT_QUANT_PY python3)
if(Python3_Interpreter_FOUND)
  set(QT_QUANT_PY ${Python3_EXECUTABLE})
endif()
add_test(NAME test_quant_gguf_interop
         COMMAND ${QT_QUANT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/test_quant_gguf_interop.py
                 $<TARGET_FILE:ggml_quant_tool>)
set_tests_properties(test_quant_gguf_interop PROPERTIES LABELS quant TIMEOUT 600)
