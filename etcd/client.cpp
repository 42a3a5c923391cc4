#include "etcd/client.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cstdlib>
#include <utility>

#include "common/base64.h"

namespace txmq::etcd {

using nlohmann::json;

namespace {

// grpc status codes the gateway passes on ("code" of an error answer).
constexpr int kGrpcInvalidArgument = 3;
constexpr int kGrpcDeadlineExceeded = 4;
constexpr int kGrpcNotFound = 5;
constexpr int kGrpcUnavailable = 14;

std::string b64(std::string_view bytes) { return common::base64_encode(bytes); }

// The end of the range of keys that start with `prefix`: the prefix with its last byte
// that is not 0xff raised by one and what follows it dropped; "\0" (every key) when every
// byte is 0xff.
std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

// An int64 field: the gateway writes them as strings; an omitted one is 0.
std::int64_t int64_field(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) return 0;
  if (it->is_number_integer()) return it->get<std::int64_t>();
  if (!it->is_string()) return 0;
  const auto& text = it->get_ref<const std::string&>();
  std::int64_t value = 0;
  std::from_chars(text.data(), text.data() + text.size(), value);
  return value;
}

std::string bytes_field(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) return {};
  auto decoded = common::base64_decode(it->get_ref<const std::string&>());
  return decoded ? std::move(*decoded) : std::string();
}

KeyValue key_value(const json& kv) {
  KeyValue out;
  out.key = bytes_field(kv, "key");
  out.value = bytes_field(kv, "value");
  out.create_revision = int64_field(kv, "create_revision");
  out.mod_revision = int64_field(kv, "mod_revision");
  out.version = int64_field(kv, "version");
  out.lease = int64_field(kv, "lease");
  return out;
}

Range range(const json& answer) {
  Range out;
  if (auto header = answer.find("header"); header != answer.end() && header->is_object())
    out.revision = int64_field(*header, "revision");
  if (auto kvs = answer.find("kvs"); kvs != answer.end() && kvs->is_array())
    for (const auto& kv : *kvs) out.kvs.push_back(key_value(kv));
  return out;
}

std::int64_t revision_of(const json& answer) {
  auto header = answer.find("header");
  return header != answer.end() && header->is_object() ? int64_field(*header, "revision") : 0;
}

// What etcd said in an error object: {"error": "...", "code": N, "message": "..."} from a
// unary call, {"error": {"grpc_code": N, "message": "..."}} inside a stream.
Error etcd_error(const std::string& endpoint, const json& body) {
  int code = 0;
  std::string message;
  const json* e = &body;
  if (auto it = body.find("error"); it != body.end() && it->is_object()) e = &*it;
  if (auto it = e->find("code"); it != e->end() && it->is_number_integer()) code = it->get<int>();
  if (auto it = e->find("grpc_code"); it != e->end() && it->is_number_integer()) code = it->get<int>();
  if (auto it = e->find("message"); it != e->end() && it->is_string()) message = it->get<std::string>();
  if (message.empty())
    if (auto it = e->find("error"); it != e->end() && it->is_string()) message = it->get<std::string>();
  if (message.empty()) message = body.dump();
  const std::string text = "etcd at " + endpoint + ": " + message;
  switch (code) {
    case kGrpcInvalidArgument: return {ErrorCode::kInvalidArgument, text};
    case kGrpcDeadlineExceeded: return {ErrorCode::kTimeout, text};
    case kGrpcUnavailable:
      // "etcdserver: request timed out" may have been applied; "no leader" was not.
      return {message.find("timed out") != std::string::npos ? ErrorCode::kTimeout : ErrorCode::kNotConnected, text};
    default: return {ErrorCode::kInternal, text + " (code " + std::to_string(code) + ")"};
  }
}

