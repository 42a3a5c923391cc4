// Metadata: the layout marker and the counters of the meta key space, topics by name,
// consumer groups' ids by name, and retry policies. See layout.h.

#include <array>
#include <functional>

#include "broker/storage/layout.h"
#include "broker/storage/store.h"
#include "broker/storage/store_internal.h"

namespace txmq::broker::storage {
using namespace internal;

Status Store::check_layout_marker(MDB_txn* txn, bool fresh, bool upgrade,
                                  const std::function<Error(const std::string&)>& damaged) {
  MDB_val k = val(kLayoutMarkerKey), v;
  int rc = mdb_get(txn, meta_, &k, &v);
  if ((rc == MDB_NOTFOUND && fresh) || (rc == 0 && upgrade)) {
    std::array<std::uint8_t, 4> version;
    put_be32(version.data(), kLayoutVersion);
    MDB_val nv = val(version);
    if ((rc = mdb_put(txn, meta_, &k, &nv, 0))) return lmdb_error(rc, "write layout version");
    return {};
  }
  if (rc == MDB_NOTFOUND) return damaged("its layout marker is missing");
  if (rc) return lmdb_error(rc, "read layout version");
  if (v.mv_size != 4) return damaged("its layout marker has " + std::to_string(v.mv_size) + " bytes, not 4");
  const std::uint32_t found = get_be32(static_cast<const std::uint8_t*>(v.mv_data));
  if (found != kLayoutVersion)
    return Error(ErrorCode::kStorageError, "data directory has layout version " + std::to_string(found) +
                                               ", this broker reads version " + std::to_string(kLayoutVersion));
  return {};
}

Result<std::vector<TopicMeta>> Store::load_topics() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), topics_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::vector<TopicMeta> topics;
  std::vector<std::uint64_t> scratch;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    auto record = verified<TopicRecord>(v, scratch, "topics");
    if (!record) return record.error();
    const TopicRecord* rec = *record;
    topics.push_back(TopicMeta{TopicId(rec->id()), rec->name() ? rec->name()->str() : "", rec->partitions(),
                               rec->created_at_ms(), rec->retention_ms(), rec->retention_bytes()});
  }
  return topics;
}

Result<std::vector<std::pair<std::string, GroupId>>> Store::load_groups() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), groups_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::vector<std::pair<std::string, GroupId>> groups;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    if (v.mv_size != 4) return corrupt("groups");
    groups.emplace_back(std::string(static_cast<const char*>(k.mv_data), k.mv_size),
                        GroupId(get_be32(static_cast<const std::uint8_t*>(v.mv_data))));
  }
  return groups;
}

Result<std::vector<std::pair<std::string, std::vector<std::uint8_t>>>> Store::load_policies() const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  Cursor cur(txn.get(), policies_);
  if (cur.rc()) return lmdb_error(cur.rc(), "cursor");
  std::vector<std::pair<std::string, std::vector<std::uint8_t>>> out;
  MDB_val k, v;
  for (int rc = mdb_cursor_get(cur.get(), &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur.get(), &k, &v, MDB_NEXT)) {
    const auto* b = static_cast<const std::uint8_t*>(v.mv_data);
    out.emplace_back(std::string(static_cast<const char*>(k.mv_data), k.mv_size),
                     std::vector<std::uint8_t>(b, b + v.mv_size));
  }
  return out;
}

Result<std::optional<TopicMeta>> WriteTxn::find_topic(std::string_view name) {
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.topics_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<TopicMeta>{};
  if (rc) return lmdb_error(rc, "read topic");
  std::vector<std::uint64_t> scratch;
  auto record = verified<TopicRecord>(v, scratch, "topics");
  if (!record) return record.error();
  const TopicRecord* rec = *record;
  return std::optional<TopicMeta>(TopicMeta{TopicId(rec->id()), std::string(name), rec->partitions(),
                                            rec->created_at_ms(), rec->retention_ms(), rec->retention_bytes()});
}

Result<TopicMeta> WriteTxn::create_topic(std::string_view name, std::uint32_t partitions, std::uint64_t now_ms,
                                         std::uint64_t retention_ms, std::uint64_t retention_bytes, Growth growth) {
  grows(growth);
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.topics_, &k, &v);
  if (rc == 0) return Error(ErrorCode::kTopicExists, "topic '" + std::string(name) + "' already exists");
  if (rc != MDB_NOTFOUND) return lmdb_error(rc, "read topic");
  auto id = next_counter("next_topic_id");
  if (!id) return id.error();
  TopicMeta meta{TopicId(*id), std::string(name), partitions, now_ms, retention_ms, retention_bytes};

  fbb_.Clear();
  fbb_.Finish(CreateTopicRecord(fbb_, meta.id.value(), fbb_.CreateString(meta.name), partitions, now_ms,
                                retention_ms, retention_bytes));
  MDB_val rec = val(fbb_.GetBufferPointer(), fbb_.GetSize());
  if ((rc = put(store_.topics_, &k, &rec, 0))) return lmdb_error(rc, "write topic");
  std::array<std::uint8_t, 16> zero{};
  for (std::uint32_t p = 0; p < partitions; ++p) {
    PartitionKey pk(meta.id, PartitionId(p));
    MDB_val pkv = val(pk.bytes), zv = val(zero);
    if ((rc = put(store_.partitions_, &pkv, &zv, 0)))
      return lmdb_error(rc, "write partition");
  }
  return meta;
}

