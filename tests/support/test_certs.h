#pragma once
// Certificates for TLS tests, made at run time with OpenSSL's C API (never checked in): a
// CA, a broker certificate it signed for 127.0.0.1 and localhost, a client certificate it
// signed, and the near misses the refusal tests need. Keys are P-256 (fast to make).
// Everything is written as PEM files into the directory given; the paths are returned.
// Not thread-safe only in the sense that two calls must not share a directory.

#include <string>

namespace txmq::test {

struct TestCerts {
  std::string ca_cert;        // the CA every test trusts
  std::string server_cert;    // CN=txmq-broker, SAN IP:127.0.0.1, DNS:localhost; by ca_cert
  std::string server_key;
  std::string client_cert;    // CN=txmq-test-client, client auth; by ca_cert
  std::string client_key;
  std::string other_ca_cert;  // a CA that signed nothing here: trusting only it is wrong
  std::string other_client_cert;  // CN=intruder, signed by other_ca_cert
  std::string other_client_key;
  std::string wrong_host_cert;    // SAN DNS:elsewhere.invalid only; by ca_cert
  std::string wrong_host_key;
  std::string expired_client_cert;  // CN=txmq-test-client by ca_cert, expired yesterday
  std::string expired_client_key;
  std::string warehouse_cert;       // CN=warehouse, client auth; by ca_cert (a user's identity)
  std::string warehouse_key;
};

// Writes the files into dir (which must exist). Aborts the test process on an OpenSSL
// failure: no TLS test can run without them.
TestCerts make_test_certs(const std::string& dir);

}  // namespace txmq::test
