#include "webhook_signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <charconv>
#include <cstdlib>

namespace orders_example {
namespace {

std::string base64_encode(const unsigned char* data, std::size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<std::size_t>(len));
  return out;
}

// Empty on malformed input (and for an empty input, which is no key either).
std::string base64_decode(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return {};
  std::string out(3 * text.size() / 4, '\0');
  const int len = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (len < 0) return {};
  // EVP_DecodeBlock counts the padding as zero bytes.
  std::size_t padding = 0;
  if (text.back() == '=') ++padding;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++padding;
  out.resize(static_cast<std::size_t>(len) - padding);
  return out;
}

}  // namespace

WebhookVerifier::WebhookVerifier(std::string_view secret, std::chrono::seconds tolerance) : tolerance_(tolerance) {
  constexpr std::string_view kPrefix = "whsec_";
  if (secret.substr(0, kPrefix.size()) == kPrefix) key_ = base64_decode(secret.substr(kPrefix.size()));
}

std::string WebhookVerifier::sign(std::string_view id, std::string_view timestamp, std::string_view body) const {
  std::string signed_content;
  signed_content.reserve(id.size() + timestamp.size() + body.size() + 2);
  signed_content.append(id).append(".").append(timestamp).append(".").append(body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(signed_content.data()), signed_content.size(), mac, &mac_len);
  return "v1," + base64_encode(mac, mac_len);
}

std::string WebhookVerifier::verify(std::string_view id, std::string_view timestamp, std::string_view body,
                                    std::string_view signature_header, std::int64_t now) const {
  if (key_.empty()) return "no usable secret configured";
  if (id.empty() || timestamp.empty() || signature_header.empty()) return "missing webhook-* headers";
  std::int64_t ts = 0;
  auto [ptr, ec] = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), ts);
  if (ec != std::errc() || ptr != timestamp.data() + timestamp.size()) return "bad webhook-timestamp";
  if (std::llabs(now - ts) > tolerance_.count()) return "webhook-timestamp outside the tolerance";

  const std::string expected = sign(id, timestamp, body);
  std::size_t pos = 0;
  while (pos < signature_header.size()) {
    std::size_t end = signature_header.find(' ', pos);
    if (end == std::string_view::npos) end = signature_header.size();
    std::string_view candidate = signature_header.substr(pos, end - pos);
    if (candidate.size() == expected.size() && CRYPTO_memcmp(candidate.data(), expected.data(), expected.size()) == 0)
      return {};
    pos = end + 1;
  }
  return "no matching signature";
}

}  // namespace orders_example
