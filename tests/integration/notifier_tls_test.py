#!/usr/bin/env python3
"""txmq-notifier against a broker that serves TLS on its protocol port.

Certificates are made per run the way tls_cli_test.py makes them (the `openssl` command).
The notifier, configured with [notifier] tls_ca_file, delivers a message to a real HTTP
receiver; trusting the wrong CA, or no TLS at all, it exits at start with the reason in its
log, within its start deadline rather than hanging. Every wait has a deadline.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.environ.get("TXMQ_SOURCE_DIR", "."), "tests", "support"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from txmq_harness import NOTIFIER, Broker, Notifier, Receiver, wait_until  # noqa: E402
from tls_cli_test import make_certs, tls_config, txmq  # noqa: E402

# The notifier gives up starting after 10 s without the broker; anything near this is a hang.
DEADLINE = 60


def config(broker, receiver_url, tls_lines):
    return (f'[notifier]\nbroker = "{broker.address}"\nmetrics_listen = "127.0.0.1:0"\nlog_level = "debug"\n'
            f'{tls_lines}\n'
            f'[[subscription]]\nname = "s"\ntopic = "orders"\ngroup = "notify-s"\nurl = "{receiver_url}/hook"\n'
            f'schedule_ms = [200]\njitter = 0.0\n')


class NotifierTlsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="txmq-notifier-tls-")
        make_certs(self.tmp)
        self.broker = Broker(self.tmp, name="tls", config=tls_config(self.tmp))
        self.ca = os.path.join(self.tmp, "ca.pem")
        self.receiver = Receiver(lambda path, req, n: (204, {}, b""))
        self.notifier = None
        r = self.tool("topic", "create", "orders")
        self.assertEqual(r.returncode, 0, r.stderr)

    def tearDown(self):
        if self.notifier and self.notifier.proc.poll() is None:
            self.notifier.stop()
        self.receiver.close()
        self.assertEqual(self.broker.stop(), 0, "broker did not exit cleanly")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def tool(self, *args, stdin=None):
        return txmq(self.broker, *args, env={"TXMQ_TLS_CA": self.ca}, stdin=stdin)

    def start_failing(self, tls_lines):
        """Runs a notifier expected not to start; returns its stderr."""
        path = os.path.join(self.tmp, "failing.toml")
        with open(path, "w") as f:
            f.write(config(self.broker, self.receiver.url, tls_lines))
        p = subprocess.run([NOTIFIER, "--config", path], capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 1, p.stderr)
        return p.stderr

    def test_delivers_a_message_over_tls(self):
        self.notifier = Notifier(self.tmp, config(self.broker, self.receiver.url, f'tls_ca_file = "{self.ca}"')).start()
        r = self.tool("produce", "orders", stdin="over tls\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_until(lambda: len(self.receiver.on("/hook")) == 1, 20, "the callback")
        self.assertEqual(self.receiver.on("/hook")[0].body, b"over tls")
        # Acknowledged over TLS too: the group has nothing left.
        wait_until(lambda: "lag=0" in self.tool("group", "describe", "notify-s").stdout, 20, "the ack")
        self.assertEqual(self.notifier.stop(), 0, "notifier did not exit cleanly on SIGTERM")

    def test_the_wrong_ca_fails_at_start_naming_the_verification_failure(self):
        other = os.path.join(self.tmp, "other-ca.pem")
        err = self.start_failing(f'tls_ca_file = "{other}"')
        self.assertIn("certificate verify failed", err)
        self.assertEqual(self.receiver.on("/hook"), [])

    def test_without_tls_on_a_tls_port_it_fails_at_start_with_a_clear_error(self):
        err = self.start_failing("")
        self.assertIn("this broker port takes TLS connections only", err)


if __name__ == "__main__":
    unittest.main()
