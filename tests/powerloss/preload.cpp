// libtxmq_powerloss_preload.so: an LD_PRELOAD library that journals every change to files
// under $TXMQ_POWERLOSS_DIR into $TXMQ_POWERLOSS_JOURNAL, so that lose_power() can later
// undo whatever a real power loss could have undone (see power_loss.h for the model).
//
// Why a preload: a SIGKILL keeps the page cache, so a kill test cannot tell a missing
// fsync from a present one. Journaling each write's old bytes before it happens, and each
// successful fsync afterwards, lets the test decide after the kill which unsynced writes
// "reached the disk" (Jepsen's LazyFS idea, without FUSE).
//
// Constraints, and why:
// - Only libc and dlsym(RTLD_NEXT): the library is loaded into ASan binaries and into
//   anything else a test runs; no C++ runtime, no exceptions, no static constructors with
//   guards. Built without sanitizers (an uninstrumented library preloaded before the ASan
//   runtime).
// - With the variables unset every call passes straight through.
// - A misconfiguration or a failed journal write aborts the process with a message:
//   silently running without a journal would make a power-loss test pass for nothing.
// - Memory stays bounded by the largest single call (its old bytes are read into a
//   temporary buffer); pending bytes live in the journal, never in RAM.
//
// Not covered (documented in power_loss.h): msync/mmap writes (LMDB uses them only with
// MDB_WRITEMAP), stdio (glibc calls its own internal write), fallocate, truncate(path),
// fcntl(F_DUPFD), hard links, descriptors numbered >= kMaxFds, O_TMPFILE.

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "journal_format.h"

