# shapeproxy_add_node_test(<name> RUN <script> TIMEOUT <seconds> [DEPENDS <test>...])
# One ctest test running a Node test suite's run.sh (which starts with
# scripts/node-test-prelude.sh) with the proxy and the PostgreSQL launcher in
# its environment. Without node on PATH the test is not added, and a message
# says so.
function(shapeproxy_add_node_test name)
  cmake_parse_arguments(ARG "" "RUN;TIMEOUT" "DEPENDS" ${ARGN})
  find_program(NODE_EXECUTABLE node)
  if(NOT NODE_EXECUTABLE)
    message(STATUS "node not found: the ${name} ctest test is not added")
    return()
  endif()
  add_test(NAME ${name} COMMAND ${ARG_RUN})
  set_tests_properties(${name} PROPERTIES
    TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "SHAPEPROXY_BIN=$<TARGET_FILE:shapeproxy>;SHAPEPROXY_TEST_CLUSTER=$<TARGET_FILE:shapeproxy_test_cluster>")
  if(ARG_DEPENDS)
    set_tests_properties(${name} PROPERTIES DEPENDS "${ARG_DEPENDS}")
  endif()
endfunction()
