#include "broker/storage/redo.h"

#include "broker/storage/keys.h"

#include <cstring>
#include <string_view>
#include <unordered_map>

namespace txmq::broker::storage {
namespace {

void put_varint(std::vector<std::uint8_t>& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<std::uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<std::uint8_t>(v));
}

// Reads a varint at *pos; false when it runs past the end or past 64 bits.
bool get_varint(std::span<const std::uint8_t> in, std::size_t* pos, std::uint64_t* v) {
  *v = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return false;
    std::uint8_t b = in[(*pos)++];
    *v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

Error bad_record(std::string_view what) {
  return Error(ErrorCode::kStorageError, "a replication record does not decode: " + std::string(what));
}

std::size_t varint_size(std::uint64_t v) {
  std::size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

std::uint8_t* write_varint(std::uint8_t* out, std::uint64_t v) {
  for (; v >= 0x80; v >>= 7) *out++ = static_cast<std::uint8_t>(v | 0x80);
  *out++ = static_cast<std::uint8_t>(v);
  return out;
}

}  // namespace

bool RedoReader::next(RedoChange* change) {
  if (!error_ || pos_ >= record_.size()) return false;
  auto bad = [&](std::string_view what) {
    error_ = bad_record(what);
    return false;
  };
  if (record_.size() - pos_ < 2) return bad("a change is cut short");
  at_ = pos_;
  *change = RedoChange{static_cast<RedoKind>(record_[pos_]), record_[pos_ + 1], {}, {}};
  pos_ += 2;
  if (change->kind != RedoKind::kPut && change->kind != RedoKind::kDelete && change->kind != RedoKind::kDeletePrefix &&
      change->kind != RedoKind::kPutRef)
    return bad("unknown change kind " + std::to_string(static_cast<int>(change->kind)));
  if (change->space >= key_spaces_) return bad("unknown key space " + std::to_string(change->space));
  std::uint64_t len = 0;
  if (!get_varint(record_, &pos_, &len) || len > record_.size() - pos_) return bad("a key runs past the end");
  change->key = record_.subspan(pos_, len);
  pos_ += len;
  if (change->kind == RedoKind::kPut) {
    if (!get_varint(record_, &pos_, &len) || len > record_.size() - pos_) return bad("a value runs past the end");
    change->value = record_.subspan(pos_, len);
    pos_ += len;
  }
  return true;
}

std::size_t RedoBuilder::add(RedoKind kind, std::uint8_t space, std::span<const std::uint8_t> key,
                             std::span<const std::uint8_t> value) {
  if (kind != RedoKind::kPutRef && kind != RedoKind::kDelete) ++repeatable_;
  bytes_.push_back(static_cast<std::uint8_t>(kind));
  bytes_.push_back(space);
  put_varint(bytes_, key.size());
  bytes_.insert(bytes_.end(), key.begin(), key.end());
  if (kind != RedoKind::kPut) return bytes_.size();
  put_varint(bytes_, value.size());
  const std::size_t at = bytes_.size();
  bytes_.insert(bytes_.end(), value.begin(), value.end());
  return at;
}

std::vector<std::uint8_t> RedoBuilder::record(const RedoHeader& header) const {
  std::vector<std::uint8_t> out(kRedoHeaderBytes);
  out[0] = kRedoVersion;
  put_be64(out.data() + 1, header.epoch);
  put_be64(out.data() + 9, header.time_ms);
  out.insert(out.end(), bytes_.begin(), bytes_.end());
  return out;
}

std::vector<std::uint8_t> RedoBuilder::compacted_record(const RedoHeader& header, std::size_t key_spaces,
                                                        Keep keep) const {
  std::vector<std::uint8_t> whole = record(header);
  if (repeatable_ < 2) return whole;
  // A change that makes a key new (a redo record's kPutRef: a message put once; an undo
  // image's kDelete: the inverse of a key that was absent) is kept without a look at the
  // others: a replay of a record that keeps each key's last change and some earlier ones
  // still ends in the last (an undo image, applied backwards, in the first), and these
  // are most changes of a batch of messages.
  const RedoKind fresh = keep == Keep::kLast ? RedoKind::kPutRef : RedoKind::kDelete;
  struct Seen {
    std::size_t begin, end;  // the change's bytes in whole
    std::string_view key;    // its key space byte, key length and key; empty for a fresh change
  };
  std::vector<Seen> changes;
  std::size_t repeatable = 0;
  RedoReader reader(whole, key_spaces);
  RedoChange c;
  while (reader.next(&c)) {
    if (c.kind == RedoKind::kDeletePrefix) return whole;
    std::string_view key;
    if (c.kind != fresh) {
      const std::size_t key_end = static_cast<std::size_t>(c.key.data() + c.key.size() - whole.data());
      key = std::string_view(reinterpret_cast<const char*>(whole.data()) + reader.at() + 1, key_end - reader.at() - 1);
      ++repeatable;
    }
    changes.push_back({reader.at(), reader.end(), key});
  }
  if (!reader.error() || repeatable < 2) return whole;
  std::unordered_map<std::string_view, std::size_t> kept;  // key -> the change kept
  kept.reserve(repeatable);
  for (std::size_t i = 0; i < changes.size(); ++i) {
    if (changes[i].key.empty()) continue;
    if (keep == Keep::kLast)
      kept[changes[i].key] = i;
    else
      kept.emplace(changes[i].key, i);
  }
  if (kept.size() == repeatable) return whole;
  std::vector<std::uint8_t> out(whole.begin(), whole.begin() + kRedoHeaderBytes);
  out.reserve(whole.size());
  for (std::size_t i = 0; i < changes.size(); ++i)
    if (changes[i].key.empty() || kept[changes[i].key] == i)
      out.insert(out.end(), whole.begin() + changes[i].begin, whole.begin() + changes[i].end);
  return out;
}

Result<RedoHeader> redo_header(std::span<const std::uint8_t> record) {
  if (record.size() < kRedoHeaderBytes) return bad_record("shorter than its header");
  if (record[0] != kRedoVersion) return bad_record("version " + std::to_string(record[0]));
  return RedoHeader{get_be64(record.data() + 1), get_be64(record.data() + 9)};
}

Status for_each_change(std::span<const std::uint8_t> record, std::size_t key_spaces,
                       const std::function<Status(const RedoChange&)>& visit) {
  if (auto h = redo_header(record); !h) return h.error();
  RedoChange c;
  RedoReader check(record, key_spaces);
  while (check.next(&c)) {
  }
  if (!check.error()) return check.error();
  RedoReader reader(record, key_spaces);
  while (reader.next(&c))
    if (auto st = visit(c); !st) return st;
  return {};
}

bool has_refs(std::span<const std::uint8_t> record, std::size_t key_spaces) {
  RedoReader reader(record, key_spaces);
  RedoChange c;
  while (reader.next(&c))
    if (c.kind == RedoKind::kPutRef) return true;
  return false;
}

Status RecordExpander::plan(std::span<const std::uint8_t> record, std::size_t key_spaces, const Lookup& lookup) {
  pieces_.clear();
  size_ = 0;
  if (auto h = redo_header(record); !h) return h.error();
  // Runs of changes that are not refs are copied as they are, header included.
  std::size_t run = 0;
  auto end_run = [&](std::size_t at) {
    if (at > run) pieces_.push_back({record.subspan(run, at - run), {}, false});
    size_ += at - run;
  };
  RedoReader reader(record, key_spaces);
  RedoChange c;
  while (reader.next(&c)) {
    if (c.kind != RedoKind::kPutRef) continue;
    end_run(reader.at());
    run = reader.end();
    auto value = lookup(c.space, c.key);
    if (!value) continue;  // deleted since: left out
    // The kind byte becomes kPut's; space, key length and key stay; the value follows.
    const auto bytes = record.subspan(reader.at() + 1, reader.end() - reader.at() - 1);
    pieces_.push_back({bytes, *value, true});
    size_ += 1 + bytes.size() + varint_size(value->size()) + value->size();
  }
  if (!reader.error()) {
    pieces_.clear();
    size_ = 0;
    return reader.error();
  }
  end_run(record.size());
  return {};
}

void RecordExpander::write(std::span<std::uint8_t> out) const {
  std::uint8_t* p = out.data();
  for (const Piece& piece : pieces_) {
    if (piece.ref) *p++ = static_cast<std::uint8_t>(RedoKind::kPut);
    std::memcpy(p, piece.bytes.data(), piece.bytes.size());
    p += piece.bytes.size();
    if (!piece.ref) continue;
    p = write_varint(p, piece.value.size());
    std::memcpy(p, piece.value.data(), piece.value.size());
    p += piece.value.size();
  }
}

Result<std::vector<std::uint8_t>> expand_record(std::span<const std::uint8_t> record, std::size_t key_spaces,
                                                const RecordExpander::Lookup& lookup) {
  RecordExpander expander;
  if (auto st = expander.plan(record, key_spaces, lookup); !st) return st.error();
  std::vector<std::uint8_t> out(expander.size());
  expander.write(out);
  return out;
}

}  // namespace txmq::broker::storage
