# The autograd engine against PyTorch: per-op fixtures and two short training runs
# (fixtures and their generator in tests/fixtures/gen_autograd_fixtures.py).
qt_test(test_ops_oracle LABEL autograd SOURCES test_ops_oracle.c LIBS qt_autograd qt_formats)
qt_test(test_train_equiv LABEL autograd SOURCES test_train_equiv.c
        LIBS qt_optim qt_layers qt_autograd qt_formats)
