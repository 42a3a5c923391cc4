#pragma once
// Real frames for the fuzz targets: every request of schema/txmq.fbs and every answer and
// push, built with the generated FlatBuffers code exactly as the client and the broker
// build them. The corpus generator writes them as seeds; the dispatcher harness sends its
// Hello and its sentinel GetStats with them.

#include <cstdint>
#include <string>
#include <vector>

namespace txmq::fuzz {

using Bytes = std::vector<std::uint8_t>;

// A whole size-prefixed frame: the 4-byte length, then the wire::Frame.
Bytes hello_frame(std::uint64_t rid, const std::string& producer_group = "fuzz-producers");
Bytes get_stats_frame(std::uint64_t rid);
Bytes create_topic_frame(std::uint64_t rid, const std::string& topic, std::uint64_t retention_bytes);
// One empty message to `topic`.
Bytes produce_frame(std::uint64_t rid, const std::string& topic);

// A named frame of the seed set.
struct NamedFrame {
  std::string name;  // "produce-keys-headers", "end-transactions", ...
  Bytes frame;
};

// One frame of every request type, several for the requests with optional parts (keys,
// headers, delays, retry policies), all on topic "fuzz-t" and group "fuzz-g" so that a
// sequence of them (create, produce, subscribe, settle...) does real work. Request ids
// count from first_rid.
std::vector<NamedFrame> request_frames(std::uint64_t first_rid = 2);

// One frame of every answer and push type (HelloOk, ProduceOk, Delivery, CheckTransaction,
// ...): what a client decodes.
std::vector<NamedFrame> answer_frames();

}  // namespace txmq::fuzz
