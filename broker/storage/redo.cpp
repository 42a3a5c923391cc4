#include "broker/storage/redo.h"

#include "broker/storage/keys.h"

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

// One pass over the changes; visit is null for the checking pass.
Status walk(std::span<const std::uint8_t> record, std::size_t key_spaces,
            const std::function<Status(const RedoChange&)>* visit) {
  std::size_t pos = kRedoHeaderBytes;
  while (pos < record.size()) {
    if (record.size() - pos < 2) return bad_record("a change is cut short");
    RedoChange change{static_cast<RedoKind>(record[pos]), record[pos + 1], {}, {}};
    pos += 2;
    if (change.kind != RedoKind::kPut && change.kind != RedoKind::kDelete && change.kind != RedoKind::kDeletePrefix &&
        change.kind != RedoKind::kPutRef)
      return bad_record("unknown change kind " + std::to_string(static_cast<int>(change.kind)));
    if (change.space >= key_spaces) return bad_record("unknown key space " + std::to_string(change.space));
    std::uint64_t len = 0;
    if (!get_varint(record, &pos, &len) || len > record.size() - pos) return bad_record("a key runs past the end");
    change.key = record.subspan(pos, len);
    pos += len;
    if (change.kind == RedoKind::kPut) {
      if (!get_varint(record, &pos, &len) || len > record.size() - pos)
        return bad_record("a value runs past the end");
      change.value = record.subspan(pos, len);
      pos += len;
    }
    if (visit)
      if (auto st = (*visit)(change); !st) return st;
  }
  return {};
}

}  // namespace

void RedoBuilder::add(RedoKind kind, std::uint8_t space, std::span<const std::uint8_t> key,
                      std::span<const std::uint8_t> value) {
  bytes_.push_back(static_cast<std::uint8_t>(kind));
  bytes_.push_back(space);
  put_varint(bytes_, key.size());
  bytes_.insert(bytes_.end(), key.begin(), key.end());
  if (kind == RedoKind::kPut) {
    put_varint(bytes_, value.size());
    bytes_.insert(bytes_.end(), value.begin(), value.end());
  }
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
  struct Seen {
    std::size_t begin, end;  // the change's bytes in whole
    std::string_view key;    // its key space byte, key length and key: which key it changes
  };
  std::vector<Seen> changes;
  bool prefix = false;
  std::size_t pos = kRedoHeaderBytes;
  const auto* base = whole.data();
  const std::function<Status(const RedoChange&)> visit = [&](const RedoChange& c) -> Status {
    const std::size_t key_end = static_cast<std::size_t>(c.key.data() + c.key.size() - base);
    const std::size_t end =
        c.kind == RedoKind::kPut ? static_cast<std::size_t>(c.value.data() + c.value.size() - base) : key_end;
    prefix = prefix || c.kind == RedoKind::kDeletePrefix;
    changes.push_back({pos, end, std::string_view(reinterpret_cast<const char*>(base) + pos + 1, key_end - pos - 1)});
    pos = end;
    return {};
  };
  if (!walk(whole, key_spaces, &visit) || prefix || changes.size() < 2) return whole;
  std::unordered_map<std::string_view, std::size_t> kept;  // key -> the change kept
  kept.reserve(changes.size());
  for (std::size_t i = 0; i < changes.size(); ++i)
    if (keep == Keep::kLast)
      kept[changes[i].key] = i;
    else
      kept.emplace(changes[i].key, i);
  if (kept.size() == changes.size()) return whole;
  std::vector<std::uint8_t> out(whole.begin(), whole.begin() + kRedoHeaderBytes);
  out.reserve(whole.size());
  for (std::size_t i = 0; i < changes.size(); ++i)
    if (kept[changes[i].key] == i) out.insert(out.end(), whole.begin() + changes[i].begin, whole.begin() + changes[i].end);
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
  if (auto st = walk(record, key_spaces, nullptr); !st) return st;
  return walk(record, key_spaces, &visit);
}

bool has_refs(std::span<const std::uint8_t> record, std::size_t key_spaces) {
  bool found = false;
  const std::function<Status(const RedoChange&)> visit = [&](const RedoChange& c) -> Status {
    if (c.kind == RedoKind::kPutRef) {
      found = true;
      return Error(ErrorCode::kInternal, "found");  // stops the walk
    }
    return {};
  };
  (void)walk(record, key_spaces, &visit);
  return found;
}

Result<std::vector<std::uint8_t>> expand_record(
    std::span<const std::uint8_t> record, std::size_t key_spaces,
    const std::function<std::optional<std::span<const std::uint8_t>>(std::uint8_t, std::span<const std::uint8_t>)>&
        lookup) {
  auto header = redo_header(record);
  if (!header) return header.error();
  RedoBuilder out;
  Status st = for_each_change(record, key_spaces, [&](const RedoChange& c) -> Status {
    if (c.kind != RedoKind::kPutRef) {
      out.add(c.kind, c.space, c.key, c.value);
    } else if (auto value = lookup(c.space, c.key)) {
      out.add(RedoKind::kPut, c.space, c.key, *value);
    }
    return {};
  });
  if (!st) return st.error();
  return out.record(*header);
}

}  // namespace txmq::broker::storage
