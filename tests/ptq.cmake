# ptq: post-training quantization (ptq/qt_ptq.h): GPTQ against a PyTorch implementation
# of the published algorithm (fixtures/gen_ptq_fixtures.py), GPTQ/AWQ/RTN on a small
# model, calibration; the CLI (qtrain quantize / export / compare) in test_ptq_cli.sh.
qt_test(test_ptq LABEL ptq SOURCES test_ptq.c LIBS qt_ptq qt_layers qt_formats qt_autograd)
target_include_directories(test_ptq PRIVATE ${QT_CBLAS_INCLUDE})
target_link_libraries(test_ptq PRIVATE ${QT_OPENBLAS_LIB})
add_test(NAME test_ptq_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_ptq_cli.sh $<TARGET_FILE:qtrain>)
set_tests_properties(test_ptq_cli PROPERTIES LABELS ptq TIMEOUT 900)
# ptq: the importance matrix (ptq/imatrix.c) against llama.cpp's own llama-imatrix and
# llama-quantize, built from llama-cpp-python's sources by scripts/build_llama_tools.sh
# (minutes the first time, then reused): imatrix_tool computes qtrain's imatrix of a random
# byte-level model on the same chunks, converts and quantizes with it;
# test_imatrix_llamacpp.py compares. Fails (never skips) without Python, gguf, llama_cpp
# or the tools.
add_executable(imatrix_tool imatrix_tool.c)
target_compile_options(imatrix_tool PRIVATE ${QT_WARN})
target_link_libraries(imatrix_tool PRIVATE qt_export qt_ptq qt_data qt_layers qt_formats
                      qt_autograd)
find_package(Python3 COMPONENTS Interpreter)
set(QT_IMATRIX_PY python3)
if(Python3_Interpreter_FOUND)
  set(QT_IMATRIX_PY ${Python3_EXECUTABLE})
endif()
add_test(NAME test_imatrix_llamacpp
         COMMAND ${QT_IMATRIX_PY} ${CMAKE_CURRENT_SOURCE_DIR}/test_imatrix_llamacpp.py
                 $<TARGET_FILE:imatrix_tool> ${CMAKE_SOURCE_DIR}/scripts/build_llama_tools.sh)
set_tests_properties(test_imatrix_llamacpp PROPERTIES LABELS ptq TIMEOUT 3600)
# ptq: the importance matrix on its own: collect (against a double recomputation of the
# first block's input), GGUF and legacy files incl. malformed ones, RTN with an imatrix,
# llama.cpp's type fallbacks.
qt_test(test_imatrix LABEL ptq SOURCES test_imatrix.c LIBS qt_ptq qt_layers qt_formats qt_autograd)
