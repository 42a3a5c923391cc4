#include "tests/support/broker_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/address.h"

extern char** environ;

namespace txmq::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::string_view kListeningPrefix = "listening on ";
constexpr std::string_view kMetricsPrefix = "metrics on ";

// Milliseconds left until deadline, for poll(): never negative, rounded up so that a
// sub-millisecond remainder still waits instead of spinning.
int remaining_ms(Clock::time_point deadline) {
  auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > INT32_MAX ? INT32_MAX : static_cast<int>(ms);
}

std::string errno_text(std::string_view what) {
  return std::string(what) + ": " + std::strerror(errno);
}

// Shell convention: the exit code, or 128 + the signal that ended the process.
int exit_code_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

int wait_child(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace

bool wait_until(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (predicate()) return true;
    std::this_thread::sleep_for(interval);
  }
  return predicate();
}

bool stop_process(pid_t pid, std::chrono::milliseconds timeout) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  return wait_until(
      [&] {
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so the state is
        // the field after the last ')'.
        std::ifstream in(path);
        std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const auto close = stat.rfind(')');
        return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'T';
      },
      timeout);
}

std::string describe(const Status& status) { return status.ok() ? "ok" : status.error().describe(); }

// -- TempDir ------------------------------------------------------------------------------

TempDir::TempDir(std::string_view prefix) {
  std::string templ = "/tmp/" + std::string(prefix) + "-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = templ;
}

TempDir::TempDir(TempDir&& other) noexcept
    : path_(std::exchange(other.path_, std::string())), keep_(other.keep_) {}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::exchange(other.path_, std::string());
    keep_ = other.keep_;
  }
  return *this;
}

TempDir::~TempDir() { remove(); }

void TempDir::remove() {
  if (!path_.empty() && !keep_) {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  path_.clear();
}

std::string TempDir::file(std::string_view name) const { return path_ + "/" + std::string(name); }

// -- BrokerProcess ------------------------------------------------------------------------

BrokerProcess::BrokerProcess(Options options) : options_(std::move(options)), temp_("txmq-broker") {
  if (options_.keep) temp_.keep();
  data_dir_ = options_.data_dir.empty() ? temp_.file("data") : options_.data_dir;
  log_path_ = temp_.file("broker.log");
  if (!options_.config_toml.empty()) {
    config_path_ = temp_.file("broker.toml");
    std::ofstream(config_path_) << options_.config_toml;
  }
}

BrokerProcess::~BrokerProcess() {
  kill9();
  join_reader();
}

Status BrokerProcess::fail(ErrorCode code, const std::string& what) {
  return Error(code, what + "\n--- tail of " + log_path_ + " ---\n" + log_contents(8 * 1024));
}

Status BrokerProcess::start() {
  if (running()) return Error(ErrorCode::kInvalidArgument, "broker already running");
  join_reader();
  std::string binary = options_.binary;
  if (binary.empty()) {
    const char* env = std::getenv("TXMQ_BROKER_BIN");
    if (env == nullptr || *env == '\0')
      return Error(ErrorCode::kInvalidArgument,
                   "TXMQ_BROKER_BIN is not set (ctest sets it; set it to the txmq-broker path)");
    binary = env;
  }

  // Everything the child needs is built before fork: after it, only async-signal-safe
  // calls are allowed, and the test process may have other threads.
  std::vector<std::string> args = {binary, "--data", data_dir_, "--listen", options_.listen};
  if (options_.metrics_listen.empty()) {
    args.push_back("--no-metrics");
  } else {
    args.push_back("--metrics-listen");
    args.push_back(options_.metrics_listen);
  }
  if (!config_path_.empty()) {
    args.push_back("--config");
    args.push_back(config_path_);
  }
  args.insert(args.end(), options_.args.begin(), options_.args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool replaced = false;
    for (const auto& [name, value] : options_.env)
      if (entry.starts_with(name + "=")) replaced = true;
    if (!replaced) env_strings.emplace_back(entry);
  }
  for (const auto& [name, value] : options_.env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int netns_fd = -1;
  if (!options_.netns.empty()) {
    netns_fd = ::open(options_.netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0) return fail(ErrorCode::kInternal, errno_text("open " + options_.netns));
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    if (netns_fd >= 0) ::close(netns_fd);
    return fail(ErrorCode::kInternal, errno_text("pipe2"));
  }
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) {
    std::string why = errno_text("open log or /dev/null");
    for (int fd : {out[0], out[1], log_fd, null_fd, netns_fd})
      if (fd >= 0) ::close(fd);
    return fail(ErrorCode::kInternal, why);
  }

  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    std::string why = errno_text("fork");
    for (int fd : {out[0], out[1], log_fd, null_fd, netns_fd})
      if (fd >= 0) ::close(fd);
    return fail(ErrorCode::kInternal, why);
  }
  if (pid == 0) {
    // Child. dup2 clears FD_CLOEXEC on the targets, so exactly 0, 1 and 2 survive exec.
    dup2(null_fd, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    // A test that crashes must not leave brokers behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) != 0) {
      const char msg[] = "BrokerProcess: setns to BrokerOptions::netns failed\n";
      (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
      _exit(127);
    }
    execve(argv[0], argv.data(), envp.data());
    const char msg[] = "BrokerProcess: execve failed\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(127);
  }
  ::close(out[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (netns_fd >= 0) ::close(netns_fd);

  pid_ = pid;
  address_.clear();
  port_ = 0;
  metrics_address_.clear();
  metrics_port_ = 0;
  {
    std::lock_guard lock(mu_);
    lines_.clear();
    stdout_eof_ = false;
  }
  reader_ = std::thread([this, fd = out[0]] { reader_loop(fd); });

  // Lines are looked at in order: a "metrics on" line counts only before "listening on".
  const auto deadline = Clock::now() + options_.start_timeout;
  std::size_t seen = 0;
  std::unique_lock lock(mu_);
  for (;;) {
    for (; seen < lines_.size(); ++seen) {
      std::string_view line = lines_[seen];
      bool metrics = line.starts_with(kMetricsPrefix);
      if (!metrics && !line.starts_with(kListeningPrefix)) continue;
      auto hp = common::parse_host_port(line.substr(metrics ? kMetricsPrefix.size() : kListeningPrefix.size()));
      if (!hp) {
        lock.unlock();
        kill9();
        return fail(ErrorCode::kInternal, "cannot parse broker output '" + std::string(line) + "'");
      }
      if (metrics) {
        metrics_address_ = hp->to_string();
        metrics_port_ = hp->port;
        continue;
      }
      address_ = hp->to_string();
      port_ = hp->port;
      return {};
    }
    if (stdout_eof_) break;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && seen == lines_.size() &&
        !stdout_eof_) {
      lock.unlock();
      kill9();
      return fail(ErrorCode::kTimeout, "broker did not print 'listening on' within " +
                                           std::to_string(options_.start_timeout.count()) + " ms");
    }
  }
  lock.unlock();
  // stdout closed: the broker is exiting (or closed stdout, which it never does).
  int status = wait_child(pid_);
  pid_ = -1;
  join_reader();
  return fail(ErrorCode::kInternal, "broker exited before listening, exit status " +
                                        std::to_string(exit_code_of(status)));
}

void BrokerProcess::reader_loop(int fd) {
  std::string partial;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    partial.append(buf, static_cast<std::size_t>(n));
    std::size_t start = 0, nl;
    std::vector<std::string> complete;
    while ((nl = partial.find('\n', start)) != std::string::npos) {
      complete.emplace_back(partial, start, nl - start);
      start = nl + 1;
    }
    partial.erase(0, start);
    if (!complete.empty()) {
      std::lock_guard lock(mu_);
      for (auto& l : complete) lines_.push_back(std::move(l));
      cv_.notify_all();
    }
  }
  ::close(fd);
  std::lock_guard lock(mu_);
  if (!partial.empty()) lines_.push_back(std::move(partial));
  stdout_eof_ = true;
  cv_.notify_all();
}

void BrokerProcess::join_reader() {
  if (reader_.joinable()) reader_.join();
}

void BrokerProcess::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_child(pid_);
  pid_ = -1;
  join_reader();
}

