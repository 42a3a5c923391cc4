#include "common/tls_session.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/address.h"

namespace txmq::common {
namespace {

// OpenSSL's reasons queued on this thread, oldest first, and the queue emptied.
std::string drain_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    out += (out.empty() ? "" : "; ") + std::string(reason ? reason : "unknown error");
  }
  return out;
}

Error bad(const std::string& what) { return Error(ErrorCode::kInvalidArgument, what); }

// A clearer error than OpenSSL's for the common case of a mistyped path.
Status readable(const char* key, const std::string& path) {
  if (std::ifstream(path).good()) return {};
  return bad(std::string(key) + " " + path + ": " + std::strerror(errno));
}

Status load_certificate_and_key(SSL_CTX* ctx, const TlsFiles& files) {
  if (auto st = readable("cert_file", files.cert_file); !st) return st;
  if (auto st = readable("key_file", files.key_file); !st) return st;
  if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1)
    return bad("cert_file " + files.cert_file + ": " + drain_errors());
  const std::string mismatch = "key_file " + files.key_file + " does not match cert_file " + files.cert_file;
  if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL checks the key against the certificate loaded before it.
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      return bad(mismatch);
    }
    return bad("key_file " + files.key_file + ": " + drain_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) return bad(mismatch + ": " + drain_errors());
  return {};
}

Status load_ca(SSL_CTX* ctx, const std::string& ca_file) {
  if (auto st = readable("ca_file", ca_file); !st) return st;
  if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1)
    return bad("ca_file " + ca_file + ": " + drain_errors());
  return {};
}

SSL_CTX* new_context(const SSL_METHOD* method) {
  SSL_CTX* ctx = SSL_CTX_new(method);
  if (!ctx) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Idle connections give their 34 KB of record buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

}  // namespace

std::string TlsSession::peer_common_name() const {
  if (!handshake_done_ || SSL_get_verify_result(ssl_) != X509_V_OK) return {};
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (cert == nullptr) return {};
  const X509_NAME* subject = X509_get_subject_name(cert);
  const int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (at < 0) return {};
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
  unsigned char* utf8 = nullptr;
  const int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) return {};
  std::string name(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return name;
}

bool looks_like_tls_record(std::span<const std::uint8_t> b) {
  return b.size() >= 3 && (b[0] == 22 || b[0] == 21) && b[1] == 3 && b[2] >= 1 && b[2] <= 4;
}

Result<std::shared_ptr<TlsContext>> TlsContext::server(const TlsFiles& files, TlsClientAuth client_auth) {
  ERR_clear_error();
  SSL_CTX* ctx = new_context(TLS_server_method());
  if (!ctx) return Error(ErrorCode::kInternal, "cannot make a TLS context: " + drain_errors());
  std::shared_ptr<TlsContext> owner(new TlsContext(ctx, true));
  if (auto st = load_certificate_and_key(ctx, files); !st) return st.error();
  if (client_auth != TlsClientAuth::kNone) {
    if (auto st = load_ca(ctx, files.ca_file); !st) return st.error();
    // The CA's name goes in the certificate request, so a client picks the right one.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(files.ca_file.c_str()))
      SSL_CTX_set_client_CA_list(ctx, names);
    int mode = SSL_VERIFY_PEER;
    if (client_auth == TlsClientAuth::kRequired) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, nullptr);
  }
  return owner;
}

Result<std::shared_ptr<TlsContext>> TlsContext::client(const TlsFiles& files) {
  ERR_clear_error();
  SSL_CTX* ctx = new_context(TLS_client_method());
  if (!ctx) return Error(ErrorCode::kInternal, "cannot make a TLS context: " + drain_errors());
  std::shared_ptr<TlsContext> owner(new TlsContext(ctx, false));
  if (files.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1)
      return bad("cannot load the system's trusted certificates: " + drain_errors());
  } else if (auto st = load_ca(ctx, files.ca_file); !st) {
    return st.error();
  }
  if (!files.cert_file.empty() || !files.key_file.empty()) {
    if (files.cert_file.empty() || files.key_file.empty())
      return bad("a client certificate needs both its cert_file and its key_file");
    if (auto st = load_certificate_and_key(ctx, files); !st) return st.error();
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  return owner;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<TlsSession>> TlsSession::accept(const TlsContext& context) {
  ERR_clear_error();
  SSL* ssl = SSL_new(context.ctx_);
  if (!ssl) return Error(ErrorCode::kInternal, "cannot make a TLS session: " + drain_errors());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);  // ssl owns both from here
  SSL_set_accept_state(ssl);
  return std::unique_ptr<TlsSession>(new TlsSession(ssl, in, out));
}

