qt_test(test_qat LABEL qat SOURCES test_qat.c LIBS qt_qat qt_ptq qt_layers qt_formats qt_autograd)
add_test(NAME test_qat_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_qat_cli.sh $<TARGET_FILE:qtrain>)
set_tests_properties(test_qat_cli PROPERTIES LABELS qat TIMEOUT 600)
# glibc without its per-thread cache hands a freed context's memory to the next one at
# the same address: the case the activation memo must not be fooled by (test_act_memo)
set_tests_properties(test_qat PROPERTIES ENVIRONMENT "GLIBC_TUNABLES=glibc.malloc.tcache_count=0")
