// The leader's side of replication, played byte by byte: a replica's fetches, good and
// bad, and what they do to the in-sync set and to client writes (broker/replication.h).
// The follower's side runs in replication_test.

#include <doctest/doctest.h>

#include "tests/support/raw_session.h"

using namespace txmq;
using namespace txmq::test;

namespace {

// A sync leader b1 of peers b1, b2; b2 is played by the test. min_insync 2: no write is
// taken until b2 holds the whole log.
const char* kLeaderConfig = R"(
[topics]
auto_create = true
[replication]
id = "b1"
role = "leader"
mode = "sync"
min_insync = 2
replica_lag_max_ms = 2000
fetch_wait_ms = 200
[replication.peers]
b1 = "127.0.0.1:7411"
b2 = "127.0.0.1:7421"
)";

BrokerOptions leader_options() {
  BrokerOptions o;
  o.config_toml = kLeaderConfig;
  return o;
}

flatbuffers::FlatBufferBuilder fetch(std::uint64_t rid, const std::string& replica, std::uint64_t epoch,
                                     std::uint64_t next, std::uint64_t last_epoch, std::uint64_t durable,
                                     std::uint32_t wait_ms = 0) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateReplicaFetch(fbb, fbb.CreateString(replica), epoch, next, last_epoch, durable, 1u << 20, wait_ms);
  return finish(std::move(fbb), rid, wire::Body::ReplicaFetch, body.Union());
}

flatbuffers::FlatBufferBuilder snapshot_fetch(std::uint64_t rid, const std::string& replica, std::uint64_t session,
                                              std::uint8_t after_space = 0, const std::string& after_key = "",
                                              std::uint32_t max_bytes = 4096) {
  flatbuffers::FlatBufferBuilder fbb;
  auto key = fbb.CreateVector(reinterpret_cast<const std::uint8_t*>(after_key.data()), after_key.size());
  auto body = wire::CreateSnapshotFetch(fbb, fbb.CreateString(replica), session, after_space, key, max_bytes);
  return finish(std::move(fbb), rid, wire::Body::SnapshotFetch, body.Union());
}

flatbuffers::FlatBufferBuilder status(std::uint64_t rid) {
  flatbuffers::FlatBufferBuilder fbb;
  auto body = wire::CreateClusterStatus(fbb);
  return finish(std::move(fbb), rid, wire::Body::ClusterStatus, body.Union());
}

struct Fetched {
  std::uint64_t epoch = 0, commit_index = 0, last_index = 0, truncate_to = 0;
  std::vector<std::uint64_t> indexes;
};

Fetched expect_records(RawConnection& conn, std::uint64_t rid) {
  auto f = expect_frame(conn, wire::Body::ReplicaRecords, rid);
  const auto* r = f.frame().body_as_ReplicaRecords();
  Fetched out{r->epoch(), r->commit_index(), r->last_index(), r->truncate_to(), {}};
  if (r->records())
    for (const auto* rec : *r->records()) out.indexes.push_back(rec->index());
  return out;
}

}  // namespace

TEST_CASE("a sync leader alone refuses writes; fetches from unknown, newer or diverged replicas are told so") {
  BrokerProcess leader(leader_options());
  start(leader);
  RawConnection client = session(leader);
  RawConnection replica = session(leader);

  // Alone, the leader is below min_insync: a produce is refused, retryably.
  send(client, produce(2, "orders", {"early"}));
  expect_error(client, ErrorCode::kNotEnoughReplicas, 2);

  // Refusals: an unknown replica, a replica from a newer epoch.
  send(replica, fetch(10, "b9", 1, 1, 0, 0));
  expect_error(replica, ErrorCode::kInvalidArgument, 10);
  send(replica, fetch(11, "b1", 1, 1, 0, 0));  // the leader itself is no replica of its own
  expect_error(replica, ErrorCode::kInvalidArgument, 11);
  send(replica, fetch(12, "b2", 99, 1, 0, 0));
  expect_error(replica, ErrorCode::kStaleEpoch, 12);

  // From the start: the whole log (the epoch's first record at least).
  send(replica, fetch(13, "b2", 0, 1, 0, 0));
  Fetched all = expect_records(replica, 13);
  CHECK(all.epoch == 1);
  REQUIRE(!all.indexes.empty());
  CHECK(all.indexes.front() == 1);
  CHECK(all.indexes.back() == all.last_index);

  // Past the end: the replica has records the leader has not; it must drop them.
  send(replica, fetch(14, "b2", 1, all.last_index + 5, 1, all.last_index + 4));
  Fetched past = expect_records(replica, 14);
  CHECK(past.truncate_to == all.last_index + 1);
  CHECK(past.indexes.empty());
  // Its last record is of an epoch the leader never had there: diverged.
  send(replica, fetch(15, "b2", 1, all.last_index + 1, 7, all.last_index));
  Fetched diverged = expect_records(replica, 15);
  CHECK(diverged.truncate_to != 0);
  CHECK(diverged.truncate_to <= all.last_index);
}

