// The real broker against hostile and broken clients: every bad input gets an error
// and/or a closed connection, never a hang or a crash, and the broker goes on serving
// everyone else. Each case ends by proving that with a fresh, well-behaved connection.

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "common/version.h"
#include "tests/support/broker_process.h"
#include "tests/support/raw_session.h"
#include "txmq_generated.h"

using namespace txmq;
using namespace std::chrono_literals;
using txmq::test::BrokerProcess;
using txmq::test::RawConnection;
using txmq::test::ReceivedFrame;
using namespace txmq::test;

TEST_CASE("random bytes get an error or a close, never a hang") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    RawConnection conn = connect(broker);
    send(conn, random_bytes(rng, 64 + seed * 13));
    // Half-close, so that a length prefix promising more bytes than were sent ends as a
    // disconnect mid-frame instead of the broker (rightly) waiting for the rest.
    conn.shutdown_write();
    auto f = conn.read_frame(kWait);
    if (f.ok()) {
      INFO("got " << describe(*f));
      REQUIRE(f->type() == wire::Body::Error);
      CHECK((f->error_code() == ErrorCode::kMalformedFrame || f->error_code() == ErrorCode::kFrameTooLarge));
      expect_closed(conn);
    } else {
      CHECK_MESSAGE(f.error().code == ErrorCode::kConnectionLost, f.error().describe());
    }
  }
  check_broker_serves(broker);
}

TEST_CASE("random bytes under a correct length prefix get MalformedFrame and a close") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  for (std::uint32_t seed = 1; seed <= 20; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    Bytes frame = random_bytes(rng, 4 + 8 * seed);
    put_length(frame, static_cast<std::uint32_t>(frame.size() - 4));
    RawConnection conn = connect(broker);
    send(conn, frame);
    expect_error(conn, ErrorCode::kMalformedFrame, 0);
    expect_closed(conn);
  }
  check_broker_serves(broker);
}

TEST_CASE("a 4 GiB length prefix gets FrameTooLarge at once and a close") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = connect(broker);
  // Only the prefix: the broker must refuse it without waiting for the body.
  send(conn, Bytes{0xFF, 0xFF, 0xFF, 0xFF});
  expect_error(conn, ErrorCode::kFrameTooLarge, 0);
  expect_closed(conn);
  check_broker_serves(broker);
}

TEST_CASE("a length prefix of zero gets MalformedFrame and a close") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = connect(broker);
  send(conn, Bytes{0, 0, 0, 0});
  expect_error(conn, ErrorCode::kMalformedFrame, 0);
  expect_closed(conn);
  check_broker_serves(broker);
}

TEST_CASE("a correct length around an invalid FlatBuffer gets MalformedFrame and a close") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  SUBCASE("root offset pointing outside the buffer") {
    Bytes frame = bytes_of(hello(1));
    frame[4] = 0xF0;
    frame[5] = 0xFF;
    frame[6] = 0xFF;
    frame[7] = 0x7F;
    RawConnection conn = connect(broker);
    send(conn, frame);
    expect_error(conn, ErrorCode::kMalformedFrame, 0);
    expect_closed(conn);
  }
  SUBCASE("a string whose length runs past the end") {
    // Hello's client name is the last thing in the buffer: its length field sits right
    // before the text. Claim a huge length.
    Bytes frame = bytes_of(hello(1));
    const std::string name = "bad-input-test";
    auto it = std::search(frame.begin(), frame.end(), name.begin(), name.end());
    REQUIRE(it != frame.end());
    std::size_t len_at = static_cast<std::size_t>(it - frame.begin()) - 4;
    frame[len_at + 3] = 0x10;
    RawConnection conn = connect(broker);
    send(conn, frame);
    expect_error(conn, ErrorCode::kMalformedFrame, 0);
    expect_closed(conn);
  }
  check_broker_serves(broker);
}

TEST_CASE("a request before the hello gets HelloRequired and a close") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = connect(broker);
  send(conn, list_topics(7));
  expect_error(conn, ErrorCode::kHelloRequired, 7);
  expect_closed(conn);
  check_broker_serves(broker);
}

TEST_CASE("a hello with another protocol version gets UnsupportedVersion and a close") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = connect(broker);
  send(conn, hello(3, kProtocolVersion + 1));
  expect_error(conn, ErrorCode::kUnsupportedVersion, 3);
  expect_closed(conn);
  check_broker_serves(broker);
}

