#pragma once
// The power-loss journal: the one file format shared by the preload (which appends to it)
// and lose_power() (which reads it back). Header-only, plain C layout, no C++ runtime:
// the preload links nothing but libc.
//
// The journal is <journal dir>/journal.bin, a sequence of records appended with O_APPEND,
// each one write call under the preload's mutex. A record's position (its byte offset in
// the journal) is its sequence number: it orders records across threads and across the
// processes that append to the same journal one after another. Host byte order: the
// journal never leaves the machine that wrote it.
//
// Record = RecordHeader, then path_length bytes of path (absolute, canonical, no NUL),
// then old_length bytes of old data, then new_length bytes of new data.

#include <cstdint>

namespace txmq::test::powerloss::journal {

inline constexpr char kFileName[] = "journal.bin";
// Written by a process that TXMQ_POWERLOSS_KILL_AT killed: the moment, CLOCK_MONOTONIC ns.
inline constexpr char kKilledAtFileName[] = "killed-at";
inline constexpr std::uint32_t kMagic = 0x4c505854;  // "TXPL" in a little-endian dump

enum RecordType : std::uint32_t {
  // A write of new_length bytes at `offset` is about to happen. old_length bytes follow
  // (the bytes it overwrites that existed: min(new_length, old_size - offset)), then the
  // new bytes.
  kWrite = 1,
  // ftruncate to `offset` is about to happen. old bytes: [offset, old_size) when it cuts.
  kTruncate = 2,
  // The write or truncate `id` completed with `offset` bytes written (0: it failed).
  // Appended only when that differs from what the record announced.
  kResult = 3,
  // The write `id` (through an O_SYNC/O_DSYNC descriptor) returned: it is durable.
  kWriteDurable = 4,
  // fsync/fdatasync on file `path` succeeded; every record of it before journal position
  // `offset` (the journal size when the call began) is durable.
  kFileSync = 5,
  // `path` was created (file: open with O_CREAT where nothing existed; flags & kIsDir:
  // mkdir). Its directory entry is durable only once its parent directory is synced.
  kCreate = 6,
  // fsync on directory `path` succeeded: entries created in it before position `offset`
  // are durable.
  kDirSync = 7,
  // sync()/syncfs(): everything before position `offset` is durable.
  kSyncAll = 8,
  // `path` was unlinked or renamed (either side). Its earlier records are forgotten:
  // namespace changes are not simulated, and data under a vanished name cannot be
  // rolled back.
  kForget = 9,
};

inline constexpr std::uint32_t kIsDir = 1;  // RecordHeader::flags for kCreate

struct RecordHeader {
  std::uint32_t magic;        // kMagic, to catch a misparse early
  std::uint32_t type;         // RecordType
  std::uint64_t id;           // pid << 32 | per-process counter; referenced by kResult/kWriteDurable
  std::uint64_t offset;       // meaning depends on type (see RecordType)
  std::uint64_t old_size;     // kWrite/kTruncate: file size before the call
  std::uint64_t old_length;   // bytes of old data that follow the path
  std::uint64_t new_length;   // bytes of new data that follow the old data
  std::uint32_t path_length;  // bytes of path right after the header
  std::uint32_t flags;        // kIsDir for kCreate
};
static_assert(sizeof(RecordHeader) == 56);

}  // namespace txmq::test::powerloss::journal
