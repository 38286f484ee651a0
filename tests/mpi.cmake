# ctest -L mpi: data parallel training under mpirun (dist/dist.c), with Open MPI from
# Debian; registered whenever the build has MPI (.ci/run sets QT_MPI=ON, so CI has it)
if(QT_MPI_ENABLED)
  find_package(HDF5 REQUIRED COMPONENTS C)
  add_executable(ckpt_diff ckpt_diff.c)
  target_compile_options(ckpt_diff PRIVATE ${QT_WARN})
  target_include_directories(ckpt_diff PRIVATE ${HDF5_C_INCLUDE_DIRS})
  target_link_libraries(ckpt_diff PRIVATE ${HDF5_C_LIBRARIES} m)
  add_test(NAME test_dist COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_dist.sh
           $<TARGET_FILE:qtrain> $<TARGET_FILE:ckpt_diff>)
  set_tests_properties(test_dist PROPERTIES LABELS mpi TIMEOUT 900)
endif()
