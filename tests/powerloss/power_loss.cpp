#include "power_loss.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <unordered_map>

#include "journal_format.h"

#ifndef TXMQ_POWERLOSS_PRELOAD_PATH
#error "TXMQ_POWERLOSS_PRELOAD_PATH must name libtxmq_powerloss_preload.so (set by tests/powerloss/CMakeLists.txt)"
#endif

namespace txmq::test::powerloss {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kSectorBytes = 512;
constexpr std::size_t kCopyChunk = 1 << 20;  // bounds memory while copying journal bytes back

struct Range {
  std::uint64_t begin;  // file offsets, [begin, end)
  std::uint64_t end;
};

// One journaled write or truncate. Its bytes stay in the journal; we keep where they are.
struct Change {
  std::uint64_t position = 0;    // journal position: the global order
  std::uint64_t id = 0;          // the preload's id, for kResult/kWriteDurable
  bool is_truncate = false;
  std::uint64_t offset = 0;      // write: where; truncate: the new size
  std::uint64_t old_size = 0;    // file size before
  std::uint64_t old_length = 0;  // old bytes kept in the journal
  std::uint64_t old_data = 0;    // their journal position
  std::uint64_t applied = 0;     // new bytes really written (less than announced after a short write)
  std::uint64_t new_data = 0;    // journal position of the new bytes
  bool failed = false;           // the call failed: it changed nothing
  bool durable = false;          // written through an O_SYNC/O_DSYNC descriptor

