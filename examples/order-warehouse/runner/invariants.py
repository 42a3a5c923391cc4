"""The invariants, checked on the books once everything has settled, and the report.

Each check returns a list of violations (empty: it holds), with the first few offending
order ids, so a failure says exactly what went wrong.
"""

import collections

from customer import SCARCE_SKU

SAMPLE = 5  # offending ids shown per failed check


def _fail(ids, what):
    ids = sorted(ids)
    return [] if not ids else [f"{len(ids)} {what}: {', '.join(ids[:SAMPLE])}{' ...' if len(ids) > SAMPLE else ''}"]


def check(books, customers, plan_ids, dead_letter_count, alarms, with_points):
    """Returns [(invariant, violations)]."""
    b = books
    committed, cancelled = b.committed(), b.cancelled()
    rolled_back = set(plan_ids) - committed
    answers = customers.answers
    results = []

    def inv(name, violations):
        results.append((name, violations))

    inv("every answered commit is in the order database, every answered rollback is not",
        _fail([o for o, a in answers.items() if a in ("committed", "pending") and o not in committed],
              "orders answered committed but missing") +
        _fail([o for o, a in answers.items() if a in ("rolled_back", "unavailable") and o in committed],
              "orders answered rolled back but present"))
    inv("no order is left in doubt at the broker (prepared or parked)",
        [] if b.open_transactions == 0 else [f"{b.open_transactions} transactions still open"])
    inv("stock reserved exactly once per committed, uncancelled order",
        _fail([o for o in committed - cancelled if len(b.reservations.get(o, [])) != 1],
              "orders not reserved exactly once") +
        _fail([o for o in committed - cancelled for (sku, qty) in b.reservations.get(o, [])
               if (sku, qty) != (b.orders[o][1], b.orders[o][2])], "reservations not matching their order"))
    inv("no stock reserved for a rolled-back or a cancelled order",
        _fail([o for o in (rolled_back | cancelled) if b.reservations.get(o)], "orders reserved") +
        _fail([o for o in b.reservations if o not in committed and o not in rolled_back], "reservations of unknown orders"))
    reserved = collections.Counter()
    for rows in b.reservations.values():
        for sku, qty in rows:
            reserved[sku] += qty
    inv("stock never negative and balanced (on hand = initial - reserved)",
        [f"{sku}: on hand {on_hand}, initial {initial}, reserved {reserved[sku]}"
         for sku, (on_hand, initial) in sorted(b.stock.items()) if on_hand < 0 or on_hand != initial - reserved[sku]])
    inv("every order the warehouse gave up on is compensated (cancelled), and only those",
        _fail(b.rejected - cancelled, "rejected orders not cancelled") +
        _fail(cancelled - b.rejected, "cancelled orders the warehouse did not reject"))
    inv("an alarm was raised for every dead letter",
        [] if alarms >= dead_letter_count else [f"{dead_letter_count} dead letters, {alarms} alarms"])
    if with_points:
        inv("points credited exactly once per paid order (by callback or reconciled from a give-up)",
            _fail([o for o in committed if len(b.credits.get(o, [])) != 1], "paid orders not credited exactly once") +
            _fail([o for o in committed for (pts, _) in b.credits.get(o, []) if pts != b.orders[o][3] // 100],
                  "credits with the wrong points"))
        inv("no points for an order that was never placed",
            _fail([o for o in b.credits if o not in committed], "credits for rolled-back or unknown orders"))
        inv("every given-up notification is listed and reconciled",
            _fail([o for o in b.gave_up if not b.credits.get(o)], "given-up orders without a credit"))
    return results


def check_crash_points(books, crashed, warehouse_log):
    """What each SIGKILL must have led to, for the very order it interrupted."""
    b = books
    results = []
    if "after-prepare" in crashed:
        o = crashed["after-prepare"]
        results.append((f"order killed after prepare ({o}) was rolled back by the check-back",
                        [] if o not in b.orders and not b.reservations.get(o) else [f"{o} is in the books"]))
    if "after-local-commit" in crashed:
        o = crashed["after-local-commit"]
        results.append((f"order killed after its local commit ({o}) was committed by the check-back",
                        [] if o in b.orders and (b.reservations.get(o) or o in b.cancelled())
                        else [f"{o} committed locally but its message never reached the warehouse"]))
    if "after-reserve" in crashed:
        o = crashed["after-reserve"]
        redelivered = f"({o}, delivery " in warehouse_log
        results.append((f"order reserved before the warehouse was killed ({o}) was redelivered, reserved once",
                        [] if redelivered and len(b.reservations.get(o, [])) == 1
                        else [f"redelivered: {redelivered}, reservations: {len(b.reservations.get(o, []))}"]))
    return results


def report(books, customers, plan_ids, dead_letter_count, alarms, results, faults, with_points, extra_checks):
    b = books
    committed, cancelled = b.committed(), b.cancelled()
    rolled_back = set(plan_ids) - committed
    why = collections.Counter(customers.answers.get(o, "not_sent") for o in rolled_back)
    how = collections.Counter(customers.answers.get(o, "not_sent") for o in committed)
    scarce_orders = sum(1 for o in committed if b.orders[o][1] == SCARCE_SKU)
    sources = collections.Counter(src for rows in b.credits.values() for (_, src) in rows)
    # A give-up whose callback in fact reached points (the answer was lost to the kill):
    # the record then credits nothing, thanks to the webhook-id.
    credited_anyway = sum(1 for o in b.gave_up if any(src == "webhook" for _, src in b.credits.get(o, [])))

    rows = [
        ("orders placed", len(plan_ids), ""),
        ("  committed", len(committed),
         f"answered committed {how['committed']}, pending->committed by check-back {how['pending']}, "
         f"answer lost {how['lost']}"),
        ("  rolled back", len(rolled_back),
         f"local transaction failed {why['rolled_back']}, broker unavailable {why['unavailable']}, "
         f"answer lost {why['lost']}"),
        ("  compensated (cancelled)", len(cancelled), f"of {scarce_orders} committed orders for {SCARCE_SKU}"),
        ("order service: check-backs answered", b.checks["commit"] + b.checks["rollback"],
         f"commit {b.checks['commit']}, rollback {b.checks['rollback']}"),
        ("warehouse: orders reserved", sum(1 for o in committed if b.reservations.get(o)), ""),
        ("warehouse: dead letters", dead_letter_count, f"alarms raised {alarms}, rejected {len(b.rejected)}"),
    ]
    if with_points:
        rows += [
            ("points: paid orders credited", sum(1 for o in committed if b.credits.get(o)),
             f"by callback {sources['webhook']}, reconciled {sources['reconciled']}"),
            ("points: notifications given up", len(b.gave_up),
             f"listed from the failure topic; {credited_anyway} had got through (the answer was lost)"),
        ]
    else:
        rows.append(("points", "skipped", "no txmq-notifier binary given"))

    width = max(len(r[0]) for r in rows) + 2
    print()
    print(f"order -> warehouse -> points: {len(plan_ids)} orders; faults: {', '.join(sorted(faults)) or 'none'}")
    print()
    for name, value, note in rows:
        print(f"  {name:<{width}}{value!s:>8}   {note}")
    print()
    all_results = results + extra_checks
    iw = max(len(n) for n, _ in all_results) + 2
    print(f"  {'invariant':<{iw}}result")
    for name, violations in all_results:
        print(f"  {name:<{iw}}{'PASS' if not violations else 'FAIL'}")
        for v in violations:
            print(f"      {v}")
    print()
    return all(not v for _, v in all_results)
