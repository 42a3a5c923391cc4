#include "broker/storage/store_check.h"

#include <lmdb.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "broker/storage/keys.h"
#include "broker/storage/layout.h"
#include "broker/storage/redo.h"
#include "broker/storage/store_internal.h"
#include "broker/storage/txn_records.h"
#include "storage_generated.h"

namespace txmq::broker::storage {
using namespace internal;
namespace {

using Bytes = std::span<const std::uint8_t>;

template <typename Table>
bool verifies(Bytes b) {
  std::vector<std::uint64_t> scratch;
  return verified<Table>(val(b.data(), b.size()), scratch, "").ok();
}

// What every entry of one key space must look like; 0 / nullptr: not checked.
struct Shape {
  const char* name;
  std::size_t key_size;
  bool (*value_ok)(Bytes);
};

bool half_ok(Bytes b) { return HalfRecord::decode(b).has_value(); }
bool ended_ok(Bytes b) { return EndedRecord::decode(b).has_value(); }
bool u64_ok(Bytes b) { return b.size() >= 8; }
bool redo_ok(Bytes b) { return for_each_change(b, kKeySpaces.size(), [](const RedoChange&) { return Status(); }).ok(); }

constexpr Shape kShapes[] = {
    {"meta", 0, nullptr},
    {"topics", 0, verifies<TopicRecord>},
    {"partitions", PartitionKey::kSize, u64_ok},
    {"log", LogKey::kSize, verifies<StoredMessage>},
    {"groups", 0, nullptr},
    {"cursors", CursorKey::kSize, u64_ok},
    {"acked", AckedKey::kSize, nullptr},
    {"pending", PendingKey::kSize, verifies<PendingRecord>},
    {"delayed", DelayedKey::kSize, verifies<DelayedRecord>},
    {"policies", 0, verifies<PolicyRecord>},
    {"txn_open", 8, half_ok},
    {"txn_parked", 8, half_ok},
    {"txn_ended", 8, ended_ok},
    {"txn_checks", 16, u64_ok},
    {"producers", 8, verifies<ProducerRecord>},
    {"replog", 8, redo_ok},
    {"epochs", 8, u64_ok},
    {"undo", 8, redo_ok},
};
static_assert(names_every_key_space(kShapes), "kShapes must follow layout.h's kKeySpaces");

struct EnvCloser {
  void operator()(MDB_env* e) const { mdb_env_close(e); }
};

class Checker {
 public:
  Checker(MDB_txn* txn, StoreCheckReport& report) : txn_(txn), report_(report) {}

  void run() {
    walk_free_list();
    for (const auto& shape : kShapes) walk(shape);
    check_layout_marker();
    check_partitions();
  }
  std::uint8_t sink() const { return sink_; }

 private:
  void problem(std::string what) { report_.problems.push_back(std::move(what)); }

  // Reads every byte of every value, so that every overflow page is touched too.
  static std::uint8_t touch(Bytes b) {
    std::uint8_t x = 0;
    for (std::uint8_t c : b) x ^= c;
    return x;
  }

  void walk_free_list() {
    std::uint64_t n = 0;
    walk_dbi(0, "free list", [&](const MDB_val&, const MDB_val& v) {
      sink_ ^= touch(bytes_of(v));
      ++n;
    });
    report_.entries.emplace_back("(free list)", n);
  }

  void walk(const Shape& shape) {
    if (txn_failed_) return;
    MDB_dbi dbi;
    if (int rc = mdb_dbi_open(txn_, shape.name, 0, &dbi)) {
      problem(std::string("key space '") + shape.name + "': " + mdb_strerror(rc));
      return;
    }
    dbis_[shape.name] = dbi;
    std::uint64_t n = 0, bad_keys = 0, bad_values = 0;
    walk_dbi(dbi, shape.name, [&](const MDB_val& k, const MDB_val& v) {
      ++n;
      sink_ ^= touch(bytes_of(v));
      if (shape.key_size && k.mv_size != shape.key_size) ++bad_keys;
      if (shape.value_ok && !shape.value_ok(bytes_of(v))) ++bad_values;
    });
    report_.entries.emplace_back(shape.name, n);
    if (bad_keys) problem(std::string(shape.name) + ": " + std::to_string(bad_keys) + " keys of the wrong size");
    if (bad_values) problem(std::string(shape.name) + ": " + std::to_string(bad_values) + " records that do not decode");
  }

  // After LMDB found a damaged page the read transaction is unusable: every later call
  // would fail with MDB_BAD_TXN, so the first failure is the one reported.
  template <typename Fn>
  void walk_dbi(MDB_dbi dbi, const char* name, Fn&& fn) {
    if (txn_failed_) return;
    MDB_cursor* cur = nullptr;
    if (int rc = mdb_cursor_open(txn_, dbi, &cur)) {
      problem(std::string(name) + ": cursor: " + mdb_strerror(rc));
      return;
    }
    MDB_val k, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) fn(k, v);
    if (rc != MDB_NOTFOUND) {
      problem(std::string(name) + ": walk stopped: " + mdb_strerror(rc) + "; what follows it was not checked");
      txn_failed_ = true;
    }
    mdb_cursor_close(cur);
  }

