// common/scram: SCRAM-SHA-256 against RFC 7677's example, both sides joined in memory, and
// every message either side must refuse.

#include "common/scram.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <string>
#include <vector>

using namespace txmq;
using namespace txmq::common::scram;

namespace {

// RFC 7677 section 3.
const std::string kUser = "user";
const std::string kPassword = "pencil";
const std::string kClientNonce = "rOprNGfwEbeRWgbNEkqO";
const std::string kServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const std::string kSalt("\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36\xfa\x81", 16);
const std::string kClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const std::string kServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const std::string kClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
// The RFC's text; verified independently with Python's hashlib and hmac.
const std::string kServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// The example's StoredKey and ServerKey (computed independently with Python's hashlib), in
// the users file's text form.
const std::string kExampleText =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

const std::array<std::uint8_t, 16> kSecret{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

StoredCredentials example_credentials() { return derive(kPassword, kSalt, 4096); }

// A server exchange that has read client-first and answered it.
ServerExchange answered(const std::string& client_first, const StoredCredentials& credentials,
                        std::string* server_first = nullptr) {
  auto server = ServerExchange::start(client_first);
  REQUIRE(server.ok());
  std::string first = server->first_message(credentials);
  if (server_first) *server_first = first;
  return std::move(*server);
}

bool refused(const Status& s) { return !s.ok() && s.error().code == ErrorCode::kAuthenticationFailed; }
template <typename T>
bool refused(const Result<T>& r) {
  return !r.ok() && r.error().code == ErrorCode::kAuthenticationFailed;
}

// Flips one bit of the base64 character at index i (the lowest bit the last character of a
// 32-byte value may change: bit 2 of its value), keeping the text strict base64.
std::string flip_base64_char(std::string text, std::size_t i, int bit) {
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  text[i] = alphabet[alphabet.find(text[i]) ^ (1u << bit)];
  return text;
}

}  // namespace

TEST_CASE("the client side reproduces RFC 7677's example byte for byte") {
  ClientExchange client(kUser, kPassword, kClientNonce);
  CHECK(client.first_message() == kClientFirst);
  auto final = client.final_message(kServerFirst);
  REQUIRE(final.ok());
  CHECK(*final == kClientFinal);
  CHECK(client.verify_server(kServerFinal).ok());
}

TEST_CASE("the server side reproduces RFC 7677's example byte for byte") {
  auto server = ServerExchange::start(kClientFirst);
  REQUIRE(server.ok());
  CHECK(server->user() == kUser);
  CHECK(server->first_message(example_credentials(), kServerNonce) == kServerFirst);
  auto final = server->final_message(kClientFinal);
  REQUIRE(final.ok());
  CHECK(*final == kServerFinal);
}

TEST_CASE("derive gives the example's StoredKey and ServerKey") {
  CHECK(to_text(example_credentials()) == kExampleText);
}

TEST_CASE("a client and a server with random nonces and salt agree") {
  const StoredCredentials stored = derive("correct horse", kDefaultIterations);
  CHECK(stored.salt.size() == 16);
  CHECK(derive("correct horse", kDefaultIterations).salt != stored.salt);
  ClientExchange client("orders", "correct horse");
  std::string server_first;
  ServerExchange server = answered(client.first_message(), stored, &server_first);
  CHECK(server.user() == "orders");
  auto client_final = client.final_message(server_first);
  REQUIRE(client_final.ok());
  auto server_final = server.final_message(*client_final);
  REQUIRE(server_final.ok());
  CHECK(client.verify_server(*server_final).ok());
}

TEST_CASE("a user name with ',' and '=' crosses escaped and arrives whole") {
  ClientExchange client("a,b=c", "pw", "nonce");
  CHECK(client.first_message() == "n,,n=a=2Cb=3Dc,r=nonce");
  auto server = ServerExchange::start(client.first_message());
  REQUIRE(server.ok());
  CHECK(server->user() == "a,b=c");
}

TEST_CASE("a wrong password fails at the server's final check") {
  const StoredCredentials stored = derive("right", kDefaultIterations);
  ClientExchange client("orders", "wrong");
  std::string server_first;
  ServerExchange server = answered(client.first_message(), stored, &server_first);
  auto client_final = client.final_message(server_first);
  REQUIRE(client_final.ok());
  auto server_final = server.final_message(*client_final);
  CHECK(refused(server_final));
  CHECK(server_final.error().message == "wrong proof");
}

TEST_CASE("a proof that differs only in its last byte fails") {
  auto server = ServerExchange::start(kClientFirst);
  REQUIRE(server.ok());
  server->first_message(example_credentials(), kServerNonce);
  // The proof's 44th character is '='; the 43rd holds the last byte's low four bits.
  const std::size_t last = kClientFinal.size() - 2;
  CHECK(refused(server->final_message(flip_base64_char(kClientFinal, last, 2))));
  // The same exchange still takes the right proof: the refusal was the proof's alone.
  CHECK(server->final_message(kClientFinal).ok());
}

TEST_CASE("a proof is checked against all 32 bytes of StoredKey") {
  // Credentials whose StoredKey differs from the user's only in its last byte, and a proof
  // made for them from the user's real ClientKey: the key the server recovers hashes to the
  // real StoredKey, which matches the altered one in every byte but the last.
  const std::string auth_message = kClientFirst.substr(3) + "," + kServerFirst + "," +
                                   kClientFinal.substr(0, kClientFinal.find(",p="));
  auto hmac = [](const Key& key, const std::string& data) {
    Key out{};
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
         data.size(), out.data(), &len);
    return out;
  };
  StoredCredentials altered = example_credentials();
  const Key real_signature = hmac(altered.stored_key, auth_message);
  altered.stored_key.back() ^= 0x01;
  const Key altered_signature = hmac(altered.stored_key, auth_message);
  // ClientKey = proof XOR ClientSignature; the new proof is ClientKey XOR the altered one.
  unsigned char proof[33] = {};
  REQUIRE(EVP_DecodeBlock(proof, reinterpret_cast<const unsigned char*>(kClientFinal.data() + kClientFinal.size() - 44),
                          44) == 33);
  for (std::size_t i = 0; i < 32; ++i) proof[i] ^= real_signature[i] ^ altered_signature[i];
  std::string encoded(44, '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()), proof, 32);

  auto server = ServerExchange::start(kClientFirst);
  REQUIRE(server.ok());
  server->first_message(altered, kServerNonce);
  auto r = server->final_message(kClientFinal.substr(0, kClientFinal.size() - 44) + encoded);
  REQUIRE(refused(r));
  CHECK(r.error().message == "wrong proof");
}

TEST_CASE("base64 is read strictly: set padding bits are refused") {
  auto server = ServerExchange::start(kClientFirst);
  REQUIRE(server.ok());
  server->first_message(example_credentials(), kServerNonce);
  CHECK(refused(server->final_message(flip_base64_char(kClientFinal, kClientFinal.size() - 2, 0))));
}

TEST_CASE("a decoy is stable for a name, differs between names, and fails every proof") {
  const StoredCredentials a = decoy("ghost", kSecret);
  const StoredCredentials again = decoy("ghost", kSecret);
  const StoredCredentials b = decoy("phantom", kSecret);
  CHECK(a.salt == again.salt);
  CHECK(a.iterations == again.iterations);
  CHECK(a.salt.size() == 16);
  CHECK(a.salt != b.salt);
  const std::array<std::uint8_t, 16> other_secret{9};
  CHECK(decoy("ghost", other_secret).salt != a.salt);

  for (const std::string& password : std::vector<std::string>{"", "pencil", "ghost"}) {
    ClientExchange client("ghost", password);
    std::string server_first;
    ServerExchange server = answered(client.first_message(), a, &server_first);
    auto client_final = client.final_message(server_first);
    REQUIRE(client_final.ok());
    CHECK(refused(server.final_message(*client_final)));
  }
}

TEST_CASE("the client refuses iteration counts outside its bounds") {
  for (const std::string& count :
       std::vector<std::string>{"1000", "4095", "2097152", "0", "-4096", "04096", "4096x", ""}) {
    CAPTURE(count);
    ClientExchange client(kUser, kPassword, kClientNonce);
    CHECK(refused(client.final_message("r=" + kClientNonce + kServerNonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=" + count)));
  }
  ClientExchange client(kUser, kPassword, kClientNonce);
  auto r = client.final_message("r=" + kClientNonce + kServerNonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000");
  REQUIRE(!r.ok());
  CHECK(r.error().message == "iterations 1000 below 4096");
}

TEST_CASE("the client refuses a nonce that does not extend its own") {
  for (const std::string& nonce : std::vector<std::string>{"XOprNGfwEbeRWgbNEkqO" + kServerNonce, kServerNonce,
                                                           kClientNonce, kClientNonce.substr(1) + kServerNonce}) {
    CAPTURE(nonce);
    ClientExchange client(kUser, kPassword, kClientNonce);
    CHECK(refused(client.final_message("r=" + nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")));
  }
}

TEST_CASE("the client refuses malformed server-first messages") {
  for (const std::string& first : std::vector<std::string>{
           std::string("m=ext,") + kServerFirst, std::string(""),
           std::string("s=W22ZaJ0SNY7soEsUEjb6gQ==,r=") + kClientNonce + "x,i=4096",
           "r=" + kClientNonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096", "r=" + kClientNonce + "x,s=,i=4096",
           "r=" + kClientNonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==",
           "r=" + kClientNonce + "x,s=W22Z aJ0SNY7soEsUEjb6gQ==,i=4096"}) {
    CAPTURE(first);
    ClientExchange client(kUser, kPassword, kClientNonce);
    CHECK(refused(client.final_message(first)));
  }
  // Optional extensions after the iteration count are ignored, as RFC 5802 says.
  ClientExchange client(kUser, kPassword, kClientNonce);
  CHECK(client.final_message(kServerFirst + ",x=later").ok());
}

TEST_CASE("the client refuses a forged or refusing server-final") {
  ClientExchange client(kUser, kPassword, kClientNonce);
  CHECK(refused(client.verify_server(kServerFinal)));  // before client-final
  REQUIRE(client.final_message(kServerFirst).ok());
  CHECK(refused(client.verify_server(flip_base64_char(kServerFinal, kServerFinal.size() - 2, 2))));
  CHECK(refused(client.verify_server("v=" + std::string(43, 'A') + "=")));
  CHECK(refused(client.verify_server("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4")));  // unpadded
  CHECK(refused(client.verify_server("e=invalid-proof")));
  CHECK(refused(client.verify_server("")));
  CHECK(client.verify_server(kServerFinal).ok());
}

TEST_CASE("the server refuses channel binding, an authzid and malformed client-first messages") {
  for (const std::string& first : std::vector<std::string>{
           "p=tls-server-end-point,,n=user,r=abc", "y,,n=user,r=abc", "n,a=x,n=user,r=abc", "n,,n=us=2Xer,r=abc",
           "n,,n=us=er,r=abc", "n,,n=user=2,r=abc", "n,,n=,r=abc", "n,,n=user,r=", "n,,m=ext,n=user,r=abc",
           "n,,r=abc,n=user", "n,,n=user", "n=user,r=abc", "", "n,,n=user,r=a b", "n,,n=\xff,r=abc"}) {
    CAPTURE(first);
    CHECK(refused(ServerExchange::start(first)));
  }
  CHECK(ServerExchange::start("n,,n=user,r=abc,x=extension").ok());
}

TEST_CASE("the server refuses a client-final with another nonce or channel binding") {
  const std::string proof = kClientFinal.substr(kClientFinal.find(",p="));
  for (const std::string& final :
       std::vector<std::string>{"c=biws,r=" + kClientNonce + proof,                       // the client's nonce only
                                "c=biws,r=" + kClientNonce + kServerNonce + "x" + proof,  // a longer one
                                "c=eSws,r=" + kClientNonce + kServerNonce + proof,        // "y,," bound
                                "c=cD10bHMtdW5pcXVlLCw=,r=" + kClientNonce + kServerNonce + proof,  // "p=tls-unique,,"
                                "r=" + kClientNonce + kServerNonce + proof,                         // no c=
                                "c=biws,r=" + kClientNonce + kServerNonce,                          // no proof
                                "c=biws,r=" + kClientNonce + kServerNonce + ",p=dHzbZapWIk4j",      // short proof
                                kClientFinal + ",x=after"}) {                                       // proof not last
    CAPTURE(final);
    auto server = ServerExchange::start(kClientFirst);
    REQUIRE(server.ok());
    server->first_message(example_credentials(), kServerNonce);
    CHECK(refused(server->final_message(final)));
  }
}

TEST_CASE("the server takes a client-final only after its server-first, and only once") {
  auto server = ServerExchange::start(kClientFirst);
  REQUIRE(server.ok());
  CHECK(refused(server->final_message(kClientFinal)));
  server->first_message(example_credentials(), kServerNonce);
  CHECK(server->final_message(kClientFinal).ok());
  CHECK(refused(server->final_message(kClientFinal)));
}

TEST_CASE("a recorded proof does not pass a fresh exchange") {
  // The fresh exchange has a new server nonce: the recorded message fails on the nonce,
  // and the recorded proof under the new nonce fails as a proof.
  auto server = ServerExchange::start(kClientFirst);
  REQUIRE(server.ok());
  const std::string fresh_nonce = "a fresh server nonce";
  server->first_message(example_credentials(), fresh_nonce);
  CHECK(refused(server->final_message(kClientFinal)));
  auto again = ServerExchange::start(kClientFirst);
  REQUIRE(again.ok());
  again->first_message(example_credentials(), fresh_nonce);
  const std::string replayed = "c=biws,r=" + kClientNonce + fresh_nonce + kClientFinal.substr(kClientFinal.find(",p="));
  auto r = again->final_message(replayed);
  REQUIRE(refused(r));
  CHECK(r.error().message == "wrong proof");
}

TEST_CASE("to_text and from_text round trip") {
  const StoredCredentials c = derive("pw", 8192);
  auto back = from_text(to_text(c));
  REQUIRE(back.ok());
  CHECK(*back == c);
  auto example = from_text(kExampleText);
  REQUIRE(example.ok());
  CHECK(*example == example_credentials());
}

TEST_CASE("from_text refuses damaged texts without echoing them") {
  const std::string stored = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
  const std::string server = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
  for (const std::string& text : std::vector<std::string>{
           "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,              // wrong prefix
           "scram-sha-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,            // wrong prefix
           "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$" + stored + ":" + server,             // bad base64
           "SCRAM-SHA-256$4096:W22ZaJ0SNY7so!sUEjb6gQ==$" + stored + ":" + server,            // bad base64
           "SCRAM-SHA-256$4096:$" + stored + ":" + server,                                    // no salt
           "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server.substr(4),  // 29 bytes
           "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$W22ZaJ0SNY7soEsUEjb6gQ==:" + server,  // 16 bytes
           "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,               // iterations 0
           "SCRAM-SHA-256$1000:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,            // too few
           "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + ":" + server,               // not a number
           "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" + stored + server,                  // one key
           "SCRAM-SHA-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==:" + stored + ":" + server,            // separators swapped
           "", "SCRAM-SHA-256$"}) {
    CAPTURE(text);
    auto r = from_text(text);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::kInvalidArgument);
    CHECK(r.error().message.find(stored.substr(0, 8)) == std::string::npos);
    CHECK(r.error().message.find(server.substr(0, 8)) == std::string::npos);
  }
}
