#!/usr/bin/env python3
"""Safe defaults of the real txmq-broker: a listen address that is not loopback is refused
without authentication, served with broker.allow_insecure (or --allow-insecure) and warned
about at every start; a metrics address that is not loopback and has no TLS is warned about.

Brokers bind 0.0.0.0 with port 0 here, but nothing connects to them from outside loopback:
the tests only read what the broker prints and logs. Every wait has a deadline.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.environ.get("TXMQ_SOURCE_DIR", "."), "tests", "support"))
from txmq_harness import BROKER, read_line_starting  # noqa: E402

REFUSAL = ("broker.listen 0.0.0.0:0 is not a loopback address and auth.enabled is false: anyone who can "
           "reach the port could read, write and delete every topic. Turn on [auth], or set "
           "broker.allow_insecure = true to serve it anyway")
INSECURE_WARNING = "which is not a loopback address: clients are not authenticated (broker.allow_insecure = true)"
METRICS_WARNING = "which is not a loopback address, without TLS"


class SafeDefaultsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="txmq-safe-")
        self.data = os.path.join(self.tmp, "data")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write_config(self, text):
        path = os.path.join(self.tmp, "broker.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_refused(self, *args):
        """Runs a broker expected not to start; returns (exit code, stdout, stderr)."""
        p = subprocess.run([BROKER, "--data", self.data, *args], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def serve(self, *args):
        """Starts a broker, waits for its listening line, stops it; returns (address, log)."""
        log_path = os.path.join(self.tmp, "broker.log")
        with open(log_path, "w") as log:
            proc = subprocess.Popen([BROKER, "--data", self.data, *args], stdout=subprocess.PIPE, stderr=log,
                                    text=True)
            try:
                address = read_line_starting(proc, "listening on ", 30, "broker")
            finally:
                proc.terminate()
                code = proc.wait(timeout=30)
                proc.stdout.close()
        self.assertEqual(code, 0, "broker did not exit cleanly on SIGTERM")
        with open(log_path) as f:
            return address, f.read()

    def test_a_non_loopback_listen_address_without_auth_is_refused(self):
        code, out, err = self.run_refused("--listen", "0.0.0.0:0", "--no-metrics")
        self.assertEqual(code, 1, err)
        self.assertIn(REFUSAL, err)
        self.assertNotIn("listening on", out)

    def test_the_ipv6_any_address_is_refused_too(self):
        code, _, err = self.run_refused("--listen", "[::]:0", "--no-metrics")
        self.assertEqual(code, 1, err)
        self.assertIn("broker.listen [::]:0 is not a loopback address and auth.enabled is false", err)

    def test_allow_insecure_flag_serves_and_warns_at_every_start(self):
        for start in (1, 2):
            address, log = self.serve("--listen", "0.0.0.0:0", "--no-metrics", "--allow-insecure")
            self.assertTrue(address.startswith("0.0.0.0:"), address)
            self.assertEqual(log.count(INSECURE_WARNING), 1, f"start {start}: {log}")

    def test_allow_insecure_in_the_config_file_serves_and_warns(self):
        config = self.write_config('[broker]\nlisten = "0.0.0.0:0"\nallow_insecure = true\nmetrics_listen = ""\n')
        address, log = self.serve("--config", config)
        self.assertTrue(address.startswith("0.0.0.0:"), address)
        self.assertIn(INSECURE_WARNING, log)

    def test_a_loopback_address_starts_without_a_warning(self):
        _, log = self.serve("--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
        self.assertNotIn("not a loopback address", log)

    def test_a_non_loopback_metrics_address_without_tls_is_warned_about(self):
        _, log = self.serve("--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0")
        self.assertIn("metrics on 0.0.0.0:0, " + METRICS_WARNING, log)
        self.assertNotIn(INSECURE_WARNING, log)


if __name__ == "__main__":
    unittest.main()
