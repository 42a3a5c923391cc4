#pragma once
// A power-loss simulator for tests: run a process (the broker) with preload_env(), so that
// libtxmq_powerloss_preload.so journals every change it makes under a watched directory;
// SIGKILL and reap it; then lose_power() undoes the changes a power loss could have undone.
//
// Why: a SIGKILL keeps the page cache, so a kill test cannot catch a missing fsync or a
// reliance on write order. Here the page cache is dropped after the kill, in one of
// several ways (LossMode), deterministically for a seed.
//
// The model:
// - A write or truncate is durable once an fsync/fdatasync of its file succeeded after
//   it, or when it went through an O_SYNC/O_DSYNC descriptor, or after sync()/syncfs().
//   Everything else is pending, across process exits too (a clean exit syncs nothing).
// - A file created (open with O_CREAT where nothing existed, or mkdir) keeps its name only
//   once its parent directory was fsynced afterwards; without that, a power loss can
//   remove it with everything in it, even when its data was fsynced.
// - The journal is append-only and never fsynced: the loss is applied after the kill, when
//   the page cache still holds everything.
//
// Caveats a test author must know:
// - Call lose_power() only when no process writing under the watched dir is alive.
// - Not covered: writes through mmap (msync; LMDB uses them only with MDB_WRITEMAP), stdio
//   (glibc writes internally, past the preload), fallocate, truncate(path), hard links,
//   fcntl(F_DUPFD), O_TMPFILE, descriptors numbered 65536 or more. unlink and rename are
//   treated as durable at once, and the data a name held before them as durable too.
// - A write racing with an fsync of the same file counts as durable when its journal
//   record came first (the preload serialises a process's tracked writes, so this only
//   happens across processes).
// - The journal holds the old and new bytes of every tracked write: it grows between
//   syncs of the files and is only emptied by lose_power().

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace txmq::test::powerloss {

enum class LossMode {
  kNone,    // every write reached the disk: a process crash
  kAll,     // every pending write is lost, every unsynced directory entry too
  kPrefix,  // pending writes kept in order up to a random point: a disk that keeps order
  kSubset,  // each pending write kept or lost on its own: a disk that reorders
  kTorn,    // like kSubset, per 512-byte aligned sector piece of each write
};

// "none" | "all" | "prefix" | "subset" | "torn"; nullopt for anything else.
std::optional<LossMode> parse_loss_mode(std::string_view name);
const char* to_string(LossMode mode);

struct LossReport {
  std::uint64_t files = 0;           // tracked files with pending writes
  std::uint64_t pending_writes = 0;  // writes (and truncates) not durable at the loss
  std::uint64_t writes_lost = 0;     // of those, rolled back wholly or in part
  std::uint64_t bytes_reverted = 0;  // new bytes not re-applied, plus sizes a lost truncate changed
  std::uint64_t files_removed = 0;   // created, directory entry never synced, removed
  // "power loss mode=subset seed=7: 2 files, 9 pending writes, 4 lost, 8192 bytes reverted, 0 files removed"
  std::string describe() const;
  LossMode mode = LossMode::kNone;
  std::uint64_t seed = 0;
};

// Environment for a child process whose writes under watched_dir are journaled in
// journal_dir: LD_PRELOAD (the preload's absolute path, ahead of any LD_PRELOAD already
// set), TXMQ_POWERLOSS_DIR, TXMQ_POWERLOSS_JOURNAL, and ASAN_OPTIONS = the current value
// plus verify_asan_link_order=0 (an ASan binary refuses a preload listed before the ASan
// runtime otherwise). Both directories must be absolute; journal_dir must exist and lie
// outside watched_dir. The child aborts at start when it cannot open the journal.
// kill_at_event > 0 (TXMQ_POWERLOSS_KILL_AT): the child SIGKILLs itself just before its
// kill_at_event-th tracked write, truncate or fsync, counted from its start: a loss in
// the middle of a commit's writes, not only between commits.
std::vector<std::pair<std::string, std::string>> preload_env(const std::string& watched_dir,
                                                             const std::string& journal_dir,
                                                             std::uint64_t kill_at_event = 0);

// The power loss. Rolls back the pending writes per mode and seed, removes the created
// files (and directories) whose directory entry was never synced (kAll: every one; kPrefix,
// kSubset, kTorn: each with probability 1/2), then deletes the journal so the next run
// starts a fresh one. The same journal, mode and seed give the same files.
// A journal that does not exist means nothing was written: an empty report.
// Files of the journal that no longer exist are skipped. Errors: kInternal when the
// journal is corrupt (it is then left in place) or a file cannot be read or restored.
// Call only when no process writing under the watched dir is alive. Not thread-safe.
txmq::Result<LossReport> lose_power(const std::string& journal_dir, LossMode mode, std::uint64_t seed);

// When the last process started with kill_at_event killed itself (on the steady clock,
// which is CLOCK_MONOTONIC and so comparable across processes), and forgets it; nullopt
// when none did since the last call.
std::optional<std::chrono::steady_clock::time_point> take_self_kill_time(const std::string& journal_dir);

}  // namespace txmq::test::powerloss