  void check_layout_marker() {
    auto it = dbis_.find("meta");
    if (it == dbis_.end() || txn_failed_) return;
    MDB_val k = val(kLayoutMarkerKey), v;
    int rc = mdb_get(txn_, it->second, &k, &v);
    if (rc == MDB_NOTFOUND) problem("the layout marker (meta \"format\") is missing");
    else if (rc) problem(std::string("layout marker: ") + mdb_strerror(rc));
    else if (v.mv_size != 4) problem("the layout marker has " + std::to_string(v.mv_size) + " bytes, not 4");
  }

  // Every partition a topic names has its record, and every stored message lies below its
  // partition's next offset: the two are written in one transaction.
  void check_partitions() {
    if (!dbis_.count("topics") || !dbis_.count("partitions") || !dbis_.count("log")) return;
    std::map<std::array<std::uint8_t, PartitionKey::kSize>, std::uint64_t> next;  // -> next offset
    walk_dbi(dbis_["partitions"], "partitions", [&](const MDB_val& k, const MDB_val& v) {
      if (k.mv_size != PartitionKey::kSize) return;
      std::array<std::uint8_t, PartitionKey::kSize> key;
      std::memcpy(key.data(), k.mv_data, key.size());
      next[key] = read_u64(v);
    });
    std::uint64_t missing = 0;
    walk_dbi(dbis_["topics"], "topics", [&](const MDB_val&, const MDB_val& v) {
      std::vector<std::uint64_t> scratch;
      auto record = verified<TopicRecord>(v, scratch, "topics");
      if (!record) return;
      const TopicRecord* t = *record;
      for (std::uint32_t p = 0; p < t->partitions(); ++p)
        if (!next.count(PartitionKey(TopicId(t->id()), PartitionId(p)).bytes)) ++missing;
    });
    if (missing) problem(std::to_string(missing) + " partitions named by topics have no partition record");
    std::uint64_t orphans = 0, beyond = 0;
    walk_dbi(dbis_["log"], "log", [&](const MDB_val& k, const MDB_val&) {
      if (k.mv_size != LogKey::kSize) return;
      std::array<std::uint8_t, PartitionKey::kSize> key;
      std::memcpy(key.data(), k.mv_data, key.size());
      auto it = next.find(key);
      if (it == next.end()) ++orphans;
      else if (LogKey::offset(static_cast<const std::uint8_t*>(k.mv_data)).value() >= it->second) ++beyond;
    });
    if (orphans) problem(std::to_string(orphans) + " stored messages belong to no partition");
    if (beyond) problem(std::to_string(beyond) + " stored messages at or past their partition's next offset");
  }

  MDB_txn* txn_;
  StoreCheckReport& report_;
  std::map<std::string, MDB_dbi> dbis_;
  std::uint8_t sink_ = 0;  // keeps the value reads from being optimised away
  bool txn_failed_ = false;
};

}  // namespace

std::string StoreCheckReport::describe() const {
  std::string out = "last transaction " + std::to_string(last_txnid) + ", file " + std::to_string(file_bytes) + " bytes\n";
  for (const auto& [name, n] : entries) out += "  " + name + ": " + std::to_string(n) + " entries\n";
  if (problems.empty()) return out + "no problems found\n";
  std::size_t shown = 0;
  for (const auto& p : problems) {
    if (shown++ == 20) break;
    out += "PROBLEM: " + p + "\n";
  }
  if (problems.size() > 20) out += "... and " + std::to_string(problems.size() - 20) + " more\n";
  return out;
}

Result<StoreCheckReport> check_store(const std::string& dir) {
  std::error_code ec;
  const auto file = std::filesystem::path(dir) / "data.mdb";
  if (!std::filesystem::is_regular_file(file, ec))
    return Error(ErrorCode::kStorageError, "no store in " + dir + ": " + file.string() + " does not exist");
  MDB_env* raw = nullptr;
  if (int rc = mdb_env_create(&raw)) return lmdb_error(rc, "mdb_env_create");
  std::unique_ptr<MDB_env, EnvCloser> env(raw);
  mdb_env_set_maxdbs(raw, 24);
  if (int rc = mdb_env_open(raw, dir.c_str(), MDB_RDONLY | MDB_NOTLS, 0))
    return lmdb_error(rc, "cannot open the store in " + dir);
  StoreCheckReport report;
  MDB_envinfo info;
  mdb_env_info(raw, &info);
  report.last_txnid = info.me_last_txnid;
  report.file_bytes = std::filesystem::file_size(file, ec);
  MDB_txn* txn = nullptr;
  if (int rc = mdb_txn_begin(raw, nullptr, MDB_RDONLY, &txn)) return lmdb_error(rc, "begin read");
  Checker checker(txn, report);
  checker.run();
  mdb_txn_abort(txn);
  (void)checker.sink();
  return report;
}

}  // namespace txmq::broker::storage
