#pragma once
// Host names to socket addresses, with libuv's getaddrinfo, for every txmq address: the
// client's broker, the broker's listen and metrics_listen.
//
// A host is a name ("localhost", "broker.internal") or an IP literal ("127.0.0.1", "::1");
// a literal resolves to itself without a lookup. The addresses come in getaddrinfo's order
// (RFC 6724: the preferred first), IPv4 and IPv6 alike, one per address, TCP only.
// Errors: kNotConnected whose message names the host and gives gai_strerror's reason
// ("cannot resolve 'no-such-host.invalid': Name or service not known"). It is retryable: a
// name that does not resolve now may resolve later.

#include <sys/socket.h>
#include <uv.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/address.h"
#include "common/result.h"

namespace txmq::common {

using Addresses = std::vector<sockaddr_storage>;
using ResolveFn = std::function<void(Result<Addresses>)>;

// One lookup in flight, owned by the loop until its callback has run (libuv keeps the
// request until then). Cancel it with cancel_resolve().
struct Resolution;

// Starts resolving hp on `loop`; cb runs once, on the loop's thread, unless the resolution
// is cancelled first; never before resolve_async returns. The returned pointer is valid
// until cb runs or cancel_resolve(). Thread: the loop's. A lookup that cannot even start
// is reported through cb all the same.
Resolution* resolve_async(uv_loop_t* loop, const HostPort& hp, ResolveFn cb);

// Drops the callback of a resolution still in flight (it will never run) and asks libuv to
// cancel the lookup; the loop stays alive until the lookup's worker finishes, as a lookup
// already running cannot be stopped. Thread: the loop's. After this, `r` is not to be used.
void cancel_resolve(Resolution* r);

// Resolves hp now, blocking the calling thread for as long as the lookup takes. For
// startup code that has nothing else to do meanwhile (the broker before it listens).
Result<Addresses> resolve_now(uv_loop_t* loop, const HostPort& hp);

// The address a server binds for a listen setting (broker.listen, metrics_listen): the
// text parsed and resolved now (blocking), and the first address it resolves to. Only the
// first: binding every address of "localhost:0" would get a different port on each and
// print one "listening on" line per address where scripts read one; the first is the one
// clients resolving the same name try first (RFC 6724 order), and a client that tries
// another first moves on to the next when refused. Errors: kInvalidArgument, prefixed with
// `setting`, for text that is not an address or a name that does not resolve.
Result<sockaddr_storage> listen_address(uv_loop_t* loop, std::string_view setting, const std::string& text);

// The address as HOST:PORT, IPv6 in brackets: "127.0.0.1:7411", "[::1]:7411".
std::string address_text(const sockaddr_storage& address);
// The address's IP and port.
HostPort host_port_of(const sockaddr_storage& address);

}  // namespace txmq::common
