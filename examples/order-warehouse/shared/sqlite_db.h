#pragma once
// A thin owner of one SQLite connection, just enough for the example's three databases.
//
// Why so small: each service runs a handful of fixed statements; what matters for the
// reader is *which* statements share a transaction, so the wrapper only offers exec,
// prepared statements and an explicit transaction.
//
// Threads: a Db is used by one thread at a time. The services guard theirs with a mutex
// because the HTTP threads, the client's I/O threads and the checker all reach it.
// Errors: every failure throws SqliteError (the services catch it at the edge of each
// request or delivery and turn it into a rollback, a nack or a 500).

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace orders_example {

// Wall-clock milliseconds since the epoch: the timestamps the example's tables record.
std::int64_t now_ms();

struct SqliteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One prepared statement. Bind with 1-based indexes, step, read columns (0-based).
class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, std::int64_t value);
  // True while a row is available; false when done. Throws on constraint failures too.
  bool step();
  // Runs to completion, ignoring rows.
  void run();
  std::int64_t int64(int column) const;
  std::string text(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

class Db {
 public:
  // Opens (creating) the file with WAL journaling and synchronous=FULL: a commit is on
  // disk when it returns, which the services rely on before they tell the broker anything.
  explicit Db(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(std::string_view sql);
  Statement prepare(std::string_view sql) { return Statement(db_, sql); }
  // The first column of the first row as an integer, or nullopt when there is no row.
  std::optional<std::int64_t> query_int(std::string_view sql, std::string_view text_param = {});
  sqlite3* handle() { return db_; }

 private:
  sqlite3* db_ = nullptr;
};

// BEGIN IMMEDIATE on construction (the write lock up front, so two writers never
// deadlock upgrading), ROLLBACK on destruction unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Db& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace orders_example
