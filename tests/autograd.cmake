# ctest -L autograd: the engine's own tests (the oracle tests are in autograd_oracle.cmake)
qt_test(test_optable LABEL autograd SOURCES test_optable.c LIBS qt_autograd)
qt_test(test_gradcheck LABEL autograd SOURCES test_gradcheck.c LIBS qt_autograd)
# AdamW from libqt_optim: the engine's users train without the training loop
qt_test(test_engine LABEL autograd SOURCES test_engine.c LIBS qt_autograd qt_optim qt_layers)