int BrokerProcess::terminate(std::chrono::milliseconds timeout) {
  if (!running()) return -1;
  ::kill(pid_, SIGTERM);
  // The child's stdout closes when it exits (nothing else holds the pipe: every fd we
  // open is close-on-exec), so the reader's EOF is the exit notification.
  bool exited;
  {
    std::unique_lock lock(mu_);
    exited = cv_.wait_for(lock, timeout, [this] { return stdout_eof_; });
  }
  if (!exited) {
    kill9();
    return -1;
  }
  int status = wait_child(pid_);
  pid_ = -1;
  join_reader();
  return exit_code_of(status);
}

Status BrokerProcess::restart() {
  if (running()) terminate();
  return start();
}

bool BrokerProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  pid_ = -1;
  join_reader();
  return false;
}

std::string file_tail(const std::string& path, std::size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  if (all.size() > max_bytes) all.erase(0, all.size() - max_bytes);
  return all;
}

std::string BrokerProcess::log_contents(std::size_t max_bytes) const { return file_tail(log_path_, max_bytes); }

std::vector<std::string> BrokerProcess::stdout_lines() const {
  std::lock_guard lock(mu_);
  return lines_;
}

// -- ReceivedFrame ------------------------------------------------------------------------

ReceivedFrame::ReceivedFrame(std::span<const std::uint8_t> bytes)
    : storage_((bytes.size() + 7) / 8), size_(bytes.size()) {
  std::memcpy(storage_.data(), bytes.data(), bytes.size());
}

std::optional<ErrorCode> ReceivedFrame::error_code() const {
  const auto* err = frame().body_as_Error();
  if (err == nullptr) return std::nullopt;
  return error_code_from_wire(err->code());
}

// -- RawConnection ------------------------------------------------------------------------

RawConnection::RawConnection(RawConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), in_(std::move(other.in_)) {}

RawConnection& RawConnection::operator=(RawConnection&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    in_ = std::move(other.in_);
  }
  return *this;
}

