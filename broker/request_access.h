#pragma once
// What each request needs of its connection's Access (broker/acl.h): the README's
// "Permissions" table in code, in one place. The request layer asks authorize() once per
// request, before the handler runs, and only when the connection is restricted (with
// authentication off that is one branch per request and nothing per message); a refusal
// is the answer (kNotAuthorized naming user, operation and resource) and nothing of the
// request is applied.
//
// Requests whose permission depends on a component's state are checked there, and only
// there:
//   EndTransactions    transact (resolve when sent as an operator) on each transaction's
//                      producer group, read from the coordinator's records
//                      (TransactionCoordinator::end)
//   ListTransactions   only transactions of producer groups the user may describe; one
//                      asked for by id that it may not: kNotAuthorized
//                      (TransactionCoordinator::list)
//   ListTopics         only topics the user may describe (TopicLog::list)
//   DescribeGroups     only groups the user may describe (ConsumerGroups::describe); one
//                      named group it may not: kNotAuthorized (here)
//   Produce            to an absent topic that topics.auto_create would create: create on it
//                      as well (TopicLog::produce)
//   Hello              naming a producer group: transact on it (Broker::finish_hello)
// Loop thread: an Access belongs to its connection.

#include <string_view>

#include "broker/acl.h"
#include "common/result.h"
#include "txmq_generated.h"

namespace txmq::broker {

// Whether access may make the request in frame (a verified frame with a body, after the
// hello); hello_producer_group is the one its hello named (a Prepare without its own
// names it). kNotAuthorized. Loop thread.
Status authorize(Access& access, std::string_view hello_producer_group, const wire::Frame& frame);

}  // namespace txmq::broker