TEST_CASE("a produce to an unknown topic gets UnknownTopic and the connection stays usable") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = session(broker);
  send(conn, produce(2, "no-such-topic", {"lost?"}));
  expect_error(conn, ErrorCode::kUnknownTopic, 2);
  // Same connection, carrying on.
  send(conn, create_topic(3, "now-it-exists"));
  expect_frame(conn, wire::Body::TopicInfo, 3);
  send(conn, produce(4, "now-it-exists", {"found"}));
  auto ok = expect_frame(conn, wire::Body::ProduceOk, 4);
  CHECK(ok.frame().body_as_ProduceOk()->offsets()->Get(0)->offset() == 0);
  check_broker_serves(broker);
}

TEST_CASE("a second hello gets InvalidArgument and the connection stays usable") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = session(broker);
  send(conn, hello(2));
  expect_error(conn, ErrorCode::kInvalidArgument, 2);
  send(conn, list_topics(3));
  expect_frame(conn, wire::Body::TopicList, 3);
}

TEST_CASE("a body that is not a request gets UnknownRequest and the connection stays usable") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = session(broker);
  SUBCASE("a response type") {
    flatbuffers::FlatBufferBuilder fbb;
    auto body = wire::CreateOk(fbb);
    send(conn, finish(std::move(fbb), 2, wire::Body::Ok, body.Union()));
  }
  SUBCASE("a union type beyond the schema") {
    flatbuffers::FlatBufferBuilder fbb;
    auto body = wire::CreateOk(fbb);
    send(conn, finish(std::move(fbb), 2, static_cast<wire::Body>(200), body.Union()));
  }
  SUBCASE("the retired Ack, naming a group and a message (Settle replaced it)") {
    flatbuffers::FlatBufferBuilder fbb;
    std::vector<wire::MessageRef> refs{wire::MessageRef(0, 0)};
    auto body = wire::CreateAck(fbb, fbb.CreateString("orders"), fbb.CreateString("g"), fbb.CreateVectorOfStructs(refs));
    send(conn, finish(std::move(fbb), 2, wire::Body::Ack, body.Union()));
  }
  expect_error(conn, ErrorCode::kUnknownRequest, 2);
  send(conn, list_topics(3));
  expect_frame(conn, wire::Body::TopicList, 3);
}

TEST_CASE("a frame without a body after the hello gets MalformedFrame and a close") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = session(broker);
  SUBCASE("no body type") {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.FinishSizePrefixed(wire::CreateFrame(fbb, 2));
    send(conn, fbb);
  }
  SUBCASE("a body type without its table") {
    flatbuffers::FlatBufferBuilder fbb;
    wire::FrameBuilder fb(fbb);
    fb.add_request_id(2);
    fb.add_body_type(wire::Body::ListTopics);
    fbb.FinishSizePrefixed(fb.Finish());
    send(conn, fbb);
  }
  expect_error(conn, ErrorCode::kMalformedFrame, 2);
  expect_closed(conn);
  check_broker_serves(broker);
}

// Regression (fixed): before the hello, a frame whose body_type
// is Hello but whose body table is absent passes the verifier (an absent union member
// verifies) and reaches handle_hello(conn, rid, *frame->body_as_Hello()), a null
// dereference: the broker dies (UBSan "reference binding to null pointer" in Debug,
// SIGSEGV in Release). One unauthenticated 20-byte frame takes the broker down. The
// frame->body() == nullptr check runs only after the hello branch.
TEST_CASE("a hello frame without its body gets MalformedFrame and the broker survives") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = connect(broker);
  flatbuffers::FlatBufferBuilder fbb;
  wire::FrameBuilder fb(fbb);
  fb.add_request_id(1);
  fb.add_body_type(wire::Body::Hello);
  fbb.FinishSizePrefixed(fb.Finish());
  send(conn, fbb);
  expect_error(conn, ErrorCode::kMalformedFrame, 1);
  expect_closed(conn);
  check_broker_serves(broker);
}

// Regression (fixed): after a fatal error (hello
// required, malformed frame, unsupported version) the broker calls close_after_flush(),
// but while the error's write is in flight the state stays kOpen, so the read loop goes
// on dispatching the frames that arrived in the same read. Here the client gets
// HelloRequired for request 1 and then HelloOk for 2 and a TopicList for 3: requests
// after the "closing" error are executed (a produce would be appended). Frames after a
// fatal error should be discarded (e.g. stop the loop once flush_then_close_ is set).
TEST_CASE("no request after a fatal error in the same packet is served") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = connect(broker);
  Bytes packet;
  for (const Bytes& b : {bytes_of(list_topics(1)), bytes_of(hello(2)), bytes_of(list_topics(3))})
    packet.insert(packet.end(), b.begin(), b.end());
  send(conn, packet);
  expect_error(conn, ErrorCode::kHelloRequired, 1);
  auto next = conn.read_frame(kWait);
  CHECK_MESSAGE(!next.ok(), "the broker answered after its fatal error: " << describe(*next));
  if (!next.ok()) CHECK(next.error().code == ErrorCode::kConnectionLost);
  check_broker_serves(broker);
}

