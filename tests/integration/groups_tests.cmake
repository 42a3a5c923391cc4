# Integration tests of consumer groups: leases, verbs, retry schedules, dead letters,
# redrive, delayed delivery and retention, against the real broker (and the txmq tool).
# Included from tests/integration/CMakeLists.txt, after tests/support is available.

foreach(test consumer_groups_test dead_letter_test delayed_retention_test owned_topics_test)
  txmq_add_test(${test} SOURCES ${test}.cpp LIBS txmq_client txmq_test_support
                LABEL integration TIMEOUT 180)
  # The broker must be built before the test can run it.
  add_dependencies(${test} txmq-broker)
endforeach()
# One retention test reads the stopped broker's store to check a group's durable cursor.
target_link_libraries(delayed_retention_test PRIVATE txmq_broker)
# Owned topics: one test writes an unmarked dead letter straight into a stopped broker's
# store (as an older broker left it), and some run the txmq tool.
target_link_libraries(owned_topics_test PRIVATE txmq_broker)
add_dependencies(owned_topics_test txmq)

# The tool's must-show session: nack until dead-lettered, list, dry-run and real redrive.
txmq_add_python_test(group_cli_test integration/group_cli_test.py)