Status WriteTxn::delete_topic(std::string_view name) {
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.topics_, &k, &v);
  if (rc == MDB_NOTFOUND) return Error(ErrorCode::kUnknownTopic, "unknown topic '" + std::string(name) + "'");
  if (rc) return lmdb_error(rc, "read topic");
  std::vector<std::uint64_t> scratch;
  auto record = verified<TopicRecord>(v, scratch, "topics");
  if (!record) return record.error();
  const TopicId id((*record)->id());
  if ((rc = del(store_.topics_, &k))) return lmdb_error(rc, "delete topic");
  std::array<std::uint8_t, 4> prefix;
  put_be32(prefix.data(), id.value());
  if ((rc = del_prefix(store_.log_, prefix))) return lmdb_error(rc, "delete log");
  if ((rc = del_prefix(store_.partitions_, prefix)))
    return lmdb_error(rc, "delete partitions");
  // Cursors and acks are keyed by group first; topic ids are never reused, so walking
  // them all once here is simpler than a second index, and deletes are rare.
  for (MDB_dbi dbi : {store_.cursors_, store_.acked_, store_.pending_}) {
    Cursor cur(txn_, dbi);
    MDB_val ck, cv;
    for (rc = mdb_cursor_get(cur.get(), &ck, &cv, MDB_FIRST); rc == 0;) {
      if (get_be32(static_cast<const std::uint8_t*>(ck.mv_data) + 4) == id.value()) {
        if ((rc = cursor_del(cur.get(), dbi))) return lmdb_error(rc, "delete cursor");
        rc = mdb_cursor_get(cur.get(), &ck, &cv, MDB_GET_CURRENT);
      } else {
        rc = mdb_cursor_get(cur.get(), &ck, &cv, MDB_NEXT);
      }
    }
    if (rc != MDB_NOTFOUND && rc != EINVAL) return lmdb_error(rc, "delete cursors");
  }
  // Delayed messages of the topic are dropped when they come due (release_delayed).
  return {};
}

Result<GroupId> WriteTxn::intern_group(std::string_view name) {
  MDB_val k = val(name), v;
  int rc = mdb_get(txn_, store_.groups_, &k, &v);
  if (rc == 0 && v.mv_size != 4) return corrupt("groups");
  if (rc == 0) return GroupId(get_be32(static_cast<const std::uint8_t*>(v.mv_data)));
  if (rc != MDB_NOTFOUND) return lmdb_error(rc, "read group");
  auto id = next_counter("next_group_id");
  if (!id) return id.error();
  std::array<std::uint8_t, 4> idv;
  put_be32(idv.data(), *id);
  MDB_val nv = val(idv);
  if ((rc = put(store_.groups_, &k, &nv, 0))) return lmdb_error(rc, "write group");
  return GroupId(*id);
}

Status WriteTxn::put_meta(std::string_view key, std::string_view value) {
  MDB_val k = val(key), v = val(value);
  if (int rc = put(store_.meta_, &k, &v)) return lmdb_error(rc, "write meta");
  return {};
}

Result<std::optional<std::string>> Store::get_meta(std::string_view key) const {
  ReadTxn txn(env_);
  if (txn.rc()) return lmdb_error(txn.rc(), "begin read");
  MDB_val k = val(key), v;
  int rc = mdb_get(txn.get(), meta_, &k, &v);
  if (rc == MDB_NOTFOUND) return std::optional<std::string>();
  if (rc) return lmdb_error(rc, "read meta");
  return std::optional<std::string>(std::string(static_cast<const char*>(v.mv_data), v.mv_size));
}

Status WriteTxn::put_policy(std::string_view key, std::span<const std::uint8_t> record) {
  MDB_val k = val(key), v = val(record.data(), record.size());
  if (int rc = put(store_.policies_, &k, &v, 0)) return lmdb_error(rc, "write policy");
  return {};
}

Result<std::uint32_t> WriteTxn::next_counter(std::string_view name, std::uint32_t n) {
  MDB_val k = val(name), v;
  std::uint32_t id = 1;
  int rc = mdb_get(txn_, store_.meta_, &k, &v);
  if (rc == 0 && v.mv_size != 4) return corrupt("meta");
  if (rc == 0) id = get_be32(static_cast<const std::uint8_t*>(v.mv_data));
  else if (rc != MDB_NOTFOUND) return lmdb_error(rc, "read counter");
  std::array<std::uint8_t, 4> next;
  put_be32(next.data(), id + n);
  MDB_val nv = val(next);
  if ((rc = put(store_.meta_, &k, &nv, 0))) return lmdb_error(rc, "write counter");
  return id;
}

Status WriteTxn::touch() {
  // Not through put(): a tick is no replicated change. A follower whose writer ticks (its
  // store is full) must not grow a record of its own, and digest() leaves the key out.
  MDB_val k = val(kCommitTicksKey), v;
  std::uint32_t ticks = 0;
  int rc = mdb_get(txn_, store_.meta_, &k, &v);
  if (rc == 0 && v.mv_size == 4) ticks = get_be32(static_cast<const std::uint8_t*>(v.mv_data));
  else if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_error(rc, "read commit_ticks");
  std::array<std::uint8_t, 4> next;
  put_be32(next.data(), ticks + 1);
  MDB_val nv = val(next);
  if ((rc = mdb_put(txn_, store_.meta_, &k, &nv, 0))) return lmdb_error(rc, "write commit_ticks");
  return {};
}

}  // namespace txmq::broker::storage
