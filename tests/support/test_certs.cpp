#include "tests/support/test_certs.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>

namespace txmq::test {
namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "test_certs: %s failed\n", what);
  ERR_print_errors_fp(stderr);
  std::abort();
}

EVP_PKEY* new_key() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (!key) die("EVP_EC_gen");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext || X509_add_ext(cert, ext, -1) != 1) die("X509_add_ext");
  X509_EXTENSION_free(ext);
}

// A certificate for key named cn, valid from an hour ago for a day (expired: from two days
// ago until yesterday), signed by issuer's key (itself when issuer is null). extensions:
// (nid, value) pairs in OpenSSL's config syntax.
X509* new_cert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key,
               std::initializer_list<std::pair<int, const char*>> extensions, bool expired = false) {
  static long serial = 1;
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), expired ? -2 * 24 * 3600 : -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), expired ? -24 * 3600 : 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
  for (auto [nid, value] : extensions) add_extension(cert, issuer ? issuer : cert, nid, value);
  if (X509_sign(cert, issuer_key ? issuer_key : key, EVP_sha256()) == 0) die("X509_sign");
  return cert;
}

void write_cert(const std::string& path, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f || PEM_write_X509(f, cert) != 1) die("PEM_write_X509");
  std::fclose(f);
}

void write_key(const std::string& path, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f || PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) != 1) die("PEM_write_PrivateKey");
  std::fclose(f);
}

X509* new_ca(EVP_PKEY* key, const char* cn) {
  return new_cert(key, cn, nullptr, nullptr,
                  {{NID_basic_constraints, "critical,CA:TRUE"},
                   {NID_key_usage, "critical,keyCertSign,cRLSign"},
                   {NID_subject_key_identifier, "hash"}});
}

// Writes a leaf certificate and its key signed by ca.
void leaf(const std::string& cert_path, const std::string& key_path, const char* cn, X509* ca, EVP_PKEY* ca_key,
          std::initializer_list<std::pair<int, const char*>> extensions, bool expired = false) {
  EVP_PKEY* key = new_key();
  X509* cert = new_cert(key, cn, ca, ca_key, extensions, expired);
  write_cert(cert_path, cert);
  write_key(key_path, key);
  X509_free(cert);
  EVP_PKEY_free(key);
}

}  // namespace

TestCerts make_test_certs(const std::string& dir) {
  TestCerts c;
  auto at = [&](const char* name) { return dir + "/" + name; };
  c.ca_cert = at("ca.pem");
  c.server_cert = at("server.pem");
  c.server_key = at("server-key.pem");
  c.client_cert = at("client.pem");
  c.client_key = at("client-key.pem");
  c.other_ca_cert = at("other-ca.pem");
  c.other_client_cert = at("other-client.pem");
  c.other_client_key = at("other-client-key.pem");
  c.wrong_host_cert = at("wrong-host.pem");
  c.wrong_host_key = at("wrong-host-key.pem");
  c.expired_client_cert = at("expired-client.pem");
  c.expired_client_key = at("expired-client-key.pem");
  c.warehouse_cert = at("warehouse.pem");
  c.warehouse_key = at("warehouse-key.pem");

  EVP_PKEY* ca_key = new_key();
  X509* ca = new_ca(ca_key, "txmq test CA");
  write_cert(c.ca_cert, ca);
  EVP_PKEY* other_key = new_key();
  X509* other = new_ca(other_key, "some other CA");
  write_cert(c.other_ca_cert, other);

  leaf(c.server_cert, c.server_key, "txmq-broker", ca, ca_key,
       {{NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost"}, {NID_ext_key_usage, "serverAuth"}});
  leaf(c.client_cert, c.client_key, "txmq-test-client", ca, ca_key, {{NID_ext_key_usage, "clientAuth"}});
  leaf(c.other_client_cert, c.other_client_key, "intruder", other, other_key, {{NID_ext_key_usage, "clientAuth"}});
  leaf(c.expired_client_cert, c.expired_client_key, "txmq-test-client", ca, ca_key,
       {{NID_ext_key_usage, "clientAuth"}}, true);
  leaf(c.warehouse_cert, c.warehouse_key, "warehouse", ca, ca_key, {{NID_ext_key_usage, "clientAuth"}});
  leaf(c.wrong_host_cert, c.wrong_host_key, "elsewhere", ca, ca_key,
       {{NID_subject_alt_name, "DNS:elsewhere.invalid"}, {NID_ext_key_usage, "serverAuth"}});

  X509_free(other);
  EVP_PKEY_free(other_key);
  X509_free(ca);
  EVP_PKEY_free(ca_key);
  return c;
}

}  // namespace txmq::test
