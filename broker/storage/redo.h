#pragma once
// A replication record: the changes one committed LMDB write transaction made, key by key.
//
// Every top-level write transaction that changed anything appends one record to the
// replication log (key space "replog") in the same transaction: the puts and deletes its
// ops made, in order, with their bytes. A follower applies a record by replaying exactly
// those changes, so it reaches the leader's store by construction: a time an op read from
// the clock, an id it drew, a retry schedule it computed are already in the bytes. No op
// has to be deterministic, and a new op needs no replication code of its own.
//
// The bytes (layout.h, "replog"):
//   u8 version (kRedoVersion), u64 epoch, u64 leader's wall clock ms at commit,
//   then changes, each: u8 kind, u8 key space (layout.h's kKeySpaces index),
//   varint key length, key, and for kPut: varint value length, value.
//   kDeletePrefix deletes every key that starts with `key` (a topic's log, in one change).
//   kPutRef is a put of a message into the log key space, whose value is left out: a
//   message is written once and never changed, so the value is the one the store holding
//   the record has under that key. The log keeps records in this short form (a message's
//   bytes are stored once); a record sent to a follower is expanded (expand_record).
// Integers are big-endian; varints are LEB128 (7 bits a byte, low first).
//
// Thread: any; plain functions over bytes.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace txmq::broker::storage {

inline constexpr std::uint8_t kRedoVersion = 1;
inline constexpr std::size_t kRedoHeaderBytes = 1 + 8 + 8;

enum class RedoKind : std::uint8_t { kPut = 1, kDelete = 2, kDeletePrefix = 3, kPutRef = 4 };

struct RedoChange {
  RedoKind kind;
  std::uint8_t space;  // index into layout.h's kKeySpaces
  std::span<const std::uint8_t> key;
  std::span<const std::uint8_t> value;  // kPut only
};

struct RedoHeader {
  std::uint64_t epoch = 0;
  std::uint64_t time_ms = 0;
};

// Appends changes to a record under construction. A record starts with begin().
class RedoBuilder {
 public:
  void clear() { bytes_.clear(); }
  bool empty() const { return bytes_.empty(); }
  std::size_t size() const { return bytes_.size(); }
  void add(RedoKind kind, std::uint8_t space, std::span<const std::uint8_t> key,
           std::span<const std::uint8_t> value = {});
  // Appends another builder's changes (a nested transaction's, when it commits).
  void append(const RedoBuilder& other) { bytes_.insert(bytes_.end(), other.bytes_.begin(), other.bytes_.end()); }
  // The whole record: header, then the changes added so far.
  std::vector<std::uint8_t> record(const RedoHeader& header) const;
  // As record(), with one change per key: what a replay of the record leaves is the same,
  // with fewer changes to apply (a batch of 1000 messages rewrites its partition's record
  // 1000 times; one put is kept). A redo record keeps each key's last change; an undo
  // image, applied last change first, its first one (the key as it was). A record that
  // deletes a prefix is kept whole. Changes stay in their order.
  enum class Keep { kLast, kFirst };
  std::vector<std::uint8_t> compacted_record(const RedoHeader& header, std::size_t key_spaces,
                                             Keep keep = Keep::kLast) const;

 private:
  std::vector<std::uint8_t> bytes_;  // changes only; the header is added by record()
};

// Reads a record's header. Errors: kStorageError when it is too short or of another version.
Result<RedoHeader> redo_header(std::span<const std::uint8_t> record);

// Calls visit for each change of a record, in order, after checking the whole record
// first: a record that does not decode (cut short, a length past its end, an unknown kind
// or key space) visits nothing. visit's error stops the walk and is returned.
// Errors: kStorageError naming what does not decode; visit's.
Status for_each_change(std::span<const std::uint8_t> record, std::size_t key_spaces,
                       const std::function<Status(const RedoChange&)>& visit);

// Whether a record holds any kPutRef change (a quick scan; the record is known to decode).
bool has_refs(std::span<const std::uint8_t> record, std::size_t key_spaces);

// The record with each kPutRef made a kPut with the value lookup(space, key) gives; a
// change whose key lookup does not find (the message was deleted since, by a later
// record) is left out. Errors: the record's decoding errors.
Result<std::vector<std::uint8_t>> expand_record(
    std::span<const std::uint8_t> record, std::size_t key_spaces,
    const std::function<std::optional<std::span<const std::uint8_t>>(std::uint8_t, std::span<const std::uint8_t>)>&
        lookup);

}  // namespace txmq::broker::storage
