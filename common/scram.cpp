#include "common/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "common/base64.h"
#include "common/utf8.h"

namespace txmq::common::scram {
namespace {

constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kNonceBytes = 24;
// base64("n,,"): the GS2 header of a client without channel binding, echoed in client-final.
constexpr std::string_view kChannelBinding = "biws";
constexpr std::string_view kTextPrefix = "SCRAM-SHA-256$";

Error failed(std::string reason) { return Error(ErrorCode::kAuthenticationFailed, std::move(reason)); }

// Without randomness there is no safe salt, nonce or decoy; going on would be worse than
// stopping, and OpenSSL's generator fails only on a broken system.
std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    std::fprintf(stderr, "txmq: fatal: RAND_bytes failed\n");
    std::abort();
  }
  return out;
}

std::string_view as_chars(const Key& key) { return {reinterpret_cast<const char*>(key.data()), key.size()}; }

Key hmac(std::string_view key, std::string_view data) {
  Key out{};
  unsigned int len = 0;
  // OpenSSL reads a null key as "reuse the last one"; an empty key must still be a key.
  static const char kEmpty = 0;
  HMAC(EVP_sha256(), key.empty() ? &kEmpty : key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len);
  return out;
}

Key sha256(const Key& data) {
  Key out{};
  SHA256(data.data(), data.size(), out.data());
  return out;
}

// SaltedPassword's two children (RFC 5802 section 3); the client needs ClientKey itself.
struct Keys {
  Key client_key;
  Key server_key;
};

Keys salted_keys(std::string_view password, std::string_view salt, std::uint32_t iterations) {
  Key salted{};
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                    static_cast<int>(iterations), EVP_sha256(), static_cast<int>(salted.size()), salted.data());
  Keys keys{hmac(as_chars(salted), "Client Key"), hmac(as_chars(salted), "Server Key")};
  OPENSSL_cleanse(salted.data(), salted.size());
  return keys;
}

bool equal(const Key& a, const Key& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }



std::optional<Key> unbase64_key(std::string_view text) {
  auto bytes = base64_decode(text);
  if (!bytes || bytes->size() != Key{}.size()) return std::nullopt;
  Key key{};
  std::copy(bytes->begin(), bytes->end(), key.begin());
  return key;
}

// RFC 5802's posit-number: decimal, no sign, no leading zero.
std::optional<std::uint32_t> parse_count(std::string_view text) {
  if (text.empty() || text[0] == '0') return std::nullopt;
  std::uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// printable = %x21-2B / %x2D-7E: a nonce never holds ',' or a space.
bool valid_nonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce)
    if (c < 0x21 || c > 0x7E || c == ',') return false;
  return true;
}

std::string escape_name(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '=')
      out += "=3D";
    else if (c == ',')
      out += "=2C";
    else
      out += c;
  }
  return out;
}

// saslname: '=' only as "=2C" or "=3D", never a bare ','; valid UTF-8.
std::optional<std::string> unescape_name(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '=') {
      out += text[i];
      continue;
    }
    const std::string_view escape = text.substr(i, 3);
    if (escape == "=2C")
      out += ',';
    else if (escape == "=3D")
      out += '=';
    else
      return std::nullopt;
    i += 2;
  }
  if (!valid_utf8(out)) return std::nullopt;
  return out;
}

// A message split at its commas, each attribute "x=value" taken in the order the RFC gives.
// Values never hold ',' (names escape it; nonces and base64 cannot), so splitting first is
// exact.
class Attributes {
 public:
  explicit Attributes(std::string_view message) {
    std::size_t start = 0;
    while (true) {
      const std::size_t comma = message.find(',', start);
      parts_.push_back(message.substr(start, comma == std::string_view::npos ? comma : comma - start));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
  }

  // The next attribute's value when it is named `name`; advances past it.
  std::optional<std::string_view> take(char name) {
    if (next_ >= parts_.size()) return std::nullopt;
    std::string_view part = parts_[next_];
    if (part.size() < 2 || part[0] != name || part[1] != '=') return std::nullopt;
    ++next_;
    return part.substr(2);
  }
  bool next_is(char name) const {
    return next_ < parts_.size() && parts_[next_].size() >= 2 && parts_[next_][0] == name && parts_[next_][1] == '=';
  }
  // Whether what remains is only optional extensions ("x=value", x a letter other than
  // those this message defines, listed in `reserved`), which RFC 5802 says a peer ignores.
  bool only_extensions(std::string_view reserved) const {
    for (std::size_t i = next_; i < parts_.size(); ++i) {
      std::string_view part = parts_[i];
      if (part.size() < 2 || part[1] != '=') return false;
      const char c = part[0];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
      if (reserved.find(c) != std::string_view::npos) return false;
    }
    return true;
  }

 private:
  std::vector<std::string_view> parts_;
  std::size_t next_ = 0;
};

}  // namespace

