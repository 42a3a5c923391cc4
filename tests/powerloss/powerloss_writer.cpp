// powerloss_writer: the child process of powerloss_test. Runs its arguments as a script of
// file operations, in order, then prints "ready" and blocks until killed, so that the
// test can SIGKILL it at a known point.
//
// Commands (paths relative to the current directory; "the file" is the last one opened):
//   cd:DIR              chdir
//   open:NAME[:FLAGS]   open O_RDWR|O_CREAT, 0644; FLAGS letters: d O_DSYNC, a O_APPEND, t O_TRUNC
//   pwrite:OFF:DATA     pwrite at OFF
//   write:DATA          write at the current offset
//   writev:DATA,DATA..  writev at the current offset
//   seek:OFF            lseek to OFF
//   trunc:SIZE          ftruncate
//   fsync | fdatasync   on the file
//   close               close the file
//   mkdir:NAME          mkdir 0755
//   dirsync:DIR         fsync a directory
//   lmdb-put:DIR:K:V[:nosync]  open an LMDB env in DIR (default flags, or MDB_NOSYNC),
//                       put K=V, commit, close
//   ready               print "ready", then block until killed
// DATA is literal text, or C*N for N copies of the character C ("x*1024").
// Any failure prints the command and errno to stderr and exits with status 2.

#include <fcntl.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void fail(const std::string& command, int error) {
  std::fprintf(stderr, "powerloss_writer: %s: %s\n", command.c_str(), std::strerror(error));
  std::exit(2);
}

std::vector<std::string> split(const std::string& text, char separator, std::size_t max_parts) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (parts.size() + 1 < max_parts) {
    std::size_t at = text.find(separator, begin);
    if (at == std::string::npos) break;
    parts.push_back(text.substr(begin, at - begin));
    begin = at + 1;
  }
  parts.push_back(text.substr(begin));
  return parts;
}

// Not named data(): std::data would win overload resolution by ADL for a non-const string.
std::string expand(const std::string& spec) {
  if (spec.size() > 2 && spec[1] == '*') return std::string(std::stoul(spec.substr(2)), spec[0]);
  return spec;
}

int open_flags(const std::string& letters) {
  int flags = O_RDWR | O_CREAT;
  for (char c : letters) {
    if (c == 'd') flags |= O_DSYNC;
    if (c == 'a') flags |= O_APPEND;
    if (c == 't') flags |= O_TRUNC;
  }
  return flags;
}

void check(bool ok, const std::string& command) {
  if (!ok) fail(command, errno);
}

void check_lmdb(int rc, const std::string& command) {
  if (rc != 0) {
    std::fprintf(stderr, "powerloss_writer: %s: %s\n", command.c_str(), mdb_strerror(rc));
    std::exit(2);
  }
}

void lmdb_put(const std::string& dir, const std::string& key, const std::string& value, unsigned flags,
              const std::string& command) {
  MDB_env* env = nullptr;
  check_lmdb(mdb_env_create(&env), command);
  check_lmdb(mdb_env_open(env, dir.c_str(), flags, 0644), command);
  MDB_txn* txn = nullptr;
  check_lmdb(mdb_txn_begin(env, nullptr, 0, &txn), command);
  MDB_dbi dbi;
  check_lmdb(mdb_dbi_open(txn, nullptr, 0, &dbi), command);
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{value.size(), const_cast<char*>(value.data())};
  check_lmdb(mdb_put(txn, dbi, &k, &v, 0), command);
  check_lmdb(mdb_txn_commit(txn), command);
  mdb_env_close(env);
}

void write_vector(int fd, const std::string& specs, const std::string& command) {
  std::vector<std::string> pieces;
  for (const std::string& spec : split(specs, ',', 1024)) pieces.push_back(expand(spec));
  std::vector<iovec> iov;
  std::size_t total = 0;
  for (std::string& piece : pieces) {
    iov.push_back({piece.data(), piece.size()});
    total += piece.size();
  }
  check(writev(fd, iov.data(), static_cast<int>(iov.size())) == static_cast<ssize_t>(total), command);
}

void sync_directory(const std::string& dir, const std::string& command) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  check(fd >= 0 && fsync(fd) == 0 && close(fd) == 0, command);
}

[[noreturn]] void ready() {
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) pause();
}

// Runs one command; `fd` is the file of the last open.
void run(const std::string& command, int& fd) {
  std::vector<std::string> a = split(command, ':', 2);
  const std::string& verb = a[0];
  const std::string arg = a.size() > 1 ? a[1] : "";
  if (verb == "cd") {
    check(chdir(arg.c_str()) == 0, command);
  } else if (verb == "open") {
    std::vector<std::string> b = split(arg, ':', 2);
    fd = open(b[0].c_str(), open_flags(b.size() > 1 ? b[1] : ""), 0644);
    check(fd >= 0, command);
  } else if (verb == "pwrite") {
    std::vector<std::string> b = split(arg, ':', 2);
    std::string bytes = expand(b.at(1));
    check(pwrite(fd, bytes.data(), bytes.size(), std::stol(b[0])) == static_cast<ssize_t>(bytes.size()), command);
  } else if (verb == "write") {
    std::string bytes = expand(arg);
    check(write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()), command);
  } else if (verb == "writev") {
    write_vector(fd, arg, command);
  } else if (verb == "seek") {
    check(lseek(fd, std::stol(arg), SEEK_SET) >= 0, command);
  } else if (verb == "trunc") {
    check(ftruncate(fd, std::stol(arg)) == 0, command);
  } else if (verb == "fsync") {
    check(fsync(fd) == 0, command);
  } else if (verb == "fdatasync") {
    check(fdatasync(fd) == 0, command);
  } else if (verb == "close") {
    check(close(fd) == 0, command);
  } else if (verb == "mkdir") {
    check(mkdir(arg.c_str(), 0755) == 0, command);
  } else if (verb == "dirsync") {
    sync_directory(arg, command);
  } else if (verb == "lmdb-put") {
    std::vector<std::string> b = split(arg, ':', 4);
    unsigned flags = b.size() > 3 && b[3] == "nosync" ? MDB_NOSYNC : 0;
    lmdb_put(b.at(0), b.at(1), b.at(2), flags, command);
  } else if (verb == "ready") {
    ready();
  } else {
    fail(command, EINVAL);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int fd = -1;
  for (int i = 1; i < argc; ++i) run(argv[i], fd);
  return 0;
}
