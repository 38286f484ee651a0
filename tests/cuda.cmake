# The CUDA backend against the CPU reference (label cuda). Built whenever the CUDA
# target is (CI builds it with nvcc and no GPU): with no GPU each test exits 77, which
# CTest reports as skipped, never as passed. tests/gpu/run.sh runs them on a GPU.
if(TARGET qt_cuda)
  qt_test(test_cuda_ops LABEL cuda SOURCES gpu/test_cuda_ops.c LIBS qt_cuda qt_autograd)
  qt_test(test_cuda_model LABEL cuda SOURCES gpu/test_cuda_model.c
          LIBS qt_optim qt_layers qt_cuda qt_autograd)
  set_tests_properties(test_cuda_ops test_cuda_model PROPERTIES SKIP_RETURN_CODE 77)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_cuda_quant.c)
    qt_test(test_cuda_quant LABEL cuda SOURCES gpu/test_cuda_quant.c
            LIBS qt_qat qt_ptq qt_cuda qt_autograd)
    set_tests_properties(test_cuda_quant PROPERTIES SKIP_RETURN_CODE 77)
  endif()
endif()