RawConnection::~RawConnection() { close(); }

Result<RawConnection> RawConnection::connect(std::string_view address, std::chrono::milliseconds timeout) {
  auto hp = common::parse_host_port(address);
  if (!hp) return hp.error();
  sockaddr_storage addr{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, hp->host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(hp->port);
    len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, hp->host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(hp->port);
    len = sizeof(sockaddr_in6);
  } else {
    return Error(ErrorCode::kInvalidArgument, "'" + hp->host + "' is not an IP address");
  }
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error(ErrorCode::kInternal, errno_text("socket"));
  RawConnection conn(fd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno != EINPROGRESS) return Error(ErrorCode::kConnectionLost, errno_text("connect"));
    if (!conn.poll_until(POLLOUT, Clock::now() + timeout))
      return Error(ErrorCode::kTimeout, "connect to " + std::string(address) + " timed out");
    int err = 0;
    socklen_t errlen = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen);
    if (err != 0)
      return Error(ErrorCode::kConnectionLost,
                   "connect to " + std::string(address) + ": " + std::strerror(err));
  }
  return conn;
}

bool RawConnection::poll_until(short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd_, events, 0};
    int rc = ::poll(&p, 1, remaining_ms(deadline));
    if (rc > 0) return true;  // ready, or an error/hang-up the next call will report
    if (rc == 0) return false;
    if (errno != EINTR) return true;  // let the caller's syscall report it
  }
}

Status RawConnection::send_bytes(std::span<const std::uint8_t> bytes, std::chrono::milliseconds timeout) {
  if (fd_ < 0) return Error(ErrorCode::kNotConnected, "connection is closed");
  const auto deadline = Clock::now() + timeout;
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!poll_until(POLLOUT, deadline))
        return Error(ErrorCode::kTimeout, "send: socket stayed full, " + std::to_string(done) + " of " +
                                              std::to_string(bytes.size()) + " bytes sent");
      continue;
    }
    return Error(ErrorCode::kConnectionLost, errno_text("send"));
  }
  return {};
}

Status RawConnection::send_frame(const flatbuffers::FlatBufferBuilder& fbb, std::chrono::milliseconds timeout) {
  return send_bytes({fbb.GetBufferPointer(), fbb.GetSize()}, timeout);
}

Result<ReceivedFrame> RawConnection::read_frame(std::chrono::milliseconds timeout,
                                                std::uint32_t max_frame_bytes) {
  if (fd_ < 0) return Error(ErrorCode::kNotConnected, "connection is closed");
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (in_.size() >= 4) {
      std::uint32_t len = static_cast<std::uint32_t>(in_[0]) | static_cast<std::uint32_t>(in_[1]) << 8 |
                          static_cast<std::uint32_t>(in_[2]) << 16 |
                          static_cast<std::uint32_t>(in_[3]) << 24;
      if (len > max_frame_bytes)
        return Error(ErrorCode::kFrameTooLarge, "incoming frame of " + std::to_string(len) + " bytes");
      if (len == 0) return Error(ErrorCode::kMalformedFrame, "incoming frame of length 0");
      if (in_.size() >= 4 + static_cast<std::size_t>(len)) {
        ReceivedFrame frame(std::span<const std::uint8_t>(in_.data(), 4 + len));
        in_.erase(in_.begin(), in_.begin() + 4 + len);
        flatbuffers::Verifier verifier(frame.bytes().data(), frame.bytes().size());
        if (!wire::VerifySizePrefixedFrameBuffer(verifier))
          return Error(ErrorCode::kMalformedFrame, "incoming frame failed verification");
        return frame;
      }
    }
    if (!poll_until(POLLIN, deadline))
      return Error(ErrorCode::kTimeout, "no whole frame within " + std::to_string(timeout.count()) +
                                            " ms (" + std::to_string(in_.size()) + " bytes buffered)");
    std::uint8_t buf[64 * 1024];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      in_.insert(in_.end(), buf, buf + n);
      continue;
    }
    if (n == 0)
      return Error(ErrorCode::kConnectionLost,
                   "peer closed the connection (" + std::to_string(in_.size()) + " bytes buffered)");
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return Error(ErrorCode::kConnectionLost, errno_text("recv"));
  }
}

bool RawConnection::wait_closed(std::chrono::milliseconds timeout) {
  if (fd_ < 0) return true;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (!poll_until(POLLIN, deadline)) return false;
    std::uint8_t buf[64 * 1024];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n > 0) continue;
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return true;  // reset: closed all the same
  }
}

void RawConnection::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void RawConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  in_.clear();
}

double scrape_metric(const BrokerProcess& broker, const std::string& sample) {
  const auto colon = broker.metrics_address().rfind(':');
  if (colon == std::string::npos) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(broker.metrics_address().substr(colon + 1))));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  std::string page;
  if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
    char buf[65536];
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      page.append(buf, static_cast<std::size_t>(n));
    }
  }
  close(fd);
  const auto at = page.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::stod(page.substr(at + sample.size() + 2));
}

}  // namespace txmq::test