StoredCredentials derive(std::string_view password, std::uint32_t iterations) {
  return derive(password, random_bytes(kSaltBytes), iterations);
}

StoredCredentials derive(std::string_view password, std::string_view salt, std::uint32_t iterations) {
  const Keys keys = salted_keys(password, salt, iterations);
  return {std::string(salt), iterations, sha256(keys.client_key), keys.server_key};
}

StoredCredentials decoy(std::string_view user, std::span<const std::uint8_t> secret, std::uint32_t iterations) {
  // The salt is what a guesser sees: the same for a name every time, as a real user's is.
  // The keys are never seen (server-final follows only a matching proof), so random ones
  // make every proof fail.
  const std::string_view key(reinterpret_cast<const char*>(secret.data()), secret.size());
  const Key mac = hmac(key, std::string("decoy salt\0", 11) + std::string(user));
  StoredCredentials c;
  c.salt.assign(reinterpret_cast<const char*>(mac.data()), kSaltBytes);
  c.iterations = iterations;
  const std::string random = random_bytes(2 * c.stored_key.size());
  std::copy(random.begin(), random.begin() + 32, c.stored_key.begin());
  std::copy(random.begin() + 32, random.end(), c.server_key.begin());
  return c;
}

std::string to_text(const StoredCredentials& c) {
  return std::string(kTextPrefix) + std::to_string(c.iterations) + ":" + base64_encode(c.salt) + "$" +
         base64_encode(as_chars(c.stored_key)) + ":" + base64_encode(as_chars(c.server_key));
}

Result<StoredCredentials> from_text(std::string_view text) {
  auto invalid = [](std::string what) { return Error(ErrorCode::kInvalidArgument, std::move(what)); };
  if (!text.starts_with(kTextPrefix)) return invalid("the secret does not start with 'SCRAM-SHA-256$'");
  text.remove_prefix(kTextPrefix.size());
  const std::size_t colon = text.find(':'), dollar = text.find('$');
  if (colon == std::string_view::npos || dollar == std::string_view::npos || dollar < colon)
    return invalid("the secret is not SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");
  const std::string_view keys = text.substr(dollar + 1);
  const std::size_t key_colon = keys.find(':');
  if (key_colon == std::string_view::npos)
    return invalid("the secret is not SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");

  StoredCredentials c;
  const auto iterations = parse_count(text.substr(0, colon));
  if (!iterations) return invalid("the secret's iteration count is not a positive number");
  // A client refuses a count outside these bounds, so such a user could never log in.
  if (*iterations < kMinIterations || *iterations > kMaxIterations)
    return invalid("the secret's iteration count " + std::to_string(*iterations) + " is outside [" +
                   std::to_string(kMinIterations) + ", " + std::to_string(kMaxIterations) + "]");
  c.iterations = *iterations;
  auto salt = base64_decode(text.substr(colon + 1, dollar - colon - 1));
  if (!salt || salt->empty()) return invalid("the secret's salt is not base64");
  c.salt = std::move(*salt);
  auto stored = unbase64_key(keys.substr(0, key_colon));
  auto server = unbase64_key(keys.substr(key_colon + 1));
  if (!stored || !server) return invalid("the secret's keys are not 32 bytes of base64 each");
  c.stored_key = *stored;
  c.server_key = *server;
  return c;
}

ClientExchange::ClientExchange(std::string user, std::string password)
    : ClientExchange(std::move(user), std::move(password), base64_encode(random_bytes(kNonceBytes))) {}

ClientExchange::ClientExchange(std::string user, std::string password, std::string nonce)
    : user_(std::move(user)), password_(std::move(password)), nonce_(std::move(nonce)) {
  client_first_bare_ = "n=" + escape_name(user_) + ",r=" + nonce_;
}

std::string ClientExchange::first_message() const { return "n,," + client_first_bare_; }

Result<std::string> ClientExchange::final_message(std::string_view server_first) {
  Attributes a(server_first);
  if (a.next_is('m')) return failed("server-first message asks for an unknown mandatory extension");
  const auto nonce = a.take('r');
  const auto salt_text = a.take('s');
  const auto iterations_text = a.take('i');
  if (!nonce || !salt_text || !iterations_text || !a.only_extensions("mrsi"))
    return failed("malformed server-first message");
  // The broker's part must follow ours: a reply to someone else's exchange, or one that
  // drops our nonce, could be a replay.
  if (!valid_nonce(*nonce) || nonce->size() <= nonce_.size() || !nonce->starts_with(nonce_))
    return failed("nonce mismatch");
  auto salt = base64_decode(*salt_text);
  if (!salt || salt->empty()) return failed("malformed server-first message (salt)");
  const auto iterations = parse_count(*iterations_text);
  if (!iterations) return failed("malformed server-first message (iterations)");
  if (*iterations < kMinIterations)
    return failed("iterations " + std::to_string(*iterations) + " below " + std::to_string(kMinIterations));
  if (*iterations > kMaxIterations)
    return failed("iterations " + std::to_string(*iterations) + " above " + std::to_string(kMaxIterations));

  const Keys keys = salted_keys(password_, *salt, *iterations);
  const std::string without_proof = "c=" + std::string(kChannelBinding) + ",r=" + std::string(*nonce);
  auth_message_ = client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  const Key signature = hmac(as_chars(sha256(keys.client_key)), auth_message_);
  Key proof{};
  for (std::size_t i = 0; i < proof.size(); ++i) proof[i] = keys.client_key[i] ^ signature[i];
  server_key_ = keys.server_key;
  return without_proof + ",p=" + base64_encode(as_chars(proof));
}

