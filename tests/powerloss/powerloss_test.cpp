// The power-loss simulator end to end: powerloss_writer runs a script of file operations
// under the preload, prints "ready" and is SIGKILLed; lose_power() then drops the page
// cache in one mode, and the test reads what is left on "disk".

#include <lmdb.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <doctest/doctest.h>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/broker_process.h"
#include "tests/powerloss/power_loss.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using txmq::test::TempDir;
namespace powerloss = txmq::test::powerloss;
using powerloss::LossMode;

// A watched data directory and a journal directory beside it.
struct Disk {
  TempDir data{"powerloss-data"};
  TempDir journal{"powerloss-journal"};

  std::string file(const std::string& name) const { return data.file(name); }
};

// The test's environment with the preload's variables on top, as "NAME=value" strings.
std::vector<std::string> child_environment(const Disk& disk, std::uint64_t kill_at = 0) {
  auto extra = powerloss::preload_env(disk.data.path(), disk.journal.path(), kill_at);
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    std::string name(*entry, std::strcspn(*entry, "="));
    bool replaced = false;
    for (const auto& [key, value] : extra) replaced = replaced || key == name;
    if (!replaced) env.emplace_back(*entry);
  }
  for (const auto& [key, value] : extra) env.push_back(key + "=" + value);
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Reads the child's stdout until "ready" (true) or EOF / the deadline (false).
bool wait_for_ready(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string output;
  while (output.find("ready\n") == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buffer[256];
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) return false;
    output.append(buffer, static_cast<std::size_t>(n));
  }
  return true;
}

// Runs powerloss_writer on `script` (in the data directory, under the preload) until it
// is ready, then SIGKILLs and reaps it: a crash at a known point. With kill_at, the
// preload kills the writer itself at that event, which must happen before "ready".
void run_until_killed(const Disk& disk, std::vector<std::string> script, std::uint64_t kill_at = 0) {
  script.insert(script.begin(), "cd:" + disk.data.path());
  script.insert(script.begin(), TXMQ_POWERLOSS_WRITER);
  script.push_back("ready");
  std::vector<std::string> env = child_environment(disk, kill_at);
  int out[2];
  REQUIRE(pipe2(out, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, TXMQ_POWERLOSS_WRITER, &actions, nullptr, pointers(script).data(), pointers(env).data());
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  REQUIRE(rc == 0);
  bool ready = wait_for_ready(out[0], 10s);
  close(out[0]);
  if (kill_at == 0) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (kill_at == 0) {
    REQUIRE_MESSAGE(ready, "powerloss_writer failed before ready (its stderr is above)");
  } else {
    REQUIRE_MESSAGE(!ready, "powerloss_writer reached ready: event " << kill_at << " never came");
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
  }
}

powerloss::LossReport lose(const Disk& disk, LossMode mode, std::uint64_t seed = 1) {
  auto report = powerloss::lose_power(disk.journal.path(), mode, seed);
  REQUIRE_MESSAGE(report.ok(), report.error().describe());
  INFO(report->describe());
  return *report;
}

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// A file f holding `base`, synced with its directory entry: the durable starting point.
std::vector<std::string> durable_file(const std::string& base) {
  return {"open:f", "pwrite:0:" + base, "fsync", "dirsync:."};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Eight 4-byte writes into slots of a durable file of dots; returns the file after the
// loss, one letter or "...." per slot.
std::string eight_slots_after(LossMode mode, std::uint64_t seed) {
  Disk disk;
  std::vector<std::string> script = durable_file(std::string(32, '.'));
  for (int i = 0; i < 8; ++i) script.push_back("pwrite:" + std::to_string(4 * i) + ":" + std::string(1, static_cast<char>('a' + i)) + "*4");
  run_until_killed(disk, script);
  lose(disk, mode, seed);
  return contents(disk.file("f"));
}

// Whether slot i holds its write whole or not at all.
std::vector<bool> slots_kept(const std::string& file) {
  std::vector<bool> kept;
  REQUIRE(file.size() == 32);
  for (int i = 0; i < 8; ++i) {
    std::string slot = file.substr(4 * i, 4);
    bool is_new = slot == std::string(4, static_cast<char>('a' + i));
    REQUIRE_MESSAGE((is_new || slot == "...."), "slot " << i << " is torn: " << file);
    kept.push_back(is_new);
  }
  return kept;
}

std::string lmdb_get(const std::string& dir, const std::string& key) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  int rc = mdb_env_open(env, dir.c_str(), 0, 0644);
  REQUIRE_MESSAGE(rc == 0, mdb_strerror(rc));
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, nullptr, 0, &dbi) == 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
  std::string value = mdb_get(txn, dbi, &k, &v) == 0 ? std::string(static_cast<char*>(v.mv_data), v.mv_size) : "";
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return value;
}

}  // namespace

