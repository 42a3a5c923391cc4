#!/usr/bin/env python3
"""The broker's and the notifier's /metrics, proven by promtool and by a real Prometheus server.

Starts the real txmq-broker on 127.0.0.1 port 0 with a temporary data directory,
produces messages with the real `txmq` tool, checks the exposition with
`promtool check metrics`, then starts Prometheus (Debian's package) scraping the broker
and asserts through its HTTP query API that the produced-messages counter reached N; and
the same for txmq-notifier's successful callbacks to a real HTTP receiver.
Every wait has a deadline. Paths come from the environment set by CTest.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

CLI = os.environ["TXMQ_CLI_BIN"]
SOURCE = os.environ["TXMQ_SOURCE_DIR"]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

sys.path.insert(0, os.path.join(SOURCE, "tests", "support"))
from txmq_harness import Broker, Notifier, Receiver, wait_until  # noqa: E402


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusMetricsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="txmq-prom-")
        self.broker = Broker(self.tmp, metrics=True)
        self.env = dict(os.environ, TXMQ_BROKER=self.broker.address)
        self.prometheus = None

    def tearDown(self):
        if self.prometheus:
            self.prometheus.terminate()
            self.prometheus.wait(timeout=15)
        self.assertEqual(self.broker.stop(), 0, "broker did not exit cleanly on SIGTERM")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def txmq(self, *args, stdin=None):
        return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=60)

    def produce(self, topic, n):
        self.assertEqual(self.txmq("topic", "create", topic).returncode, 0)
        r = self.txmq("produce", topic, stdin="".join(f"m{i}\n" for i in range(n)))
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_exposition_passes_promtool_check_metrics(self):
        self.produce("orders", 10)
        r = self.txmq("consume", "orders", "--group", "g", "--max", "10")
        self.assertEqual(r.returncode, 0, r.stderr)
        status, text = http_get(f"http://{self.broker.metrics}/metrics")
        self.assertEqual(status, 200)
        for name in ("txmq_messages_produced_total", "txmq_messages_acked_total",
                     "txmq_consumer_lag_messages", "txmq_storage_commit_seconds_bucket",
                     "txmq_storage_used_bytes", "txmq_connections", "process_resident_memory_bytes"):
            self.assertIn(name, text)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_write_ops_are_counted_by_kind(self):
        """A create-topic and a produce show up in txmq_storage_write_ops_total under their own
        op labels; the writer counts an op before its confirm is sent, so no wait is needed."""
        self.produce("orders", 3)
        status, text = http_get(f"http://{self.broker.metrics}/metrics")
        self.assertEqual(status, 200)
        ops = {}
        for line in text.splitlines():
            if line.startswith("txmq_storage_write_ops_total{"):
                series, value = line.rsplit(" ", 1)
                ops[series[len('txmq_storage_write_ops_total{op="'):-2]] = float(value)
        self.assertEqual(ops.get("create_topic"), 1, text)
        self.assertGreaterEqual(ops.get("produce", 0), 1, text)
        self.assertEqual(ops.get("redrive"), 0, text)

    def test_unknown_path_is_404(self):
        with self.assertRaises(urllib.error.HTTPError) as e:
            http_get(f"http://{self.broker.metrics}/nope")
        self.assertEqual(e.exception.code, 404)

    def test_alert_rules_and_scrape_config_are_valid(self):
        rules = os.path.join(SOURCE, "config", "prometheus", "txmq-alerts.yml")
        config = os.path.join(SOURCE, "config", "prometheus", "prometheus.yml")
        for args in (["check", "rules", rules], ["check", "config", config]):
            r = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def start_prometheus(self, targets):
        """A real Prometheus server scraping `targets` ({job: HOST:PORT}) every second;
        returns its base URL once it is ready."""
        port = free_port()
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n")
            for job, target in targets.items():
                f.write(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n")
        plog = open(os.path.join(self.tmp, "prometheus.log"), "w")
        self.prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=plog, stderr=plog)
        base = f"http://127.0.0.1:{port}"

        def ready():
            try:
                return http_get(f"{base}/-/ready", timeout=2)[0] == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                return False

        wait_until(ready, 60, "prometheus to be ready")
        return base

    def query(self, base, promql):
        """The value of a PromQL query with one result, or None."""
        try:
            _, body = http_get(f"{base}/api/v1/query?query=" + urllib.parse.quote(promql))
        except (urllib.error.URLError, ConnectionError, OSError):
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def test_prometheus_server_sees_produced_count(self):
        n = 137
        self.produce("payments", n)
        base = self.start_prometheus({"txmq-broker": self.broker.metrics})
        value = wait_until(lambda: self.query(base, 'txmq_messages_produced_total{topic="payments"}') == n and n,
                           60, f"Prometheus to report {n} produced")
        self.assertEqual(value, n)
        self.assertEqual(self.query(base, 'up{job="txmq-broker"}'), 1)

    def test_prometheus_server_sees_the_notifiers_callbacks(self):
        n = 25
        self.produce("paid", n)
        receiver = Receiver(lambda path, req, count: (204, {}, b""))
        notifier = Notifier(self.tmp, f"""[notifier]
broker = "{self.broker.address}"
metrics_listen = "127.0.0.1:0"

[[subscription]]
name = "points"
topic = "paid"
group = "notifier-points"
url = "{receiver.url}/points"
""").start()
        try:
            base = self.start_prometheus({"txmq-notifier": notifier.metrics})
            promql = 'sum(txmq_notifier_attempts_total{job="txmq-notifier",outcome="success"})'
            value = wait_until(lambda: self.query(base, promql) == n and n, 60,
                               f"Prometheus to report {n} successful callbacks")
            self.assertEqual(value, n)
            self.assertEqual(len(receiver.on("/points")), n)
            self.assertEqual(self.query(base, 'up{job="txmq-notifier"}'), 1)
            check = subprocess.run([PROMTOOL, "check", "metrics"], input=notifier.scrape(), capture_output=True,
                                   text=True, timeout=30)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        finally:
            self.assertEqual(notifier.stop(), 0, "notifier did not exit cleanly on SIGTERM")
            receiver.close()


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
