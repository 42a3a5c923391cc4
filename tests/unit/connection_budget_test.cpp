// ConnectionBudget on a real libuv loop: reservations within the limit, waiters resumed in
// order after a release and never overtaken by newcomers, the output limit and its wake-up.

#include "broker/connection_budget.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <cstdint>
#include <vector>

using txmq::broker::ConnectionBudget;

namespace {

// A loop with a budget whose resumed connections are recorded, and which, like a real
// connection, tries its reservation again when resumed.
struct Loop {
  uv_loop_t loop;
  Loop() { uv_loop_init(&loop); }
};

struct Fixture : Loop {
  std::vector<std::uint64_t> resumed;
  int output_rooms = 0;
  std::size_t want = 0;  // what a resumed connection tries to reserve
  std::vector<std::uint64_t> granted;
  ConnectionBudget budget{&loop, 100, 50,
                          [this](std::uint64_t id) {
                            resumed.push_back(id);
                            if (want && budget.try_reserve_input(want)) granted.push_back(id);
                            else if (want) budget.wait_for_input(id, false);
                          },
                          [this] { ++output_rooms; }};

  ~Fixture() {
    budget.close();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  // One loop iteration: the idle handle runs if it was started.
  void turn() { uv_run(&loop, UV_RUN_NOWAIT); }
};

}  // namespace

TEST_CASE("reservations succeed up to the limit and fail past it") {
  Fixture f;
  CHECK(f.budget.try_reserve_input(60));
  CHECK(f.budget.try_reserve_input(40));
  CHECK_FALSE(f.budget.try_reserve_input(1));
  CHECK(f.budget.input_bytes() == 100);
  f.budget.release_input(100);
  CHECK(f.budget.input_bytes() == 0);
}

TEST_CASE("waiters are resumed in the order they waited, after a release, not before") {
  Fixture f;
  REQUIRE(f.budget.try_reserve_input(100));
  f.budget.wait_for_input(7, true);
  f.budget.wait_for_input(3, true);
  f.budget.wait_for_input(7, false);  // a retry of the same wait is neither counted nor queued twice
  CHECK(f.budget.input_waits() == 2);
  f.turn();
  CHECK(f.resumed.empty());  // nothing was released
  f.want = 60;
  f.budget.release_input(100);
  f.turn();
  CHECK(f.resumed == std::vector<std::uint64_t>{7, 3});
  CHECK(f.granted == std::vector<std::uint64_t>{7});  // 3 did not fit and waits again
  f.budget.release_input(60);
  f.turn();
  CHECK(f.granted == std::vector<std::uint64_t>{7, 3});
}

TEST_CASE("a newcomer cannot take the room a release made for waiters") {
  Fixture f;
  REQUIRE(f.budget.try_reserve_input(100));
  f.budget.wait_for_input(1, true);
  CHECK_FALSE(f.budget.try_reserve_input(10));  // others wait: queue behind them
  f.want = 90;
  f.budget.release_input(100);
  CHECK_FALSE(f.budget.try_reserve_input(10));  // released, but the waiter has not run yet
  f.turn();
  CHECK(f.granted == std::vector<std::uint64_t>{1});
  CHECK(f.budget.try_reserve_input(10));  // nobody waits any more
}

TEST_CASE("a closed waiter no longer holds newcomers back") {
  Fixture f;
  REQUIRE(f.budget.try_reserve_input(50));
  f.budget.wait_for_input(9, true);
  CHECK_FALSE(f.budget.try_reserve_input(10));
  f.budget.cancel_wait(9);
  CHECK(f.budget.try_reserve_input(10));
}

TEST_CASE("output past its limit is full until it falls back, then room is announced once, later") {
  Fixture f;
  f.budget.add_output(30);
  CHECK_FALSE(f.budget.output_full());
  f.budget.add_output(30);
  CHECK(f.budget.output_full());
  CHECK(f.budget.output_stalls() == 1);
  f.budget.remove_output(5);
  CHECK(f.budget.output_full());
  f.budget.remove_output(20);
  CHECK_FALSE(f.budget.output_full());
  CHECK(f.output_rooms == 0);  // never from inside the caller
  f.turn();
  CHECK(f.output_rooms == 1);
  f.turn();
  CHECK(f.output_rooms == 1);
}

TEST_CASE("resume_soon runs each connection once per turn, in order") {
  Fixture f;
  f.budget.resume_soon(5);
  f.budget.resume_soon(2);
  f.budget.resume_soon(5);
  f.turn();
  CHECK(f.resumed == std::vector<std::uint64_t>{5, 2});
}
