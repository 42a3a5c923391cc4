"""The faults, each switchable, and when each strikes.

The crash faults strike at exact points inside the services, not at random moments: a
service started with --pause-after-... stops at that step of its Nth order and prints
"paused ...", and the runner SIGKILLs it right then. So "killed between prepare and
commit" really is between prepare and commit, every run.

  order-crash      the order service is killed twice: after a prepare, before its local
                   transaction (the check-back must answer rollback), and after a local
                   commit, before the commit reached the broker (the check-back must
                   answer commit). Restarted each time; the new process answers the checks.
  warehouse-crash  the warehouse is killed after a reservation committed, before its ack:
                   the redelivery must change nothing.
  broker-restart   the broker is SIGKILLed in the middle of the orders and restarted on the
                   same port and data; everyone reconnects.
  points-down      the points service is killed and stays down for a while: the notifier
                   retries, gives up on some, and the points service reconciles them.
  local-failures   some orders fail their local transaction (in the customer plan).
  out-of-stock     some orders are for a SKU the warehouse runs out of (in the plan).
"""

import time

from processes import wait_until

ALL = ["order-crash", "warehouse-crash", "broker-restart", "points-down", "local-failures", "out-of-stock"]


class FaultPlan:
    def __init__(self, enabled, orders, points_down_s):
        self.enabled = set(enabled)
        # The crash points, counted in the crashing process's own orders: about a tenth of
        # the run each, so that every fault happens while orders are flowing.
        self.order_crash_at = max(3, orders // 10)
        self.warehouse_crash_at = max(3, orders // 4)
        self.broker_restart_at = 0.5    # fraction of the orders sent
        self.points_down_at = 0.65
        self.points_down_s = points_down_s
        self.log = []                   # (seconds since start, what happened)
        self.crashed = {}               # crash point ("after-prepare", ...) -> order id
        self._t0 = time.monotonic()

    def on(self, name):
        return name in self.enabled

    def note(self, what):
        self.log.append((time.monotonic() - self._t0, what))
        print(f"  [{self.log[-1][0]:6.1f}s] {what}", flush=True)

    def order_service_flags(self):
        """The first order service start: armed for the first crash when order-crash is on."""
        return {"pause_after_prepare": self.order_crash_at} if self.on("order-crash") else {}

    def warehouse_flags(self):
        return {"pause_after_reserve": self.warehouse_crash_at} if self.on("warehouse-crash") else {}

    def _crash(self, process, timeout):
        """Waits for the process to stop at its crash point, SIGKILLs it, notes the order."""
        line = process.wait_line("paused", timeout)     # "paused after-prepare o-000020"
        process.kill9()
        _, point, order_id = line.split()
        self.crashed[point] = order_id
        self.note(f"{process.name} SIGKILLed {point.replace('-', ' ')} of {order_id}")

    def run(self, system, customers, timeout):
        """Plays the faults in order while the customers place orders. Each step waits at
        most `timeout` seconds for its moment (a crash point that never comes is an error)."""
        if self.on("order-crash"):
            self._crash(system.order, timeout)
            system.start_order(pause_after_local_commit=self.order_crash_at)
            self._crash(system.order, timeout)
            system.start_order()
        if self.on("warehouse-crash"):
            self._crash(system.warehouse, timeout)
            system.start_warehouse()
        if self.on("broker-restart"):
            wait_until(lambda: customers.progress() >= self.broker_restart_at, timeout, what="orders to flow")
            system.broker.kill9()
            self.note(f"broker SIGKILLed after {customers.started} orders")
            system.start_broker()
            self.note("broker restarted on the same port and data")
        if self.on("points-down"):
            wait_until(lambda: customers.progress() >= self.points_down_at, timeout, what="orders to flow")
            system.points.kill9()
            self.note(f"points service SIGKILLed after {customers.started} orders; down for {self.points_down_s}s")
            # The fault window itself, not a synchronisation: the notifier must meet a dead
            # endpoint for longer than its retry schedule lasts.
            time.sleep(self.points_down_s)
            system.start_points()
            self.note("points service back")
