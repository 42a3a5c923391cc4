#include "common/resolve.h"

#include <netdb.h>

#include <cstring>

namespace txmq::common {

struct Resolution {
  uv_getaddrinfo_t req;  // first: the callback gets a pointer to it
  uv_idle_t idle;        // reports a lookup that could not start, from the loop
  bool started = false;  // req is in flight (else idle is)
  ResolveFn cb;          // empty once cancelled
  std::string host;      // for the error message
  Error start_error;     // why the lookup could not start
};

namespace {

addrinfo hints() {
  addrinfo h{};
  h.ai_family = AF_UNSPEC;  // IPv4 and IPv6: "localhost" may be either or both
  h.ai_socktype = SOCK_STREAM;
  h.ai_protocol = IPPROTO_TCP;
  // No AI_ADDRCONFIG: it hides ::1 on a machine whose only IPv6 address is loopback, and
  // loopback is where txmq listens by default.
  h.ai_flags = AI_NUMERICSERV;
  return h;
}

// libuv turns getaddrinfo's EAI_* codes into its own; this turns them back so that the
// message is the C library's own gai_strerror text.
int eai_of(int uv_code) {
  switch (uv_code) {
#ifdef EAI_ADDRFAMILY
    case UV_EAI_ADDRFAMILY: return EAI_ADDRFAMILY;
#endif
    case UV_EAI_AGAIN: return EAI_AGAIN;
    case UV_EAI_BADFLAGS: return EAI_BADFLAGS;
    case UV_EAI_FAIL: return EAI_FAIL;
    case UV_EAI_FAMILY: return EAI_FAMILY;
    case UV_EAI_MEMORY: return EAI_MEMORY;
#ifdef EAI_NODATA
    case UV_EAI_NODATA: return EAI_NODATA;
#endif
    case UV_EAI_NONAME: return EAI_NONAME;
    case UV_EAI_OVERFLOW: return EAI_OVERFLOW;
    case UV_EAI_SERVICE: return EAI_SERVICE;
    case UV_EAI_SOCKTYPE: return EAI_SOCKTYPE;
    default: return 0;
  }
}

Error resolve_error(const std::string& host, int uv_code) {
  const int eai = eai_of(uv_code);
  return Error(ErrorCode::kNotConnected,
               "cannot resolve '" + host + "': " + (eai != 0 ? gai_strerror(eai) : uv_strerror(uv_code)));
}

Result<Addresses> collect(const std::string& host, int status, addrinfo* res) {
  if (status != 0) {
    if (res) uv_freeaddrinfo(res);
    return resolve_error(host, status);
  }
  Addresses out;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    sockaddr_storage s{};
    std::memcpy(&s, a->ai_addr, a->ai_addrlen);
    out.push_back(s);
  }
  uv_freeaddrinfo(res);
  if (out.empty()) return Error(ErrorCode::kNotConnected, "cannot resolve '" + host + "': no IPv4 or IPv6 address");
  return out;
}

}  // namespace

Resolution* resolve_async(uv_loop_t* loop, const HostPort& hp, ResolveFn cb) {
  auto* r = new Resolution{};
  r->cb = std::move(cb);
  r->host = hp.host;
  const addrinfo h = hints();
  const std::string port = std::to_string(hp.port);
  int rc = uv_getaddrinfo(
      loop, &r->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* r = reinterpret_cast<Resolution*>(req);
        auto fn = std::move(r->cb);
        auto result = collect(r->host, status, res);
        delete r;
        if (fn) fn(std::move(result));  // empty: cancelled, the owner no longer listens
      },
      hp.host.c_str(), port.c_str(), &h);
  r->started = rc == 0;
  if (rc != 0) {
    // Reported like a failed lookup, from the loop, so that callers have one path.
    r->start_error = resolve_error(hp.host, rc);
    r->idle.data = r;
    uv_idle_init(loop, &r->idle);
    uv_idle_start(&r->idle, [](uv_idle_t* h) {
      auto* r = static_cast<Resolution*>(h->data);
      uv_close(reinterpret_cast<uv_handle_t*>(h),
               [](uv_handle_t* h) { delete static_cast<Resolution*>(h->data); });
      if (auto fn = std::move(r->cb)) fn(r->start_error);
    });
  }
  return r;
}

void cancel_resolve(Resolution* r) {
  if (r == nullptr) return;
  r->cb = nullptr;
  if (r->started) uv_cancel(reinterpret_cast<uv_req_t*>(&r->req));
}

Result<Addresses> resolve_now(uv_loop_t* loop, const HostPort& hp) {
  uv_getaddrinfo_t req{};
  const addrinfo h = hints();
  const std::string port = std::to_string(hp.port);
  int rc = uv_getaddrinfo(loop, &req, nullptr, hp.host.c_str(), port.c_str(), &h);
  return collect(hp.host, rc, rc == 0 ? req.addrinfo : nullptr);
}

Result<sockaddr_storage> listen_address(uv_loop_t* loop, std::string_view setting, const std::string& text) {
  auto hp = parse_host_port(text);
  if (!hp) return Error(ErrorCode::kInvalidArgument, std::string(setting) + ": " + hp.error().message);
  auto addresses = resolve_now(loop, *hp);
  if (!addresses) return Error(ErrorCode::kInvalidArgument, std::string(setting) + ": " + addresses.error().message);
  return addresses->front();
}

HostPort host_port_of(const sockaddr_storage& address) {
  char host[INET6_ADDRSTRLEN] = "?";
  uv_ip_name(reinterpret_cast<const sockaddr*>(&address), host, sizeof(host));
  const std::uint16_t port = address.ss_family == AF_INET6
                                 ? ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port)
                                 : ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
  return HostPort{host, port};
}

std::string address_text(const sockaddr_storage& address) { return host_port_of(address).to_string(); }

}  // namespace txmq::common