json compare_json(const Compare& c) {
  static constexpr const char* kTargets[] = {"CREATE", "MOD", "VERSION", "VALUE"};
  static constexpr const char* kResults[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  json out = {{"key", b64(c.key)},
              {"target", kTargets[static_cast<int>(c.target)]},
              {"result", kResults[static_cast<int>(c.result)]}};
  switch (c.target) {
    case Compare::Target::kCreate: out["create_revision"] = std::to_string(c.number); break;
    case Compare::Target::kMod: out["mod_revision"] = std::to_string(c.number); break;
    case Compare::Target::kVersion: out["version"] = std::to_string(c.number); break;
    case Compare::Target::kValue: out["value"] = b64(c.value); break;
  }
  return out;
}

json range_json(const std::string& key, bool prefix) {
  json out = {{"key", b64(key)}};
  if (prefix) out["range_end"] = b64(prefix_end(key));
  return out;
}

json operation_json(const Operation& op) {
  switch (op.kind) {
    case Operation::Kind::kPut: {
      json put = {{"key", b64(op.key)}, {"value", b64(op.value)}};
      if (op.lease != 0) put["lease"] = std::to_string(op.lease);
      return {{"request_put", put}};
    }
    case Operation::Kind::kDelete: return {{"request_delete_range", range_json(op.key, op.prefix)}};
    case Operation::Kind::kGet: return {{"request_range", range_json(op.key, op.prefix)}};
  }
  return {};
}

}  // namespace

struct Client::Watch {
  std::string key;
  bool prefix = false;
  std::int64_t start_revision = 0;
  OnEvents on_events;
  std::function<void(Error)> on_end;
  std::string endpoint;
  std::uint64_t transfer = 0;
  std::string pending;  // bytes of a line not yet ended
};

Client::Client(uv_loop_t* loop, ClientOptions options)
    : options_(std::move(options)), http_(std::make_unique<http::HttpClient>(loop, "txmq-broker")) {
  if (options_.endpoints.empty()) std::abort();  // the config refuses an empty list
}

Client::~Client() = default;

void Client::rotate(std::size_t from) {
  if (current_ == from) current_ = (current_ + 1) % options_.endpoints.size();
  // A member that stopped answering calls (frozen, cut off) keeps its watch streams open
  // and silent, with no error ever: they end here, so that their owners read again, from
  // the next endpoint.
  const std::string& failed = options_.endpoints[from];
  std::vector<WatchId> stale;
  for (const auto& [id, w] : watches_)
    if (w->endpoint == failed) stale.push_back(id);
  for (WatchId id : stale)
    end_watch(id, Error(ErrorCode::kConnectionLost, "etcd at " + failed + " stopped answering: its watch may be silent"));
}

void Client::call(std::string path, std::string body, OnAnswer done, std::size_t attempt) {
  const std::size_t at = current_;
  const std::string& endpoint = options_.endpoints[at];
  http::HttpRequest req;
  req.url = endpoint + path;
  req.headers = {"Content-Type: application/json"};
  req.timeout = options_.timeout;
  req.max_response_bytes = 4 * 1024 * 1024;
  req.body = body;
  http_->post(std::move(req), [this, at, attempt, path = std::move(path), body = std::move(body),
                               done = std::move(done)](http::HttpResponse r) mutable {
    if (closing_) return;
    const std::string& endpoint = options_.endpoints[at];
    Error error;
    if (r.status == 200) {
      done(std::move(r.body));
      return;
    }
    if (r.status == 0) {
      error = Error(r.timed_out ? ErrorCode::kTimeout : r.not_connected ? ErrorCode::kNotConnected : ErrorCode::kTimeout,
                    "etcd at " + endpoint + ": " + (r.timed_out ? "no answer in " + std::to_string(options_.timeout.count()) + " ms" : r.error));
    } else {
      json parsed = json::parse(r.body, nullptr, false);
      error = parsed.is_object() ? etcd_error(endpoint, parsed)
                                 : Error(ErrorCode::kInternal, "etcd at " + endpoint + ": HTTP " + std::to_string(r.status));
    }
    if (error.code == ErrorCode::kNotConnected || error.code == ErrorCode::kTimeout) rotate(at);
    // Nothing was done: the next endpoint may serve it.
    if (error.code == ErrorCode::kNotConnected && attempt + 1 < options_.endpoints.size()) {
      call(std::move(path), std::move(body), std::move(done), attempt + 1);
      return;
    }
    done(std::move(error));
  });
}

namespace {
// The JSON object of a 200 answer, or kInternal naming the endpoint.
Result<json> parse_answer(const std::string& endpoint, const std::string& body) {
  json parsed = json::parse(body, nullptr, false);
  if (!parsed.is_object())
    return Error(ErrorCode::kInternal, "etcd at " + endpoint + ": an answer that is not a JSON object");
  return parsed;
}
}  // namespace

