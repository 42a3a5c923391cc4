#include "http/http_client.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <memory>
#include <stdexcept>

#include "common/version.h"
#include "http/address_range.h"

namespace txmq::http {

struct HttpClient::Transfer {
  HttpClient* owner;
  std::uint64_t id = 0;
  CURL* easy;
  curl_slist* headers = nullptr;
  HttpRequest request;
  HttpResponse response;
  Done done;
  char error[CURL_ERROR_SIZE] = {};
  bool aborted_by_receiver = false;  // on_body_chunk returned false
  bool cancelled = false;            // by cancel(): finished on the next turn
};

struct HttpClient::Socket {
  HttpClient* owner;
  curl_socket_t fd;
  uv_poll_t poll;
  int events = 0;         // what the poll handle watches now
  bool watching = false;  // curl wants events; false while a connection idles in its pool
};

// Idle easy handles kept for reuse, at most; more are freed.
constexpr std::size_t kMaxIdleHandles = 1024;

HttpClient::HttpClient(uv_loop_t* loop, std::string_view user_agent)
    : loop_(loop), multi_(curl_multi_init()), user_agent_(std::string(user_agent) + "/" + std::string(kVersion)) {
  if (!multi_) throw std::runtime_error("curl_multi_init failed");
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &HttpClient::on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &HttpClient::on_timer_change);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  // Idle connections kept for reuse. The default (four per handle added) closes keep-alive
  // connections after a burst only to reopen them a moment later.
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, 4096L);
}

HttpClient::~HttpClient() {
  if (multi_) std::abort();  // close() must have run: libuv still points into this object
}

std::uint64_t HttpClient::post(HttpRequest request, Done done) {
  CURL* easy;
  if (!idle_easy_.empty()) {
    easy = idle_easy_.back();
    idle_easy_.pop_back();
    curl_easy_reset(easy);
  } else {
    easy = curl_easy_init();
  }
  auto t = std::make_unique<Transfer>();
  t->owner = this;
  t->easy = easy;
  t->id = ++next_id_;
  t->request = std::move(request);
  t->done = std::move(done);
  for (const auto& h : t->request.headers) t->headers = curl_slist_append(t->headers, h.c_str());
  // No "Expect: 100-continue" round trip before bodies over 1 KiB.
  t->headers = curl_slist_append(t->headers, "Expect:");

  curl_easy_setopt(easy, CURLOPT_URL, t->request.url.c_str());
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  // libcurl's defaults, stated: an https endpoint must prove it is the host the URL names.
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!t->request.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, t->request.ca_file.c_str());
  curl_easy_setopt(easy, CURLOPT_POST, 1L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->request.body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->request.body.size()));
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, user_agent_.c_str());
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(t->request.timeout.count()));
  if (t->request.connect_timeout.count() > 0)
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(t->request.connect_timeout.count()));
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &HttpClient::on_body);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &HttpClient::on_header);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, t.get());
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &HttpClient::on_open_socket);
  curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, t.get());
  // Runs for reused connections too: a connection kept alive for a subscription that may
  // reach private addresses must not carry a request of one that may not.
  curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, &HttpClient::on_prereq);
  curl_easy_setopt(easy, CURLOPT_PREREQDATA, t.get());
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &HttpClient::on_close_socket);
  curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, this);

  Transfer* raw = t.release();
  transfers_.insert(raw);
  if (in_curl_ > 0) {
    // Called from inside one of curl's callbacks (a streamed body's chunk), where curl must
    // not be re-entered: added on the next turn.
    to_add_.push_back(raw);
    uv_timer_start(&timer_, &HttpClient::on_timer, 0, 0);
    return raw->id;
  }
  add(raw);
  return raw->id;
}

void HttpClient::add(Transfer* raw) {
  if (CURLMcode rc = curl_multi_add_handle(multi_, raw->easy); rc != CURLM_OK) {
    raw->response.error = curl_multi_strerror(rc);
    failed_.push_back(raw);
    uv_timer_start(&timer_, &HttpClient::on_timer, 0, 0);
  }
}

bool HttpClient::cancel(std::uint64_t id) {
  for (Transfer* t : transfers_) {
    if (t->id != id) continue;
    if (t->cancelled) return false;
    for (Transfer* f : failed_)
      if (f == t) return false;  // finishing already
    // Removed from the multi handle on the next turn, not here: cancel may be called from
    // inside one of curl's callbacks, where curl must not be re-entered.
    t->cancelled = true;
    cancelled_.push_back(t);
    uv_timer_start(&timer_, &HttpClient::on_timer, 0, 0);
    return true;
  }
  return false;
}

std::size_t HttpClient::on_body(char* data, std::size_t size, std::size_t n, void* transfer) {
  auto* t = static_cast<Transfer*>(transfer);
  const std::size_t len = size * n;
  if (t->cancelled) return len;
  if (t->request.on_body_chunk) {
    if (t->request.on_body_chunk(std::string_view(data, len))) return len;
    t->aborted_by_receiver = true;
    return 0;  // curl ends the transfer with CURLE_WRITE_ERROR
  }
  // Past the cap the rest is read and dropped, so that the connection stays reusable.
  const std::size_t cap = t->request.max_response_bytes;
  if (t->response.body.size() < cap) t->response.body.append(data, std::min(len, cap - t->response.body.size()));
  return len;
}

