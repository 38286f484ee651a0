# ptq: post-training quantization (ptq/qt_ptq.h): GPTQ against a PyTorch implementation
# of the published algorithm (fixtures/gen_ptq_fixtures.py), GPTQ/AWQ/RTN on a small
# model, calibration; the CLI (qtrain quantize / export / compare) in test_ptq_cli.sh.
qt_test(test_ptq LABEL ptq SOURCES test_ptq.c LIBS qt_ptq qt_layers qt_formats qt_autograd)
target_include_directories(test_ptq PRIVATE ${QT_CBLAS_INCLUDE})
target_link_libraries(test_ptq PRIVATE ${QT_OPENBLAS_LIB})
add_test(NAME test_ptq_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_ptq_cli.sh $<TARGET_FILE:qtrain>)
set_tests_properties(test_ptq_cli PROPERTIES LABELS ptq TIMEOUT 900)
