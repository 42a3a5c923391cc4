// common/tls_session: a client and a broker session joined in memory, the bytes between
// them moved by the test (so partial records and byte-at-a-time delivery are easy).

#include "common/tls_session.h"

#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "tests/support/broker_process.h"
#include "tests/support/test_certs.h"

namespace txmq::common {
namespace {

using Bytes = std::vector<std::uint8_t>;

struct Certs {
  test::TempDir dir{"txmq-tls-session"};
  test::TestCerts files = test::make_test_certs(dir.path());
};

std::shared_ptr<TlsContext> server_context(const Certs& c, TlsClientAuth auth = TlsClientAuth::kNone,
                                           std::string server_cert = "", std::string server_key = "") {
  TlsFiles f{server_cert.empty() ? c.files.server_cert : server_cert,
             server_key.empty() ? c.files.server_key : server_key, c.files.ca_cert};
  auto ctx = TlsContext::server(f, auth);
  REQUIRE_MESSAGE(ctx.ok(), test::describe(ctx.ok() ? Status{} : Status(ctx.error())));
  return *ctx;
}

std::shared_ptr<TlsContext> client_context(const TlsFiles& f) {
  auto ctx = TlsContext::client(f);
  REQUIRE_MESSAGE(ctx.ok(), test::describe(ctx.ok() ? Status{} : Status(ctx.error())));
  return *ctx;
}

// Two sessions and the plaintext each received. step() moves ciphertext both ways, at
// most chunk bytes per feed, and reads what can be read.
struct Pair {
  std::unique_ptr<TlsSession> client;
  std::unique_ptr<TlsSession> server;
  Bytes client_got, server_got;
  Status client_status, server_status;

  Pair(const TlsContext& client_ctx, const TlsContext& server_ctx, const std::string& host = "127.0.0.1") {
    auto c = TlsSession::connect(client_ctx, host);
    REQUIRE(c.ok());
    client = std::move(*c);
    auto s = TlsSession::accept(server_ctx);
    REQUIRE(s.ok());
    server = std::move(*s);
  }

  // Moves from's output to `to`, which reads it; to_status keeps to's first error.
  static void pump(TlsSession& from, TlsSession& to, Bytes& got, Status& to_status, std::size_t chunk) {
    Bytes wire;
    from.take_output(wire);
    for (std::size_t i = 0; i < wire.size() && to_status; i += chunk) {
      to.feed(wire.data() + i, std::min(chunk, wire.size() - i));
      to_status = drain(to, got);
    }
    if (to_status) to_status = drain(to, got);
  }

  static Status drain(TlsSession& s, Bytes& got) {
    std::uint8_t buf[4096];
    for (;;) {
      auto n = s.read(buf, sizeof(buf));
      if (!n) return n.error();
      if (*n == 0) return {};
      got.insert(got.end(), buf, buf + *n);
    }
  }

