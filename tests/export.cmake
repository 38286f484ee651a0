# export: the safetensors exporters (GPTQ, AWQ, bitsandbytes NF4, FP8 compressed-tensors)
# and qt_export_load. test_export round-trips them through qtrain's loader;
# test_export_reader reads what test_export writes with independent code (numpy,
# torch, bitsandbytes) from the published layouts, and loads the bitsandbytes exports
# with transformers. Python packages it needs:
# numpy, torch, bitsandbytes, transformers.
qt_test(test_export LABEL export SOURCES test_export.c
        LIBS qt_export qt_ptq qt_layers qt_formats qt_autograd)
target_include_directories(test_export PRIVATE ${QT_CJSON_INCLUDE})
# Registered whether or not Python is found: a missing interpreter or package fails the
# test rather than skipping it.
find_package(Python3 COMPONENTS Interpreter)
set(QT_EXPORT_PY python3)
if(Python3_Interpreter_FOUND)
  set(QT_EXPORT_PY ${Python3_EXECUTABLE})
endif()
add_test(NAME test_export_reader
         COMMAND ${QT_EXPORT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/export_reader.py
                 $<TARGET_FILE:test_export>)
set_tests_properties(test_export_reader PROPERTIES LABELS export TIMEOUT 600)
