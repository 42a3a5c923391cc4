#!/usr/bin/env python3
"""txmq-notifier against the real broker and a real HTTP receiver on 127.0.0.1.

Each test starts a broker (port 0, temporary data directory), a receiver whose answers it
scripts, and the notifier with a shortened schedule, then checks what the receiver saw and
what the notifier recorded. Signatures are checked with Python's own hmac, independently
of the notifier's OpenSSL code. Every wait has a deadline.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.environ.get("TXMQ_SOURCE_DIR", "."), "tests", "support"))
from txmq_harness import Broker, Notifier, Receiver, txmq, wait_until  # noqa: E402

KEY = os.urandom(24)
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def subscription(name, topic, url, **extra):
    """One [[subscription]] table; extra keys override the test defaults."""
    values = {
        "name": name, "topic": topic, "group": "notify-" + name, "url": url,
        "max_attempts": 5, "schedule_ms": [200], "jitter": 0.0, "request_timeout_ms": 5000,
        "concurrency": 4, "secret": SECRET, "breaker_failures": 100, "breaker_cooldown_ms": 1000,
    }
    values.update(extra)
    if "url_header" in extra:
        del values["url"]
    lines = ["[[subscription]]"]
    for k, v in values.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def config(broker, *subs, broker_address=None, metrics_listen="127.0.0.1:0"):
    """broker_address names the broker otherwise than by the address it printed."""
    return (f'[notifier]\nbroker = "{broker_address or broker.address}"\nmetrics_listen = "{metrics_listen}"\n'
            f'log_level = "debug"\n\n' + "\n".join(subs))


def verify_signature(req):
    """Standard Webhooks verification, written from the spec, not from our code."""
    msg_id = req.headers["webhook-id"]
    ts = req.headers["webhook-timestamp"]
    signed = f"{msg_id}.{ts}.".encode() + req.body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in req.headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, g) for g in given)


def failed_attempts_in(metrics_text):
    """The notifier's count of attempts that did not succeed, over every series."""
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics_text.splitlines()
               if line.startswith("txmq_notifier_attempts_total{") and 'outcome="success"' not in line)


def successes_in(metrics_text):
    """The notifier's count of successful attempts, over every subscription and endpoint."""
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics_text.splitlines()
               if line.startswith("txmq_notifier_attempts_total{") and 'outcome="success"' in line)


class NotifierTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="txmq-notifier-")
        self.broker = Broker(self.tmp)
        self.receiver = None
        self.notifier = None

    def tearDown(self):
        if self.receiver:
            self.receiver.release()
        if self.notifier and self.notifier.proc.poll() is None:
            self.notifier.stop(signal.SIGKILL)
        if self.receiver:
            self.receiver.close()
        self.assertEqual(self.broker.stop(), 0, "broker did not exit cleanly")
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def topic(self, name):
        r = txmq(self.broker, "topic", "create", name)
        self.assertEqual(r.returncode, 0, r.stderr)

    def produce(self, topic, bodies, headers=()):
        args = ["produce", topic]
        for h in headers:
            args += ["--header", h]
        r = txmq(self.broker, *args, stdin="".join(b + "\n" for b in bodies))
        self.assertEqual(r.returncode, 0, r.stderr)

    def start(self, respond, *subs, **config_args):
        self.receiver = Receiver(respond)
        subs = [s.replace("RECEIVER", self.receiver.url) for s in subs]
        self.notifier = Notifier(self.tmp, config(self.broker, *subs, **config_args)).start()

    def delivers_one(self, **config_args):
        """A message produced is delivered: the notifier consumes from the broker as configured."""
        self.topic("named")
        self.start(lambda path, req, n: (204, {}, b""), subscription("s", "named", "RECEIVER/hook"), **config_args)
        self.produce("named", ["by name"])
        wait_until(lambda: len(self.receiver.on("/hook")) == 1, 20, "the callback")
        wait_until(lambda: self.lag("notify-s") == 0, 20, "the message acknowledged")
        self.assertEqual(self.receiver.on("/hook")[0].body, b"by name")
        self.assertEqual(self.notifier.stop(), 0, "notifier did not exit cleanly on SIGTERM")

    def gave_up(self, group, count=1, timeout=30):
        """The give-up records of a subscription's group, as parsed JSON."""
        r = txmq(self.broker, "consume", group + ".gave-up", "--group", "test-reader", "--max", str(count),
                 "--timeout-ms", str(timeout * 1000), timeout=timeout + 30)
        self.assertEqual(r.returncode, 0, r.stderr)
        records = [json.loads(line) for line in r.stdout.splitlines() if line]
        self.assertEqual(len(records), count, f"give-up records: {r.stdout}")
        return records

    def lag(self, group):
        r = txmq(self.broker, "group", "describe", group)
        self.assertEqual(r.returncode, 0, r.stderr)
        for part in r.stdout.split():
            if part.startswith("lag="):
                return int(part[4:])
        raise AssertionError("no lag in: " + r.stdout)

    # -- tests ---------------------------------------------------------------------------

    def test_delivers_each_message_once_signed_with_its_headers(self):
        self.topic("orders")
        self.start(lambda path, req, n: (204, {}, b""), subscription("s", "orders", "RECEIVER/hook"))
        self.produce("orders", ['{"order":1}', '{"order":2}', '{"order":3}'],
                     headers=["content-type=application/json"])
        wait_until(lambda: len(self.receiver.on("/hook")) == 3, 20, "three callbacks")
        wait_until(lambda: self.lag("notify-s") == 0, 20, "all three acknowledged")
        reqs = self.receiver.on("/hook")
        # Requests run concurrently (concurrency 4), so they may arrive in any order.
        self.assertEqual(sorted(r.body for r in reqs), [b'{"order":1}', b'{"order":2}', b'{"order":3}'])
        self.assertEqual(len({r.headers["webhook-id"] for r in reqs}), 3)
        for r in reqs:
            self.assertTrue(verify_signature(r), f"signature of {r.headers['webhook-id']} does not verify")
            self.assertEqual(r.headers["content-type"], "application/json")
            self.assertEqual(r.headers["txmq-topic"], "orders")
            self.assertEqual(r.headers["txmq-attempt"], "1")
            self.assertLess(abs(int(r.headers["webhook-timestamp"]) - time.time()), 60)
        text = self.notifier.scrape()
        self.assertIn('txmq_notifier_attempts_total{subscription="s",endpoint="' + self.receiver.url +
                      '",outcome="success"} 3', text)
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(self.notifier.stop(), 0, "notifier did not exit cleanly on SIGTERM")

    def test_two_processes_of_one_group_share_the_messages(self):
        # The way to scale out: more notifier processes with the same config. The group hands
        # each message to one of them.
        self.topic("orders")
        self.start(lambda path, req, n: (204, {}, b""), subscription("s", "orders", "RECEIVER/hook"))
        second = Notifier(self.tmp, self.notifier.config_text(), name="notifier-2").start()
        try:
            self.produce("orders", [f'{{"order":{i}}}' for i in range(200)])
            wait_until(lambda: len(self.receiver.on("/hook")) >= 200, 30, "200 callbacks")
            wait_until(lambda: self.lag("notify-s") == 0, 20, "all 200 acknowledged")
            ids = [r.headers["webhook-id"] for r in self.receiver.on("/hook")]
            self.assertEqual(len(ids), 200, "a message was delivered twice")
            self.assertEqual(len(set(ids)), 200)
            successes = [successes_in(n.scrape()) for n in (self.notifier, second)]
            self.assertEqual(sum(successes), 200)
            self.assertTrue(all(n > 0 for n in successes), f"one process did all the work: {successes}")
        finally:
            self.assertEqual(second.stop(), 0, "second notifier did not exit cleanly on SIGTERM")

    def test_fails_k_times_then_succeeds_with_k_plus_one_attempts_on_schedule(self):
        self.topic("t")
        k = 3
        self.start(lambda path, req, n: (503, {}, b"down") if n <= k else (200, {}, b"ok"),
                   subscription("s", "t", "RECEIVER/k", schedule_ms=[300, 600, 900]))
        self.produce("t", ["m"])
        wait_until(lambda: self.lag("notify-s") == 0, 30, "the message acknowledged")
        reqs = self.receiver.on("/k")
        self.assertEqual(len(reqs), k + 1)
        self.assertEqual([r.headers["txmq-attempt"] for r in reqs], ["1", "2", "3", "4"])
        self.assertEqual(len({r.headers["webhook-id"] for r in reqs}), 1, "webhook-id changed between attempts")
        gaps = [b.at - a.at for a, b in zip(reqs, reqs[1:])]
        for gap, planned in zip(gaps, [0.3, 0.6, 0.9]):
            self.assertGreaterEqual(gap, planned - 0.02, f"gaps {gaps}")
            self.assertLess(gap, planned + 2.0, f"gaps {gaps}")

    def test_always_failing_receiver_gets_n_attempts_then_the_give_up_record_holds_them(self):
        self.topic("t")
        self.start(lambda path, req, n: (500, {}, b"boom"), subscription("s", "t", "RECEIVER/fail", max_attempts=4))
        self.produce("t", ["payload"], headers=["order-id=42"])
        record = self.gave_up("notify-s")[0]
        self.assertEqual(len(self.receiver.on("/fail")), 4)
        self.assertEqual(record["reason"], "max_attempts")
        self.assertEqual(record["endpoint"], self.receiver.url + "/fail")
        self.assertEqual([a["attempt"] for a in record["attempts"]], [1, 2, 3, 4])
        self.assertTrue(all(a["status"] == 500 and a["outcome"] == "server_error" for a in record["attempts"]))
        self.assertEqual(record["message"]["body"], "payload")
        self.assertEqual(record["message"]["headers"]["order-id"], "42")
        self.assertEqual(record["webhook_id"], self.receiver.on("/fail")[0].headers["webhook-id"])
        wait_until(lambda: self.lag("notify-s") == 0, 20, "the original acknowledged after the record")
        self.assertEqual(len(self.receiver.on("/fail")), 4, "attempted again after giving up")

    def test_retry_after_stretches_the_delay(self):
        self.topic("t")
        self.start(lambda path, req, n: (429, {"Retry-After": "2"}, b"") if n == 1 else (200, {}, b""),
                   subscription("s", "t", "RECEIVER/ra", schedule_ms=[100]))
        self.produce("t", ["m"])
        wait_until(lambda: len(self.receiver.on("/ra")) == 2, 30, "the second attempt")
        a, b = self.receiver.on("/ra")
        self.assertGreaterEqual(b.at - a.at, 1.95, "Retry-After: 2 not honoured")

    def test_gone_gives_up_at_once(self):
        self.topic("t")
        self.start(lambda path, req, n: (410, {}, b""), subscription("s", "t", "RECEIVER/gone", max_attempts=8))
        self.produce("t", ["m"])
        record = self.gave_up("notify-s")[0]
        self.assertEqual(record["reason"], "gone")
        self.assertEqual(len(record["attempts"]), 1)
        self.assertEqual(len(self.receiver.on("/gone")), 1)

    def test_success_body_rule(self):
        self.topic("t")
        self.start(lambda path, req, n: (200, {}, b"fail") if n == 1 else (200, {}, b"success\n"),
                   subscription("s", "t", "RECEIVER/gw", success_body="success"))
        self.produce("t", ["m"])
        wait_until(lambda: self.lag("notify-s") == 0, 30, "acknowledged after the body said success")
        self.assertEqual(len(self.receiver.on("/gw")), 2)

    def test_sigkill_mid_way_and_restart_keeps_counting(self):
        self.topic("t")
        self.start(lambda path, req, n: (500, {}, b""), subscription("s", "t", "RECEIVER/kill", max_attempts=5,
                                                                      schedule_ms=[400]))
        self.produce("t", ["m"])
        wait_until(lambda: len(self.receiver.on("/kill")) >= 2, 30, "two attempts")
        self.notifier.stop(signal.SIGKILL)
        seen = len(self.receiver.on("/kill"))
        self.notifier = Notifier(self.tmp, self.notifier.config_text(), name="notifier-2").start()
        record = self.gave_up("notify-s")[0]
        reqs = self.receiver.on("/kill")
        self.assertGreaterEqual(seen, 2)
        self.assertEqual(len(reqs), 5, "attempt counting restarted after the crash")
        self.assertEqual([r.headers["txmq-attempt"] for r in reqs], ["1", "2", "3", "4", "5"])
        self.assertEqual(record["reason"], "max_attempts")

    def test_hanging_receiver_does_not_hold_up_another_endpoint(self):
        self.topic("slow")
        self.topic("fast")

        def respond(path, req, n):
            if path == "/hang":
                self.receiver.released.wait(30)
            return 204, {}, b""
        self.start(respond,
                   subscription("slow", "slow", "RECEIVER/hang", request_timeout_ms=20000),
                   subscription("fast", "fast", "RECEIVER/fast"))
        self.produce("slow", [f"s{i}" for i in range(10)])
        wait_until(lambda: len(self.receiver.on("/hang")) >= 4, 20, "the slow endpoint's slots full")
        started = time.monotonic()
        self.produce("fast", [f"f{i}" for i in range(20)])
        wait_until(lambda: len(self.receiver.on("/fast")) == 20, 10, "the fast endpoint's callbacks")
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(len(self.receiver.on("/hang")), 4, "the slow endpoint's concurrency limit")
        self.receiver.release()

    def test_hanging_endpoint_does_not_hold_up_another_of_the_same_subscription(self):
        self.topic("t")

        def respond(path, req, n):
            self.receiver.released.wait(30)  # this receiver hangs until released
            return 204, {}, b""
        # Endpoints are told apart by scheme://host:port: the fast one is a second server.
        fast = Receiver(lambda path, req, n: (204, {}, b""))
        try:
            self.start(respond, subscription("s", "t", "", url_header="callback-url",
                                             allowed_urls=["RECEIVER/", fast.url + "/"],
                                             concurrency=2, request_timeout_ms=20000))
            self.produce("t", [f"h{i}" for i in range(6)], headers=[f"callback-url={self.receiver.url}/hang"])
            wait_until(lambda: len(self.receiver.on("/hang")) == 2, 20, "the hanging endpoint's two slots full")
            self.produce("t", [f"f{i}" for i in range(5)], headers=[f"callback-url={fast.url}/fast"])
            wait_until(lambda: len(fast.on("/fast")) == 5, 15, "the other endpoint's callbacks")
            self.assertEqual(len(self.receiver.on("/hang")), 2, "the hanging endpoint's concurrency limit")
            self.assertIn('txmq_notifier_deferred_total{subscription="s",reason="endpoint_busy"}',
                          self.notifier.scrape())
            self.receiver.release()
            wait_until(lambda: self.lag("notify-s") == 0, 30, "everything delivered once released")
            self.assertEqual(len({r.body for r in self.receiver.on("/hang")}), 6)
        finally:
            fast.close()

    def test_circuit_breaker_pauses_without_spending_attempts(self):
        self.topic("t")
        self.start(lambda path, req, n: (503, {}, b"") if n <= 3 else (200, {}, b""),
                   subscription("s", "t", "RECEIVER/cb", schedule_ms=[50], breaker_failures=3,
                                breaker_cooldown_ms=1500, max_attempts=10))
        self.produce("t", ["m"])
        wait_until(lambda: len(self.receiver.on("/cb")) == 3, 20, "three failures")
        wait_until(lambda: 'txmq_notifier_breaker_state{subscription="s",endpoint="' + self.receiver.url + '"} 1'
                   in self.notifier.scrape(), 10, "the breaker open")
        wait_until(lambda: self.lag("notify-s") == 0, 30, "delivered through the probe")
        reqs = self.receiver.on("/cb")
        self.assertEqual(len(reqs), 4)
        self.assertGreaterEqual(reqs[3].at - reqs[2].at, 1.4, "a request went out while the circuit was open")
        self.assertEqual(reqs[3].headers["txmq-attempt"], "4", "deferrals counted as attempts")
        self.assertIn('txmq_notifier_breaker_state{subscription="s",endpoint="' + self.receiver.url + '"} 0',
                      self.notifier.scrape())

    def test_url_from_header_only_when_allowed(self):
        self.topic("t")
        self.start(lambda path, req, n: (204, {}, b""),
                   subscription("s", "t", "", url_header="callback-url", allowed_urls=["RECEIVER/ok/"]))
        self.produce("t", ["good"], headers=[f"callback-url={self.receiver.url}/ok/1"])
        self.produce("t", ["bad"], headers=[f"callback-url={self.receiver.url}/elsewhere"])
        wait_until(lambda: len(self.receiver.on("/ok/1")) == 1, 20, "the allowed callback")
        record = self.gave_up("notify-s")[0]
        self.assertEqual(record["reason"], "url_not_allowed")
        self.assertEqual(record["message"]["body"], "bad")
        self.assertEqual(self.receiver.on("/elsewhere"), [])

    def test_sigterm_finishes_requests_in_flight_and_exits_zero(self):
        self.topic("t")
        gate = threading.Event()

        def respond(path, req, n):
            gate.wait(10)
            return 204, {}, b""
        self.start(respond, subscription("s", "t", "RECEIVER/term", concurrency=2))
        self.produce("t", [f"m{i}" for i in range(6)])
        wait_until(lambda: len(self.receiver.on("/term")) == 2, 20, "two requests in flight")
        self.notifier.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping" in self.notifier.log_text(), 10, "the notifier to begin stopping")
        gate.set()  # only now do the two requests in flight get their answers
        self.assertEqual(self.notifier.stop(timeout=30), 0)
        # Restarted, it delivers the rest; the two finished before the exit are not repeated.
        self.notifier = Notifier(self.tmp, self.notifier.config_text(), name="notifier-2").start()
        wait_until(lambda: self.lag("notify-s") == 0, 30, "the rest delivered after the restart")
        ids = [r.headers["webhook-id"] for r in self.receiver.on("/term")]
        self.assertEqual(len(set(ids)), 6)
        self.assertEqual(len(ids), 6, "a request finished at shutdown was sent again")

    # -- broker addresses: names and IPv6 ------------------------------------------------

    def test_talks_to_the_broker_by_the_name_localhost(self):
        port = self.broker.address.rsplit(":", 1)[1]
        self.delivers_one(broker_address=f"localhost:{port}", metrics_listen="localhost:0")
        self.assertTrue(self.notifier.metrics.startswith("127.0.0.1:") or self.notifier.metrics.startswith("[::1]:"),
                        self.notifier.metrics)

    def test_talks_to_a_broker_on_ipv6_loopback(self):
        self.broker.stop()
        self.broker.start("[::1]:0")
        self.assertTrue(self.broker.address.startswith("[::1]:"), self.broker.address)
        self.delivers_one()

    def test_a_broker_name_that_does_not_resolve_fails_naming_it(self):
        cfg = os.path.join(self.tmp, "unresolvable.toml")
        with open(cfg, "w") as f:
            f.write(config(self.broker, subscription("s", "t", "http://127.0.0.1:1/x"),
                           broker_address="no-such-host.invalid:7411"))
        p = subprocess.run([os.environ["TXMQ_NOTIFIER_BIN"], "--config", cfg], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("cannot resolve 'no-such-host.invalid'", p.stderr)

    def test_bad_config_is_refused_with_the_key_named(self):
        bad = os.path.join(self.tmp, "bad.toml")
        with open(bad, "w") as f:
            f.write(config(self.broker, subscription("s", "t", "http://127.0.0.1:1/x", max_atempts=3)))
        p = subprocess.run([os.environ["TXMQ_NOTIFIER_BIN"], "--config", bad], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn("max_atempts: unknown key", p.stderr)

    def test_unknown_topic_fails_fast_with_a_clear_error(self):
        cfg = os.path.join(self.tmp, "missing.toml")
        with open(cfg, "w") as f:
            f.write(config(self.broker, subscription("s", "nope", "http://127.0.0.1:1/x")))
        p = subprocess.run([os.environ["TXMQ_NOTIFIER_BIN"], "--config", cfg], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn("topic 'nope' does not exist", p.stderr)

    # -- hardening: URLs, addresses, large messages, metrics ------------------------------

    def check_metrics_page(self):
        """promtool accepts the notifier's /metrics page (it is installed with prometheus)."""
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is not installed (scripts/install-deps.sh)")
        text = self.notifier.scrape()
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode("utf-8", "surrogateescape"),
                           capture_output=True)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr).decode(errors="replace"))
        return text

    def metric(self, text, series):
        """The value of one series in a scraped page, 0 when absent."""
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def test_allow_list_escapes_are_refused_and_reach_no_other_port(self):
        # The victim listens on a port whose decimal text extends an allowed entry's port:
        # a string-prefix allow-list let http://127.0.0.1:<E><d>/ through.
        victim = Receiver(lambda path, req, n: (204, {}, b""))
        try:
            v = victim.server.server_address[1]
            e = str(v)[:-1]
            self.topic("t")
            self.start(lambda path, req, n: (204, {}, b""),
                       subscription("s", "t", "", url_header="callback-url",
                                    allowed_urls=[f"http://127.0.0.1:{e}", f"http://localhost:{e}",
                                                  "RECEIVER/hook/"]))
            a = self.receiver.url
            attacks = {
                f"http://127.0.0.1:{e}@127.0.0.1:{v}/": "url_invalid",
                f"http://127.0.0.1:{e}@[::1]:{v}/": "url_invalid",
                f"http://127.0.0.1:{e}@2130706433:{v}/": "url_invalid",
                f"http://127.0.0.1:{e}@0x7f000001:{v}/": "url_invalid",
                f"http://127.0.0.1:{e}\\@127.0.0.1:{v}/": "url_invalid",
                f"http://localhost:{e}@127.0.0.1:{v}/": "url_invalid",
                f"HTTP://127.0.0.1:{e}@127.0.0.1:{v}/": "url_invalid",
                f"http://127.0.0.1:{v}/": "url_not_allowed",
                f"http://127.0.0.1.:{v}/": "url_invalid",
                f"{a}/hook/../evil": "url_not_allowed",
                f"{a}/hook/%2e%2e/evil": "url_invalid",
                f"{a}/hook%2f../evil": "url_invalid",
                f"{a}/hookevil": "url_not_allowed",
                f"http:/\\127.0.0.1:{v}/": "url_invalid",
                f"http:///127.0.0.1:{v}/": "url_invalid",
                f"http://[::1%25lo]:{v}/": "url_invalid",
                "http://127.0.0.1:0/": "url_invalid",
                "http://127.0.0.1:65536/": "url_invalid",
                f"{a}/hook/" + "a" * 3000: "url_invalid",
                f"{a}/hook/a%00b": "url_invalid",
                f"{a}/hook/..;/evil": "url_invalid",
                f"{a}/hook/%252e%252e/evil": "url_invalid",
            }
            for i, url in enumerate(attacks):
                self.produce("t", [f"attack-{i}"], headers=[f"callback-url={url}"])
            self.produce("t", ["good"], headers=[f"callback-url={a.replace('http://', 'HTTP://')}/hook/./ok"])
            records = self.gave_up("notify-s", count=len(attacks))
            wait_until(lambda: len(self.receiver.on("/hook/ok")) == 1, 20, "the allowed callback, normalised")
            self.assertEqual(victim.requests, [], "a refused URL reached another port")
            self.assertEqual([r.path for r in self.receiver.requests], ["/hook/ok"], "a refused URL reached a path")
            by_body = {r["message"]["body"]: r for r in records}
            for i, (url, reason) in enumerate(attacks.items()):
                record = by_body[f"attack-{i}"]
                self.assertEqual(record["reason"], reason, f"{url}: {record.get('detail')}")
                if reason == "url_invalid":
                    self.assertEqual(record["endpoint"], url, "the record names the URL as the message gave it")
                self.assertTrue(record["detail"], f"{url}: no reason given")
                self.assertEqual(record["attempts"], [], f"{url}: an attempt was spent")
            text = self.check_metrics_page()
            self.assertEqual(failed_attempts_in(text), 0, "a refused URL was attempted")
        finally:
            victim.close()

    def test_a_name_resolving_to_loopback_is_refused_unless_private_networks_are_allowed(self):
        # localhost resolves to 127.0.0.1 (and ::1): the name is allowed, the address is not.
        self.topic("strict")
        self.topic("lenient")
        self.receiver = Receiver(lambda path, req, n: (204, {}, b""))
        url = self.receiver.url.replace("127.0.0.1", "localhost")
        self.notifier = Notifier(self.tmp, config(
            self.broker,
            subscription("strict", "strict", "", url_header="callback-url", allowed_urls=[url + "/"]),
            subscription("lenient", "lenient", "", url_header="callback-url", allowed_urls=[url + "/"],
                         allow_private_networks=True))).start()
        self.produce("strict", ["strict"], headers=[f"callback-url={url}/strict"])
        self.produce("lenient", ["lenient"], headers=[f"callback-url={url}/lenient"])
        record = self.gave_up("notify-strict")[0]
        self.assertEqual(record["reason"], "address_not_allowed")
        self.assertIn("loopback", record["detail"])
        self.assertIn("allow_private_networks", record["detail"])
        self.assertEqual(record["attempts"], [], "a refused address spent an attempt")
        wait_until(lambda: len(self.receiver.on("/lenient")) == 1, 20, "the explicitly allowed callback")
        wait_until(lambda: self.lag("notify-strict") == 0, 20, "the refused message acknowledged")
        self.assertEqual(self.receiver.on("/strict"), [], "a request reached a loopback address")
        text = self.check_metrics_page()
        self.assertEqual(self.metric(text, 'txmq_notifier_gave_up_total{subscription="strict",reason='
                                           '"address_not_allowed"}'), 1)
        self.assertEqual(failed_attempts_in(text), 0, "the refusal counted as an attempt")

    def test_malformed_urls_are_given_up_without_tripping_the_endpoints_breaker(self):
        self.topic("t")
        self.start(lambda path, req, n: (204, {}, b""),
                   subscription("s", "t", "", url_header="callback-url", allowed_urls=["RECEIVER/ok/"],
                                breaker_failures=5, breaker_cooldown_ms=60000))
        bad = [f"{self.receiver.url}/ok/a b", f"{self.receiver.url}/ok/a\tb", f"{self.receiver.url}/ok/\x01",
               f"{self.receiver.url}/ok/a%zz", f"{self.receiver.url}/ok/ b", f"{self.receiver.url}/ok/x y z"]
        for i, url in enumerate(bad):
            self.produce("t", [f"bad-{i}"], headers=[f"callback-url={url}"])
        wait_until(lambda: self.metric(self.notifier.scrape(),
                                       'txmq_notifier_gave_up_total{subscription="s",reason="url_invalid"}')
                   == len(bad), 20, "every malformed URL given up at once")
        started = time.monotonic()
        self.produce("t", ["good"], headers=[f"callback-url={self.receiver.url}/ok/good"])
        wait_until(lambda: len(self.receiver.on("/ok/good")) == 1, 10, "the valid message, its circuit closed")
        self.assertLess(time.monotonic() - started, 10)
        text = self.check_metrics_page()
        self.assertEqual(failed_attempts_in(text), 0, "a malformed URL was attempted")
        self.assertIn('txmq_notifier_breaker_state{subscription="s",endpoint="' + self.receiver.url + '"} 0', text)
        records = self.gave_up("notify-s", count=len(bad))
        self.assertTrue(all(r["reason"] == "url_invalid" and r["attempts"] == [] for r in records), records)

    def test_a_message_too_large_for_a_whole_give_up_record_is_still_given_up(self):
        # The broker's default max_message_bytes is 1 MiB; the body plus its base64 copy of a
        # 700 KB message is 1.6 MB.
        self.topic("t")
        self.start(lambda path, req, n: (500, {}, b""), subscription("s", "t", "RECEIVER/big", max_attempts=1))
        body = "".join(chr(ord("a") + i % 26) for i in range(700_000))
        self.produce("t", [body], headers=["order-id=big"])
        record = self.gave_up("notify-s", timeout=60)[0]
        self.assertEqual(record["reason"], "max_attempts")
        self.assertTrue(record["truncated"])
        self.assertEqual(record["original"]["body_bytes"], 700_000)
        kept = base64.b64decode(record["message"]["body_base64"])
        self.assertEqual(len(kept), record["message"]["body_bytes_kept"])
        self.assertGreater(len(kept), 500_000, "kept much less than fits")
        self.assertTrue(body.encode().startswith(kept))
        self.assertEqual(record["message"]["headers"]["order-id"], "big")
        self.assertEqual(len(record["attempts"]), 1)
        wait_until(lambda: self.lag("notify-s") == 0, 20, "the original acknowledged after the record")
        text = self.check_metrics_page()
        self.assertEqual(self.metric(text, 'txmq_notifier_gave_up_truncated_total{subscription="s"}'), 1)
        self.assertNotIn("cannot record give-up", self.notifier.log_text())

    def test_a_url_with_invalid_utf8_never_reaches_the_metrics_page(self):
        self.topic("t")
        self.start(lambda path, req, n: (204, {}, b""),
                   subscription("s", "t", "", url_header="callback-url", allowed_urls=["RECEIVER"]))
        # "\udcff" is the byte 0xFF on the command line (surrogateescape).
        self.produce("t", ["ff"], headers=[f"callback-url={self.receiver.url}\udcff/x"])
        self.produce("t", ["ok"], headers=[f"callback-url={self.receiver.url}/ok"])
        wait_until(lambda: len(self.receiver.on("/ok")) == 1, 20, "the valid callback")
        record = self.gave_up("notify-s")[0]
        self.assertEqual(record["reason"], "url_invalid")
        self.assertEqual(record["message"]["body"], "ff")
        self.check_metrics_page()

    def test_endpoint_series_and_endpoint_states_are_capped(self):
        self.topic("t")
        others = [Receiver(lambda path, req, n: (204, {}, b"")) for _ in range(3)]
        try:
            urls = [f"{r.url}/" for r in others]
            self.start(lambda path, req, n: (204, {}, b""),
                       subscription("s", "t", "", url_header="callback-url", allowed_urls=["RECEIVER/", *urls],
                                    max_endpoint_series=2, max_endpoints=2))
            receivers = [self.receiver, *others]
            for round_ in range(2):
                for i, r in enumerate(receivers):
                    self.produce("t", [f"m{round_}-{i}"], headers=[f"callback-url={r.url}/cb"])
            wait_until(lambda: all(len(r.on("/cb")) == 2 for r in receivers), 30, "every endpoint's callbacks")
            wait_until(lambda: self.lag("notify-s") == 0, 20, "all acknowledged")
            text = self.check_metrics_page()
            labels = {line.split('endpoint="', 1)[1].split('"', 1)[0] for line in text.splitlines()
                      if line.startswith("txmq_notifier_attempts_total{")}
            self.assertEqual(len(labels), 3, f"two endpoints of their own and other: {labels}")
            self.assertIn("other", labels)
            self.assertGreaterEqual(self.metric(text, 'txmq_notifier_endpoint_series_folded_total{subscription="s"}'), 2)
            self.assertLessEqual(self.metric(text, 'txmq_notifier_endpoints{subscription="s"}'), 2)
            self.assertGreaterEqual(self.metric(text, 'txmq_notifier_endpoints_evicted_total{subscription="s"}'), 2)
            self.assertEqual(successes_in(text), 8)
        finally:
            for r in others:
                r.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
