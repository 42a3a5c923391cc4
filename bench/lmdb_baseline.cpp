#include "lmdb_baseline.h"

#include <lmdb.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

namespace txmq::bench {

BaselineResult run_lmdb_baseline(const std::string& dir, std::size_t messages, std::size_t value_size,
                                 std::size_t per_txn) {
  BaselineResult out;
  std::filesystem::create_directories(dir);
  MDB_env* env = nullptr;
  MDB_dbi dbi;
  auto fail = [&](const char* what, int rc) {
    out.error = std::string(what) + ": " + mdb_strerror(rc);
    if (env) mdb_env_close(env);
    return out;
  };
  if (int rc = mdb_env_create(&env)) return fail("env_create", rc);
  if (int rc = mdb_env_set_mapsize(env, 64ull << 30)) return fail("set_mapsize", rc);
  if (int rc = mdb_env_set_maxdbs(env, 1)) return fail("set_maxdbs", rc);
  if (int rc = mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0640)) return fail("env_open", rc);
  std::vector<char> value(value_size, 'x');
  auto start = std::chrono::steady_clock::now();
  std::size_t done = 0;
  bool first = true;
  while (done < messages) {
    MDB_txn* txn = nullptr;
    if (int rc = mdb_txn_begin(env, nullptr, 0, &txn)) return fail("txn_begin", rc);
    if (first) {
      if (int rc = mdb_dbi_open(txn, "log", MDB_CREATE, &dbi)) return fail("dbi_open", rc);
      first = false;
    }
    for (std::size_t i = 0; i < per_txn && done < messages; ++i, ++done) {
      unsigned char key[16] = {0};
      for (int b = 0; b < 8; ++b) key[15 - b] = static_cast<unsigned char>(done >> (8 * b));
      MDB_val k{sizeof(key), key}, v{value.size(), value.data()};
      if (int rc = mdb_put(txn, dbi, &k, &v, 0)) {
        mdb_txn_abort(txn);
        return fail("put", rc);
      }
    }
    if (int rc = mdb_txn_commit(txn)) return fail("commit", rc);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.messages_per_second = static_cast<double>(messages) / out.seconds;
  mdb_env_close(env);
  return out;
}

}  // namespace txmq::bench
