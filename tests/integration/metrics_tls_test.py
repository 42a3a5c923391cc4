#!/usr/bin/env python3
"""HTTPS on the broker's metrics endpoint ([tls] metrics = true), seen by clients that are not
ours: curl and Python's ssl verify the chain and the host name, a plain HTTP request is
closed rather than left hanging, and a real Prometheus server (Debian's package) scrapes it
with scheme https and tls_config ca_file.

The broker asks the protocol port's clients for certificates (client_auth = "required");
the metrics endpoint must not. Certificates are made per run (tls_cli_test.make_certs).
Every wait has a deadline. Paths come from the environment set by CTest.
"""

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

SOURCE = os.environ["TXMQ_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE, "tests", "support"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from txmq_harness import BROKER, Broker, wait_until  # noqa: E402
from tls_cli_test import make_certs, tls_config, txmq  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
CURL = shutil.which("curl") or "/usr/bin/curl"
DEADLINE = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="txmq-metrics-tls-")
        cls.d = cls.tmp.name
        make_certs(cls.d)
        cls.ca = os.path.join(cls.d, "ca.pem")
        config = tls_config(cls.d, client_auth="required") + "metrics = true\n"
        cls.broker = Broker(cls.d, name="tls", metrics=True, config=config)
        cls.host, cls.port = cls.broker.metrics.rsplit(":", 1)

    @classmethod
    def tearDownClass(cls):
        code = cls.broker.stop()
        cls.tmp.cleanup()
        assert code == 0, "broker did not exit cleanly on SIGTERM"

    def curl(self, url, *args):
        return subprocess.run([CURL, "--silent", "--show-error", "--fail", "--max-time", str(DEADLINE), *args, url],
                              capture_output=True, text=True, timeout=DEADLINE + 10)

    def tool(self, *args, stdin=None):
        d = self.d
        return txmq(self.broker, *args, stdin=stdin,
                    env={"TXMQ_TLS_CA": self.ca, "TXMQ_TLS_CERT": f"{d}/client.pem", "TXMQ_TLS_KEY": f"{d}/client.key"})

    def test_curl_verifies_the_chain_and_the_ip_address(self):
        r = self.curl(f"https://{self.broker.metrics}/metrics", "--cacert", self.ca)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("txmq_build_info", r.stdout)

    def test_curl_verifies_a_dns_name(self):
        r = self.curl(f"https://localhost:{self.port}/metrics", "--cacert", self.ca,
                      "--resolve", f"localhost:{self.port}:{self.host}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("txmq_connections", r.stdout)

    def test_curl_refuses_an_unknown_ca_and_a_wrong_name(self):
        other = os.path.join(self.d, "other-ca.pem")
        r = self.curl(f"https://{self.broker.metrics}/metrics", "--cacert", other)
        self.assertEqual(r.returncode, 60, r.stderr)  # CURLE_PEER_FAILED_VERIFICATION
        r = self.curl(f"https://wrong.example:{self.port}/metrics", "--cacert", self.ca,
                      "--resolve", f"wrong.example:{self.port}:{self.host}")
        self.assertEqual(r.returncode, 60, r.stderr)

    def test_python_ssl_verifies_and_reads_the_page_without_a_client_certificate(self):
        context = ssl.create_default_context(cafile=self.ca)
        self.assertTrue(context.check_hostname)
        with urllib.request.urlopen(f"https://{self.broker.metrics}/metrics", timeout=DEADLINE,
                                    context=context) as r:
            self.assertEqual(r.status, 200)
            self.assertIn("txmq_topics", r.read().decode())
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"https://{self.broker.metrics}/nope", timeout=DEADLINE, context=context)
        self.assertEqual(e.exception.code, 404)

    def test_a_plain_http_request_is_closed_not_left_hanging(self):
        started = time.monotonic()
        with socket.create_connection((self.host, int(self.port)), timeout=DEADLINE) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            try:
                while chunk := s.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass  # closed with unread input: a reset is a close too
        # A connection that says nothing the endpoint understands would be closed by its
        # request timeout (10 s); this one must be closed on its first bytes.
        self.assertLess(time.monotonic() - started, 5)
        self.assertNotIn(b"HTTP/1.1", received)
        # The endpoint still serves HTTPS afterwards.
        r = self.curl(f"https://{self.broker.metrics}/metrics", "--cacert", self.ca)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_prometheus_scrapes_over_tls(self):
        n = 42
        self.assertEqual(self.tool("topic", "create", "scraped").returncode, 0)
        r = self.tool("produce", "scraped", stdin="".join(f"m{i}\n" for i in range(n)))
        self.assertEqual(r.returncode, 0, r.stderr)
        port = free_port()
        config = os.path.join(self.d, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n"
                    "  - job_name: txmq-broker\n    scheme: https\n"
                    f"    tls_config:\n      ca_file: {self.ca}\n"
                    f"    static_configs:\n      - targets: ['{self.broker.metrics}']\n")
        with open(os.path.join(self.d, "prometheus.log"), "w") as plog:
            prometheus = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.d}/tsdb",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=plog, stderr=plog)
        base = f"http://127.0.0.1:{port}"

        def query(promql):
            try:
                with urllib.request.urlopen(f"{base}/api/v1/query?query=" + urllib.parse.quote(promql),
                                            timeout=5) as r:
                    result = json.loads(r.read().decode())["data"]["result"]
            except (urllib.error.URLError, ConnectionError, OSError):
                return None
            return float(result[0]["value"][1]) if result else None

        try:
            value = wait_until(lambda: query('txmq_messages_produced_total{topic="scraped"}') == n and n, 90,
                               f"Prometheus to report {n} produced over https")
            self.assertEqual(value, n)
            self.assertEqual(query('up{job="txmq-broker"}'), 1)
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=15)


class MetricsTlsConfigTest(unittest.TestCase):
    def test_tls_metrics_without_a_certificate_is_a_config_error(self):
        with tempfile.TemporaryDirectory(prefix="txmq-metrics-tls-") as d:
            path = os.path.join(d, "broker.toml")
            with open(path, "w") as f:
                f.write("[tls]\nmetrics = true\n")
            p = subprocess.run([BROKER, "--data", os.path.join(d, "data"), "--listen", "127.0.0.1:0",
                                "--config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("tls.metrics needs tls.cert_file and tls.key_file", p.stderr)


if __name__ == "__main__":
    unittest.main()