std::size_t HttpClient::on_header(char* data, std::size_t size, std::size_t n, void* transfer) {
  auto* t = static_cast<Transfer*>(transfer);
  const std::size_t len = size * n;
  constexpr std::string_view kName = "retry-after:";
  std::string_view line(data, len);
  if (line.size() <= kName.size()) return len;
  for (std::size_t i = 0; i < kName.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(line[i])) != kName[i]) return len;
  line.remove_prefix(kName.size());
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) line.remove_prefix(1);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.remove_suffix(1);
  t->response.retry_after = std::string(line);
  return len;
}

int HttpClient::on_socket(CURL*, curl_socket_t fd, int what, void* self, void*) {
  auto* client = static_cast<HttpClient*>(self);
  auto it = client->sockets_.find(fd);
  Socket* s = it == client->sockets_.end() ? nullptr : it->second;
  if (what == CURL_POLL_REMOVE) {
    if (!s) return 0;
    if (client->connections_.contains(fd)) {
      // An idle keep-alive connection: the handle stays, watching what it watched, until
      // curl reuses the connection or closes it (on_close_socket).
      s->watching = false;
    } else {
      // Not a connection (a resolver's descriptor): curl closes it without telling us.
      client->close_poll(s);
    }
    return 0;
  }
  if (!s) {
    s = new Socket{client, fd, {}};
    uv_poll_init_socket(client->loop_, &s->poll, fd);
    s->poll.data = s;
    client->sockets_[fd] = s;
  }
  s->watching = true;
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  if (events != s->events) {
    uv_poll_start(&s->poll, events, &HttpClient::on_poll);
    s->events = events;
  }
  return 0;
}

curl_socket_t HttpClient::on_open_socket(void* transfer, curlsocktype, curl_sockaddr* address) {
  auto* t = static_cast<Transfer*>(transfer);
  if (!t->request.allow_non_public) {
    // Refused before connecting, so that not even a TCP handshake reaches the address.
    // curl tries the name's next address, if any.
    const std::string_view range = non_public_range(&address->addr);
    if (!range.empty()) {
      char ip[INET6_ADDRSTRLEN] = "?";
      const void* raw = address->family == AF_INET6
                            ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&address->addr)->sin6_addr)
                            : static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&address->addr)->sin_addr);
      inet_ntop(address->family, raw, ip, sizeof ip);
      t->response.refused_address = std::string(ip) + " (" + std::string(range) + ")";
      return CURL_SOCKET_BAD;
    }
  }
  const curl_socket_t fd = ::socket(address->family, address->socktype, address->protocol);
  if (fd != CURL_SOCKET_BAD) t->owner->connections_.insert(fd);
  return fd;
}

int HttpClient::on_prereq(void* transfer, char* primary_ip, char*, int, int) {
  auto* t = static_cast<Transfer*>(transfer);
  if (t->request.allow_non_public) return CURL_PREREQFUNC_OK;
  const std::string_view range = non_public_range(primary_ip ? std::string_view(primary_ip) : std::string_view());
  if (range.empty()) return CURL_PREREQFUNC_OK;
  t->response.refused_address = std::string(primary_ip ? primary_ip : "?") + " (" + std::string(range) + ")";
  return CURL_PREREQFUNC_ABORT;
}

int HttpClient::on_close_socket(void* self, curl_socket_t fd) {
  auto* client = static_cast<HttpClient*>(self);
  client->connections_.erase(fd);
  // The handle goes first: libuv forgets the descriptor while it is still open, so a new
  // connection that gets the same number is not mistaken for this one.
  if (auto it = client->sockets_.find(fd); it != client->sockets_.end()) client->close_poll(it->second);
  return ::close(fd);
}

void HttpClient::close_poll(Socket* s) {
  sockets_.erase(s->fd);
  ++open_handles_;
  uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), [](uv_handle_t* h) {
    auto* closed = static_cast<Socket*>(h->data);
    HttpClient* owner = closed->owner;
    delete closed;
    owner->release_handle();
  });
}

int HttpClient::on_timer_change(CURLM*, long timeout_ms, void* self) {
  auto* client = static_cast<HttpClient*>(self);
  // Work deferred from inside curl (an add, a cancel, a refusal, a close) is due now,
  // whatever curl's own timer says.
  if (!client->to_add_.empty() || !client->cancelled_.empty() || !client->failed_.empty() || client->close_requested_)
    timeout_ms = 0;
  // curl must not be re-entered from this callback: a timeout of 0 runs on the next turn.
  if (timeout_ms < 0) uv_timer_stop(&client->timer_);
  else uv_timer_start(&client->timer_, &HttpClient::on_timer, static_cast<std::uint64_t>(timeout_ms), 0);
  return 0;
}