TEST_CASE("a produce is confirmed only after the replica's fetch acknowledges its record") {
  BrokerProcess leader(leader_options());
  start(leader);
  RawConnection client = session(leader);
  RawConnection replica = session(leader);
  std::uint64_t next = 1, rid = 10;
  // Catch up until the leader counts b2 in sync (a produce is no longer refused).
  auto catch_up = [&](std::uint32_t wait_ms) {
    send(replica, fetch(++rid, "b2", 1, next, next > 1 ? 1 : 0, next - 1, wait_ms));
    Fetched f = expect_records(replica, rid);
    if (!f.indexes.empty()) next = f.indexes.back() + 1;
    return f;
  };
  REQUIRE(wait_until(
      [&] {
        catch_up(0);
        catch_up(0);  // the acknowledgement of what the previous one brought
        send(client, status(++rid));
        auto f = expect_frame(client, wire::Body::ClusterInfo, rid);
        const auto* info = f.frame().body_as_ClusterInfo();
        return info->in_sync() && info->in_sync()->size() == 2;
      },
      10s, 20ms));

  // The topic first, so that the produce below is one record of its own.
  send(client, create_topic(++rid, "orders"));
  const std::uint64_t create_rid = rid;
  REQUIRE(wait_until(
      [&] {
        catch_up(0);
        auto f = client.read_frame(0ms);
        if (!f.ok()) return false;
        CHECK(f->request_id() == create_rid);
        return true;
      },
      10s, 20ms));
  catch_up(0);

  send(client, produce(++rid, "orders", {"held"}));
  const std::uint64_t produce_rid = rid;
  // Its record reaches the replica, but the confirm waits for the acknowledgement.
  Fetched f = catch_up(2000);
  REQUIRE(!f.indexes.empty());
  auto early = client.read_frame(300ms);
  CHECK_FALSE(early.ok());  // nothing yet: the replica has not said it holds the record
  catch_up(0);              // durable_index now covers it
  expect_frame(client, wire::Body::ProduceOk, produce_rid);

  // A leader is not promoted again.
  send(client, promote(++rid));
  expect_error(client, ErrorCode::kInvalidArgument, rid);
}

TEST_CASE("snapshot fetches naming no open session, no replica or no key space are refused; a new session streams it all") {
  BrokerProcess leader(leader_options());
  start(leader);
  RawConnection replica = session(leader);

  send(replica, snapshot_fetch(10, "b9", 0));
  expect_error(replica, ErrorCode::kInvalidArgument, 10);
  // A session this leader never opened (a follower's from before a restart, or made up).
  send(replica, snapshot_fetch(11, "b2", 12345));
  expect_error(replica, ErrorCode::kInvalidArgument, 11);
  // Opened, then resumed after a key space the store does not have: refused, and the
  // session is closed (its read transaction with it).
  send(replica, snapshot_fetch(12, "b2", 0));
  auto first = expect_frame(replica, wire::Body::SnapshotChunk, 12);
  const std::uint64_t opened = first.frame().body_as_SnapshotChunk()->session();
  CHECK(opened != 0);
  send(replica, snapshot_fetch(13, "b2", opened, 200, "x"));
  expect_error(replica, ErrorCode::kInvalidArgument, 13);
  send(replica, snapshot_fetch(14, "b2", opened, 0, "x"));
  expect_error(replica, ErrorCode::kInvalidArgument, 14);

  // A new session from the start, chunk by chunk, resuming after each chunk's last entry,
  // ends with `done` and holds the epoch's record (meta and epochs entries at least).
  send(replica, snapshot_fetch(20, "b2", 0, 0, "", 1));
  std::uint64_t rid = 20, entries = 0, session_id = 0;
  bool done = false;
  for (int chunks = 0; !done && chunks < 1000; ++chunks) {
    auto f = expect_frame(replica, wire::Body::SnapshotChunk, rid);
    const auto* c = f.frame().body_as_SnapshotChunk();
    session_id = c->session();
    CHECK(session_id != opened);
    done = c->done();
    if (!c->entries() || c->entries()->size() == 0) break;
    entries += c->entries()->size();
    if (done) break;
    const auto* last = c->entries()->Get(c->entries()->size() - 1);
    send(replica, snapshot_fetch(++rid, "b2", session_id, last->space(),
                                 std::string(last->key()->begin(), last->key()->end()), 1));
  }
  CHECK(done);
  CHECK(entries >= 2);
}