void Client::grant(std::int64_t ttl_s, Done<Lease> done) {
  json body = {{"TTL", std::to_string(ttl_s)}};
  call("/v3/lease/grant", body.dump(), [this, done = std::move(done)](Result<std::string> r) {
    if (!r.ok()) return done(r.error());
    auto answer = parse_answer(endpoint(), *r);
    if (!answer.ok()) return done(answer.error());
    if (auto e = answer->find("error"); e != answer->end() && e->is_string() && !e->get_ref<const std::string&>().empty())
      return done(Error(ErrorCode::kInternal, "etcd at " + endpoint() + ": " + e->get<std::string>()));
    Lease lease{int64_field(*answer, "ID"), int64_field(*answer, "TTL")};
    if (lease.id == 0 || lease.ttl_s <= 0)
      return done(Error(ErrorCode::kInternal, "etcd at " + endpoint() + ": a lease grant without an ID or TTL"));
    done(lease);
  });
}

void Client::keep_alive(std::int64_t lease, Done<std::int64_t> done) {
  json body = {{"ID", std::to_string(lease)}};
  call("/v3/lease/keepalive", body.dump(), [this, done = std::move(done)](Result<std::string> r) {
    if (!r.ok()) return done(r.error());
    // A streaming call: its one answer is wrapped in "result", or is an "error".
    auto answer = parse_answer(endpoint(), *r);
    if (!answer.ok()) return done(answer.error());
    auto result = answer->find("result");
    if (result == answer->end() || !result->is_object()) return done(etcd_error(endpoint(), *answer));
    // A lease etcd no longer has answers with no TTL (and no error).
    done(std::max<std::int64_t>(0, int64_field(*result, "TTL")));
  });
}

void Client::revoke(std::int64_t lease, Done<void> done) {
  json body = {{"ID", std::to_string(lease)}};
  call("/v3/lease/revoke", body.dump(), [done = std::move(done)](Result<std::string> r) {
    if (r.ok()) return done(Status());
    // "requested lease not found": it is gone already, which is what revoking wants.
    if (r.error().code == ErrorCode::kInternal && r.error().message.find("(code 5)") != std::string::npos)
      return done(Status());
    done(r.error());
  });
}

void Client::get(std::string key, bool prefix, Done<Range> done) {
  call("/v3/kv/range", range_json(key, prefix).dump(), [this, done = std::move(done)](Result<std::string> r) {
    if (!r.ok()) return done(r.error());
    auto answer = parse_answer(endpoint(), *r);
    if (!answer.ok()) return done(answer.error());
    done(range(*answer));
  });
}

void Client::put(std::string key, std::string value, std::int64_t lease, Done<std::int64_t> done) {
  json body = operation_json(Operation::put(std::move(key), std::move(value), lease))["request_put"];
  call("/v3/kv/put", body.dump(), [this, done = std::move(done)](Result<std::string> r) {
    if (!r.ok()) return done(r.error());
    auto answer = parse_answer(endpoint(), *r);
    if (!answer.ok()) return done(answer.error());
    done(revision_of(*answer));
  });
}

void Client::txn(const Txn& t, Done<TxnResult> done) {
  json body = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const auto& c : t.compare) body["compare"].push_back(compare_json(c));
  for (const auto& op : t.success) body["success"].push_back(operation_json(op));
  for (const auto& op : t.failure) body["failure"].push_back(operation_json(op));
  call("/v3/kv/txn", body.dump(), [this, done = std::move(done)](Result<std::string> r) {
    if (!r.ok()) return done(r.error());
    auto answer = parse_answer(endpoint(), *r);
    if (!answer.ok()) return done(answer.error());
    TxnResult out;
    // Omitted when false.
    if (auto s = answer->find("succeeded"); s != answer->end() && s->is_boolean()) out.succeeded = s->get<bool>();
    out.revision = revision_of(*answer);
    if (auto responses = answer->find("responses"); responses != answer->end() && responses->is_array())
      for (const auto& response : *responses)
        if (auto rr = response.find("response_range"); rr != response.end() && rr->is_object())
          out.ranges.push_back(range(*rr));
    done(std::move(out));
  });
}