void HttpClient::on_poll(uv_poll_t* poll, int status, int events) {
  auto* s = static_cast<Socket*>(poll->data);
  HttpClient* client = s->owner;
  if (!s->watching) {
    // An idle connection became readable: the server closed it (or misbehaves). Stop
    // watching so the loop does not spin; curl finds it dead when it next tries it.
    uv_poll_stop(&s->poll);
    s->events = 0;
    return;
  }
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running = 0;
  ++client->in_curl_;
  curl_multi_socket_action(client->multi_, s->fd, flags, &running);
  --client->in_curl_;
  client->finish_done_transfers();
}

void HttpClient::on_timer(uv_timer_t* timer) {
  auto* client = static_cast<HttpClient*>(timer->data);
  if (client->close_requested_ && client->multi_) return client->close_now();
  std::vector<Transfer*> to_add;
  to_add.swap(client->to_add_);
  for (Transfer* t : to_add)
    if (!t->cancelled) client->add(t);
  int running = 0;
  ++client->in_curl_;
  curl_multi_socket_action(client->multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  --client->in_curl_;
  client->finish_done_transfers();
}

void HttpClient::finish_done_transfers() {
  std::vector<Transfer*> done;
  done.swap(failed_);
  // Removing a handle also drops any message curl queued for it, so a transfer that
  // finished in the same turn it was cancelled is answered once, as cancelled.
  for (Transfer* t : cancelled_) {
    std::erase(to_add_, t);  // cancelled before it was added
    curl_multi_remove_handle(multi_, t->easy);
    t->response.error = "cancelled";
    done.push_back(t);
  }
  cancelled_.clear();
  int left = 0;
  while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
    if (m->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &t);
    const CURLcode result = m->data.result;
    curl_multi_remove_handle(multi_, t->easy);
    double seconds = 0;
    curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &seconds);
    t->response.seconds = seconds;
    if (result == CURLE_OK) {
      // A refused address does not matter when another address of the name answered.
      t->response.refused_address.clear();
      curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->response.status);
    } else {
      t->response.timed_out = result == CURLE_OPERATION_TIMEDOUT;
      t->response.not_connected = result == CURLE_COULDNT_CONNECT || result == CURLE_COULDNT_RESOLVE_HOST;
      t->response.error = t->aborted_by_receiver ? "aborted by the receiver"
                          : t->error[0]         ? t->error
                                                : curl_easy_strerror(result);
    }
    done.push_back(t);
  }
  // Every finished transfer is detached and freed before any callback runs: a callback
  // may cancel, post or close, and must find none of them still in flight.
  std::vector<std::pair<Done, HttpResponse>> answers;
  answers.reserve(done.size());
  for (Transfer* t : done) {
    transfers_.erase(t);
    curl_slist_free_all(t->headers);
    if (idle_easy_.size() < kMaxIdleHandles) idle_easy_.push_back(t->easy);
    else curl_easy_cleanup(t->easy);
    std::unique_ptr<Transfer> owned(t);
    answers.emplace_back(std::move(owned->done), std::move(owned->response));
  }
  // Callbacks last: they may post again, which may make curl call back into this object.
  for (auto& [callback, response] : answers) callback(std::move(response));
}

void HttpClient::close(std::function<void()> on_closed) {
  on_closed_ = std::move(on_closed);
  close_requested_ = true;
  if (in_curl_ > 0) {
    // Inside one of curl's callbacks (a streamed chunk's): curl must not be cleaned up
    // under itself. The timer closes on the next turn.
    uv_timer_start(&timer_, &HttpClient::on_timer, 0, 0);
    return;
  }
  close_now();
}

void HttpClient::close_now() {
  std::vector<Transfer*> aborted(transfers_.begin(), transfers_.end());
  transfers_.clear();
  failed_.clear();
  cancelled_.clear();
  to_add_.clear();
  for (Transfer* t : aborted) curl_multi_remove_handle(multi_, t->easy);
  // Stop polling while curl's descriptors are still open; curl closes them in cleanup and
  // must not call back into this object while doing it.
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, nullptr);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, nullptr);
  while (!sockets_.empty()) close_poll(sockets_.begin()->second);
  curl_multi_cleanup(multi_);
  multi_ = nullptr;
  for (CURL* e : idle_easy_) curl_easy_cleanup(e);
  idle_easy_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    static_cast<HttpClient*>(h->data)->release_handle();
  });
  for (Transfer* t : aborted) {
    curl_slist_free_all(t->headers);
    curl_easy_cleanup(t->easy);
    std::unique_ptr<Transfer> owned(t);
    HttpResponse response = std::move(owned->response);
    response.error = "aborted";
    Done callback = std::move(owned->done);
    owned.reset();
    callback(std::move(response));
  }
}

void HttpClient::release_handle() {
  if (--open_handles_ == 0 && on_closed_) {
    auto cb = std::move(on_closed_);
    cb();
  }
}

}  // namespace txmq::http
