#pragma once
// Verifies a Standard Webhooks signature, as txmq-notifier signs its requests:
//
//   webhook-signature: v1,<base64 of HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>
//
// where key is the base64-decoded part of the secret after "whsec_". The header may carry
// several space-separated signatures (during a key rotation); one match is enough. The
// timestamp must be within `tolerance` of now, so a captured request cannot be replayed
// later. Comparison is constant-time (CRYPTO_memcmp).
//
// Threads: verify() is const and may be called from any thread.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace orders_example {

class WebhookVerifier {
 public:
  // secret: "whsec_<base64>". An unusable secret makes every verify() fail.
  WebhookVerifier(std::string_view secret, std::chrono::seconds tolerance);

  // Empty when the request is authentic and fresh; otherwise why not.
  std::string verify(std::string_view id, std::string_view timestamp, std::string_view body,
                     std::string_view signature_header, std::int64_t now_unix_seconds) const;

  // "v1,<base64>" for these inputs: what the sender computes (the runner's forged request
  // uses another key to prove a wrong signature is refused).
  std::string sign(std::string_view id, std::string_view timestamp, std::string_view body) const;

 private:
  std::string key_;  // the raw key bytes
  std::chrono::seconds tolerance_;
};

}  // namespace orders_example
