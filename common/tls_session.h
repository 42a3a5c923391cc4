#pragma once
// TLS for a connection that runs on a libuv loop: OpenSSL over two memory BIOs, so that the
// socket stays libuv's and no thread ever blocks on it. The broker and the client both use
// it, each on its own loop thread.
//
//   socket --ciphertext--> feed() ... read() --plaintext--> frame decoder
//   frames --plaintext--> write() ... take_output() --ciphertext--> uv_write
//
// A TlsContext holds what every connection of one side shares: the certificate and key,
// the CA to verify the peer with, the minimum version (TLS 1.2). A TlsSession is one
// connection's state. Neither knows about sockets: the caller moves the bytes, which is
// also what makes a partial record harmless (read() returns 0 until the rest is fed).
//
// Lifecycle: the session is made when the TCP connection is; the handshake runs as bytes
// arrive (read() drives it) and, on the client, starts with the first read() call, which
// produces the ClientHello. Errors: read() fails when the handshake fails (certificate
// refused, wrong version, not TLS at all) or a record is bad; the error's message is
// OpenSSL's reason, with the verification result when a certificate was refused. After an
// error the session is dead; output may still hold an alert worth sending. An error before
// any plaintext arrived is reported as "TLS handshake failed: ...": in TLS 1.3 a client
// learns that the broker refused its certificate only after its own side of the
// handshake is done, on its first read.
// Concurrency: a context may be shared by sessions on any thread (OpenSSL locks it); a
// session belongs to one thread.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

// OpenSSL's types, without its headers in every file that holds a session.
struct ssl_ctx_st;
struct ssl_st;
struct bio_st;

namespace txmq::common {

// Whether the broker asks for client certificates.
enum class TlsClientAuth {
  kNone,      // none asked for
  kOptional,  // asked for and verified against the CA when given
  kRequired,  // the handshake fails without one the CA signed
};

// The files of one side, PEM. The broker needs cert_file and key_file (ca_file when it
// verifies client certificates); a client needs ca_file to verify the broker ("" uses the
// system's trust store) and cert_file and key_file only to present a certificate.
struct TlsFiles {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
};

class TlsContext {
 public:
  // Loads the files. kInvalidArgument naming the file and OpenSSL's reason when one is
  // missing or unreadable, or when the key does not match the certificate.
  static Result<std::shared_ptr<TlsContext>> server(const TlsFiles& files, TlsClientAuth client_auth);
  static Result<std::shared_ptr<TlsContext>> client(const TlsFiles& files);

  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext();

  bool is_server() const { return server_; }

 private:
  TlsContext(ssl_ctx_st* ctx, bool server) : ctx_(ctx), server_(server) {}
  friend class TlsSession;

  ssl_ctx_st* ctx_;  // owned
  bool server_;
};

class TlsSession {
 public:
  // A broker's session for an accepted connection.
  static Result<std::unique_ptr<TlsSession>> accept(const TlsContext& context);
  // A client's session; host is the broker's name or address as the user gave it: the
  // certificate must name it (a DNS name, or an IP address in its subjectAltName), and a
  // name is sent as SNI.
  static Result<std::unique_ptr<TlsSession>> connect(const TlsContext& context, const std::string& host);

  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;
  ~TlsSession();

  // Ciphertext received from the peer, any amount (a partial record is kept for later).
  void feed(const std::uint8_t* data, std::size_t len);
  // Moves the handshake on and decrypts what was fed into out (at most cap bytes).
  // Returns the plaintext bytes written; 0 when more ciphertext is needed or the peer
  // sent close_notify (peer_closed() tells). Call again until it returns 0: one call
  // returns at most one record's plaintext. An error ends the session (see above).
  Result<std::size_t> read(std::uint8_t* out, std::size_t cap);
  // Encrypts plaintext for the peer. Before the handshake is done it is held, and
  // encrypted by the read() that completes the handshake.
  Status write(std::span<const std::uint8_t> plaintext);
  // Sends close_notify (after the handshake; nothing before it).
  void close_notify();

  // Appends the ciphertext to send to out and forgets it.
  void take_output(std::vector<std::uint8_t>& out);
  bool has_output() const;
  // Plaintext held until the handshake is done.
  std::size_t held_bytes() const { return held_.size(); }

  bool handshake_done() const { return handshake_done_; }
  bool peer_closed() const { return peer_closed_; }
  // The common name (CN) of the peer's certificate once the handshake verified it against
  // the CA; "" when the peer sent none, it was not verified, or it has no CN.
  std::string peer_common_name() const;

 private:
  explicit TlsSession(ssl_st* ssl, bio_st* in, bio_st* out) : ssl_(ssl), in_(in), out_(out) {}
  Error failure(int rc, const char* doing);

  ssl_st* ssl_;  // owned; owns both BIOs
  bio_st* in_;   // ciphertext from the peer, read by OpenSSL
  bio_st* out_;  // ciphertext OpenSSL wrote for the peer
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool failed_ = false;
  bool received_data_ = false;  // read() returned plaintext once
  std::vector<std::uint8_t> held_;  // plaintext written before the handshake was done
};

// Whether the first bytes from a peer open a TLS record: a handshake (22) or an alert (21)
// followed by a 3.x record version (3.1 to 3.4 in the record header). Needs 3 bytes; a
// txmq frame could start so only if it were larger than 66 KB, which a hello never is.
bool looks_like_tls_record(std::span<const std::uint8_t> first_bytes);

}  // namespace txmq::common
