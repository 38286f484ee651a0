# ctest -L train: recipes, schedule, the loop, checkpoints and exact resume
qt_test(test_train LABEL train SOURCES test_train.c LIBS qt_train)
# the CLI's exit codes on bad input (a shell script driving build/qtrain)
add_test(NAME test_cli COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli.sh $<TARGET_FILE:qtrain>)
set_tests_properties(test_cli PROPERTIES LABELS train TIMEOUT 300)
