"""The customers: a fixed plan of orders, POSTed to the order service by a few threads.

The plan is deterministic (order i is always the same), and the two business faults are
in it: with local failures on, every 25th order has quantity 0, which the order
database's CHECK constraint refuses (the local transaction fails, so the half message is
rolled back); with out-of-stock on, every 10th order is for "sku-scarce", of which the
warehouse has far too little.

What each order's answer was is kept, to be compared with the databases at the end.
A request that could not connect (the order service was down) never reached it and is
sent again once the service is back; a request whose answer was lost (the service was
killed while it ran) is not retried: its fate is whatever the database and the broker
decided, which is exactly what the invariants check.
"""

import http.client
import json
import threading
import time
import urllib.parse

SCARCE_SKU = "sku-scarce"
NORMAL_SKUS = [f"sku-{i}" for i in range(5)]


def plan_order(i, local_failures, out_of_stock):
    quantity = 1 + i % 3
    if local_failures and i % 25 == 7:
        quantity = 0
    sku = SCARCE_SKU if out_of_stock and i % 10 == 3 else NORMAL_SKUS[i % len(NORMAL_SKUS)]
    return {"order_id": f"o-{i:06d}", "customer": f"c-{i % 97}", "sku": sku, "quantity": quantity,
            "amount_cents": 500 + (i * 37) % 5000}


def initial_stock(orders, out_of_stock):
    """Plenty of every normal SKU; of the scarce one, enough for about a tenth of its orders."""
    stock = {sku: 3 * orders for sku in NORMAL_SKUS}
    stock[SCARCE_SKU] = max(2, orders // 50) if out_of_stock else 3 * orders
    return stock


class Customers:
    def __init__(self, system, orders, threads, rate, local_failures, out_of_stock, deadline_s):
        self.system = system
        self.plan = [plan_order(i, local_failures, out_of_stock) for i in range(1, orders + 1)]
        self.threads = threads
        self.rate = rate                 # orders per second in all, 0: as fast as answered
        self.deadline = time.monotonic() + deadline_s
        self.answers = {}                # order_id -> committed|pending|rolled_back|unavailable|lost
        self.started = 0                 # orders handed to a thread so far
        self._lock = threading.Lock()
        self._workers = []
        self._t0 = None

    def start(self):
        self._t0 = time.monotonic()
        self._workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
        for w in self._workers:
            w.start()

    def join(self):
        for w in self._workers:
            w.join(max(0.0, self.deadline - time.monotonic()) + 1)
        if any(w.is_alive() for w in self._workers):
            raise TimeoutError("customers did not finish placing orders in time")

    def progress(self):
        with self._lock:
            return self.started / len(self.plan)

    def _next(self):
        with self._lock:
            if self.started >= len(self.plan):
                return None
            order = self.plan[self.started]
            self.started += 1
            n = self.started
        if self.rate:  # pacing, so that the faults land among the orders, not after them
            due = self._t0 + n / self.rate
            # Read the clock once: between a test and a second reading the order may come
            # due, and a negative sleep kills this customer with the order in its hand.
            while (wait := due - time.monotonic()) > 0:
                time.sleep(min(0.01, wait))
        return order

    def _work(self):
        while (order := self._next()) is not None:
            answer = self._place(order)
            with self._lock:
                self.answers[order["order_id"]] = answer

    def _place(self, order):
        body = json.dumps(order)
        while time.monotonic() < self.deadline:
            url = self.system.order_url()
            if url is None:          # the order service is being restarted: wait for it
                time.sleep(0.02)
                continue
            u = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            try:
                conn.connect()
            except (ConnectionRefusedError, OSError):
                conn.close()
                time.sleep(0.02)     # never reached the service: safe to send again
                continue
            try:
                conn.request("POST", u.path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                state = json.loads(resp.read() or b"{}").get("state", f"http-{resp.status}")
                return state
            except (OSError, http.client.HTTPException, ValueError):
                return "lost"        # sent, but the answer never came back
            finally:
                conn.close()
        return "not_sent"