  // Set by the loss for pending changes.
  bool pending = false;
  bool kept = true;              // whole change kept (ignored when torn)
  bool torn = false;             // kept_pieces decides, not kept
  std::vector<Range> kept_pieces;
};

struct FileHistory {
  std::vector<Change> changes;
  std::uint64_t synced_before = 0;            // changes before this journal position are durable
  std::optional<std::uint64_t> created_at;    // journal position of its creation, if journaled
  bool is_dir = false;
  bool removed = false;                       // set by the loss: its name did not survive
};

struct Journal {
  std::map<std::string, FileHistory> files;                  // by canonical path; ordered, hence deterministic
  std::map<std::string, std::uint64_t> dir_synced_before;    // directory -> entries before are durable
  std::uint64_t all_synced_before = 0;                       // sync()/syncfs()
  std::unordered_map<std::uint64_t, std::pair<std::string, std::size_t>> by_id;  // change id -> file, index
};

Error io_error(const std::string& what, const std::string& path) {
  return Error(ErrorCode::kInternal, what + " " + path + ": " + std::strerror(errno));
}

// Reads exactly length bytes at offset; false at EOF or on error.
bool read_exact(int fd, void* out, std::size_t length, std::uint64_t offset) {
  auto* bytes = static_cast<char*>(out);
  while (length > 0) {
    ssize_t n = pread(fd, bytes, length, static_cast<off_t>(offset));
    if (n <= 0) return false;
    bytes += n;
    length -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return true;
}

// The change that record `id` refers to, or nullptr when its name was forgotten since.
Change* find_change(Journal& journal, std::uint64_t id) {
  auto it = journal.by_id.find(id);
  if (it == journal.by_id.end()) return nullptr;
  auto& changes = journal.files[it->second.first].changes;
  if (it->second.second >= changes.size() || changes[it->second.second].id != id) return nullptr;
  return &changes[it->second.second];
}

void add_change(Journal& journal, const journal::RecordHeader& header, std::uint64_t position,
                std::uint64_t data, const std::string& path) {
  Change change;
  change.position = position;
  change.id = header.id;
  change.is_truncate = header.type == journal::kTruncate;
  change.offset = header.offset;
  change.old_size = header.old_size;
  change.old_length = header.old_length;
  change.old_data = data;
  change.applied = header.new_length;
  change.new_data = data + header.old_length;
  auto& changes = journal.files[path].changes;
  journal.by_id[header.id] = {path, changes.size()};
  changes.push_back(change);
}

// Folds one record into the journal model.
void apply_record(Journal& journal, const journal::RecordHeader& header, std::uint64_t position,
                  std::uint64_t data, const std::string& path) {
  switch (header.type) {
    case journal::kWrite:
    case journal::kTruncate:
      add_change(journal, header, position, data, path);
      break;
    case journal::kResult:
      if (Change* change = find_change(journal, header.id)) {
        change->failed = change->is_truncate || header.offset == 0;
        change->applied = std::min(change->applied, header.offset);
      }
      break;
    case journal::kWriteDurable:
      if (Change* change = find_change(journal, header.id)) change->durable = true;
      break;
    case journal::kFileSync:
      journal.files[path].synced_before = std::max(journal.files[path].synced_before, header.offset);
      break;
    case journal::kCreate: {
      FileHistory& file = journal.files[path];
      file.created_at = position;
      file.is_dir = (header.flags & journal::kIsDir) != 0;
      break;
    }
    case journal::kDirSync:
      journal.dir_synced_before[path] = std::max(journal.dir_synced_before[path], header.offset);
      break;
    case journal::kSyncAll:
      journal.all_synced_before = std::max(journal.all_synced_before, header.offset);
      break;
    case journal::kForget:
      journal.files.erase(path);
      break;
  }
}

// Parses the whole journal. A record cut short at the end is ignored: the process died
// while appending it, before the change it announces was made.
Result<Journal> read_journal(int fd, const std::string& name) {
  struct stat st;
  if (fstat(fd, &st) != 0) return io_error("cannot stat", name);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  Journal journal;
  std::uint64_t position = 0;
  journal::RecordHeader header;
  while (position + sizeof(header) <= size) {
    if (!read_exact(fd, &header, sizeof(header), position)) return io_error("cannot read", name);
    if (header.magic != journal::kMagic)
      return Error(ErrorCode::kInternal, "corrupt journal " + name + " at position " + std::to_string(position));
    std::uint64_t data = position + sizeof(header) + header.path_length;
    std::uint64_t end = data + header.old_length + header.new_length;
    if (end > size) break;
    std::string path(header.path_length, '\0');
    if (!read_exact(fd, path.data(), path.size(), position + sizeof(header))) return io_error("cannot read", name);
    apply_record(journal, header, position, data, path);
    position = end;
  }
  return journal;
}

std::string parent_of(const std::string& path) { return path.substr(0, path.rfind('/')); }

bool entry_durable(const Journal& journal, const std::string& path, std::uint64_t created_at) {
  if (journal.all_synced_before > created_at) return true;
  auto it = journal.dir_synced_before.find(parent_of(path));
  return it != journal.dir_synced_before.end() && it->second > created_at;
}

// Marks every change not yet durable as pending; returns them in journal order.
std::vector<Change*> mark_pending(Journal& journal) {
  std::vector<Change*> pending;
  for (auto& [path, file] : journal.files) {
    std::uint64_t synced_before = std::max(file.synced_before, journal.all_synced_before);
    for (Change& change : file.changes) {
      change.pending = !change.failed && !change.durable && change.position >= synced_before;
      if (change.pending) pending.push_back(&change);
    }
  }
  std::sort(pending.begin(), pending.end(), [](const Change* a, const Change* b) { return a->position < b->position; });
  return pending;
}

// Splits a write at 512-byte sector boundaries and keeps each piece with probability 1/2.
void tear(Change& change, std::mt19937_64& rng) {
  change.torn = true;
  std::uint64_t end = change.offset + change.applied;
  for (std::uint64_t begin = change.offset; begin < end;) {
    std::uint64_t piece_end = std::min(end, (begin / kSectorBytes + 1) * kSectorBytes);
    if (rng() & 1) change.kept_pieces.push_back({begin, piece_end});
    begin = piece_end;
  }
}

// Chooses which pending changes reached the disk.
void choose_kept(LossMode mode, const std::vector<Change*>& pending, std::mt19937_64& rng) {
  std::uint64_t prefix = mode == LossMode::kPrefix ? rng() % (pending.size() + 1) : 0;
  for (std::size_t i = 0; i < pending.size(); ++i) {
    Change& change = *pending[i];
    switch (mode) {
      case LossMode::kNone: change.kept = true; break;
      case LossMode::kAll: change.kept = false; break;
      case LossMode::kPrefix: change.kept = i < prefix; break;
      case LossMode::kSubset: change.kept = (rng() & 1) != 0; break;
      case LossMode::kTorn:
        if (change.is_truncate) change.kept = (rng() & 1) != 0;
        else tear(change, rng);
        break;
    }
  }
}

// Chooses which created names whose directory was never synced disappear.
void choose_removed(LossMode mode, Journal& journal, std::mt19937_64& rng) {
  for (auto& [path, file] : journal.files) {
    if (!file.created_at || entry_durable(journal, path, *file.created_at)) continue;
    switch (mode) {
      case LossMode::kNone: file.removed = false; break;
      case LossMode::kAll: file.removed = true; break;
      default: file.removed = (rng() & 1) != 0; break;
    }
  }
}

std::uint64_t kept_bytes(const Change& change) {
  if (!change.torn) return change.kept ? change.applied : 0;
  std::uint64_t total = 0;
  for (const Range& piece : change.kept_pieces) total += piece.end - piece.begin;
  return total;
}

// Copies length bytes from the journal at `from` into the file at `to`, in bounded chunks.
Status copy_back(int journal_fd, std::uint64_t from, int file_fd, std::uint64_t to, std::uint64_t length,
                 const std::string& path) {
  std::vector<char> buffer(std::min<std::uint64_t>(length, kCopyChunk));
  while (length > 0) {
    std::size_t n = std::min<std::uint64_t>(length, buffer.size());
    if (!read_exact(journal_fd, buffer.data(), n, from)) return io_error("cannot read journal bytes for", path);
    if (pwrite(file_fd, buffer.data(), n, static_cast<off_t>(to)) != static_cast<ssize_t>(n))
      return io_error("cannot restore", path);
    from += n;
    to += n;
    length -= n;
  }
  return {};
}

Status set_size(int fd, std::uint64_t size, const std::string& path) {
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) return io_error("cannot truncate", path);
  return {};
}

// Undoes one change, given the file as it was right after it.
Status roll_back(int journal_fd, int fd, const Change& change, const std::string& path) {
  if (change.is_truncate) {
    if (Status st = set_size(fd, change.old_size, path); !st) return st;
    return copy_back(journal_fd, change.old_data, fd, change.offset, change.old_length, path);
  }
  if (Status st = copy_back(journal_fd, change.old_data, fd, change.offset, change.old_length, path); !st)
    return st;
  return set_size(fd, change.old_size, path);
}

// Re-does the part of one change that reached the disk.
Status reapply(int journal_fd, int fd, const Change& change, const std::string& path) {
  bool whole = !change.pending || (!change.torn && change.kept);
  if (change.is_truncate) return whole ? set_size(fd, change.offset, path) : Status{};
  if (whole) return copy_back(journal_fd, change.new_data, fd, change.offset, change.applied, path);
  if (!change.torn) return {};
  for (const Range& piece : change.kept_pieces) {
    std::uint64_t from = change.new_data + (piece.begin - change.offset);
    if (Status st = copy_back(journal_fd, from, fd, piece.begin, piece.end - piece.begin, path); !st) return st;
  }
  return {};
}

// Rolls the file back to before its first pending change, then re-applies in order every
// later change that reached the disk (durable ones always, pending ones as chosen).
Status restore_file(int journal_fd, const std::string& path, const FileHistory& file) {
  auto first = std::find_if(file.changes.begin(), file.changes.end(), [](const Change& c) { return c.pending; });
  if (first == file.changes.end()) return {};
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? Status{} : Status(io_error("cannot open", path));
  Status st;
  for (auto it = file.changes.end(); st && it != first;) {
    --it;
    if (!it->failed) st = roll_back(journal_fd, fd, *it, path);
  }
  for (auto it = first; st && it != file.changes.end(); ++it) {
    if (!it->failed) st = reapply(journal_fd, fd, *it, path);
  }
  ::close(fd);
  return st;
}

void count(const FileHistory& file, LossReport& report) {
  bool has_pending = false;
  for (const Change& change : file.changes) {
    if (!change.pending) continue;
    has_pending = true;
    ++report.pending_writes;
    std::uint64_t kept = file.removed ? 0 : kept_bytes(change);
    bool lost = file.removed || (change.is_truncate ? !change.kept : kept < change.applied);
    if (!lost) continue;
    ++report.writes_lost;
    report.bytes_reverted += change.is_truncate
                                 ? (change.offset > change.old_size ? change.offset - change.old_size
                                                                    : change.old_size - change.offset)
                                 : change.applied - kept;
  }
  if (has_pending) ++report.files;
  if (file.removed) ++report.files_removed;
}

Status apply_loss(int journal_fd, const Journal& journal, LossMode mode) {
  if (mode == LossMode::kNone) return {};  // the files already hold every write
  for (const auto& [path, file] : journal.files) {
    if (file.is_dir || file.removed) continue;
    if (Status st = restore_file(journal_fd, path, file); !st) return st;
  }
  // Names last: a removed directory takes everything in it, restored or not.
  for (const auto& [path, file] : journal.files) {
    std::error_code ec;
    if (file.removed) fs::remove_all(path, ec);
    if (ec) return Error(ErrorCode::kInternal, "cannot remove " + path + ": " + ec.message());
  }
  return {};
}

}  // namespace

