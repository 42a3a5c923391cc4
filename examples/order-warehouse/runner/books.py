"""Reading the books: the three SQLite databases and the broker, as the runner sees them.

The services own their databases; the runner only reads them (SQLite allows a reader next
to a writer in WAL mode). Everything the invariants need is loaded into one snapshot.
"""

import collections
import re
import sqlite3


def _rows(path, sql):
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


class Books:
    def __init__(self, system, with_points):
        s = system
        # order service: order_id -> (status, sku, quantity, amount_cents)
        self.orders = {r[0]: r[1:] for r in _rows(
            s.db["orders"], "SELECT order_id, status, sku, quantity, amount_cents FROM orders")}
        # warehouse
        self.reservations = collections.defaultdict(list)   # order_id -> [(sku, quantity)]
        for order_id, sku, qty in _rows(s.db["stock"], "SELECT order_id, sku, quantity FROM reservations"):
            self.reservations[order_id].append((sku, qty))
        self.stock = {r[0]: (r[1], r[2]) for r in _rows(s.db["stock"], "SELECT sku, on_hand, initial FROM stock")}
        self.rejected = {r[0] for r in _rows(s.db["stock"], "SELECT order_id FROM rejected_orders")}
        # points
        self.credits = collections.defaultdict(list)        # order_id -> [(points, source)]
        self.gave_up = set()
        if with_points:
            for order_id, points, source in _rows(s.db["points"], "SELECT order_id, points, source FROM credits"):
                self.credits[order_id].append((points, source))
            self.gave_up = {r[0] for r in _rows(s.db["points"], "SELECT order_id FROM gave_up")}

    def committed(self):
        return set(self.orders)

    def cancelled(self):
        return {o for o, row in self.orders.items() if row[0] == "cancelled"}


def open_transactions(system):
    """Transactions still prepared or parked at the broker (0 when every one was ended)."""
    n = 0
    for state in ("prepared", "parked"):
        out = system.cli("txn", "list", "--state", state)
        n += sum(1 for line in out.splitlines() if line.strip() and line[0].isdigit())
    return n


def dead_letters(system):
    """Messages ever moved to warehouse.dlq: its next offset (a durable count, unlike the
    broker's counters, which a broker restart resets); 0 before the first, which creates it.
    Any other failure (a refusal in the secure run, say) is an error, not a count of 0."""
    out = system.cli("topic", "describe", "warehouse.dlq", tolerate="UnknownTopic")
    m = re.search(r"partition 0: first_offset=\d+ next_offset=(\d+)", out)
    return int(m.group(1)) if m else 0


def settled(system, with_points):
    """True once every consequence of every committed order has happened: no open
    transaction, every order reserved or cancelled, every rejection cancelled, every paid
    order credited. The runner waits for this (with a deadline) before it stops anything."""
    b = Books(system, with_points)
    for order_id in b.committed():
        if not b.reservations.get(order_id) and order_id not in b.cancelled():
            return False
        if with_points and not b.credits.get(order_id):
            return False
    if not b.rejected <= b.cancelled():
        return False
    return open_transactions(system) == 0