namespace {

namespace journal = txmq::test::powerloss::journal;

// Descriptors up to this number can be tracked; a broker with more open files than this
// would need a bigger table (64 KiB of flags is cheap).
constexpr int kMaxFds = 65536;
// Our own iovecs around the caller's (header, path, old bytes) must fit in one writev.
constexpr int kOwnIovecs = 3;

enum FdKind : std::uint8_t { kUntracked = 0, kTrackedFile = 1, kTrackedDir = 2 };

// The real functions, resolved once with dlsym(RTLD_NEXT) (the ASan interceptor when the
// host is an ASan binary, libc otherwise).
struct RealCalls {
  int (*open)(const char*, int, ...);
  int (*open64)(const char*, int, ...);
  int (*openat)(int, const char*, int, ...);
  int (*openat64)(int, const char*, int, ...);
  int (*open_2)(const char*, int);
  int (*open64_2)(const char*, int);
  int (*creat)(const char*, mode_t);
  int (*close)(int);
  ssize_t (*write)(int, const void*, size_t);
  ssize_t (*pwrite)(int, const void*, size_t, off_t);
  ssize_t (*pwrite64)(int, const void*, size_t, off64_t);
  ssize_t (*writev)(int, const struct iovec*, int);
  ssize_t (*pwritev)(int, const struct iovec*, int, off_t);
  ssize_t (*pwritev64)(int, const struct iovec*, int, off64_t);
  int (*ftruncate)(int, off_t);
  int (*ftruncate64)(int, off64_t);
  int (*fsync)(int);
  int (*fdatasync)(int);
  void (*sync)();
  int (*syncfs)(int);
  int (*mkdir)(const char*, mode_t);
  int (*mkdirat)(int, const char*, mode_t);
  int (*dup)(int);
  int (*dup2)(int, int);
  int (*dup3)(int, int, int);
  int (*unlink)(const char*);
  int (*unlinkat)(int, const char*, int);
  int (*rmdir)(const char*);
  int (*rename)(const char*, const char*);
  int (*renameat)(int, const char*, int, const char*);
  int (*renameat2)(int, const char*, int, const char*, unsigned);
};

RealCalls real;
pthread_once_t init_once = PTHREAD_ONCE_INIT;
bool active = false;                   // both variables set; written once in init()
char watched_dir[PATH_MAX];            // canonical, no trailing slash
size_t watched_dir_length = 0;
int journal_fd = -1;
// Serialises journal appends, and each tracked write with its record, so that the
// journal order is the order the writes hit the page cache (fsync's "durable up to S"
// relies on it). Never held across fsync.
pthread_mutex_t journal_mutex = PTHREAD_MUTEX_INITIALIZER;
std::uint64_t record_counter = 0;      // guarded by journal_mutex
// $TXMQ_POWERLOSS_KILL_AT: the process SIGKILLs itself just before its Nth tracked write,
// truncate or fsync (counted from its start), so that a power loss can land inside a
// commit's sequence of writes rather than between commits. 0: never.
std::uint64_t kill_at = 0;
std::uint64_t events = 0;              // guarded by journal_mutex
char killed_at_path[PATH_MAX];         // where the moment of that kill is written
std::atomic<std::uint8_t> fd_kinds[kMaxFds];  // FdKind per descriptor

// Writes msg to stderr and aborts: used only when continuing would make the simulation lie.
[[noreturn]] void die(const char* msg) {
  const char prefix[] = "txmq powerloss preload: ";
  if (real.write) {
    real.write(2, prefix, sizeof(prefix) - 1);
    real.write(2, msg, strlen(msg));
    real.write(2, "\n", 1);
  }
  abort();
}

template <typename F>
void resolve(F& slot, const char* name) {
  slot = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

void resolve_all() {
  resolve(real.open, "open");
  resolve(real.open64, "open64");
  resolve(real.openat, "openat");
  resolve(real.openat64, "openat64");
  resolve(real.open_2, "__open_2");
  resolve(real.open64_2, "__open64_2");
  resolve(real.creat, "creat");
  resolve(real.close, "close");
  resolve(real.write, "write");
  resolve(real.pwrite, "pwrite");
  resolve(real.pwrite64, "pwrite64");
  resolve(real.writev, "writev");
  resolve(real.pwritev, "pwritev");
  resolve(real.pwritev64, "pwritev64");
  resolve(real.ftruncate, "ftruncate");
  resolve(real.ftruncate64, "ftruncate64");
  resolve(real.fsync, "fsync");
  resolve(real.fdatasync, "fdatasync");
  resolve(real.sync, "sync");
  resolve(real.syncfs, "syncfs");
  resolve(real.mkdir, "mkdir");
  resolve(real.mkdirat, "mkdirat");
  resolve(real.dup, "dup");
  resolve(real.dup2, "dup2");
  resolve(real.dup3, "dup3");
  resolve(real.unlink, "unlink");
  resolve(real.unlinkat, "unlinkat");
  resolve(real.rmdir, "rmdir");
  resolve(real.rename, "rename");
  resolve(real.renameat, "renameat");
  resolve(real.renameat2, "renameat2");
}

// A forked child shares the journal (same open file description, O_APPEND keeps appends
// whole); it must not inherit the mutex locked by another thread of the parent.
void before_fork() { pthread_mutex_lock(&journal_mutex); }
void after_fork() { pthread_mutex_unlock(&journal_mutex); }

void init() {
  resolve_all();
  const char* dir = getenv("TXMQ_POWERLOSS_DIR");
  const char* journal_dir = getenv("TXMQ_POWERLOSS_JOURNAL");
  if (!dir || !*dir || !journal_dir || !*journal_dir) return;
  if (dir[0] != '/') die("TXMQ_POWERLOSS_DIR must be an absolute path");
  // The descriptor paths we compare against come from /proc/self/fd, which are canonical;
  // a watched dir that does not exist yet is taken as written.
  if (!realpath(dir, watched_dir)) {
    if (strlen(dir) >= sizeof(watched_dir)) die("TXMQ_POWERLOSS_DIR too long");
    strcpy(watched_dir, dir);
  }
  watched_dir_length = strlen(watched_dir);
  while (watched_dir_length > 1 && watched_dir[watched_dir_length - 1] == '/')
    watched_dir[--watched_dir_length] = '\0';
  char journal_path[PATH_MAX];
  if (snprintf(journal_path, sizeof(journal_path), "%s/%s", journal_dir, journal::kFileName) >=
      static_cast<int>(sizeof(journal_path)))
    die("TXMQ_POWERLOSS_JOURNAL too long");
  journal_fd = real.open(journal_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (journal_fd < 0) die("cannot open the journal in TXMQ_POWERLOSS_JOURNAL");
  if (const char* k = getenv("TXMQ_POWERLOSS_KILL_AT"); k && *k) kill_at = strtoull(k, nullptr, 10);
  if (snprintf(killed_at_path, sizeof(killed_at_path), "%s/%s", journal_dir, journal::kKilledAtFileName) >=
      static_cast<int>(sizeof(killed_at_path)))
    die("TXMQ_POWERLOSS_JOURNAL too long");
  pthread_atfork(before_fork, after_fork, after_fork);
  active = true;
}

// Counts one tracked write, truncate or sync; dies at the kill_at-th. Called with
// journal_mutex held, after the change's journal record and before the real call: the
// journal then holds a write that never happened, which rolls back to the same bytes.
// The moment is written first (CLOCK_MONOTONIC nanoseconds, as text), because a test
// sees the death only when it reaps the process, which for a large one comes much later.
void count_event() {
  if (kill_at == 0 || ++events != kill_at) return;
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  char text[32];
  int n = snprintf(text, sizeof(text), "%lld\n", static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec);
  int fd = real.open(killed_at_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    (void)!real.write(fd, text, static_cast<size_t>(n));
    real.close(fd);
  }
  kill(getpid(), SIGKILL);
}

// True when the preload journals; resolves the real calls on first use (a constructor of
// another library may call open before ours runs).
bool ensure_active() {
  pthread_once(&init_once, init);
  return active;
}

__attribute__((constructor)) void preload_constructor() { ensure_active(); }

// path is inside the watched dir (or is it, when allow_self: a directory fsync on the
// watched dir itself makes its entries durable).
bool is_watched(const char* path, bool allow_self) {
  if (strncmp(path, watched_dir, watched_dir_length) != 0) return false;
  char next = path[watched_dir_length];
  return next == '/' || (allow_self && next == '\0');
}

// The canonical path of an open descriptor, from /proc/self/fd. False when unknown.
bool fd_path(int fd, char (&out)[PATH_MAX]) {
  char link[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, out, sizeof(out) - 1);
  if (n <= 0) return false;
  out[n] = '\0';
  return true;
}

FdKind kind_of(int fd) {
  if (fd < 0 || fd >= kMaxFds) return kUntracked;
  return static_cast<FdKind>(fd_kinds[fd].load(std::memory_order_relaxed));
}

void set_kind(int fd, FdKind kind) {
  if (fd >= 0 && fd < kMaxFds) fd_kinds[fd].store(kind, std::memory_order_relaxed);
}

// Decides whether a freshly opened descriptor is one we journal: a regular file inside
// the watched dir, or a directory inside it (or the watched dir itself) for fsync.
FdKind classify(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return kUntracked;
  bool is_dir = S_ISDIR(st.st_mode);
  if (!is_dir && !S_ISREG(st.st_mode)) return kUntracked;
  char path[PATH_MAX];
  if (!fd_path(fd, path) || !is_watched(path, is_dir)) return kUntracked;
  return is_dir ? kTrackedDir : kTrackedFile;
}

// Caller holds journal_mutex.
std::uint64_t next_id() { return (static_cast<std::uint64_t>(getpid()) << 32) | ++record_counter; }

// Appends iov[0..count) to the journal, retrying short writes. Caller holds journal_mutex.
void journal_append(struct iovec* iov, int count) {
  while (count > 0) {
    ssize_t n = real.writev(journal_fd, iov, count);
    if (n < 0) die("journal write failed");
    while (count > 0 && static_cast<size_t>(n) >= iov->iov_len) {
      n -= static_cast<ssize_t>(iov->iov_len);
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + n;
      iov->iov_len -= static_cast<size_t>(n);
    }
  }
}

// A record with no data. Caller holds journal_mutex.
void append_simple(journal::RecordType type, std::uint64_t id, std::uint64_t offset, const char* path,
                   std::uint32_t flags = 0) {
  journal::RecordHeader header{};
  header.magic = journal::kMagic;
  header.type = type;
  header.id = id;
  header.offset = offset;
  header.path_length = path ? static_cast<std::uint32_t>(strlen(path)) : 0;
  header.flags = flags;
  struct iovec iov[2] = {{&header, sizeof(header)}, {const_cast<char*>(path ? path : ""), header.path_length}};
  journal_append(iov, 2);
}

// The journal's size: the position the next record will get. Caller holds journal_mutex.
std::uint64_t journal_position() {
  struct stat st;
  if (fstat(journal_fd, &st) != 0) die("cannot stat the journal");
  return static_cast<std::uint64_t>(st.st_size);
}

// The bytes of [offset, offset + length) that exist in fd's file, read through a private
// read-only descriptor (the caller's may be write-only). Returns a malloc'd buffer (the
// caller frees it) and sets *old_length; nullptr with *old_length 0 when there are none.
char* read_old_bytes(int fd, std::uint64_t offset, std::uint64_t length, std::uint64_t old_size,
                     std::uint64_t* old_length) {
  *old_length = 0;
  if (offset >= old_size || length == 0) return nullptr;
  std::uint64_t want = old_size - offset < length ? old_size - offset : length;
  char link[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  int reader = real.open(link, O_RDONLY | O_CLOEXEC);
  if (reader < 0) die("cannot reopen a tracked file for reading its old bytes");
  char* buffer = static_cast<char*>(malloc(want));
  if (!buffer) die("out of memory reading old bytes");
  std::uint64_t done = 0;
  while (done < want) {
    ssize_t n = pread(reader, buffer + done, want - done, static_cast<off_t>(offset + done));
    if (n < 0) die("cannot read the old bytes of a tracked file");
    if (n == 0) break;  // the file shrank under us: what is gone was not overwritten
    done += static_cast<std::uint64_t>(n);
  }
  real.close(reader);
  *old_length = done;
  return buffer;
}

std::uint64_t file_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) die("cannot stat a tracked file");
  return static_cast<std::uint64_t>(st.st_size);
}

// Journals a write or truncate that is about to happen on tracked fd. new_iov/new_count:
// the new bytes (none for a truncate). Returns the record's id. Caller holds journal_mutex.
std::uint64_t journal_change(journal::RecordType type, int fd, std::uint64_t offset, std::uint64_t length,
                             const struct iovec* new_iov, int new_count) {
  char path[PATH_MAX];
  if (!fd_path(fd, path)) die("cannot name a tracked descriptor");
  std::uint64_t old_size = file_size(fd);
  std::uint64_t old_length = 0;
  char* old_bytes = nullptr;
  if (type == journal::kWrite) {
    old_bytes = read_old_bytes(fd, offset, length, old_size, &old_length);
  } else if (offset < old_size) {  // a truncate that cuts keeps what it cuts
    old_bytes = read_old_bytes(fd, offset, old_size - offset, old_size, &old_length);
  }
  journal::RecordHeader header{};
  header.magic = journal::kMagic;
  header.type = type;
  header.id = next_id();
  header.offset = offset;
  header.old_size = old_size;
  header.old_length = old_length;
  header.new_length = type == journal::kWrite ? length : 0;
  header.path_length = static_cast<std::uint32_t>(strlen(path));

  // One writev carries the whole record; a caller's writev with too many pieces to fit
  // beside ours is gathered into one buffer first.
  char* gathered = nullptr;
  struct iovec single;
  if (new_count + kOwnIovecs > IOV_MAX) {
    gathered = static_cast<char*>(malloc(length ? length : 1));
    if (!gathered) die("out of memory gathering a writev");
    std::uint64_t at = 0;
    for (int i = 0; i < new_count; ++i) {
      memcpy(gathered + at, new_iov[i].iov_base, new_iov[i].iov_len);
      at += new_iov[i].iov_len;
    }
    single = {gathered, length};
    new_iov = &single;
    new_count = 1;
  }
  struct iovec iov[IOV_MAX];
  iov[0] = {&header, sizeof(header)};
  iov[1] = {path, header.path_length};
  iov[2] = {old_bytes, old_length};
  for (int i = 0; i < new_count; ++i) iov[kOwnIovecs + i] = new_iov[i];
  journal_append(iov, kOwnIovecs + new_count);
  free(gathered);
  free(old_bytes);
  return header.id;
}

std::uint64_t total_length(const struct iovec* iov, int count) {
  std::uint64_t total = 0;
  for (int i = 0; i < count; ++i) total += iov[i].iov_len;
  return total;
}

// The offset a write lands at: `explicit_offset` for pwrite (-1 for write/writev: the
// descriptor's position), except that O_APPEND always appends (even pwrite, on Linux).
std::uint64_t landing_offset(int fd, int status_flags, off_t explicit_offset) {
  if (status_flags & O_APPEND) return file_size(fd);
  if (explicit_offset >= 0) return static_cast<std::uint64_t>(explicit_offset);
  off_t position = lseek(fd, 0, SEEK_CUR);
  if (position < 0) die("cannot find the position of a tracked descriptor");
  return static_cast<std::uint64_t>(position);
}

// Runs `call` (the real write) with its journal record before it and, for a short or
// failed write, a kResult record after it; through an O_SYNC/O_DSYNC descriptor a
// successful write is then marked durable. errno is the real call's.
template <typename Call>
ssize_t journaled_write(int fd, const struct iovec* iov, int iovcnt, off_t explicit_offset, Call call) {
  if (!ensure_active() || kind_of(fd) != kTrackedFile || iovcnt < 0 || iovcnt > IOV_MAX) return call();
  pthread_mutex_lock(&journal_mutex);
  int status_flags = fcntl(fd, F_GETFL);
  std::uint64_t length = total_length(iov, iovcnt);
  std::uint64_t offset = landing_offset(fd, status_flags, explicit_offset);
  std::uint64_t id = journal_change(journal::kWrite, fd, offset, length, iov, iovcnt);
  count_event();
  ssize_t written = call();
  int saved_errno = errno;
  if (written < 0 || static_cast<std::uint64_t>(written) != length)
    append_simple(journal::kResult, id, written < 0 ? 0 : static_cast<std::uint64_t>(written), nullptr);
  if (written >= 0 && (status_flags & O_DSYNC)) append_simple(journal::kWriteDurable, id, 0, nullptr);
  pthread_mutex_unlock(&journal_mutex);
  errno = saved_errno;
  return written;
}

template <typename Call>
int journaled_truncate(int fd, off64_t length, Call call) {
  if (!ensure_active() || kind_of(fd) != kTrackedFile || length < 0) return call();
  pthread_mutex_lock(&journal_mutex);
  std::uint64_t id = journal_change(journal::kTruncate, fd, static_cast<std::uint64_t>(length), 0, nullptr, 0);
  count_event();
  int rc = call();
  int saved_errno = errno;
  if (rc != 0) append_simple(journal::kResult, id, 0, nullptr);
  pthread_mutex_unlock(&journal_mutex);
  errno = saved_errno;
  return rc;
}

// fsync/fdatasync: the records before the call's start are durable once it succeeds;
// a write racing with it stays pending. On a directory: the entries created in it.
template <typename Call>
int journaled_sync(int fd, Call call) {
  FdKind kind = ensure_active() ? kind_of(fd) : kUntracked;
  char path[PATH_MAX];
  if (kind == kUntracked || !fd_path(fd, path)) return call();
  pthread_mutex_lock(&journal_mutex);
  std::uint64_t start = journal_position();
  count_event();
  pthread_mutex_unlock(&journal_mutex);
  int rc = call();
  int saved_errno = errno;
  if (rc == 0) {
    pthread_mutex_lock(&journal_mutex);
    append_simple(kind == kTrackedDir ? journal::kDirSync : journal::kFileSync, 0, start, path);
    pthread_mutex_unlock(&journal_mutex);
  }
  errno = saved_errno;
  return rc;
}

// The canonical path of dirfd/path without following a final symlink (O_PATH opens
// anything, even without read permission). False when it does not exist.
bool resolve_path(int dirfd, const char* path, char (&out)[PATH_MAX]) {
  int fd = real.openat(dirfd, path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = fd_path(fd, out);
  real.close(fd);
  return ok;
}

// open with O_TRUNC on an existing tracked file is a truncate to zero: journal it, then
// open, under the mutex. Returns the descriptor or -1 with errno.
template <typename Call>
int truncating_open(int dirfd, const char* path, Call call) {
  int reader = real.openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (reader < 0 || classify(reader) != kTrackedFile || file_size(reader) == 0) {
    if (reader >= 0) real.close(reader);
    return call();
  }
  pthread_mutex_lock(&journal_mutex);
  std::uint64_t id = journal_change(journal::kTruncate, reader, 0, 0, nullptr, 0);
  real.close(reader);
  int fd = call();
  int saved_errno = errno;
  if (fd < 0) append_simple(journal::kResult, id, 0, nullptr);
  pthread_mutex_unlock(&journal_mutex);
  errno = saved_errno;
  return fd;
}

// Every open goes through here: journals O_TRUNC and file creation, and marks the
// descriptor tracked when it names a file or directory under the watched dir.
template <typename Call>
int journaled_open(int dirfd, const char* path, int flags, Call call) {
  if (!ensure_active() || (flags & __O_TMPFILE) == __O_TMPFILE) return call();
  struct stat st;
  bool existed = !(flags & O_CREAT) || fstatat(dirfd, path, &st, 0) == 0;
  bool truncates = (flags & O_TRUNC) && existed && (flags & O_ACCMODE) != O_RDONLY;
  int fd = truncates ? truncating_open(dirfd, path, call) : call();
  if (fd < 0) return fd;
  int saved_errno = errno;
  FdKind kind = classify(fd);
  set_kind(fd, kind);
  char canonical[PATH_MAX];
  if (kind == kTrackedFile && !existed && fd_path(fd, canonical)) {
    pthread_mutex_lock(&journal_mutex);
    append_simple(journal::kCreate, 0, 0, canonical);
    pthread_mutex_unlock(&journal_mutex);
  }
  errno = saved_errno;
  return fd;
}

mode_t mode_argument(int flags, va_list args) {
  return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? static_cast<mode_t>(va_arg(args, int)) : 0;
}

void forget(const char* canonical) {
  pthread_mutex_lock(&journal_mutex);
  append_simple(journal::kForget, 0, 0, canonical);
  pthread_mutex_unlock(&journal_mutex);
}

// unlink/rmdir: the name's records are forgotten once it is gone (see kForget).
template <typename Call>
int journaled_remove(int dirfd, const char* path, Call call) {
  char canonical[PATH_MAX];
  bool watched = ensure_active() && resolve_path(dirfd, path, canonical) && is_watched(canonical, false);
  int rc = call();
  int saved_errno = errno;
  if (rc == 0 && watched) forget(canonical);
  errno = saved_errno;
  return rc;
}

// rename: both names' records are forgotten (the new name resolved after the move).
template <typename Call>
int journaled_rename(int old_dirfd, const char* old_path, int new_dirfd, const char* new_path, Call call) {
  char old_canonical[PATH_MAX];
  bool old_watched = ensure_active() && resolve_path(old_dirfd, old_path, old_canonical) &&
                     is_watched(old_canonical, false);
  int rc = call();
  int saved_errno = errno;
  char new_canonical[PATH_MAX];
  if (rc == 0 && active) {
    if (old_watched) forget(old_canonical);
    if (resolve_path(new_dirfd, new_path, new_canonical) && is_watched(new_canonical, false))
      forget(new_canonical);
  }
  errno = saved_errno;
  return rc;
}

template <typename Call>
int journaled_mkdir(int dirfd, const char* path, Call call) {
  int rc = call();
  if (rc != 0 || !ensure_active()) return rc;
  char canonical[PATH_MAX];
  if (resolve_path(dirfd, path, canonical) && is_watched(canonical, false)) {
    pthread_mutex_lock(&journal_mutex);
    append_simple(journal::kCreate, 0, 0, canonical, journal::kIsDir);
    pthread_mutex_unlock(&journal_mutex);
  }
  return rc;
}

// sync()/syncfs(): everything journaled before the call is durable.
template <typename Call>
int journaled_sync_all(Call call) {
  if (!ensure_active()) return call();
  pthread_mutex_lock(&journal_mutex);
  std::uint64_t start = journal_position();
  pthread_mutex_unlock(&journal_mutex);
  int rc = call();
  int saved_errno = errno;
  if (rc == 0) {
    pthread_mutex_lock(&journal_mutex);
    append_simple(journal::kSyncAll, 0, start, nullptr);
    pthread_mutex_unlock(&journal_mutex);
  }
  errno = saved_errno;
  return rc;
}

int duplicated(int old_fd, int new_fd) {
  if (new_fd >= 0 && new_fd != old_fd) set_kind(new_fd, kind_of(old_fd));
  return new_fd;
}

}  // namespace

// The interposed symbols. Each resolves the real call, then defers to a journaled_* helper.
extern "C" {

int open(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_argument(flags, args);
  va_end(args);
  ensure_active();
  return journaled_open(AT_FDCWD, path, flags, [&] { return real.open(path, flags, mode); });
}

int open64(const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_argument(flags, args);
  va_end(args);
  ensure_active();
  return journaled_open(AT_FDCWD, path, flags, [&] { return real.open64(path, flags, mode); });
}

int openat(int dirfd, const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_argument(flags, args);
  va_end(args);
  ensure_active();
  return journaled_open(dirfd, path, flags, [&] { return real.openat(dirfd, path, flags, mode); });
}

int openat64(int dirfd, const char* path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  mode_t mode = mode_argument(flags, args);
  va_end(args);
  ensure_active();
  return journaled_open(dirfd, path, flags, [&] { return real.openat64(dirfd, path, flags, mode); });
}

int __open_2(const char* path, int flags) {
  ensure_active();
  return journaled_open(AT_FDCWD, path, flags, [&] { return real.open_2(path, flags); });
}

int __open64_2(const char* path, int flags) {
  ensure_active();
  return journaled_open(AT_FDCWD, path, flags, [&] { return real.open64_2(path, flags); });
}

int creat(const char* path, mode_t mode) {
  ensure_active();
  return journaled_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, [&] { return real.creat(path, mode); });
}

int close(int fd) {
  ensure_active();
  // Cleared before the real close: afterwards the number may already belong to a new file.
  set_kind(fd, kUntracked);
  return real.close(fd);
}

int dup(int fd) {
  ensure_active();
  return duplicated(fd, real.dup(fd));
}

int dup2(int fd, int new_fd) {
  ensure_active();
  return duplicated(fd, real.dup2(fd, new_fd));
}

int dup3(int fd, int new_fd, int flags) {
  ensure_active();
  return duplicated(fd, real.dup3(fd, new_fd, flags));
}

ssize_t write(int fd, const void* buffer, size_t count) {
  ensure_active();
  struct iovec iov = {const_cast<void*>(buffer), count};
  return journaled_write(fd, &iov, 1, -1, [&] { return real.write(fd, buffer, count); });
}

ssize_t pwrite(int fd, const void* buffer, size_t count, off_t offset) {
  ensure_active();
  struct iovec iov = {const_cast<void*>(buffer), count};
  return journaled_write(fd, &iov, 1, offset, [&] { return real.pwrite(fd, buffer, count, offset); });
}

ssize_t pwrite64(int fd, const void* buffer, size_t count, off64_t offset) {
  ensure_active();
  struct iovec iov = {const_cast<void*>(buffer), count};
  return journaled_write(fd, &iov, 1, offset, [&] { return real.pwrite64(fd, buffer, count, offset); });
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  ensure_active();
  return journaled_write(fd, iov, iovcnt, -1, [&] { return real.writev(fd, iov, iovcnt); });
}

ssize_t pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  ensure_active();
  return journaled_write(fd, iov, iovcnt, offset, [&] { return real.pwritev(fd, iov, iovcnt, offset); });
}

ssize_t pwritev64(int fd, const struct iovec* iov, int iovcnt, off64_t offset) {
  ensure_active();
  return journaled_write(fd, iov, iovcnt, offset, [&] { return real.pwritev64(fd, iov, iovcnt, offset); });
}

int ftruncate(int fd, off_t length) {
  ensure_active();
  return journaled_truncate(fd, length, [&] { return real.ftruncate(fd, length); });
}

int ftruncate64(int fd, off64_t length) {
  ensure_active();
  return journaled_truncate(fd, length, [&] { return real.ftruncate64(fd, length); });
}

int fsync(int fd) {
  ensure_active();
  return journaled_sync(fd, [&] { return real.fsync(fd); });
}

int fdatasync(int fd) {
  ensure_active();
  return journaled_sync(fd, [&] { return real.fdatasync(fd); });
}

void sync() {
  ensure_active();
  journaled_sync_all([&] {
    real.sync();
    return 0;
  });
}

int syncfs(int fd) {
  ensure_active();
  return journaled_sync_all([&] { return real.syncfs(fd); });
}

int mkdir(const char* path, mode_t mode) {
  ensure_active();
  return journaled_mkdir(AT_FDCWD, path, [&] { return real.mkdir(path, mode); });
}

int mkdirat(int dirfd, const char* path, mode_t mode) {
  ensure_active();
  return journaled_mkdir(dirfd, path, [&] { return real.mkdirat(dirfd, path, mode); });
}

int unlink(const char* path) {
  ensure_active();
  return journaled_remove(AT_FDCWD, path, [&] { return real.unlink(path); });
}

int unlinkat(int dirfd, const char* path, int flags) {
  ensure_active();
  return journaled_remove(dirfd, path, [&] { return real.unlinkat(dirfd, path, flags); });
}

int rmdir(const char* path) {
  ensure_active();
  return journaled_remove(AT_FDCWD, path, [&] { return real.rmdir(path); });
}

int rename(const char* old_path, const char* new_path) {
  ensure_active();
  return journaled_rename(AT_FDCWD, old_path, AT_FDCWD, new_path, [&] { return real.rename(old_path, new_path); });
}

int renameat(int old_dirfd, const char* old_path, int new_dirfd, const char* new_path) {
  ensure_active();
  return journaled_rename(old_dirfd, old_path, new_dirfd, new_path,
                          [&] { return real.renameat(old_dirfd, old_path, new_dirfd, new_path); });
}

int renameat2(int old_dirfd, const char* old_path, int new_dirfd, const char* new_path, unsigned flags) {
  ensure_active();
  return journaled_rename(old_dirfd, old_path, new_dirfd, new_path,
                          [&] { return real.renameat2(old_dirfd, old_path, new_dirfd, new_path, flags); });
}

}  // extern "C"