Client::WatchId Client::watch(std::string key, bool prefix, std::int64_t start_revision, OnEvents on_events,
                              std::function<void(Error)> on_end) {
  const WatchId id = ++next_watch_;
  auto w = std::make_unique<Watch>();
  w->key = std::move(key);
  w->prefix = prefix;
  w->start_revision = start_revision;
  w->on_events = std::move(on_events);
  w->on_end = std::move(on_end);
  Watch& ref = *w;
  watches_.emplace(id, std::move(w));
  ref.endpoint = endpoint();
  json create = range_json(ref.key, ref.prefix);
  if (ref.start_revision > 0) create["start_revision"] = std::to_string(ref.start_revision);
  http::HttpRequest req;
  req.url = ref.endpoint + "/v3/watch";
  req.headers = {"Content-Type: application/json", "Grpc-Metadata-hasleader: true"};
  req.timeout = std::chrono::milliseconds(0);  // a watch lasts until it is cancelled
  req.connect_timeout = options_.timeout;
  req.body = json{{"create_request", create}}.dump();
  req.on_body_chunk = [this, id](std::string_view bytes) {
    if (closing_ || !watches_.contains(id)) return false;
    on_watch_bytes(id, bytes);
    return watches_.contains(id);
  };
  const std::size_t at = current_;
  ref.transfer = http_->post(std::move(req), [this, id, at](http::HttpResponse r) {
    if (closing_ || !watches_.contains(id)) return;
    if (r.status == 0) rotate(at);
    const std::string& endpoint = options_.endpoints[at];
    end_watch(id, Error(r.status == 0 && r.not_connected ? ErrorCode::kNotConnected : ErrorCode::kConnectionLost,
                        "etcd at " + endpoint + ": the watch ended" + (r.error.empty() ? "" : ": " + r.error)));
  });
  return id;
}

void Client::on_watch_bytes(WatchId id, std::string_view bytes) {
  auto it = watches_.find(id);
  it->second->pending.append(bytes);
  if (it->second->pending.size() > 64 * 1024 * 1024) {
    end_watch(id, Error(ErrorCode::kInternal, "etcd at " + it->second->endpoint + ": a watch answer over 64 MiB"));
    return;
  }
  // Each answer is one line of JSON.
  std::size_t start = 0;
  for (std::size_t nl; (nl = it->second->pending.find('\n', start)) != std::string::npos; start = nl + 1) {
    json line = json::parse(std::string_view(it->second->pending).substr(start, nl - start), nullptr, false);
    Watch& w = *it->second;
    if (!line.is_object()) {
      end_watch(id, Error(ErrorCode::kInternal, "etcd at " + w.endpoint + ": a watch answer that is not JSON"));
      return;
    }
    auto result = line.find("result");
    if (result == line.end() || !result->is_object()) {
      end_watch(id, etcd_error(w.endpoint, line));
      return;
    }
    if (auto c = result->find("canceled"); c != result->end() && c->is_boolean() && c->get<bool>()) {
      std::string why = "etcd at " + w.endpoint + ": the watch was cancelled by etcd";
      if (const std::int64_t compacted = int64_field(*result, "compact_revision"); compacted > 0)
        why += " (revision " + std::to_string(w.start_revision) + " is compacted; the oldest kept is " +
               std::to_string(compacted) + ")";
      end_watch(id, Error(ErrorCode::kInternal, why));
      return;
    }
    std::vector<WatchEvent> events;
    if (auto list = result->find("events"); list != result->end() && list->is_array()) {
      for (const auto& e : *list) {
        WatchEvent event;
        if (auto type = e.find("type"); type != e.end() && type->is_string() && *type == "DELETE")
          event.type = WatchEvent::Type::kDelete;
        if (auto kv = e.find("kv"); kv != e.end() && kv->is_object()) event.kv = key_value(*kv);
        events.push_back(std::move(event));
      }
    }
    if (events.empty()) continue;  // "created", or a progress notice
    w.on_events(std::move(events), revision_of(*result));
    it = watches_.find(id);
    if (it == watches_.end()) return;  // cancelled by its own callback
  }
  it->second->pending.erase(0, start);
}

void Client::end_watch(WatchId id, Error error) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  std::unique_ptr<Watch> w = std::move(it->second);
  watches_.erase(it);
  http_->cancel(w->transfer);
  w->on_end(std::move(error));
}

void Client::cancel_watch(WatchId id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  http_->cancel(it->second->transfer);
  watches_.erase(it);
}

void Client::close(std::function<void()> done) {
  closing_ = true;
  watches_.clear();
  http_->close(std::move(done));
}

}  // namespace txmq::etcd
