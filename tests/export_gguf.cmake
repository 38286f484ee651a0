# GGUF export (export/export_gguf.c): round trip through qtrain's GGUF loader, then the same
# files read by gguf-py (PyPI gguf), then llama.cpp itself (PyPI llama-cpp-python) against
# `qtrain eval` perplexity.
qt_test(test_export_gguf LABEL export SOURCES test_export_gguf.c LIBS qt_export qt_ptq qt_data qt_layers qt_formats qt_autograd)

# The same files through gguf-py: test_export_gguf keeps them (QT_EXPORT_GGUF_DIR) with the
# expected dequantized values beside them, test_export_gguf.py compares.
add_test(NAME test_export_gguf_py
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_export_gguf_py.sh
                 $<TARGET_FILE:test_export_gguf> ${CMAKE_CURRENT_SOURCE_DIR}/test_export_gguf.py)
set_tests_properties(test_export_gguf_py PROPERTIES LABELS export TIMEOUT 600)

# llama.cpp interop: a tiny byte-level model trained and exported by gguf_export_tool in
# F32 / Q8_0 / Q4_0 / Q4_K, run by llama.cpp (llamacpp_ppl.py) and by `qtrain eval`.
if(TARGET qtrain AND TARGET qt_train)
  add_executable(gguf_export_tool gguf_export_tool.c)
  target_compile_options(gguf_export_tool PRIVATE ${QT_WARN})
  target_link_libraries(gguf_export_tool PRIVATE qt_train qt_optim qt_export qt_ptq qt_data
                        qt_layers qt_formats qt_autograd)
  add_test(NAME test_export_llamacpp
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_export_llamacpp.sh
                   $<TARGET_FILE:gguf_export_tool> $<TARGET_FILE:qtrain>
                   ${CMAKE_CURRENT_SOURCE_DIR}/llamacpp_ppl.py)
  set_tests_properties(test_export_llamacpp PROPERTIES LABELS export TIMEOUT 1200)
endif()
