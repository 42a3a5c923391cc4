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

#include <algorithm>
#include <cstddef>
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
  void clear() {
    bytes_.clear();
    repeatable_ = 0;
  }
  bool empty() const { return bytes_.empty(); }
  std::size_t size() const { return bytes_.size(); }
  // Returns where the change's value begins in the builder (for overwrite()).
  std::size_t add(RedoKind kind, std::uint8_t space, std::span<const std::uint8_t> key,
                  std::span<const std::uint8_t> value = {});
  // Replaces the value of a kPut added earlier (at: what add returned) by one of the same
  // size.
  void overwrite(std::size_t at, std::span<const std::uint8_t> value) {
    std::copy(value.begin(), value.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(at));
  }
  // Appends another builder's changes (a nested transaction's, when it commits).
  void append(const RedoBuilder& other) {
    bytes_.insert(bytes_.end(), other.bytes_.begin(), other.bytes_.end());
    repeatable_ += other.repeatable_;
  }
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
  // Changes of the kinds compaction looks at in either form (not kPutRef, not kDelete):
  // fewer than two, and there is nothing to compact.
  std::size_t repeatable_ = 0;
};

// Reads a record's header. Errors: kStorageError when it is too short or of another version.
Result<RedoHeader> redo_header(std::span<const std::uint8_t> record);

// The changes of a record one at a time, checked as they are read (for_each_change checks
// the whole record before it visits any). Where a change is in the record: `at` is its
// first byte's offset, `end` the offset past it.
class RedoReader {
 public:
  RedoReader(std::span<const std::uint8_t> record, std::size_t key_spaces)
      : record_(record), key_spaces_(key_spaces), pos_(kRedoHeaderBytes) {}
  // The next change into *change; false at the end or when the record does not decode
  // (error() then says why).
  bool next(RedoChange* change);
  const Status& error() const { return error_; }
  std::size_t at() const { return at_; }
  std::size_t end() const { return pos_; }

 private:
  std::span<const std::uint8_t> record_;
  std::size_t key_spaces_;
  std::size_t pos_, at_ = 0;
  Status error_;
};

// A record expanded into a buffer its caller places: plan() reads the stored record and
// looks each kPutRef's message up (as expand_record), size() is then the expanded record's
// size, and write() puts it where the caller wants it: a message's bytes are copied once,
// from where lookup found them. Reusable: a plan keeps its scratch space across records.
class RecordExpander {
 public:
  using Lookup =
      std::function<std::optional<std::span<const std::uint8_t>>(std::uint8_t, std::span<const std::uint8_t>)>;
  // Errors: the record's decoding errors (nothing is planned).
  Status plan(std::span<const std::uint8_t> record, std::size_t key_spaces, const Lookup& lookup);
  std::size_t size() const { return size_; }
  // Writes the planned record; out.size() must be size(). The record and the looked-up
  // values must still be where plan() found them.
  void write(std::span<std::uint8_t> out) const;

 private:
  // A run of the stored record copied as it is, or (ref) a kPutRef written as a kPut: the
  // kind byte, `bytes` (its space byte, key length and key), value's length and value.
  struct Piece {
    std::span<const std::uint8_t> bytes;
    std::span<const std::uint8_t> value;
    bool ref = false;
  };
  std::vector<Piece> pieces_;
  std::size_t size_ = 0;
};

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
Result<std::vector<std::uint8_t>> expand_record(std::span<const std::uint8_t> record, std::size_t key_spaces,
                                                const RecordExpander::Lookup& lookup);

}  // namespace txmq::broker::storage