  // Runs until neither side has anything to send (a failed side's alert is delivered).
  void run(std::size_t chunk = 1 << 20) {
    for (int round = 0; round < 20; ++round) {
      if (!client->has_output() && !server->has_output() && round > 0) break;
      pump(*client, *server, server_got, server_status, chunk);
      pump(*server, *client, client_got, client_status, chunk);
    }
  }
};

std::string text(const Bytes& b) { return std::string(b.begin(), b.end()); }
Bytes bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

TEST_CASE("a handshake completes and data goes both ways") {
  Certs c;
  auto sctx = server_context(c);
  auto cctx = client_context({"", "", c.files.ca_cert});
  Pair p(*cctx, *sctx);
  REQUIRE(p.client->write(bytes("hello broker")));
  p.run();
  REQUIRE_MESSAGE(p.client_status.ok(), test::describe(p.client_status));
  REQUIRE_MESSAGE(p.server_status.ok(), test::describe(p.server_status));
  CHECK(p.client->handshake_done());
  CHECK(p.server->handshake_done());
  CHECK(text(p.server_got) == "hello broker");  // held until the handshake was done
  REQUIRE(p.server->write(bytes("hello client")));
  p.run();
  CHECK(text(p.client_got) == "hello client");
}

TEST_CASE("records arriving one byte at a time are put together") {
  Certs c;
  auto sctx = server_context(c);
  auto cctx = client_context({"", "", c.files.ca_cert});
  Pair p(*cctx, *sctx, "localhost");
  p.run(1);
  REQUIRE(p.client_status.ok());
  REQUIRE(p.server_status.ok());
  const std::string big(40000, 'x');  // three records
  REQUIRE(p.client->write(bytes(big)));
  p.run(1);
  REQUIRE(p.server_status.ok());
  CHECK(p.server_got.size() == big.size());
  CHECK(text(p.server_got) == big);
}

TEST_CASE("a broker certificate from an untrusted CA is refused") {
  Certs c;
  auto sctx = server_context(c);
  auto cctx = client_context({"", "", c.files.other_ca_cert});
  Pair p(*cctx, *sctx);
  p.run();
  REQUIRE_FALSE(p.client_status.ok());
  CHECK(p.client_status.error().message.find("TLS handshake failed: certificate verify failed") == 0);
  CHECK(p.client_status.error().message.find("unable to get local issuer certificate") != std::string::npos);
  // The alert reached the broker, which names it.
  REQUIRE_FALSE(p.server_status.ok());
  CHECK(p.server_status.error().message.find("unknown ca") != std::string::npos);
}

TEST_CASE("a broker certificate for another host is refused") {
  Certs c;
  auto sctx = server_context(c, TlsClientAuth::kNone, c.files.wrong_host_cert, c.files.wrong_host_key);
  auto cctx = client_context({"", "", c.files.ca_cert});
  SUBCASE("an address") {
    Pair p(*cctx, *sctx, "127.0.0.1");
    p.run();
    REQUIRE_FALSE(p.client_status.ok());
    CHECK(p.client_status.error().message.find("IP address mismatch") != std::string::npos);
  }
  SUBCASE("a name") {
    Pair p(*cctx, *sctx, "localhost");
    p.run();
    REQUIRE_FALSE(p.client_status.ok());
    CHECK(p.client_status.error().message.find("hostname mismatch") != std::string::npos);
  }
}

TEST_CASE("a required client certificate") {
  Certs c;
  auto sctx = server_context(c, TlsClientAuth::kRequired);
  SUBCASE("missing is refused") {
    auto cctx = client_context({"", "", c.files.ca_cert});
    Pair p(*cctx, *sctx);
    p.run();
    REQUIRE_FALSE(p.server_status.ok());
    CHECK(p.server_status.error().message.find("peer did not return a certificate") != std::string::npos);
    // TLS 1.3: the client hears of it on its first read after the handshake.
    REQUIRE_FALSE(p.client_status.ok());
    CHECK(p.client_status.error().message.find("certificate required") != std::string::npos);
  }
  SUBCASE("from another CA is refused") {
    auto cctx = client_context({c.files.other_client_cert, c.files.other_client_key, c.files.ca_cert});
    Pair p(*cctx, *sctx);
    p.run();
    REQUIRE_FALSE(p.server_status.ok());
    CHECK(p.server_status.error().message.find("certificate verify failed") != std::string::npos);
  }
  SUBCASE("from the CA is accepted") {
    auto cctx = client_context({c.files.client_cert, c.files.client_key, c.files.ca_cert});
    Pair p(*cctx, *sctx);
    REQUIRE(p.client->write(bytes("ping")));
    p.run();
    REQUIRE_MESSAGE(p.server_status.ok(), test::describe(p.server_status));
    REQUIRE_MESSAGE(p.client_status.ok(), test::describe(p.client_status));
    CHECK(text(p.server_got) == "ping");
  }
}

TEST_CASE("bytes that are not TLS fail the broker's handshake") {
  Certs c;
  auto sctx = server_context(c);
  auto s = TlsSession::accept(*sctx);
  REQUIRE(s.ok());
  const Bytes frame = {0x30, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0};
  (*s)->feed(frame.data(), frame.size());
  std::uint8_t buf[64];
  auto n = (*s)->read(buf, sizeof(buf));
  REQUIRE_FALSE(n.ok());
  CHECK(n.error().message.find("TLS handshake failed: ") == 0);
}

TEST_CASE("close_notify reaches the peer") {
  Certs c;
  auto sctx = server_context(c);
  auto cctx = client_context({"", "", c.files.ca_cert});
  Pair p(*cctx, *sctx);
  p.run();
  REQUIRE(p.client->handshake_done());
  p.server->close_notify();
  p.run();
  CHECK(p.client_status.ok());
  CHECK(p.client->peer_closed());
}

TEST_CASE("a server context with a missing file or a key of another certificate is refused") {
  Certs c;
  auto missing = TlsContext::server({c.dir.file("nope.pem"), c.files.server_key, ""}, TlsClientAuth::kNone);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == ErrorCode::kInvalidArgument);
  CHECK(missing.error().message.find("cert_file " + c.dir.file("nope.pem") + ": No such file or directory") == 0);
  auto mismatch = TlsContext::server({c.files.server_cert, c.files.client_key, ""}, TlsClientAuth::kNone);
  REQUIRE_FALSE(mismatch.ok());
  CHECK(mismatch.error().message.find("does not match cert_file") != std::string::npos);
  auto no_ca = TlsContext::server({c.files.server_cert, c.files.server_key, ""}, TlsClientAuth::kRequired);
  REQUIRE_FALSE(no_ca.ok());
  CHECK(no_ca.error().message.find("ca_file") == 0);
  std::ofstream(c.dir.file("garbage.pem")) << "not a certificate\n";
  auto garbage = TlsContext::server({c.dir.file("garbage.pem"), c.files.server_key, ""}, TlsClientAuth::kNone);
  REQUIRE_FALSE(garbage.ok());
  CHECK(garbage.error().message.find("cert_file") == 0);
}

TEST_CASE("the first bytes of a TLS connection are told from a txmq frame") {
  CHECK(looks_like_tls_record(Bytes{0x16, 0x03, 0x01, 0x02, 0x00}));  // ClientHello
  CHECK(looks_like_tls_record(Bytes{0x15, 0x03, 0x03, 0x00, 0x02}));  // alert
  CHECK_FALSE(looks_like_tls_record(Bytes{0x30, 0x00, 0x00, 0x00}));  // a hello frame's length
  CHECK_FALSE(looks_like_tls_record(Bytes{0x16, 0x03}));              // too short to tell
  CHECK_FALSE(looks_like_tls_record(Bytes{0x16, 0x03, 0x00}));        // a 790-byte frame
}

}  // namespace
}  // namespace txmq::common