TEST_CASE("parse_loss_mode reads back every to_string name and rejects others") {
  for (LossMode mode : {LossMode::kNone, LossMode::kAll, LossMode::kPrefix, LossMode::kSubset, LossMode::kTorn})
    CHECK(powerloss::parse_loss_mode(powerloss::to_string(mode)) == mode);
  CHECK_FALSE(powerloss::parse_loss_mode("some").has_value());
}

TEST_CASE("all mode keeps synced bytes and loses unsynced ones") {
  Disk disk;
  run_until_killed(disk, durable_file("AAAA") + std::vector<std::string>{"pwrite:4:BBBB"});
  REQUIRE(contents(disk.file("f")) == "AAAABBBB");
  auto report = lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "AAAA");
  CHECK(report.files == 1);
  CHECK(report.pending_writes == 1);
  CHECK(report.writes_lost == 1);
  CHECK(report.bytes_reverted == 4);
  CHECK(!exists(disk.journal.file("journal.bin")));
}

TEST_CASE("none mode keeps every write, even of a file whose directory was never synced") {
  Disk disk;
  run_until_killed(disk, {"open:f", "pwrite:0:AAAA", "pwrite:4:BBBB"});
  auto report = lose(disk, LossMode::kNone);
  CHECK(contents(disk.file("f")) == "AAAABBBB");
  CHECK(report.pending_writes == 2);
  CHECK(report.writes_lost == 0);
  CHECK(report.files_removed == 0);
}

TEST_CASE("an overwrite of synced data rolls back to the synced bytes") {
  Disk disk;
  run_until_killed(disk, durable_file("AAAAAAAA") + std::vector<std::string>{"pwrite:2:xx", "pwrite:3:yyy"});
  lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "AAAAAAAA");
}

TEST_CASE("an extension past the end of the file is truncated back") {
  Disk disk;
  run_until_killed(disk, durable_file("x*100") + std::vector<std::string>{"pwrite:1000:y*10"});
  lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == std::string(100, 'x'));
}

TEST_CASE("an unsynced ftruncate is rolled back with the bytes it cut") {
  Disk disk;
  run_until_killed(disk, durable_file("x*100") + std::vector<std::string>{"trunc:10", "trunc:50"});
  REQUIRE(contents(disk.file("f")).size() == 50);
  lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == std::string(100, 'x'));
}

TEST_CASE("an fsync makes only the writes before it durable") {
  Disk disk;
  run_until_killed(disk, durable_file("....") +
                             std::vector<std::string>{"pwrite:0:A", "fdatasync", "pwrite:1:B", "fsync", "pwrite:2:C"});
  lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "AB..");
}

TEST_CASE("subset keeps each write whole or not at all, the same way for the same seed") {
  std::set<std::vector<bool>> outcomes;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    std::string first = eight_slots_after(LossMode::kSubset, seed);
    CHECK(eight_slots_after(LossMode::kSubset, seed) == first);
    outcomes.insert(slots_kept(first));
  }
  CHECK(outcomes.size() > 1);
}

TEST_CASE("prefix keeps the writes in order up to some point") {
  std::set<std::vector<bool>> outcomes;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    std::vector<bool> kept = slots_kept(eight_slots_after(LossMode::kPrefix, seed));
    for (std::size_t i = 1; i < kept.size(); ++i) CHECK_MESSAGE((kept[i - 1] || !kept[i]), "seed " << seed);
    outcomes.insert(kept);
  }
  CHECK(outcomes.size() > 1);
}

TEST_CASE("torn keeps or loses each 512-byte sector piece of a write on its own") {
  // One unaligned write over three sectors: pieces [256,512), [512,1024), [1024,1280).
  const std::vector<std::pair<std::size_t, std::size_t>> pieces = {{256, 512}, {512, 1024}, {1024, 1280}};
  bool saw_partial = false;
  for (std::uint64_t seed = 1; seed <= 12 && !saw_partial; ++seed) {
    Disk disk;
    run_until_killed(disk, durable_file(".*2048") + std::vector<std::string>{"pwrite:256:x*1024"});
    lose(disk, LossMode::kTorn, seed);
    std::string file = contents(disk.file("f"));
    REQUIRE(file.size() == 2048);
    CHECK(file.substr(0, 256) == std::string(256, '.'));
    CHECK(file.substr(1280) == std::string(768, '.'));
    int kept = 0;
    for (auto [begin, end] : pieces) {
      std::string piece = file.substr(begin, end - begin);
      bool is_new = piece == std::string(end - begin, 'x');
      CHECK_MESSAGE((is_new || piece == std::string(end - begin, '.')), "piece at " << begin << " is torn inside");
      kept += is_new;
    }
    saw_partial = kept == 1 || kept == 2;
  }
  CHECK(saw_partial);
}

TEST_CASE("a write through an O_DSYNC descriptor is kept") {
  Disk disk;
  run_until_killed(disk, durable_file("....") + std::vector<std::string>{"open:f:d", "pwrite:0:SYNC"});
  lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "SYNC");
}

