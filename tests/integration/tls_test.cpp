// TLS on the protocol port: the real broker with [tls] enabled, the C++ client with
// ClientOptions::tls, and raw TLS peers made of a socket and a TlsSession (to write records
// a few bytes at a time, or stall mid-handshake). Certificates are made per test run
// (tests/support/test_certs.h).

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "common/frame.h"
#include "common/tls_session.h"
#include "common/version.h"
#include "tests/support/client_fixtures.h"
#include "tests/support/test_certs.h"

namespace txmq::test {
namespace {

using Clock = std::chrono::steady_clock;
using Bytes = std::vector<std::uint8_t>;

Bytes finish(flatbuffers::FlatBufferBuilder& fbb, std::uint64_t rid, wire::Body type, flatbuffers::Offset<void> body) {
  fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, type, body));
  return Bytes(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

Bytes hello_frame(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateHello(fbb, kProtocolVersion, fbb.CreateString("tls-test"));
  return finish(fbb, rid, wire::Body::Hello, body.Union());
}

Bytes create_topic_frame(std::uint64_t rid, const std::string& name) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateCreateTopic(fbb, fbb.CreateString(name), 1);
  return finish(fbb, rid, wire::Body::CreateTopic, body.Union());
}

Bytes list_topics_frame(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateListTopics(fbb);
  return finish(fbb, rid, wire::Body::ListTopics, body.Union());
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The broker's [tls] table for these certificates.
std::string tls_table(const TestCerts& c, const std::string& client_auth = "none", const std::string& cert = "",
                      const std::string& key = "") {
  return "[tls]\nenabled = true\ncert_file = \"" + (cert.empty() ? c.server_cert : cert) + "\"\nkey_file = \"" +
         (key.empty() ? c.server_key : key) + "\"\nca_file = \"" + c.ca_cert + "\"\nclient_auth = \"" + client_auth +
         "\"\n";
}

// A broker serving TLS with freshly made certificates.
struct TlsBroker {
  TempDir dir{"txmq-tls"};
  TestCerts certs = make_test_certs(dir.path());
  BrokerProcess broker;

  explicit TlsBroker(const std::string& client_auth = "none", const std::string& extra_toml = "")
      : broker(options(tls_table(certs, client_auth) + extra_toml)) {
    start(broker);
  }
  static BrokerOptions options(std::string toml) {
    BrokerOptions o;
    o.metrics_listen = "";
    o.config_toml = std::move(toml);
    return o;
  }
  std::string address() const { return broker.address(); }
};

// Client options that verify the broker with ca_file and fail fast: a refused handshake
// must surface as an error within this, not as a hang.
constexpr client::Millis kFailFast{3000};

client::ClientOptions tls_options(const std::string& address, const std::string& ca_file) {
  client::ClientOptions o = client_options(address);
  o.tls.enabled = true;
  o.tls.ca_file = ca_file;
  o.first_connect_timeout = kFailFast;
  return o;
}

// Creates a topic through an Admin with these options; the error, if any.
Status try_create_topic(const client::ClientOptions& options, const std::string& topic) {
  client::Admin admin(options);
  auto r = admin.create_topic(topic, 1, kWait);
  if (!r) return r.error();
  return {};
}

// Like try_create_topic, and REQUIREs an error within the fail-fast time (plus slack).
Error refused(const client::ClientOptions& options) {
  const auto started = Clock::now();
  auto st = try_create_topic(options, "refused");
  REQUIRE_FALSE(st.ok());
  CHECK(ms_between(started, Clock::now()) < kFailFast + client::Millis(2000));
  return st.error();
}

// A TLS peer made by hand: a socket and a TlsSession, whose records the test writes in
// pieces of the size it likes, and whose answers it reads as frames.
class RawTlsClient {
 public:
  RawTlsClient(const std::string& address, const std::string& ca_file) {
    auto ctx = common::TlsContext::client({"", "", ca_file});
    REQUIRE(ctx.ok());
    context_ = *ctx;
    auto raw = RawConnection::connect(address);
    REQUIRE_MESSAGE(raw.ok(), describe(raw));
    raw_ = std::move(*raw);
    auto session = common::TlsSession::connect(*context_, "127.0.0.1");
    REQUIRE(session.ok());
    tls_ = std::move(*session);
  }

  RawConnection& raw() { return raw_; }

  // Sends what the session has to send, `chunk` bytes per write.
  void flush(std::size_t chunk) {
    Bytes out;
    tls_->take_output(out);
    for (std::size_t i = 0; i < out.size(); i += chunk) {
      const std::size_t n = std::min(chunk, out.size() - i);
      auto st = raw_.send_bytes(std::span<const std::uint8_t>(out.data() + i, n));
      REQUIRE_MESSAGE(st.ok(), describe(st));
    }
  }

  // Runs the handshake, writing chunk bytes at a time.
  void handshake(std::size_t chunk) {
    const auto deadline = Clock::now() + kWait;
    while (!tls_->handshake_done()) {
      REQUIRE(pump_in().ok());
      flush(chunk);
      if (tls_->handshake_done()) break;
      REQUIRE_MESSAGE(receive(deadline), "no handshake answer from the broker");
    }
    flush(chunk);
  }

  // Writes only the first n bytes of the ClientHello.
  void start_handshake(std::size_t n) {
    REQUIRE(pump_in().ok());  // makes the ClientHello
    Bytes out;
    tls_->take_output(out);
    REQUIRE(out.size() > n);
    auto st = raw_.send_bytes(std::span<const std::uint8_t>(out.data(), n));
    REQUIRE_MESSAGE(st.ok(), describe(st));
  }

  // Encrypts frames (one or more, as one write) and sends the records chunk bytes a time.
  void send(const Bytes& frames, std::size_t chunk) {
    REQUIRE(tls_->write(frames).ok());
    flush(chunk);
  }

  ReceivedFrame read_frame() {
    const auto deadline = Clock::now() + kWait;
    for (;;) {
      auto frame = decoder_.next();
      REQUIRE(frame.ok());
      if (!frame->empty()) return ReceivedFrame(*frame);
      REQUIRE_MESSAGE(receive(deadline), "no frame from the broker in time");
      REQUIRE(pump_in().ok());
    }
  }

 private:
  // Reads what the socket has (waiting until the deadline) into the session.
  bool receive(Clock::time_point deadline) {
    pollfd p{raw_.fd(), POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 1) return false;
    std::uint8_t buf[16384];
    const ssize_t n = ::recv(raw_.fd(), buf, sizeof(buf), 0);
    if (n <= 0) return false;
    tls_->feed(buf, static_cast<std::size_t>(n));
    return true;
  }
  // Decrypts what was received into the frame decoder.
  Status pump_in() {
    std::uint8_t plain[16384];
    for (;;) {
      auto n = tls_->read(plain, sizeof(plain));
      if (!n) return n.error();
      if (*n == 0) return {};
      decoder_.append(reinterpret_cast<const char*>(plain), *n);
    }
  }

  std::shared_ptr<common::TlsContext> context_;
  RawConnection raw_;
  std::unique_ptr<common::TlsSession> tls_;
  common::FrameDecoder decoder_{64u << 20};
};

TEST_CASE("produce, consume and a transaction go over TLS") {
  TlsBroker b;
  const client::ClientOptions base = tls_options(b.address(), b.certs.ca_cert);
  {
    client::Admin admin(base);
    auto t = admin.create_topic("orders", 1, kWait);
    REQUIRE_MESSAGE(t.ok(), describe(t));
  }
  client::Producer::Options po;
  static_cast<client::ClientOptions&>(po) = base;
  client::Producer producer(po);
  for (int i = 0; i < 3; ++i) {
    auto r = producer.send("orders", text("order-" + std::to_string(i)), kWait);
    REQUIRE_MESSAGE(r.ok(), describe(r));
    CHECK(r->offset == static_cast<std::uint64_t>(i));
  }
  // A body over one TLS record (16 KB) arrives whole.
  const std::string big(100'000, 'b');
  REQUIRE(producer.send("orders", text(big), kWait).ok());

  client::TransactionalProducer::Options to;
  static_cast<client::ClientOptions&>(to) = base;
  to.producer_group = "shop";
  client::TransactionalProducer txn(to, [](const client::TransactionCheck&) {
    return client::LocalTransactionState::kCommit;
  });
  auto committed = txn.send_in_transaction("orders", text("paid"), [](std::uint64_t) {
    return client::LocalTransactionState::kCommit;
  }, kWait);
  REQUIRE_MESSAGE(committed.ok(), describe(committed));
  CHECK(committed->state == client::TxnState::kCommitted);

  std::mutex mu;
  std::vector<std::string> bodies;
  client::Consumer::Options co;
  static_cast<client::ClientOptions&>(co) = base;
  co.topic = "orders";
  co.group = "warehouse";
  client::Consumer consumer(co, [&](client::Consumer& c, const client::Delivery& d) {
    {
      std::lock_guard lock(mu);
      bodies.push_back(d.body.size() > 100 ? "big" : d.body);
    }
    c.ack(d);
  });
  REQUIRE(wait_until([&] {
    std::lock_guard lock(mu);
    return bodies.size() == 5;
  }, kWait));
  std::lock_guard lock(mu);
  CHECK(bodies == std::vector<std::string>{"order-0", "order-1", "order-2", "big", "paid"});
}

TEST_CASE("a broker certificate from a CA the client does not trust is refused") {
  TlsBroker b;
  const Error e = refused(tls_options(b.address(), b.certs.other_ca_cert));
  CHECK(e.code == ErrorCode::kNotConnected);
  CHECK_MESSAGE(contains(e.message, "TLS handshake failed: certificate verify failed"), e.message);
  // The broker names the peer and the reason.
  CHECK(wait_until([&] { return contains(b.broker.log_contents(), "TLS handshake failed: tlsv1 alert unknown ca"); },
                   kWait));
  CHECK(contains(b.broker.log_contents(), "from 127.0.0.1:"));
}

TEST_CASE("a broker certificate for another host is refused") {
  TempDir dir("txmq-tls");
  TestCerts certs = make_test_certs(dir.path());
  BrokerProcess broker(TlsBroker::options(tls_table(certs, "none", certs.wrong_host_cert, certs.wrong_host_key)));
  start(broker);
  const Error by_address = refused(tls_options(broker.address(), certs.ca_cert));
  CHECK_MESSAGE(contains(by_address.message, "certificate verify failed (IP address mismatch)"), by_address.message);
  const Error by_name = refused(tls_options("localhost:" + std::to_string(broker.port()), certs.ca_cert));
  CHECK_MESSAGE(contains(by_name.message, "hostname mismatch"), by_name.message);
}

TEST_CASE("the broker's certificate is accepted for localhost as well as 127.0.0.1") {
  TlsBroker b;
  CHECK(try_create_topic(tls_options("localhost:" + std::to_string(b.broker.port()), b.certs.ca_cert), "named").ok());
}

TEST_CASE("with client_auth = required a client without a certificate the CA signed is refused") {
  TlsBroker b("required");
  client::ClientOptions o = tls_options(b.address(), b.certs.ca_cert);
  SUBCASE("none") {
    const Error e = refused(o);
    CHECK_MESSAGE(contains(e.message, "TLS handshake failed: tlsv13 alert certificate required"), e.message);
    CHECK(wait_until([&] { return contains(b.broker.log_contents(), "peer did not return a certificate"); }, kWait));
  }
  SUBCASE("one from another CA") {
    o.tls.cert_file = b.certs.other_client_cert;
    o.tls.key_file = b.certs.other_client_key;
    const Error e = refused(o);
    CHECK_MESSAGE(contains(e.message, "TLS handshake failed: "), e.message);
    CHECK(wait_until([&] { return contains(b.broker.log_contents(), "certificate verify failed"); }, kWait));
  }
  SUBCASE("one the CA signed is accepted") {
    o.tls.cert_file = b.certs.client_cert;
    o.tls.key_file = b.certs.client_key;
    auto st = try_create_topic(o, "mutual");
    CHECK_MESSAGE(st.ok(), describe(st));
  }
}

TEST_CASE("with client_auth = optional a client may come with or without a certificate") {
  TlsBroker b("optional");
  client::ClientOptions o = tls_options(b.address(), b.certs.ca_cert);
  CHECK(try_create_topic(o, "anonymous").ok());
  o.tls.cert_file = b.certs.client_cert;
  o.tls.key_file = b.certs.client_key;
  CHECK(try_create_topic(o, "known").ok());
}

TEST_CASE("a plain client on the TLS port gets a clear error, not a hang") {
  TlsBroker b;
  client::ClientOptions o = client_options(b.address());
  o.first_connect_timeout = kFailFast;
  const Error e = refused(o);
  CHECK(e.code == ErrorCode::kInvalidArgument);
  CHECK_MESSAGE(contains(e.message, "takes TLS connections only"), e.message);
  CHECK(wait_until([&] { return contains(b.broker.log_contents(), "not TLS (a plain txmq client on the TLS port?)"); },
                   kWait));
  // Any plain client, not only ours: its hello is answered with an Error frame.
  auto raw = RawConnection::connect(b.address());
  REQUIRE(raw.ok());
  REQUIRE(raw->send_bytes(hello_frame(1)).ok());
  auto answer = raw->read_frame(kWait);
  REQUIRE_MESSAGE(answer.ok(), describe(answer));
  CHECK(answer->error_code() == ErrorCode::kInvalidArgument);
  CHECK(raw->wait_closed(kWait));
}

TEST_CASE("a TLS client on a plain port gets a clear error, not a hang") {
  BrokerProcess broker(TlsBroker::options(""));
  start(broker);
  TempDir dir("txmq-tls");
  TestCerts certs = make_test_certs(dir.path());
  const Error e = refused(tls_options(broker.address(), certs.ca_cert));
  CHECK(e.code == ErrorCode::kNotConnected);
  CHECK_MESSAGE(contains(e.message, "the broker did not answer with TLS"), e.message);
  CHECK(wait_until([&] { return contains(broker.log_contents(), "sent a TLS ClientHello, but this port is plain"); },
                   kWait));
}

TEST_CASE("TLS records written a few bytes at a time are put together") {
  TlsBroker b;
  RawTlsClient c(b.address(), b.certs.ca_cert);
  c.handshake(5);
  c.send(hello_frame(1), 3);
  CHECK(c.read_frame().type() == wire::Body::HelloOk);
  c.send(create_topic_frame(2, "trickled"), 1);
  auto created = c.read_frame();
  CHECK(created.request_id() == 2);
  CHECK_FALSE(created.error_code().has_value());
  // Two frames in one record.
  Bytes both = list_topics_frame(3);
  const Bytes second = list_topics_frame(4);
  both.insert(both.end(), second.begin(), second.end());
  c.send(both, 7);
  CHECK(c.read_frame().request_id() == 3);
  CHECK(c.read_frame().request_id() == 4);
}

TEST_CASE("a TLS peer that stalls mid-handshake does not hold up other clients, and is closed") {
  TlsBroker b("none", "[limits]\nhello_timeout_ms = 5000\n");
  RawTlsClient stalled(b.address(), b.certs.ca_cert);
  stalled.start_handshake(10);  // 10 bytes of the ClientHello, then nothing
  const auto started = Clock::now();
  auto st = try_create_topic(tls_options(b.address(), b.certs.ca_cert), "unhindered");
  CHECK_MESSAGE(st.ok(), describe(st));
  CHECK(ms_between(started, Clock::now()) < client::Millis(4000));  // before the stalled one is closed
  // limits.hello_timeout_ms covers the handshake.
  CHECK(stalled.raw().wait_closed(kWait));
}

TEST_CASE("the broker does not start when a TLS file is missing or the key is not the certificate's") {
  TempDir dir("txmq-tls");
  TestCerts certs = make_test_certs(dir.path());
  SUBCASE("missing") {
    BrokerProcess broker(TlsBroker::options(tls_table(certs, "none", dir.file("absent.pem"))));
    auto st = broker.start();
    REQUIRE_FALSE(st.ok());
    CHECK_MESSAGE(contains(broker.log_contents(), "tls.cert_file " + dir.file("absent.pem") + ": No such file"),
                  broker.log_contents());
  }
  SUBCASE("a key of another certificate") {
    BrokerProcess broker(TlsBroker::options(tls_table(certs, "none", certs.server_cert, certs.client_key)));
    auto st = broker.start();
    REQUIRE_FALSE(st.ok());
    CHECK_MESSAGE(contains(broker.log_contents(), "tls.key_file " + certs.client_key + " does not match cert_file"),
                  broker.log_contents());
  }
  SUBCASE("client_auth without a CA") {
    BrokerProcess broker(TlsBroker::options("[tls]\nenabled = true\ncert_file = \"" + certs.server_cert +
                                            "\"\nkey_file = \"" + certs.server_key + "\"\nclient_auth = \"required\"\n"));
    auto st = broker.start();
    REQUIRE_FALSE(st.ok());
    CHECK(contains(broker.log_contents(), "needs tls.ca_file"));
  }
}

}  // namespace
}  // namespace txmq::test
