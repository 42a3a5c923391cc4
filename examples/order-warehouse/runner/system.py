"""The system under test: the broker, the three services and the notifier, on loopback,
in one temporary directory, with the settings that make a fault play out in seconds.

Who listens where: the broker and the points service get a fixed free port each, because
they are restarted and others must find them again at the same address (the services
reconnect to the broker; the notifier's config names the points URL). The order service
takes port 0 and the runner reads the port it printed after each start.

With security (--secure, security.py) the broker's port speaks TLS only and every client,
the runner's own txmq tool calls included, logs in as its own user.
"""

import base64
import os
import secrets
import subprocess

import security as security_mod
from processes import Process, free_port, listening_address

# Short transaction timers, so that an order service killed mid-transaction is checked
# back within a second or two instead of the production defaults (6 s, then 5 s doubling).
BROKER_CONFIG = """\
[transactions]
timeout_ms = 1000
check_backoff_initial_ms = 500
check_backoff_max_ms = 2000
[log]
level = "info"
"""

# The warehouse's retry policy: an out-of-stock order is tried 4 times, 200 ms apart, then
# dead-lettered. A killed warehouse's deliveries come back at once (a disconnect counts as
# a failed delivery), so the lease only matters for a hung one.
WAREHOUSE_GROUP = ["--ack-wait", "5s", "--max-deliveries", "4", "--delays", "200ms"]

NOTIFIER_GROUP = "notifier-points"
GAVE_UP_TOPIC = NOTIFIER_GROUP + ".gave-up"


class System:
    def __init__(self, bins, workdir, stock, notifier_attempts, notifier_schedule_ms, secure=False):
        self.bins = bins
        self.dir = workdir
        self.stock = stock
        self.broker_port = free_port()
        self.points_port = free_port()
        self.broker_address = f"127.0.0.1:{self.broker_port}"
        # The points service and the notifier share this key (Standard Webhooks' whsec_).
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.notifier_attempts = notifier_attempts
        self.notifier_schedule_ms = notifier_schedule_ms
        log = lambda name: os.path.join(workdir, name + ".log")
        self.broker = Process("broker", log("broker"))
        self.order = Process("order-service", log("order-service"))
        self.warehouse = Process("warehouse", log("warehouse"))
        self.points = Process("points", log("points"))
        self.notifier = Process("notifier", log("notifier"))
        self.db = {name: os.path.join(workdir, name + ".db") for name in ("orders", "stock", "points")}
        self.security = security_mod.Security(workdir, bins.cli) if secure else None

    def client_flags(self, user):
        """The flags for TLS and user's login, or none when the run is not secure."""
        return self.security.client_flags(user) if self.security else []

    # --- the broker -------------------------------------------------------------------

    def start_broker(self):
        config = os.path.join(self.dir, "broker.toml")
        with open(config, "w") as f:
            f.write(BROKER_CONFIG + (self.security.broker_config() if self.security else ""))
        self.broker.start([self.bins.broker, "--config", config, "--data", os.path.join(self.dir, "broker-data"),
                           "--listen", self.broker_address, "--metrics-listen", "127.0.0.1:0"],
                          ready_line="listening on")

    def cli(self, *args, tolerate=None):
        """Runs the txmq tool against the broker; returns its stdout. A failure raises
        RuntimeError, unless its message holds `tolerate`."""
        r = subprocess.run([self.bins.cli, "--broker", self.broker_address,
                            *self.client_flags(security_mod.OPERATOR_USER), *args],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and not (tolerate and tolerate in r.stderr):
            raise RuntimeError(f"txmq {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def create_topics(self):
        self.cli("topic", "create", "orders", "--partitions", "2")
        self.cli("topic", "create", "order-cancellations")
        # Give-up records land on an ordinary topic the notifier would create on first use;
        # created here so that its consumer can subscribe first. warehouse.dlq is the
        # broker's to create (on the first dead letter): its consumer waits for it.
        self.cli("topic", "create", GAVE_UP_TOPIC)
        self.cli("group", "configure", "warehouse", *WAREHOUSE_GROUP)

    # --- the services -----------------------------------------------------------------

    def start_order(self, pause_after_prepare=0, pause_after_local_commit=0):
        argv = [self.bins.order, "--broker", self.broker_address, "--db", self.db["orders"],
                *self.client_flags(security_mod.ORDER_USER)]
        if pause_after_prepare:
            argv += ["--pause-after-prepare", str(pause_after_prepare)]
        if pause_after_local_commit:
            argv += ["--pause-after-local-commit", str(pause_after_local_commit)]
        self.order.start(argv)

    def order_url(self):
        """The order service's URL, or None while it is down."""
        return f"http://{listening_address(self.order)}/orders" if self.order.running() and \
            self.order.line_starting("ready") else None

    def start_warehouse(self, pause_after_reserve=0):
        argv = [self.bins.warehouse, "--broker", self.broker_address, "--db", self.db["stock"],
                "--stock", ",".join(f"{sku}={n}" for sku, n in self.stock.items()),
                *self.client_flags(security_mod.WAREHOUSE_USER)]
        if pause_after_reserve:
            argv += ["--pause-after-reserve", str(pause_after_reserve)]
        self.warehouse.start(argv)

    def start_points(self):
        self.points.start([self.bins.points, "--broker", self.broker_address, "--db", self.db["points"],
                           "--listen", f"127.0.0.1:{self.points_port}", "--secret", self.secret,
                           "--gave-up-topic", GAVE_UP_TOPIC, *self.client_flags(security_mod.POINTS_USER)])

    def points_url(self):
        return f"http://127.0.0.1:{self.points_port}/points"

    def start_notifier(self):
        config = os.path.join(self.dir, "notifier.toml")
        schedule = ", ".join(str(ms) for ms in self.notifier_schedule_ms)
        # It holds the webhook secret: readable by its owner only, as the notifier asks.
        with os.fdopen(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(f"""\
[notifier]
broker = "{self.broker_address}"
metrics_listen = ""
log_level = "info"
{self.security.notifier_keys() if self.security else ""}
[[subscription]]
name = "points"
topic = "orders"
group = "{NOTIFIER_GROUP}"
url = "{self.points_url()}"
max_attempts = {self.notifier_attempts}
schedule_ms = [{schedule}]
request_timeout_ms = 5000
concurrency = 16
secret = "{self.secret}"
# The circuit breaker would hold messages back while points is down instead of spending
# their attempts; the scenario wants the give-up path to run, so it is set out of reach.
breaker_failures = 1000000
""")
        self.notifier.start([self.bins.notifier, "--config", config])

    def start_all(self, warehouse_flags):
        """Everything but the order service, whose start the fault plan arms."""
        self.start_broker()
        self.create_topics()
        self.start_warehouse(**warehouse_flags)
        self.start_points()
        if self.bins.notifier:
            self.start_notifier()

    def stop_all(self):
        """SIGTERM everything, services first; returns {name: exit code} of those that
        did not exit 0 (a crash at shutdown, or a sanitizer report, is a finding)."""
        bad = {}
        for p in (self.order, self.notifier, self.points, self.warehouse, self.broker):
            if p.proc is not None and p.running():
                code = p.terminate()
                if code != 0:
                    bad[p.name] = code
        return bad
