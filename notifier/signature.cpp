#include "notifier/signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace txmq::notifier {

Result<std::string> decode_secret(std::string_view secret) {
  constexpr std::string_view kPrefix = "whsec_";
  if (!secret.starts_with(kPrefix)) return Error(ErrorCode::kInvalidArgument, "a secret starts with whsec_");
  auto key = base64_decode(secret.substr(kPrefix.size()));
  if (!key || key->empty()) return Error(ErrorCode::kInvalidArgument, "the secret after whsec_ is not base64");
  return std::move(*key);
}

std::string sign(std::string_view key, std::string_view id, std::int64_t timestamp_s, std::string_view body) {
  std::string content;
  content.reserve(id.size() + body.size() + 24);
  content.append(id).append(".").append(std::to_string(timestamp_s)).append(".").append(body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(content.data()),
       content.size(), mac, &len);
  return "v1," + base64_encode(std::string_view(reinterpret_cast<const char*>(mac), len));
}

}  // namespace txmq::notifier