TEST_CASE("a client that disconnects mid-frame does not disturb the broker") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  Bytes frame = bytes_of(hello(1));
  SUBCASE("inside the length prefix") {
    RawConnection conn = connect(broker);
    send(conn, Bytes(frame.begin(), frame.begin() + 2));
    conn.close();
  }
  SUBCASE("inside the body") {
    RawConnection conn = connect(broker);
    send(conn, Bytes(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(frame.size() / 2)));
    conn.close();
  }
  SUBCASE("inside a produce after the hello") {
    RawConnection conn = session(broker);
    Bytes p = bytes_of(produce(2, "whatever", {std::string(5000, 'x')}));
    send(conn, Bytes(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(p.size() / 2)));
    conn.close();
  }
  SUBCASE("and stalls there, keeping the connection open") {
    RawConnection stalled = connect(broker);
    send(stalled, Bytes(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(frame.size() / 2)));
    check_broker_serves(broker);  // while the stalled connection is still open
    CHECK(stalled.is_open());
  }
  SUBCASE("with a reset instead of a close") {
    RawConnection conn = connect(broker);
    send(conn, Bytes(frame.begin(), frame.begin() + static_cast<std::ptrdiff_t>(frame.size() / 2)));
    linger hard{1, 0};  // close() then sends RST
    REQUIRE(setsockopt(conn.fd(), SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)) == 0);
    conn.close();
  }
  check_broker_serves(broker);
}

TEST_CASE("a message over limits.max_message_bytes gets MessageTooLarge and nothing is appended") {
  BrokerProcess::Options options;
  options.config_toml = "[limits]\nmax_message_bytes = 1024\n";
  BrokerProcess broker(options);
  start(broker);
  INFO("broker log:\n" << broker.log_contents());

  RawConnection conn = connect(broker);
  send(conn, hello(1));
  auto hello_ok = expect_frame(conn, wire::Body::HelloOk, 1);
  CHECK(hello_ok.frame().body_as_HelloOk()->max_message_bytes() == 1024);

  send(conn, create_topic(2, "limited", 2));
  expect_frame(conn, wire::Body::TopicInfo, 2);

  send(conn, produce(3, "limited", {std::string(2000, 'x')}));
  expect_error(conn, ErrorCode::kMessageTooLarge, 3);
  CHECK(next_offsets(conn, 4, "limited") == std::vector<std::uint64_t>{0, 0});

  // A batch with one acceptable and one oversized message is refused as a whole.
  send(conn, produce(5, "limited", {"fits", std::string(1025, 'y')}));
  expect_error(conn, ErrorCode::kMessageTooLarge, 5);
  CHECK(next_offsets(conn, 6, "limited") == std::vector<std::uint64_t>{0, 0});

  // The connection is fine, and a message of exactly the limit is accepted.
  send(conn, produce(7, "limited", {std::string(1024, 'z')}));
  auto ok = expect_frame(conn, wire::Body::ProduceOk, 7);
  CHECK(ok.frame().body_as_ProduceOk()->offsets()->Get(0)->offset() == 0);
  auto next = next_offsets(conn, 8, "limited");
  CHECK(next[0] + next[1] == 1);
  check_broker_serves(broker);
}