Result<std::unique_ptr<TlsSession>> TlsSession::connect(const TlsContext& context, const std::string& host) {
  ERR_clear_error();
  SSL* ssl = SSL_new(context.ctx_);
  if (!ssl) return Error(ErrorCode::kInternal, "cannot make a TLS session: " + drain_errors());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  std::unique_ptr<TlsSession> session(new TlsSession(ssl, in, out));
  SSL_set_connect_state(ssl);
  // The certificate must name what the user connected to: an address is matched against
  // the certificate's IP addresses, a name against its DNS names (and sent as SNI).
  if (is_ip_literal(host)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) != 1)
      return bad("cannot check the broker's certificate for " + host + ": " + drain_errors());
  } else {
    if (SSL_set1_host(ssl, host.c_str()) != 1 || SSL_set_tlsext_host_name(ssl, host.c_str()) != 1)
      return bad("cannot check the broker's certificate for " + host + ": " + drain_errors());
  }
  return session;
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

void TlsSession::feed(const std::uint8_t* data, std::size_t len) {
  // A memory BIO grows as needed: the write takes everything.
  if (len > 0) BIO_write(in_, data, static_cast<int>(len));
}

Result<std::size_t> TlsSession::read(std::uint8_t* out, std::size_t cap) {
  if (failed_) return Error(ErrorCode::kConnectionLost, "TLS session already failed");
  if (peer_closed_) return std::size_t{0};
  ERR_clear_error();
  if (!handshake_done_) {
    const int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      if (SSL_get_error(ssl_, rc) == SSL_ERROR_WANT_READ) return std::size_t{0};
      return failure(rc, "TLS handshake failed");
    }
    handshake_done_ = true;
    if (!held_.empty()) {
      std::vector<std::uint8_t> held;
      held.swap(held_);
      if (auto st = write(held); !st) return st.error();
    }
  }
  const int n = SSL_read(ssl_, out, static_cast<int>(std::min<std::size_t>(cap, INT32_MAX)));
  if (n > 0) {
    received_data_ = true;
    return static_cast<std::size_t>(n);
  }
  switch (SSL_get_error(ssl_, n)) {
    case SSL_ERROR_WANT_READ:
      return std::size_t{0};
    case SSL_ERROR_ZERO_RETURN:
      peer_closed_ = true;
      return std::size_t{0};
    default:
      return failure(n, received_data_ ? "TLS error" : "TLS handshake failed");
  }
}

Status TlsSession::write(std::span<const std::uint8_t> plaintext) {
  if (failed_) return Error(ErrorCode::kConnectionLost, "TLS session already failed");
  if (!handshake_done_) {
    held_.insert(held_.end(), plaintext.begin(), plaintext.end());
    return {};
  }
  ERR_clear_error();
  // With a memory BIO, SSL_write takes all of it (records of 16 KB) or fails for good.
  std::size_t done = 0;
  while (done < plaintext.size()) {
    const int chunk = static_cast<int>(std::min<std::size_t>(plaintext.size() - done, 1u << 30));
    const int n = SSL_write(ssl_, plaintext.data() + done, chunk);
    if (n <= 0) return failure(n, "TLS write failed");
    done += static_cast<std::size_t>(n);
  }
  return {};
}

void TlsSession::close_notify() {
  if (!handshake_done_ || failed_) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // queues close_notify in out_; we do not wait for the peer's
}

void TlsSession::take_output(std::vector<std::uint8_t>& out) {
  const std::size_t pending = BIO_ctrl_pending(out_);
  if (pending == 0) return;
  const std::size_t at = out.size();
  out.resize(at + pending);
  const int n = BIO_read(out_, out.data() + at, static_cast<int>(pending));
  out.resize(at + static_cast<std::size_t>(std::max(n, 0)));
}

bool TlsSession::has_output() const { return BIO_ctrl_pending(out_) > 0; }

Error TlsSession::failure(int rc, const char* doing) {
  failed_ = true;
  const int kind = SSL_get_error(ssl_, rc);
  std::string why = drain_errors();
  if (why.empty())
    why = kind == SSL_ERROR_SYSCALL ? "the peer broke off the handshake" : "error " + std::to_string(kind);
  // "certificate verify failed" alone does not say which check failed.
  if (const long verify = SSL_get_verify_result(ssl_); verify != X509_V_OK)
    why += " (" + std::string(X509_verify_cert_error_string(verify)) + ")";
  return Error(ErrorCode::kConnectionLost, std::string(doing) + ": " + why);
}

}  // namespace txmq::common
