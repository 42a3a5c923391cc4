#pragma once
// Request frames built as a client would, for tests that play a client (or a follower)
// byte by byte over a RawConnection. Only the builders: raw_session.h adds the doctest
// expectations; a test that also uses client_fixtures.h includes this one alone.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/version.h"
#include "txmq_generated.h"

namespace txmq::test {

using Bytes = std::vector<std::uint8_t>;

// -- request frames, built as a client would --------------------------------------------

inline flatbuffers::FlatBufferBuilder finish(flatbuffers::FlatBufferBuilder fbb, std::uint64_t rid, wire::Body type,
                                      flatbuffers::Offset<void> body) {
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, type, body));
  return fbb;
}

inline flatbuffers::FlatBufferBuilder hello(std::uint64_t rid, std::uint32_t version = kProtocolVersion,
                                            const std::string& producer_group = "") {
  flatbuffers::FlatBufferBuilder fbb;
  const auto name = fbb.CreateString("bad-input-test");
  const auto group = producer_group.empty() ? 0 : fbb.CreateString(producer_group);
  auto body = wire::CreateHello(fbb, version, name, group);
  return finish(std::move(fbb), rid, wire::Body::Hello, body.Union());
}

inline flatbuffers::FlatBufferBuilder create_topic(std::uint64_t rid, const std::string& name, std::uint32_t partitions = 1) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateCreateTopic(fbb, fbb.CreateString(name), partitions);
  return finish(std::move(fbb), rid, wire::Body::CreateTopic, body.Union());
}

inline flatbuffers::FlatBufferBuilder describe_topic(std::uint64_t rid, const std::string& name) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateDescribeTopic(fbb, fbb.CreateString(name));
  return finish(std::move(fbb), rid, wire::Body::DescribeTopic, body.Union());
}

inline flatbuffers::FlatBufferBuilder list_topics(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateListTopics(fbb);
  return finish(std::move(fbb), rid, wire::Body::ListTopics, body.Union());
}

// One produce request carrying one message per body, without keys, partition chosen by
// the broker.
inline flatbuffers::FlatBufferBuilder produce(std::uint64_t rid, const std::string& topic,
                                       const std::vector<std::string>& bodies) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<flatbuffers::Offset<wire::Message>> msgs;
  for (const auto& b : bodies) {
    auto data = fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(b.data()), b.size());
    msgs.push_back(wire::CreateMessage(fbb, 0, 0, data));
  }
  auto body = wire::CreateProduce(fbb, fbb.CreateString(topic), fbb.CreateVector(msgs));
  return finish(std::move(fbb), rid, wire::Body::Produce, body.Union());
}

// -- replication and cluster requests (broker/replication.h) ------------------------------

// A follower's fetch: it holds the log up to next_index - 1 (of last_epoch), durable up to
// durable_index.
struct ReplicaFetchArgs {
  std::string replica;
  std::uint64_t epoch = 0;
  std::uint64_t next_index = 1;
  std::uint64_t last_epoch = 0;
  std::uint64_t durable_index = 0;
  std::uint32_t max_bytes = 1u << 20;
  std::uint32_t wait_ms = 0;
};

inline flatbuffers::FlatBufferBuilder replica_fetch(std::uint64_t rid, const ReplicaFetchArgs& a) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateReplicaFetch(fbb, fbb.CreateString(a.replica), a.epoch, a.next_index, a.last_epoch,
                                       a.durable_index, a.max_bytes, a.wait_ms);
  return finish(std::move(fbb), rid, wire::Body::ReplicaFetch, body.Union());
}

inline flatbuffers::FlatBufferBuilder cluster_status(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateClusterStatus(fbb);
  return finish(std::move(fbb), rid, wire::Body::ClusterStatus, body.Union());
}

inline flatbuffers::FlatBufferBuilder promote(std::uint64_t rid, bool unclean = false) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreatePromote(fbb, unclean);
  return finish(std::move(fbb), rid, wire::Body::Promote, body.Union());
}

inline flatbuffers::FlatBufferBuilder get_digest(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateGetDigest(fbb);
  return finish(std::move(fbb), rid, wire::Body::GetDigest, body.Union());
}

inline Bytes bytes_of(const flatbuffers::FlatBufferBuilder& fbb) {
  return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

}  // namespace txmq::test
