// broker/scheduler: wake-ups in due order, each target woken once for what it asked, never
// before its time; the timer behind it on a real uv loop run by the test thread.

#include "broker/scheduler.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

using txmq::broker::Scheduler;
using txmq::broker::wall_ms;

namespace {

// The fake clock the tests move by hand.
std::uint64_t g_now = 0;
std::uint64_t fake_now() { return g_now; }

// A loop and a scheduler on it with the fake clock, recording every wake-up. The test
// thread is the loop thread. The loop must close cleanly at the end.
struct Fixture {
  uv_loop_t loop;
  std::vector<Scheduler::Target> woken;
  std::function<void(Scheduler::Target)> also;  // run after recording, when set
  std::unique_ptr<Scheduler> scheduler;

  explicit Fixture(Scheduler::Clock clock = &fake_now) {
    g_now = 1000;
    REQUIRE(uv_loop_init(&loop) == 0);
    scheduler = std::make_unique<Scheduler>(
        &loop,
        [this](Scheduler::Target t) {
          woken.push_back(t);
          if (also) also(t);
        },
        clock);
  }
  ~Fixture() {
    scheduler->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
};

}  // namespace

TEST_CASE("a wake-up does not fire before its due time") {
  Fixture f;
  f.scheduler->at(1100, 7);
  g_now = 1099;
  f.scheduler->run_due();
  CHECK(f.woken.empty());
  g_now = 1100;
  f.scheduler->run_due();
  CHECK(f.woken == std::vector<Scheduler::Target>{7});
}

TEST_CASE("a target asked twice for the same time is woken once") {
  Fixture f;
  f.scheduler->at(1100, 7);
  f.scheduler->at(1100, 7);
  CHECK(f.scheduler->pending() == 1);
  g_now = 2000;
  f.scheduler->run_due();
  CHECK(f.woken == std::vector<Scheduler::Target>{7});
}

TEST_CASE("asking for a later time than a pending wake-up adds nothing") {
  Fixture f;
  f.scheduler->at(1100, 7);
  f.scheduler->at(1500, 7);
  g_now = 1100;
  f.scheduler->run_due();
  CHECK(f.woken == std::vector<Scheduler::Target>{7});
  // Nothing is left for 1500: the target asks again after each wake-up if it needs to.
  CHECK(f.scheduler->pending() == 0);
  g_now = 2000;
  f.scheduler->run_due();
  CHECK(f.woken.size() == 1);
}

TEST_CASE("an earlier time supersedes a pending wake-up, which then never fires") {
  Fixture f;
  f.scheduler->at(1500, 7);
  f.scheduler->at(1100, 7);
  CHECK(f.scheduler->pending() == 1);
  CHECK(f.scheduler->armed_for() == 1100);
  g_now = 1100;
  f.scheduler->run_due();
  CHECK(f.woken == std::vector<Scheduler::Target>{7});
  g_now = 2000;
  f.scheduler->run_due();
  CHECK(f.woken.size() == 1);
}

TEST_CASE("due targets are woken in due order, ties in the order asked") {
  Fixture f;
  f.scheduler->at(1300, 1);
  f.scheduler->at(1200, 3);
  f.scheduler->at(1200, 2);
  f.scheduler->at(1100, 4);
  g_now = 1300;
  f.scheduler->run_due();
  CHECK(f.woken == std::vector<Scheduler::Target>{4, 3, 2, 1});
}

TEST_CASE("a target woken may ask again, and is woken again at the new time only") {
  Fixture f;
  int calls = 0;
  f.also = [&](Scheduler::Target t) {
    if (++calls == 1) f.scheduler->at(g_now + 50, t);
  };
  f.scheduler->at(1100, 9);
  g_now = 1100;
  f.scheduler->run_due();
  CHECK(calls == 1);  // asked again for 1150, not run inside this round
  CHECK(f.scheduler->armed_for() == 1150);
  g_now = 1149;
  f.scheduler->run_due();
  CHECK(calls == 1);
  g_now = 1150;
  f.scheduler->run_due();
  CHECK(calls == 2);
  CHECK(f.scheduler->pending() == 0);
}

TEST_CASE("the timer is armed for the earliest wake-up and disarmed when none is left") {
  Fixture f;
  CHECK(f.scheduler->armed_for() == UINT64_MAX);
  f.scheduler->at(1500, 1);
  CHECK(f.scheduler->armed_for() == 1500);
  f.scheduler->at(1200, 2);
  CHECK(f.scheduler->armed_for() == 1200);
  g_now = 1200;
  f.scheduler->run_due();
  CHECK(f.scheduler->armed_for() == 1500);
  g_now = 1500;
  f.scheduler->run_due();
  CHECK(f.scheduler->armed_for() == UINT64_MAX);
}

TEST_CASE("after close nothing more is scheduled") {
  Fixture f;
  f.scheduler->close();
  f.scheduler->at(1100, 1);
  CHECK(f.scheduler->pending() == 0);
}

TEST_CASE("on a real loop the timer wakes a due target once, and the loop ends cleanly") {
  Fixture f(&wall_ms);
  f.scheduler->at(wall_ms(), 5);
  f.scheduler->at(wall_ms(), 5);
  f.scheduler->at(wall_ms() + 20, 6);
  // The loop runs until nothing is armed: both wake-ups, then the timer stops.
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(f.woken == std::vector<Scheduler::Target>{5, 6});
}
