# Integration tests of transactions (half messages, check-back, parking, operator
# resolution) and of the idempotent producer, against the real broker and the txmq tool.
# Included from tests/integration/CMakeLists.txt, after tests/support is available.

# A transactional producer in a process of its own, so that a test can SIGKILL it after
# prepare and answer the check-back from a second process of the same group.
add_executable(txn_producer_tool ${CMAKE_CURRENT_LIST_DIR}/txn_producer_tool.cpp)
target_link_libraries(txn_producer_tool PRIVATE txmq_client)

txmq_add_test(transactions_test SOURCES transactions_test.cpp LIBS txmq_client txmq_test_support
              LABEL integration TIMEOUT 240)
# The test runs the broker, the txmq tool and the producer tool.
add_dependencies(transactions_test txmq-broker txmq txn_producer_tool)
# ENVIRONMENT replaces what txmq_add_test set, so the common variables are repeated.
set_tests_properties(transactions_test PROPERTIES
  ENVIRONMENT "${TXMQ_TEST_ENV};TXMQ_TXN_TOOL=$<TARGET_FILE:txn_producer_tool>")