TEST_CASE("a created file without a directory fsync disappears in all mode, even when its data was synced") {
  Disk disk;
  run_until_killed(disk, {"open:f", "pwrite:0:AAAA", "fsync"});
  auto report = lose(disk, LossMode::kAll);
  CHECK(!exists(disk.file("f")));
  CHECK(report.files_removed == 1);
}

TEST_CASE("a created file with a directory fsync stays") {
  Disk disk;
  run_until_killed(disk, {"open:f", "pwrite:0:AAAA", "fsync", "dirsync:."});
  auto report = lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "AAAA");
  CHECK(report.files_removed == 0);
}

TEST_CASE("a directory made without a directory fsync is lost with its files") {
  Disk disk;
  run_until_killed(disk, {"mkdir:sub", "open:sub/f", "pwrite:0:AAAA", "fsync", "dirsync:sub"});
  lose(disk, LossMode::kAll);
  CHECK(!exists(disk.file("sub")));
}

TEST_CASE("write and writev at the current offset are tracked") {
  Disk disk;
  run_until_killed(disk, durable_file("0123456789") + std::vector<std::string>{"seek:2", "write:ab", "writev:cd,ef"});
  REQUIRE(contents(disk.file("f")) == "01abcdef89");
  lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "0123456789");
}

TEST_CASE("a write through an O_APPEND descriptor is tracked at the end of the file") {
  Disk disk;
  run_until_killed(disk, durable_file("0123") + std::vector<std::string>{"open:f:a", "write:tail"});
  REQUIRE(contents(disk.file("f")) == "0123tail");
  lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "0123");
}

TEST_CASE("a second process appends to the same journal before the loss") {
  Disk disk;
  run_until_killed(disk, durable_file("AAAA") + std::vector<std::string>{"pwrite:4:BBBB"});
  run_until_killed(disk, {"open:f", "pwrite:8:CCCC"});
  REQUIRE(contents(disk.file("f")) == "AAAABBBBCCCC");
  auto report = lose(disk, LossMode::kAll);
  CHECK(contents(disk.file("f")) == "AAAA");
  CHECK(report.pending_writes == 2);
}

TEST_CASE("an LMDB commit with default flags survives a power loss") {
  Disk disk;
  run_until_killed(disk, {"mkdir:env", "dirsync:.", "lmdb-put:env:k1:v1", "dirsync:env", "lmdb-put:env:k2:v2"});
  lose(disk, LossMode::kAll);
  CHECK(lmdb_get(disk.file("env"), "k1") == "v1");
  CHECK(lmdb_get(disk.file("env"), "k2") == "v2");
}

TEST_CASE("an LMDB commit with MDB_NOSYNC is lost in a power loss: the simulator catches a missing fsync") {
  Disk disk;
  run_until_killed(disk, {"mkdir:env", "dirsync:.", "lmdb-put:env:k1:v1", "dirsync:env", "lmdb-put:env:k2:v2:nosync"});
  REQUIRE(lmdb_get(disk.file("env"), "k2") == "v2");  // a plain kill keeps it
  lose(disk, LossMode::kAll);
  CHECK(lmdb_get(disk.file("env"), "k1") == "v1");
  CHECK(lmdb_get(disk.file("env"), "k2") == "");
}

TEST_CASE("TXMQ_POWERLOSS_KILL_AT kills the process just before its Nth write or sync") {
  // Events: 1 write AAAA, 2 fsync, 3 the directory's fsync, 4 write BBBB, 5 fsync.
  Disk disk;
  const auto spawned = std::chrono::steady_clock::now();
  run_until_killed(disk, {"open:f", "pwrite:0:AAAA", "fsync", "dirsync:.", "pwrite:4:BBBB", "fsync"}, 4);
  auto killed = powerloss::take_self_kill_time(disk.journal.path());
  REQUIRE(killed.has_value());
  CHECK(*killed >= spawned);
  CHECK(*killed <= std::chrono::steady_clock::now());
  CHECK_FALSE(powerloss::take_self_kill_time(disk.journal.path()).has_value());  // taken once
  CHECK(contents(disk.file("f")) == "AAAA");  // killed before BBBB reached the page cache
  auto report = lose(disk, LossMode::kNone);
  CHECK(contents(disk.file("f")) == "AAAA");  // its journal record rolls back to the same bytes
  CHECK(report.pending_writes == 1);

  Disk before_sync;
  run_until_killed(before_sync, {"open:f", "pwrite:0:AAAA", "fsync", "dirsync:.", "pwrite:4:BBBB", "fsync"}, 5);
  CHECK(contents(before_sync.file("f")) == "AAAABBBB");  // written, killed before its fsync
  lose(before_sync, LossMode::kAll);
  CHECK(contents(before_sync.file("f")) == "AAAA");
}
