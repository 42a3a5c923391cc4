# Integration tests of the client library and the txmq tool against the real broker.
# Included from tests/integration/CMakeLists.txt, after tests/support is available.

foreach(test produce_consume_test client_threads_test producer_backpressure_test async_transactions_test
             crash_durability_test shutdown_test cli_test host_names_test)
  txmq_add_test(${test} SOURCES ${test}.cpp LIBS txmq_client txmq_test_support
                LABEL integration TIMEOUT 120)
  # The broker must be built before the test can run it.
  add_dependencies(${test} txmq-broker)
endforeach()

# cli_test also runs the txmq tool. ENVIRONMENT replaces what txmq_add_test set, so the
# broker's path is repeated here.
add_dependencies(cli_test txmq)
set_tests_properties(cli_test PROPERTIES ENVIRONMENT
  "TXMQ_BROKER_BIN=$<TARGET_FILE:txmq-broker>;TXMQ_CLI_BIN=$<TARGET_FILE:txmq>;TXMQ_SOURCE_DIR=${PROJECT_SOURCE_DIR}")

# TLS on the protocol port: the client library and raw TLS peers against the real broker.
txmq_add_test(tls_test SOURCES tls_test.cpp LIBS txmq_client txmq_test_support LABEL integration TIMEOUT 180)
add_dependencies(tls_test txmq-broker)
# The same port seen by Python's ssl module (an independent client) and by the txmq tool.
txmq_add_python_test(tls_cli_test integration/tls_cli_test.py)
# txmq-notifier to a TLS broker: delivers; the wrong CA or plain text fails at start.
txmq_add_python_test(notifier_tls_test integration/notifier_tls_test.py)
# Authentication (SCRAM-SHA-256, client certificates, anonymous), SIGHUP reloads and the
# audit trail, through the client library and raw peers against the real broker.
txmq_add_test(auth_test SOURCES auth_test.cpp LIBS txmq_client txmq_test_support LABEL integration TIMEOUT 180)
add_dependencies(auth_test txmq-broker)
# Authorization (acl_test.cpp; unit/acl_test is the ACL file itself): each request refused
# without its permission and served with it, through the client library and the txmq tool,
# against a broker with authentication on.
txmq_add_test(acl_enforcement_test SOURCES acl_test.cpp LIBS txmq_client txmq_test_support LABEL integration TIMEOUT 300)
add_dependencies(acl_enforcement_test txmq-broker txmq)
set_tests_properties(acl_enforcement_test PROPERTIES ENVIRONMENT
  "TXMQ_BROKER_BIN=$<TARGET_FILE:txmq-broker>;TXMQ_CLI_BIN=$<TARGET_FILE:txmq>;TXMQ_SOURCE_DIR=${PROJECT_SOURCE_DIR}")

# The client follows the leader: a list of brokers, NotLeader redirects (a fake follower in
# front of the real broker), and `txmq cluster` against the follower.
txmq_add_test(follow_leader_test SOURCES follow_leader_test.cpp LIBS txmq_client txmq_test_support
              LABEL integration TIMEOUT 180)
add_dependencies(follow_leader_test txmq-broker txmq)
set_tests_properties(follow_leader_test PROPERTIES ENVIRONMENT
  "TXMQ_BROKER_BIN=$<TARGET_FILE:txmq-broker>;TXMQ_CLI_BIN=$<TARGET_FILE:txmq>;TXMQ_SOURCE_DIR=${PROJECT_SOURCE_DIR}")

# The same against a real leader and follower (two brokers, sync mode), and `txmq cluster`
# on both.
txmq_add_test(cluster_client_test SOURCES cluster_client_test.cpp LIBS txmq_client txmq_test_support
              LABEL integration TIMEOUT 240)
add_dependencies(cluster_client_test txmq-broker txmq)
set_tests_properties(cluster_client_test PROPERTIES ENVIRONMENT
  "TXMQ_BROKER_BIN=$<TARGET_FILE:txmq-broker>;TXMQ_CLI_BIN=$<TARGET_FILE:txmq>;TXMQ_SOURCE_DIR=${PROJECT_SOURCE_DIR}")

# The client connection hosted on its caller's loop (the replication fetcher's): answers on
# that loop's thread, dispose() from inside a callback and mid-connect, nothing left open.
txmq_add_test(hosted_connection_test SOURCES hosted_connection_test.cpp LIBS txmq_client txmq_test_support
              LABEL integration TIMEOUT 120)
add_dependencies(hosted_connection_test txmq-broker)

# Heartbeats both ways: what the hello agrees, the broker's close of a silent peer, and the
# client library dropping a stopped (SIGSTOP) broker long before its request deadline.
txmq_add_test(heartbeat_test SOURCES heartbeat_test.cpp LIBS txmq_client txmq_test_support
              LABEL integration TIMEOUT 120)
add_dependencies(heartbeat_test txmq-broker)
