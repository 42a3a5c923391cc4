#!/usr/bin/env python3
"""TLS on the broker's protocol port, seen by clients that are not ours and by the txmq tool.

Certificates are made per run with the `openssl` command (a CA, the broker's certificate
for 127.0.0.1 and localhost, a client certificate, and a second CA that signed nothing
here). Python's ssl module, an independent TLS client, verifies the chain and the host
name; the txmq tool connects with --tls, --tls-ca, --tls-cert and --tls-key (or their
environment variables) and reports every mismatch clearly, within its deadline.
Paths come from the environment set by CTest.
"""

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.request

SOURCE = os.environ["TXMQ_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SOURCE, "tests", "support"))
from txmq_harness import CLI, Broker, wait_until  # noqa: E402

# The tool waits about a second for a broker it cannot reach; anything near this is a hang.
DEADLINE = 20


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d):
    """Writes ca.pem, other-ca.pem, server.pem/.key and client.pem/.key into d."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "1", "-subj", "/CN=" + ca, cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for leaf in ("server", "client"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", leaf + ".key", "-out", leaf + ".csr", "-subj", "/CN=txmq-" + leaf, cwd=d)
        openssl("x509", "-req", "-in", leaf + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", leaf + ".ext", "-out", leaf + ".pem", cwd=d)


def tls_config(d, client_auth="none"):
    return (f'[tls]\nenabled = true\ncert_file = "{d}/server.pem"\nkey_file = "{d}/server.key"\n'
            f'ca_file = "{d}/ca.pem"\nclient_auth = "{client_auth}"\n')


def closed_for(broker, reason):
    """txmq_connections_closed_total{reason=...} of a broker started with metrics=True."""
    with urllib.request.urlopen(f"http://{broker.metrics}/metrics", timeout=DEADLINE) as r:
        page = r.read().decode()
    prefix = f'txmq_connections_closed_total{{reason="{reason}"}} '
    for line in page.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0


def txmq(broker, *args, env=None, stdin=None):
    """Runs the tool against broker with only the given TXMQ_* variables set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TXMQ_")}
    clean.update(TXMQ_BROKER=broker.address, **(env or {}))
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, env=clean,
                          timeout=DEADLINE)


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="txmq-tls-cli-")
        cls.d = cls.tmp.name
        make_certs(cls.d)
        cls.broker = Broker(cls.d, name="tls", metrics=True, config=tls_config(cls.d))
        cls.host, port = cls.broker.address.rsplit(":", 1)
        cls.port = int(port)

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        cls.tmp.cleanup()

    def ca(self, name="ca"):
        return os.path.join(self.d, name + ".pem")

    def handshake(self, ca, server_hostname):
        ctx = ssl.create_default_context(cafile=ca)
        with socket.create_connection((self.host, self.port), timeout=DEADLINE) as sock:
            with ctx.wrap_socket(sock, server_hostname=server_hostname) as tls:
                return tls.version(), tls.getpeercert()

    def test_an_independent_client_verifies_the_chain_and_the_host_name(self):
        version, cert = self.handshake(self.ca(), "127.0.0.1")
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertIn(("IP Address", "127.0.0.1"), cert["subjectAltName"])
        self.handshake(self.ca(), "localhost")

    def test_an_independent_client_refuses_another_ca_and_another_host(self):
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.handshake(self.ca("other-ca"), "127.0.0.1")
        with self.assertRaises(ssl.SSLCertVerificationError) as e:
            self.handshake(self.ca(), "broker.example")
        self.assertIn("mismatch", str(e.exception))

    def test_the_tool_produces_and_consumes_over_tls(self):
        flags = ["--tls", "--tls-ca", self.ca()]
        r = txmq(self.broker, *flags, "topic", "create", "cli-orders")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = txmq(self.broker, *flags, "produce", "cli-orders", stdin="one\ntwo\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = txmq(self.broker, *flags, "consume", "cli-orders", "-g", "g", "-n", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["one", "two"])

    def test_the_tool_takes_tls_settings_from_the_environment(self):
        r = txmq(self.broker, "topic", "list", env={"TXMQ_TLS": "1", "TXMQ_TLS_CA": self.ca()})
        self.assertEqual(r.returncode, 0, r.stderr)
        # A CA file alone means TLS.
        r = txmq(self.broker, "topic", "list", env={"TXMQ_TLS_CA": self.ca()})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_the_tool_refuses_a_broker_certificate_from_another_ca(self):
        r = txmq(self.broker, "--tls-ca", self.ca("other-ca"), "topic", "list")
        self.assertEqual(r.returncode, 1)
        self.assertIn("TLS handshake failed: certificate verify failed", r.stderr)

    def test_the_tool_without_tls_on_the_tls_port_is_told_so(self):
        r = txmq(self.broker, "topic", "list")
        self.assertEqual(r.returncode, 1)
        self.assertIn("takes TLS connections only", r.stderr)
        self.assertGreaterEqual(closed_for(self.broker, "not_tls"), 1)

    def test_the_tool_with_tls_on_a_plain_port_is_told_so(self):
        plain = Broker(self.d, name="plain", metrics=True)
        try:
            r = txmq(plain, "--tls", "--tls-ca", self.ca(), "topic", "list")
            self.assertEqual(r.returncode, 1)
            self.assertIn("the broker did not answer with TLS", r.stderr)
            wait_until(lambda: "sent a TLS ClientHello" in plain.log_text(), 10, "the broker's log line")
            wait_until(lambda: closed_for(plain, "tls_on_plain_port") == 1, 10, "the closure counted")
        finally:
            plain.stop()

    def test_the_tool_presents_a_client_certificate(self):
        mutual = Broker(self.d, name="mutual", metrics=True, config=tls_config(self.d, "required"))
        try:
            r = txmq(mutual, "--tls-ca", self.ca(), "topic", "list")
            self.assertEqual(r.returncode, 1)
            self.assertIn("certificate required", r.stderr)
            wait_until(lambda: closed_for(mutual, "tls_handshake_failed") == 1, 10, "the refusal counted")
            cert = ["--tls-cert", os.path.join(self.d, "client.pem"), "--tls-key", os.path.join(self.d, "client.key")]
            r = txmq(mutual, "--tls-ca", self.ca(), *cert, "topic", "list")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = txmq(mutual, "topic", "list", env={"TXMQ_TLS_CA": self.ca(), "TXMQ_TLS_CERT": cert[1],
                                                   "TXMQ_TLS_KEY": cert[3]})
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            mutual.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
