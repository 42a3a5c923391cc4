#pragma once
// A read-only check of a store on disk: what `txmq-broker --check-store` runs, and what
// power-loss tests run after every simulated loss.
//
// It walks every page LMDB can reach (every entry of every key space, every value byte,
// the free list), then checks what LMDB cannot know: each key has its key space's size,
// each record decodes, each partition a topic names exists, and every stored message lies
// below its partition's next offset. LMDB's own check is the walk: a damaged page fails it
// with MDB_CORRUPTED or MDB_PAGE_NOTFOUND (or, as with `mdb_stat`, a crash of the checking
// process, which a caller must count as a failure too).
//
// Thread: any; it opens its own read-only environment (MDB_RDONLY), so it may run beside a
// broker serving the same directory and sees one consistent snapshot.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace txmq::broker::storage {

struct StoreCheckReport {
  std::uint64_t last_txnid = 0;  // LMDB's last committed transaction
  std::uint64_t file_bytes = 0;
  std::vector<std::pair<std::string, std::uint64_t>> entries;  // key space -> entries
  std::vector<std::string> problems;  // empty: the store passed
  bool ok() const { return problems.empty(); }
  // Several lines: the counts, then one line per problem (at most 20, then a count).
  std::string describe() const;
};

// Errors: kStorageError when dir holds no data.mdb or LMDB cannot open it at all (its
// meta pages are unreadable). Everything found once the store is open is a problem in the
// report, not an error.
Result<StoreCheckReport> check_store(const std::string& dir);

}  // namespace txmq::broker::storage
