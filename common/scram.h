#pragma once
// SCRAM-SHA-256 (RFC 5802, RFC 7677), the password exchange of the hello: the client proves
// it knows the password and the broker proves it holds the user's stored keys, while neither
// the password nor anything that can be replayed as it crosses the wire or sits on disk.
//
// The four messages (RFC 5802 section 5; no channel binding, so the GS2 header is "n,,"):
//   client-first   n,,n=<user>,r=<client nonce>
//   server-first   r=<client nonce><server nonce>,s=<salt, base64>,i=<iterations>
//   client-final   c=biws,r=<the whole nonce>,p=<ClientProof, base64>
//   server-final   v=<ServerSignature, base64>
// User names are UTF-8 with '=' and ',' escaped as "=3D" and "=2C" on the wire. Passwords
// are used as their UTF-8 bytes: no SASLprep (documented in the README; ASCII passwords
// are the same either way).
//
// The broker keeps only StoredCredentials (salt, iterations, StoredKey, ServerKey): enough
// to check a proof and to sign, not enough to log in. For a user it does not know it answers
// with decoy() credentials, so that the exchange reads the same until the final proof fails.
//
// Errors: every failure is kAuthenticationFailed with a reason for the log ("malformed
// client-first message", "nonce mismatch", "wrong proof", "iterations 100 below 4096");
// the broker never sends that reason to the client.
// Concurrency: none; an exchange belongs to one thread. derive() runs PBKDF2 and costs
// about a millisecond per 4096 iterations.

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace txmq::common::scram {

inline constexpr std::string_view kMechanism = "SCRAM-SHA-256";
// RFC 7677 asks for at least 4096; a client refuses a server-first message with fewer
// (a broker, or a man in the middle, asking for a cheap hash) and with more than kMaxIterations
// (a broker making the client spin).
inline constexpr std::uint32_t kDefaultIterations = 4096;
inline constexpr std::uint32_t kMinIterations = 4096;
inline constexpr std::uint32_t kMaxIterations = 1u << 20;

using Key = std::array<std::uint8_t, 32>;

// What the broker keeps for one user.
struct StoredCredentials {
  std::string salt;  // raw bytes (16 random ones from derive())
  std::uint32_t iterations = kDefaultIterations;
  Key stored_key{};  // H(HMAC(SaltedPassword, "Client Key"))
  Key server_key{};  // HMAC(SaltedPassword, "Server Key")
  bool operator==(const StoredCredentials&) const = default;
};

// Derives a user's credentials from a password with a fresh random salt (16 bytes).
StoredCredentials derive(std::string_view password, std::uint32_t iterations = kDefaultIterations);
// The same with a given salt: deterministic, for tests (RFC 7677's example) and decoys.
StoredCredentials derive(std::string_view password, std::string_view salt, std::uint32_t iterations);

// Credentials for a user name that no user has: the same name always gets the same salt
// (HMAC(secret, name)), so a guesser asking twice cannot tell it from a real user; the keys
// are random and no proof matches them. secret: the broker's, random per start is fine.
StoredCredentials decoy(std::string_view user, std::span<const std::uint8_t> secret,
                        std::uint32_t iterations = kDefaultIterations);

// The text form of the users file, as PostgreSQL keeps SCRAM secrets:
//   SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
std::string to_text(const StoredCredentials& credentials);
// kInvalidArgument saying what is wrong with text (never echoing the keys).
Result<StoredCredentials> from_text(std::string_view text);

// The client's side of one exchange.
class ClientExchange {
 public:
  // The nonce is 24 random bytes, base64; tests may give one.
  ClientExchange(std::string user, std::string password);
  ClientExchange(std::string user, std::string password, std::string nonce);

  // client-first.
  std::string first_message() const;
  // server-first -> client-final. kAuthenticationFailed: malformed, the nonce does not
  // start with ours, iterations outside [kMinIterations, kMaxIterations].
  Result<std::string> final_message(std::string_view server_first);
  // Checks server-final's signature: a broker that does not hold this user's keys cannot
  // make it. kAuthenticationFailed ("e=..." from the broker, malformed, wrong signature).
  Status verify_server(std::string_view server_final) const;

 private:
  std::string user_;
  std::string password_;
  std::string nonce_;
  std::string client_first_bare_;
  std::string auth_message_;
  Key server_key_{};
};

// The broker's side of one exchange.
class ServerExchange {
 public:
  // Reads client-first. kAuthenticationFailed: not a SCRAM client-first message, channel
  // binding asked for ("p=" or "y,,"), an authzid, a bad escape in the user name, an empty
  // user name or nonce.
  static Result<ServerExchange> start(std::string_view client_first);

  // The user the client names (unescaped).
  const std::string& user() const { return user_; }

  // server-first for these credentials (the user's, or decoy()'s). The server nonce is 24
  // random bytes, base64; tests may give one.
  std::string first_message(const StoredCredentials& credentials);
  std::string first_message(const StoredCredentials& credentials, std::string server_nonce);

  // Checks client-final: server-final on success. kAuthenticationFailed: malformed, channel
  // binding not "biws", nonce not the whole nonce, wrong proof.
  Result<std::string> final_message(std::string_view client_final);

 private:
  ServerExchange() = default;
  std::string user_;
  std::string client_nonce_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string nonce_;
  StoredCredentials credentials_;
};

}  // namespace txmq::common::scram
