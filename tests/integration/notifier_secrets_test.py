#!/usr/bin/env python3
"""txmq-notifier's secrets and its HTTPS callbacks, against the real broker and real receivers.

A config file holding a signing secret and open to group or others is warned about at
start (not one with mode 0600); secret_env takes the secret from the environment, signs
with it (checked with Python's hmac), and an unset variable stops the start. An https
endpoint whose certificate comes from a CA the notifier does not trust fails (retried and
counted as a connection error, as any failure), and succeeds once ca_file names the CA.
Certificates are made per run (tls_cli_test.make_certs). Every wait has a deadline.
"""

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.environ.get("TXMQ_SOURCE_DIR", "."), "tests", "support"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from txmq_harness import NOTIFIER, Broker, Notifier, Receiver, txmq, wait_until  # noqa: E402
from notifier_test import SECRET, config, subscription, verify_signature  # noqa: E402
from tls_cli_test import make_certs  # noqa: E402

EXPOSED = "holds the signing secret of subscription 's' and is open to group or others (mode 0644): chmod 600 "
SECRET_VARIABLE = "TXMQ_TEST_WEBHOOK_SECRET"


def attempts(metrics_text, outcome):
    """txmq_notifier_attempts_total summed over the series with this outcome."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith("txmq_notifier_attempts_total{") and f'outcome="{outcome}"' in line)


class NotifierSecretsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="txmq-notifier-secrets-")
        self.broker = Broker(self.tmp)
        self.assertEqual(txmq(self.broker, "topic", "create", "orders").returncode, 0)
        self.receiver = None
        self.notifier = None

    def tearDown(self):
        os.environ.pop(SECRET_VARIABLE, None)
        if self.notifier and self.notifier.proc and self.notifier.proc.poll() is None:
            self.notifier.stop()
        if self.receiver:
            self.receiver.close()
        self.assertEqual(self.broker.stop(), 0, "broker did not exit cleanly")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def produce(self, body):
        r = txmq(self.broker, "produce", "orders", stdin=body + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)

    def start_with_mode(self, mode, **extra):
        """A notifier whose config file has this mode; returns its log once it is ready."""
        self.receiver = self.receiver or Receiver(lambda path, req, n: (204, {}, b""))
        self.notifier = Notifier(self.tmp, config(self.broker, subscription("s", "orders", self.receiver.url + "/hook",
                                                                            **extra)))
        os.chmod(self.notifier.config, mode)
        self.notifier.start()
        return self.notifier.log_text()

    def test_a_config_file_with_a_secret_open_to_others_is_warned_about(self):
        log = self.start_with_mode(0o644)
        self.assertIn(f"config {self.notifier.config} " + EXPOSED + self.notifier.config, log)

    def test_a_config_file_with_a_secret_and_mode_0600_is_not_warned_about(self):
        log = self.start_with_mode(0o600)
        self.assertNotIn("open to group or others", log)

    def test_a_secret_from_the_environment_signs_and_is_not_warned_about(self):
        os.environ[SECRET_VARIABLE] = SECRET
        log = self.start_with_mode(0o644, secret="", secret_env=SECRET_VARIABLE)
        self.assertNotIn("open to group or others", log)
        self.assertNotIn(SECRET, self.notifier.config_text())
        self.produce("signed from the environment")
        wait_until(lambda: len(self.receiver.on("/hook")) == 1, 20, "the callback")
        request = self.receiver.on("/hook")[0]
        self.assertEqual(request.body, b"signed from the environment")
        self.assertTrue(verify_signature(request), "the signature does not verify with the environment's secret")

    def test_an_unset_secret_variable_stops_the_start(self):
        self.receiver = Receiver(lambda path, req, n: (204, {}, b""))
        path = os.path.join(self.tmp, "unset.toml")
        with open(path, "w") as f:
            f.write(config(self.broker, subscription("s", "orders", self.receiver.url + "/hook", secret="",
                                                     secret_env=SECRET_VARIABLE)))
        p = subprocess.run([NOTIFIER, "--config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f"secret_env names {SECRET_VARIABLE}, which is not set in the environment", p.stderr)

    def test_an_https_endpoint_is_verified_and_ca_file_adds_its_ca(self):
        make_certs(self.tmp)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(os.path.join(self.tmp, "server.pem"), os.path.join(self.tmp, "server.key"))
        self.receiver = Receiver(lambda path, req, n: (204, {}, b""), tls=tls)
        self.assertTrue(self.receiver.url.startswith("https://127.0.0.1:"))
        # Without ca_file the system's CAs do not know the receiver's: every attempt fails
        # verification, is counted and retried; nothing reaches the receiver.
        self.start_with_mode(0o600, max_attempts=50)
        self.produce("over https")
        wait_until(lambda: attempts(self.notifier.scrape(), "connection_error") >= 2, 30,
                   "two failed attempts (the first and a retry)")
        self.assertEqual(attempts(self.notifier.scrape(), "success"), 0)
        self.assertEqual(self.receiver.on("/hook"), [])
        self.assertEqual(self.notifier.stop(), 0, "notifier did not exit cleanly on SIGTERM")
        # With the CA named, the same message (still in the group) is delivered.
        self.start_with_mode(0o600, max_attempts=50, ca_file=os.path.join(self.tmp, "ca.pem"))
        wait_until(lambda: len(self.receiver.on("/hook")) == 1, 30, "the callback over https")
        self.assertEqual(self.receiver.on("/hook")[0].body, b"over https")
        self.assertTrue(verify_signature(self.receiver.on("/hook")[0]))


if __name__ == "__main__":
    unittest.main()
