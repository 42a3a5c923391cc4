#pragma once
// Binds an httplib server to "HOST:PORT" (port 0: any free port) and serves it on a thread
// of its own, so that main can go on to wait for SIGTERM. Shared by the two services that
// speak HTTP (order, points).

#include <httplib.h>

#include <string>
#include <thread>

namespace orders_example {

// The port actually bound, or -1. On success `thread` runs the server until http.stop().
inline int listen_http(httplib::Server& http, const std::string& listen, std::thread& thread) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return -1;
  const std::string host = listen.substr(0, colon);
  int port = std::stoi(listen.substr(colon + 1));
  if (port == 0) port = http.bind_to_any_port(host);
  else if (!http.bind_to_port(host, port)) port = -1;
  if (port < 0) return -1;
  thread = std::thread([&http] { http.listen_after_bind(); });
  return port;
}

}  // namespace orders_example
