#pragma once
// Raw protocol sessions for integration tests that play a client byte by byte: request
// frames built as a client would (raw_frames.h), and expectations on what the broker
// answers. Each helper fails the current doctest case (REQUIRE) when the broker does not
// behave.

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/support/broker_process.h"
#include "tests/support/raw_frames.h"

namespace txmq::test {

// Generous: the broker runs under ASan in Debug builds. Nothing waits this long unless
// something is wrong.
inline constexpr auto kWait = 10s;

// -- expectations -------------------------------------------------------------------------

inline void send(RawConnection& conn, const flatbuffers::FlatBufferBuilder& fbb) {
  auto st = conn.send_frame(fbb);
  REQUIRE_MESSAGE(st.ok(), test::describe(st));
}

inline void send(RawConnection& conn, const Bytes& bytes) {
  auto st = conn.send_bytes(bytes);
  REQUIRE_MESSAGE(st.ok(), test::describe(st));
}

inline std::string describe(const ReceivedFrame& f) {
  std::string s = std::string("frame ") + wire::EnumNameBody(f.type()) + " rid " + std::to_string(f.request_id());
  if (const auto* e = f.frame().body_as_Error())
    s += " code " + std::string(code_name(error_code_from_wire(e->code()))) + " '" +
         (e->message() ? e->message()->str() : "") + "'";
  return s;
}

// The next frame, which must be of `type` and answer `rid`.
inline ReceivedFrame expect_frame(RawConnection& conn, wire::Body type, std::uint64_t rid) {
  auto f = conn.read_frame(kWait);
  REQUIRE_MESSAGE(f.ok(), "expected " << std::string(wire::EnumNameBody(type)) << ", got " << f.error().describe());
  INFO("got " << describe(*f));
  REQUIRE(f->type() == type);
  CHECK(f->request_id() == rid);
  return std::move(*f);
}

// The next frame, which must be an Error with `code` answering `rid`.
inline void expect_error(RawConnection& conn, ErrorCode code, std::uint64_t rid) {
  auto f = expect_frame(conn, wire::Body::Error, rid);
  INFO("got " << describe(f));
  CHECK(f.error_code() == code);
}

// The broker closes the connection (after anything it still had to send).
inline void expect_closed(RawConnection& conn) { CHECK_MESSAGE(conn.wait_closed(kWait), "the broker kept the connection open"); }

inline void start(BrokerProcess& broker) {
  auto st = broker.start();
  REQUIRE_MESSAGE(st.ok(), test::describe(st));
}

inline RawConnection connect(BrokerProcess& broker) {
  auto conn = RawConnection::connect(broker.address(), kWait);
  REQUIRE_MESSAGE(conn.ok(), conn.error().describe());
  return std::move(*conn);
}

// A connection that said hello.
inline RawConnection session(BrokerProcess& broker) {
  RawConnection conn = connect(broker);
  send(conn, hello(1));
  expect_frame(conn, wire::Body::HelloOk, 1);
  return conn;
}

// The broker still serves a well-behaved client end to end: hello, create a topic,
// produce a message, get it confirmed.
inline void check_broker_serves(BrokerProcess& broker) {
  static int n = 0;
  INFO("a well-behaved client after the bad input");
  REQUIRE(broker.running());
  RawConnection conn = session(broker);
  std::string topic = "healthy-" + std::to_string(++n);
  send(conn, create_topic(2, topic));
  expect_frame(conn, wire::Body::TopicInfo, 2);
  send(conn, produce(3, topic, {"still here"}));
  auto ok = expect_frame(conn, wire::Body::ProduceOk, 3);
  const auto* offsets = ok.frame().body_as_ProduceOk()->offsets();
  REQUIRE(offsets != nullptr);
  REQUIRE(offsets->size() == 1);
  CHECK(offsets->Get(0)->offset() == 0);
}

// The next offset of every partition of a topic, as DescribeTopic reports it.
inline std::vector<std::uint64_t> next_offsets(RawConnection& conn, std::uint64_t rid, const std::string& topic) {
  send(conn, describe_topic(rid, topic));
  auto f = expect_frame(conn, wire::Body::TopicInfo, rid);
  std::vector<std::uint64_t> next;
  for (const auto* p : *f.frame().body_as_TopicInfo()->partitions()) next.push_back(p->next_offset());
  return next;
}

inline Bytes random_bytes(std::mt19937& rng, std::size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  Bytes b(n);
  for (auto& x : b) x = static_cast<std::uint8_t>(byte(rng));
  return b;
}

inline void put_length(Bytes& frame, std::uint32_t len) {
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<std::uint8_t>(len >> (8 * i));
}


}  // namespace txmq::test
