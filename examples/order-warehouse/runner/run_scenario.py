#!/usr/bin/env python3
"""The order -> warehouse -> points scenario: start everything, place orders while faults
strike, wait for the system to settle, check the books, print the report.

  run_scenario.py --orders 200 [--faults all|none|order-crash,broker-restart,...]
                  [--rate 0] [--threads 8] [--points-down-s 3] [--secure] [--keep]

--secure runs it all with TLS and one user per service, each allowed only what it does
(security.py), and checks that least privilege holds.

Binaries come from flags or the environment: TXMQ_BROKER_BIN, TXMQ_CLI_BIN,
TXMQ_NOTIFIER_BIN, ORDER_SERVICE_BIN,
WAREHOUSE_SERVICE_BIN, POINTS_SERVICE_BIN.
Exit status: 0 when every invariant holds, 1 when one fails, 2 when the run itself broke
(a service did not start, a fault did not fire, the system did not settle in time).
"""

import argparse
import hashlib
import hmac
import base64
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import types

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import books as books_mod                      # noqa: E402
import customer as customer_mod                # noqa: E402
import faults as faults_mod                    # noqa: E402
import invariants                              # noqa: E402
import security                                # noqa: E402
from processes import wait_until               # noqa: E402
from system import System                      # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, default=200)
    p.add_argument("--faults", default="all", help="all, none, or a comma-separated list of: " + ", ".join(faults_mod.ALL))
    p.add_argument("--threads", type=int, default=8, help="customers placing orders at once")
    p.add_argument("--rate", type=float, default=0, help="orders per second in all (0: as fast as answered)")
    p.add_argument("--points-down-s", type=float, default=3.0, help="how long the points service stays down")
    p.add_argument("--notifier-attempts", type=int, default=4)
    p.add_argument("--notifier-schedule-ms", default="200,400,800")
    p.add_argument("--timeout-s", type=float, default=600, help="the whole run's deadline")
    p.add_argument("--secure", action="store_true",
                   help="TLS, and a user per service with only its permissions (security.py)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    env = os.environ.get
    p.add_argument("--broker-bin", default=env("TXMQ_BROKER_BIN"))
    p.add_argument("--cli-bin", default=env("TXMQ_CLI_BIN"))
    p.add_argument("--notifier-bin", default=env("TXMQ_NOTIFIER_BIN"))
    p.add_argument("--order-bin", default=env("ORDER_SERVICE_BIN"))
    p.add_argument("--warehouse-bin", default=env("WAREHOUSE_SERVICE_BIN"))
    p.add_argument("--points-bin", default=env("POINTS_SERVICE_BIN"))
    a = p.parse_args()
    # Every binary is required: a run that quietly left out a service (the notifier, say)
    # would pass while checking less than it claims.
    for name in ("broker_bin", "cli_bin", "notifier_bin", "order_bin", "warehouse_bin", "points_bin"):
        path = getattr(a, name)
        if not path:
            p.error(f"--{name.replace('_', '-')} (or its environment variable) is required")
        if not os.path.exists(path):
            p.error(f"--{name.replace('_', '-')}: {path} does not exist")
    a.fault_list = faults_mod.ALL if a.faults == "all" else [] if a.faults == "none" else a.faults.split(",")
    unknown = set(a.fault_list) - set(faults_mod.ALL)
    if unknown:
        p.error(f"unknown faults: {', '.join(sorted(unknown))}")
    return a


def forged_request_refused(system):
    """A callback signed with the wrong key must be refused (401) and credit nothing."""
    body = json.dumps({"order_id": "forged-1", "customer": "mallory", "sku": "sku-0", "quantity": 1,
                       "amount_cents": 10 ** 8})
    ts = str(int(time.time()))
    wrong_key = b"not the shared secret"
    sig = base64.b64encode(hmac.new(wrong_key, f"forged:0:1.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", system.points_port, timeout=10)
    try:
        conn.request("POST", "/points", body, {"webhook-id": "forged:0:1", "webhook-timestamp": ts,
                                               "webhook-signature": "v1," + sig, "Content-Type": "application/json"})
        status = conn.getresponse().status
    finally:
        conn.close()
    return [] if status == 401 else [f"forged callback answered {status}, not 401"]


def main():
    a = parse_args()
    with_points = a.notifier_bin is not None
    workdir = tempfile.mkdtemp(prefix="order-warehouse-")
    bins = types.SimpleNamespace(broker=a.broker_bin, cli=a.cli_bin, notifier=a.notifier_bin, order=a.order_bin,
                                 warehouse=a.warehouse_bin, points=a.points_bin)
    plan = faults_mod.FaultPlan(a.fault_list, a.orders, a.points_down_s)
    stock = customer_mod.initial_stock(a.orders, plan.on("out-of-stock"))
    try:
        system = System(bins, workdir, stock, a.notifier_attempts, [int(x) for x in a.notifier_schedule_ms.split(",")],
                        secure=a.secure)
    except RuntimeError as e:
        print(f"scenario broke: {e}; work dir {workdir}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + a.timeout_s
    left = lambda: max(1.0, deadline - time.monotonic())
    print(f"scenario: {a.orders} orders, faults: {', '.join(a.fault_list) or 'none'}"
          f"{'; TLS and a user per service' if a.secure else ''}; work dir {workdir}", flush=True)
    ok = False
    try:
        system.start_all(plan.warehouse_flags())
        system.start_order(**plan.order_service_flags())
        forged = forged_request_refused(system)
        overreach = security.least_privilege_violations(system) if a.secure else None
        plan.note("all started" + ("" if with_points else " (no notifier: points part skipped)"))

        customers = customer_mod.Customers(system, a.orders, a.threads, a.rate, plan.on("local-failures"),
                                           plan.on("out-of-stock"), left())
        t0 = time.monotonic()
        customers.start()
        plan.run(system, customers, timeout=min(300.0, left()))
        customers.join()
        placed_s = time.monotonic() - t0
        plan.note(f"all {a.orders} orders placed in {placed_s:.1f}s")

        wait_until(lambda: books_mod.settled(system, with_points), left(), interval=0.25,
                   what="every order to be reserved or compensated, and credited")
        plan.note(f"settled {time.monotonic() - t0:.1f}s after the first order")

        open_txns = books_mod.open_transactions(system)
        dead = books_mod.dead_letters(system)
        bad_exits = system.stop_all()
        books = books_mod.Books(system, with_points)
        books.open_transactions = open_txns
        alarms = system.warehouse.log_text().count(" ALARM ")
        order_log = system.order.log_text()
        books.checks = {a: len(re.findall(rf" check-back \d+ for \S+: {a}$", order_log, re.M))
                        for a in ("commit", "rollback")}
        plan_ids = [o["order_id"] for o in customers.plan]
        results = invariants.check(books, customers, plan_ids, dead, alarms, with_points)
        extra = invariants.check_crash_points(books, plan.crashed, system.warehouse.log_text()) + [
                 ("a callback with a wrong signature is refused", forged),
                 ("every process exits 0 on SIGTERM (no crash, no sanitizer report)",
                  [f"{name} exited {code}" for name, code in bad_exits.items()])]
        if overreach is not None:
            extra.append(("least privilege: a user may do only what the ACL allows; no TLS or no login, no entry",
                          overreach))
        ok = invariants.report(books, customers, plan_ids, dead, alarms, results, a.fault_list, with_points, extra)
        print(f"  {a.orders} orders placed in {placed_s:.1f}s; settled after {time.monotonic() - t0:.1f}s")
        return 0 if ok else 1
    except (TimeoutError, RuntimeError) as e:
        print(f"scenario broke: {e}", file=sys.stderr)
        for p in (system.broker, system.order, system.warehouse, system.points, system.notifier):
            tail = p.log_text()[-3000:]
            if tail:
                print(f"--- {p.name} log (tail) ---\n{tail}", file=sys.stderr)
        return 2
    finally:
        for p in (system.order, system.notifier, system.points, system.warehouse, system.broker):
            if p.running():
                p.kill9()
        if a.keep or not ok:
            print(f"logs and databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
