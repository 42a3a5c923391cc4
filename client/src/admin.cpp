// Admin: request-and-wait calls over one connection.

#include <future>

#include "connection.h"

namespace txmq::client {
namespace detail {
namespace {

TopicInfo to_topic_info(const wire::TopicInfo& t) {
  TopicInfo out;
  out.name = t.name() ? t.name()->str() : "";
  out.created_at_ms = t.created_at_ms();
  if (t.partitions())
    for (const auto* p : *t.partitions()) out.partitions.push_back({p->partition(), p->first_offset(), p->next_offset()});
  return out;
}

}  // namespace

class AdminImpl {
 public:
  explicit AdminImpl(ClientOptions options) : conn_(std::move(options), {}) { conn_.start(); }
  ~AdminImpl() { conn_.stop(); }

  // Builds a request on the I/O thread, waits for its answer and converts it with parse.
  template <typename T, typename Build, typename Parse>
  Result<T> call(Millis timeout, Build build, Parse parse) {
    if (conn_.on_io_thread()) return Error(ErrorCode::kInvalidArgument, "Admin called from the I/O thread");
    auto promise = std::make_shared<std::promise<Result<T>>>();
    auto future = promise->get_future();
    auto deadline = Connection::Clock::now() + timeout;
    bool posted = conn_.post([this, promise, build, parse, deadline] {
      auto& fbb = conn_.builder();
      fbb.Clear();
      std::uint64_t rid = conn_.next_request_id();
      auto [type, body] = build(fbb);
      fbb.FinishSizePrefixed(wire::CreateFrame(fbb, rid, type, body));
      conn_.request(rid, common::frame_bytes(fbb), deadline, [promise, parse](Result<const wire::Frame*> r) {
        if (!r.ok())
          promise->set_value(r.error());
        else
          promise->set_value(parse(**r));
      });
    });
    if (!posted) return Error(ErrorCode::kClosed);
    // The connection's own deadline answers first; the margin only guards against a stuck
    // I/O thread.
    if (future.wait_for(timeout + Millis(1000)) != std::future_status::ready) return Error(ErrorCode::kTimeout);
    return future.get();
  }

  Connection conn_;
};

using Body = std::pair<wire::Body, flatbuffers::Offset<void>>;

}  // namespace detail

Admin::Admin(ClientOptions options) : impl_(std::make_unique<detail::AdminImpl>(std::move(options))) {}
Admin::~Admin() = default;

Result<TopicInfo> Admin::create_topic(std::string_view name, std::uint32_t partitions, Millis timeout) {
  return impl_->call<TopicInfo>(
      timeout,
      [name = std::string(name), partitions](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::CreateTopic, wire::CreateCreateTopic(fbb, fbb.CreateString(name), partitions).Union()};
      },
      [](const wire::Frame& f) -> Result<TopicInfo> {
        if (!f.body_as_TopicInfo()) return Error(ErrorCode::kInternal, "unexpected answer");
        return detail::to_topic_info(*f.body_as_TopicInfo());
      });
}

Status Admin::delete_topic(std::string_view name, Millis timeout) {
  auto r = impl_->call<bool>(
      timeout,
      [name = std::string(name)](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::DeleteTopic, wire::CreateDeleteTopic(fbb, fbb.CreateString(name)).Union()};
      },
      [](const wire::Frame&) -> Result<bool> { return true; });
  if (!r) return r.error();
  return {};
}

Result<TopicInfo> Admin::describe_topic(std::string_view name, Millis timeout) {
  return impl_->call<TopicInfo>(
      timeout,
      [name = std::string(name)](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::DescribeTopic, wire::CreateDescribeTopic(fbb, fbb.CreateString(name)).Union()};
      },
      [](const wire::Frame& f) -> Result<TopicInfo> {
        if (!f.body_as_TopicInfo()) return Error(ErrorCode::kInternal, "unexpected answer");
        return detail::to_topic_info(*f.body_as_TopicInfo());
      });
}

Result<std::vector<TopicInfo>> Admin::list_topics(Millis timeout) {
  return impl_->call<std::vector<TopicInfo>>(
      timeout,
      [](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::ListTopics, wire::CreateListTopics(fbb).Union()};
      },
      [](const wire::Frame& f) -> Result<std::vector<TopicInfo>> {
        const auto* list = f.body_as_TopicList();
        if (!list) return Error(ErrorCode::kInternal, "unexpected answer");
        std::vector<TopicInfo> out;
        if (list->topics())
          for (const auto* t : *list->topics()) out.push_back(detail::to_topic_info(*t));
        return out;
      });
}

Result<BrokerStats> Admin::stats(Millis timeout) {
  return impl_->call<BrokerStats>(
      timeout,
      [](flatbuffers::FlatBufferBuilder& fbb) {
        return detail::Body{wire::Body::GetStats, wire::CreateGetStats(fbb).Union()};
      },
      [](const wire::Frame& f) -> Result<BrokerStats> {
        const auto* s = f.body_as_Stats();
        if (!s) return Error(ErrorCode::kInternal, "unexpected answer");
        BrokerStats out;
        out.broker_version = s->broker_version() ? s->broker_version()->str() : "";
        out.uptime_ms = s->uptime_ms();
        out.connections = s->connections();
        out.topics = s->topics();
        out.messages_produced = s->messages_produced();
        out.bytes_produced = s->bytes_produced();
        out.messages_delivered = s->messages_delivered();
        out.messages_acked = s->messages_acked();
        out.storage_used_bytes = s->storage_used_bytes();
        out.storage_max_bytes = s->storage_max_bytes();
        out.commits = s->commits();
        return out;
      });
}

}  // namespace txmq::client
