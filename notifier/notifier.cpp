#include "notifier/notifier.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>

#include "common/address.h"
#include "common/resolve.h"
#include "common/version.h"
#include "metrics/process_collector.h"

namespace txmq::notifier {

// How long startup waits for the broker to answer each setup call.
constexpr std::chrono::seconds kStartTimeout{10};

Notifier::Notifier(NotifierConfig config) : config_(std::move(config)) { uv_loop_init(&loop_); }

Notifier::~Notifier() {
  subscriptions_.clear();
  records_.reset();
  uv_loop_close(&loop_);
}

int Notifier::run() {
  metrics::register_process_metrics(registry_);
  registry_.gauge_family("txmq_notifier_build_info", "Always 1; the version is a label.", {"version"})
      .with({std::string_view(kVersion)})
      .set(1);
  metrics_ = std::make_unique<NotifierMetrics>(registry_);
  post_ = std::make_unique<LoopPost>(&loop_);
  http_ = std::make_unique<http::HttpClient>(&loop_, "txmq-notifier");
  endpoint_ = std::make_unique<metrics::HttpEndpoint>(&loop_, registry_);
  uv_signal_init(&loop_, &sigint_);
  uv_signal_init(&loop_, &sigterm_);
  sigint_.data = sigterm_.data = this;
  auto on_signal = [](uv_signal_t* h, int signum) {
    spdlog::info("{}: stopping: finishing requests in flight", signum == SIGINT ? "SIGINT" : "SIGTERM");
    static_cast<Notifier*>(h->data)->stop();
  };
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);

  if (auto st = start(); !st) {
    spdlog::error("{}", st.error().message);
    std::fprintf(stderr, "txmq-notifier: %s\n", st.error().message.c_str());
    exit_code_ = 1;
    stop();
  } else {
    std::printf("ready\n");
    std::fflush(stdout);
    spdlog::info("delivering {} subscription(s) from {}", subscriptions_.size(), config_.broker);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  return exit_code_;
}

Status Notifier::start() {
  if (!config_.metrics_listen.empty()) {
    // Startup blocks on the lookup: nothing is served yet.
    auto resolved = common::listen_address(&loop_, "notifier.metrics_listen", config_.metrics_listen);
    if (!resolved) return resolved.error();
    const auto hp = common::host_port_of(*resolved);
    auto bound = endpoint_->listen(hp.host, hp.port);
    if (!bound.ok())
      return Error(ErrorCode::kInvalidArgument,
                   "cannot serve metrics on " + config_.metrics_listen + ": " + uv_strerror(bound.error));
    std::printf("metrics on %s\n", common::HostPort{bound.host, bound.port}.to_string().c_str());
    std::fflush(stdout);
  }
  client::Admin admin(config_.client_options("txmq-notifier"));
  if (auto r = admin.list_topics(kStartTimeout); !r)
    return Error(r.error().code, "broker " + config_.broker + ": " + r.error().message);

  client::Producer::Options producer;
  static_cast<client::ClientOptions&>(producer) = config_.client_options("txmq-notifier");
  records_ = std::make_unique<client::Producer>(producer);
  for (const auto& s : config_.subscriptions) {
    auto connection = config_.client_options("txmq-notifier/" + s.name);
    subscriptions_.push_back(
        std::make_unique<Subscription>(&loop_, s, std::move(connection), *http_, *post_, *records_, *metrics_));
    if (auto st = subscriptions_.back()->start(admin, kStartTimeout); !st) return st;
  }
  return {};
}

void Notifier::stop() {
  if (stopping_) return;
  stopping_ = true;
  draining_ = subscriptions_.size();
  if (draining_ == 0) return close_all();
  for (auto& s : subscriptions_)
    s->stop([this] {
      if (--draining_ == 0) close_all();
    });
}

void Notifier::close_all() {
  // Every subscription is drained: no request is in flight and no record unconfirmed.
  if (records_)
    if (auto st = records_->flush(std::chrono::seconds(10)); !st)
      spdlog::warn("give-up records not confirmed at shutdown: {}", st.error().message);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  endpoint_->close([this] { endpoint_.reset(); });
  http_->close([this] { http_.reset(); });
  post_->close([this] { post_.reset(); });
}

}  // namespace txmq::notifier