TEST_CASE("a full data file: StorageFull, reads go on, nothing confirmed is lost, and a delete makes room") {
  BrokerProcess::Options options;
  options.config_toml = "[storage]\nmax_size = \"1MiB\"\n";
  BrokerProcess broker(options);
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = session(broker);
  send(conn, create_topic(2, "filler"));
  expect_frame(conn, wire::Body::TopicInfo, 2);
  send(conn, create_topic(3, "other"));
  expect_frame(conn, wire::Body::TopicInfo, 3);

  // Fill it: batches of ten 1000-byte messages until one is refused.
  const std::vector<std::string> batch(10, std::string(1000, 'f'));
  std::uint64_t rid = 10, confirmed = 0;
  bool full = false;
  for (int i = 0; i < 200 && !full; ++i) {
    send(conn, produce(++rid, "filler", batch));
    auto f = conn.read_frame(kWait);
    REQUIRE_MESSAGE(f.ok(), f.error().describe());
    if (f->type() == wire::Body::ProduceOk) {
      confirmed += batch.size();
    } else {
      REQUIRE(f->type() == wire::Body::Error);
      CHECK(f->error_code() == ErrorCode::kStorageFull);
      full = true;
    }
  }
  REQUIRE_MESSAGE(full, "1 MiB never filled up");
  REQUIRE(confirmed > 0);

  // Full is an answer, not a state the broker breaks in: reads work, writes keep getting it.
  CHECK(next_offsets(conn, ++rid, "filler") == std::vector<std::uint64_t>{confirmed});
  send(conn, produce(++rid, "filler", batch));
  expect_error(conn, ErrorCode::kStorageFull, rid);

  // Everything confirmed survives kill -9, and nothing refused appears.
  broker.kill9();
  auto restarted = broker.restart();
  REQUIRE_MESSAGE(restarted.ok(), test::describe(restarted));
  conn = session(broker);
  CHECK(next_offsets(conn, ++rid, "filler") == std::vector<std::uint64_t>{confirmed});

  // An operator frees space by deleting a topic; then writes are accepted again.
  {
    flatbuffers::FlatBufferBuilder fbb;
    auto body = wire::CreateDeleteTopic(fbb, fbb.CreateString("filler"));
    send(conn, finish(std::move(fbb), ++rid, wire::Body::DeleteTopic, body.Union()));
  }
  expect_frame(conn, wire::Body::Ok, rid);
  // At once: LMDB reuses freed pages only two commits later, and the broker sees to that.
  for (int i = 0; i < 3; ++i) {
    send(conn, produce(++rid, "other", batch));
    expect_frame(conn, wire::Body::ProduceOk, rid);
  }
  check_broker_serves(broker);
}

TEST_CASE("a frame one byte over limits.max_frame_bytes gets FrameTooLarge and a close") {
  BrokerProcess::Options options;
  options.config_toml = "[limits]\nmax_frame_bytes = 4096\nmax_message_bytes = 1024\n";
  BrokerProcess broker(options);
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = session(broker);
  Bytes header(4);
  put_length(header, 4097);
  send(conn, header);
  expect_error(conn, ErrorCode::kFrameTooLarge, 0);
  expect_closed(conn);
  check_broker_serves(broker);
}

TEST_CASE("invalid produce and topic requests get their error and the connection stays usable") {
  BrokerProcess broker;
  start(broker);
  INFO("broker log:\n" << broker.log_contents());
  RawConnection conn = session(broker);
  send(conn, create_topic(2, "two", 2));
  expect_frame(conn, wire::Body::TopicInfo, 2);

  SUBCASE("a partition out of range") {
    flatbuffers::FlatBufferBuilder fbb;
    auto body_bytes = fbb.CreateVector(std::vector<std::uint8_t>{1, 2, 3});
    auto msg = wire::CreateMessage(fbb, 0, 0, body_bytes, 2);
    auto body = wire::CreateProduce(fbb, fbb.CreateString("two"), fbb.CreateVector(std::vector{msg}));
    send(conn, finish(std::move(fbb), 3, wire::Body::Produce, body.Union()));
    expect_error(conn, ErrorCode::kUnknownPartition, 3);
    CHECK(next_offsets(conn, 4, "two") == std::vector<std::uint64_t>{0, 0});
  }
  SUBCASE("a produce without a topic") {
    flatbuffers::FlatBufferBuilder fbb;
    auto body = wire::CreateProduce(fbb);
    send(conn, finish(std::move(fbb), 3, wire::Body::Produce, body.Union()));
    expect_error(conn, ErrorCode::kInvalidArgument, 3);
  }
  SUBCASE("a topic name with a slash") {
    send(conn, create_topic(3, "a/b"));
    expect_error(conn, ErrorCode::kInvalidArgument, 3);
  }
  SUBCASE("an empty topic name") {
    send(conn, create_topic(3, ""));
    expect_error(conn, ErrorCode::kInvalidArgument, 3);
  }
  SUBCASE("zero partitions") {
    send(conn, create_topic(3, "zero", 0));
    expect_error(conn, ErrorCode::kInvalidArgument, 3);
  }
  SUBCASE("a topic that exists") {
    send(conn, create_topic(3, "two"));
    expect_error(conn, ErrorCode::kTopicExists, 3);
  }
  // Same connection, carrying on.
  send(conn, produce(9, "two", {"fine"}));
  expect_frame(conn, wire::Body::ProduceOk, 9);
}