Status ClientExchange::verify_server(std::string_view server_final) const {
  if (auth_message_.empty()) return failed("server-final message before client-final");
  Attributes a(server_final);
  if (auto e = a.take('e')) return failed("the broker refused: " + std::string(*e));
  const auto v = a.take('v');
  if (!v || !a.only_extensions("ev")) return failed("malformed server-final message");
  const auto signature = unbase64_key(*v);
  if (!signature) return failed("malformed server-final message (signature)");
  if (!equal(*signature, hmac(as_chars(server_key_), auth_message_)))
    return failed("wrong server signature: the broker does not hold this user's keys");
  return {};
}

Result<ServerExchange> ServerExchange::start(std::string_view client_first) {
  // GS2 header: "n,," only. "p=..." asks for channel binding, which the broker does not
  // do; "y,," says the client could bind but thinks we cannot, which on a TLS link would
  // mean someone stripped it, so we refuse it too.
  if (client_first.starts_with("p=")) return failed("client-first message asks for channel binding");
  if (client_first.starts_with("y,")) return failed("client-first message says channel binding was stripped");
  if (!client_first.starts_with("n,")) return failed("malformed client-first message");
  client_first.remove_prefix(2);
  if (!client_first.starts_with(",")) return failed("client-first message names an authorization identity");
  client_first.remove_prefix(1);

  ServerExchange x;
  x.client_first_bare_ = std::string(client_first);
  Attributes a(client_first);
  if (a.next_is('m')) return failed("client-first message asks for an unknown mandatory extension");
  const auto name = a.take('n');
  const auto nonce = a.take('r');
  if (!name || !nonce || !a.only_extensions("mnr")) return failed("malformed client-first message");
  auto user = unescape_name(*name);
  if (!user) return failed("malformed client-first message (user name)");
  if (user->empty()) return failed("malformed client-first message (empty user name)");
  if (!valid_nonce(*nonce)) return failed("malformed client-first message (nonce)");
  x.user_ = std::move(*user);
  x.client_nonce_ = std::string(*nonce);
  return x;
}

std::string ServerExchange::first_message(const StoredCredentials& credentials) {
  return first_message(credentials, base64_encode(random_bytes(kNonceBytes)));
}

std::string ServerExchange::first_message(const StoredCredentials& credentials, std::string server_nonce) {
  credentials_ = credentials;
  nonce_ = client_nonce_ + server_nonce;
  server_first_ = "r=" + nonce_ + ",s=" + base64_encode(credentials.salt) + ",i=" + std::to_string(credentials.iterations);
  return server_first_;
}

Result<std::string> ServerExchange::final_message(std::string_view client_final) {
  if (server_first_.empty()) return failed("client-final message before server-first");
  const std::size_t p = client_final.rfind(",p=");
  if (p == std::string_view::npos) return failed("malformed client-final message (no proof)");
  const std::string_view without_proof = client_final.substr(0, p);
  Attributes a(without_proof);
  const auto binding = a.take('c');
  const auto nonce = a.take('r');
  if (!binding || !nonce || !a.only_extensions("cpr")) return failed("malformed client-final message");
  if (*binding != kChannelBinding) return failed("client-final message's channel binding is not 'biws'");
  if (*nonce != nonce_) return failed("nonce mismatch");
  const auto proof = unbase64_key(client_final.substr(p + 3));
  if (!proof) return failed("malformed client-final message (proof)");

  const std::string auth_message = client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  const Key signature = hmac(as_chars(credentials_.stored_key), auth_message);
  Key client_key{};
  for (std::size_t i = 0; i < client_key.size(); ++i) client_key[i] = (*proof)[i] ^ signature[i];
  if (!equal(sha256(client_key), credentials_.stored_key)) return failed("wrong proof");
  // One exchange, one proof: a second client-final on this exchange is refused.
  server_first_.clear();
  return "v=" + base64_encode(as_chars(hmac(as_chars(credentials_.server_key), auth_message)));
}

}  // namespace txmq::common::scram