std::optional<LossMode> parse_loss_mode(std::string_view name) {
  for (LossMode mode : {LossMode::kNone, LossMode::kAll, LossMode::kPrefix, LossMode::kSubset, LossMode::kTorn})
    if (name == to_string(mode)) return mode;
  return std::nullopt;
}

const char* to_string(LossMode mode) {
  switch (mode) {
    case LossMode::kNone: return "none";
    case LossMode::kAll: return "all";
    case LossMode::kPrefix: return "prefix";
    case LossMode::kSubset: return "subset";
    case LossMode::kTorn: return "torn";
  }
  return "unknown";
}

std::string LossReport::describe() const {
  return std::string("power loss mode=") + to_string(mode) + " seed=" + std::to_string(seed) + ": " +
         std::to_string(files) + " files, " + std::to_string(pending_writes) + " pending writes, " +
         std::to_string(writes_lost) + " lost, " + std::to_string(bytes_reverted) + " bytes reverted, " +
         std::to_string(files_removed) + " files removed";
}

std::vector<std::pair<std::string, std::string>> preload_env(const std::string& watched_dir,
                                                             const std::string& journal_dir,
                                                             std::uint64_t kill_at_event) {
  std::string preload = TXMQ_POWERLOSS_PRELOAD_PATH;
  if (const char* existing = std::getenv("LD_PRELOAD"); existing && *existing) preload += std::string(":") + existing;
  std::string asan = "verify_asan_link_order=0";
  if (const char* existing = std::getenv("ASAN_OPTIONS"); existing && *existing) asan = existing + (":" + asan);
  return {{"LD_PRELOAD", preload},
          {"TXMQ_POWERLOSS_DIR", watched_dir},
          {"TXMQ_POWERLOSS_JOURNAL", journal_dir},
          {"ASAN_OPTIONS", asan},
          {"TXMQ_POWERLOSS_KILL_AT", std::to_string(kill_at_event)}};
}

