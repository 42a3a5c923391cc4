#pragma once
// The rules for the names clients choose (topics, consumer groups, producer groups), and
// for the names only the broker writes: dead-letter topics and txmq-* headers, which
// redrive and the tools trust, so a client that could write them could forge history.

#include <string_view>

#include "common/names.h"
#include "common/result.h"
#include "txmq_generated.h"

namespace txmq::broker {

// The rule lives in common/names.h, shared with the users file's user names.
using common::kNameRule;
using common::valid_name;

// Whether a client may write these messages to this topic (a Produce, plain or idempotent,
// or a transaction's Prepare): not to a dead-letter topic, and no message with a txmq-*
// header. kForbidden naming the topic or the header and why. Any thread.
Status check_client_write(std::string_view topic,
                          const flatbuffers::Vector<flatbuffers::Offset<wire::Message>>* messages);
// Whether a client may create this topic by hand: not a dead-letter topic, which the broker
// creates on the group's first dead letter. kForbidden. Any thread.
Status check_client_create(std::string_view topic);

}  // namespace txmq::broker