std::optional<std::chrono::steady_clock::time_point> take_self_kill_time(const std::string& journal_dir) {
  const std::string path = journal_dir + "/" + journal::kKilledAtFileName;
  std::ifstream in(path);
  long long ns = 0;
  if (!(in >> ns)) return std::nullopt;
  in.close();
  std::remove(path.c_str());
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::nanoseconds(ns)));
}

Result<LossReport> lose_power(const std::string& journal_dir, LossMode mode, std::uint64_t seed) {
  LossReport report;
  report.mode = mode;
  report.seed = seed;
  std::string name = journal_dir + "/" + journal::kFileName;
  int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? Result<LossReport>(report) : Result<LossReport>(io_error("cannot open", name));
  Result<Journal> journal = read_journal(fd, name);
  if (!journal) {
    ::close(fd);
    return journal.error();
  }
  std::mt19937_64 rng(seed);
  std::vector<Change*> pending = mark_pending(*journal);
  choose_kept(mode, pending, rng);
  choose_removed(mode, *journal, rng);
  for (const auto& [path, file] : journal->files) count(file, report);
  Status st = apply_loss(fd, *journal, mode);
  ::close(fd);
  if (!st) return st.error();
  if (::unlink(name.c_str()) != 0) return io_error("cannot delete", name);
  return report;
}

}  // namespace txmq::test::powerloss
