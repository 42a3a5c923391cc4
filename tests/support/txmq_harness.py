"""Real processes for Python integration tests: the broker, the notifier, the txmq tool,
and an HTTP receiver whose answers a test scripts. Everything binds 127.0.0.1 with port 0
and waits on conditions with deadlines. Binary paths come from the environment CTest sets.
"""

import http.server
import os
import signal
import subprocess
import threading
import time
import urllib.request

BROKER = os.environ.get("TXMQ_BROKER_BIN", "")
CLI = os.environ.get("TXMQ_CLI_BIN", "")
NOTIFIER = os.environ.get("TXMQ_NOTIFIER_BIN", "")


def wait_until(condition, timeout, what, interval=0.02):
    """Polls condition() until it is truthy; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_line_starting(proc, prefix, timeout, what):
    """The rest of the first stdout line of proc starting with prefix."""
    result = {}

    def reader():
        for line in proc.stdout:
            if line.startswith(prefix):
                result["line"] = line[len(prefix):].strip()
                return
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if "line" not in result:
        raise AssertionError(f"{what}: no '{prefix}' line within {timeout} s")
    return result["line"]


class Broker:
    """txmq-broker on 127.0.0.1, port 0, in tmp; with metrics=True it also serves /metrics
    on a free port (self.metrics is then its HOST:PORT); with config (TOML text) it reads
    that as its config file."""

    def __init__(self, tmp, name="broker", metrics=False, config=None):
        self.data = os.path.join(tmp, name + "-data")
        self.log_path = os.path.join(tmp, name + ".log")
        self.with_metrics = metrics
        self.config_args = []
        if config is not None:
            path = os.path.join(tmp, name + ".toml")
            with open(path, "w") as f:
                f.write(config)
            self.config_args = ["--config", path]
        self.proc = None
        self.address = None
        self.metrics = None
        self.start()

    def start(self, listen="127.0.0.1:0"):
        self.log = open(self.log_path, "a")
        metrics = ["--metrics-listen", "127.0.0.1:0"] if self.with_metrics else ["--no-metrics"]
        self.proc = subprocess.Popen(
            [BROKER, "--data", self.data, "--listen", listen, *metrics, *self.config_args],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        if self.with_metrics:
            # The broker prints "metrics on" before "listening on".
            self.metrics = read_line_starting(self.proc, "metrics on ", 15, "broker")
        self.address = read_line_starting(self.proc, "listening on ", 15, "broker")

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(timeout=20)
        self.proc.stdout.close()
        self.log.close()
        return code


class Notifier:
    """txmq-notifier with a TOML config written by the test."""

    def __init__(self, tmp, config_text, name="notifier"):
        self.config = os.path.join(tmp, name + ".toml")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(tmp, name + ".log")
        self.proc = None
        self.metrics = None

    def config_text(self):
        with open(self.config) as f:
            return f.read()

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([NOTIFIER, "--config", self.config], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.metrics = read_line_starting(self.proc, "metrics on ", 15, "notifier")
        read_line_starting(self.proc, "ready", 30, "notifier")
        return self

    def scrape(self):
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.proc.stdout.close()
        self.log.close()
        return code

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()


def txmq(broker, *args, stdin=None, timeout=60):
    """Runs the txmq tool against broker; returns the CompletedProcess (check returncode)."""
    env = dict(os.environ, TXMQ_BROKER=broker.address)
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=timeout)


class Request:
    def __init__(self, path, headers, body, at):
        self.path = path
        self.headers = headers  # lower-case names
        self.body = body
        self.at = at            # time.monotonic() on arrival


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers with what the
    test's `respond(path, request, n)` returns: (status, headers dict, body bytes), where n
    counts the requests to that path so far, from 1. `respond` may block (a hanging
    receiver); `release()` ends such waits. With tls (a server-side ssl.SSLContext) it serves
    HTTPS, and url starts with https."""

    def __init__(self, respond, tls=None):
        self.respond = respond
        self.requests = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                              time.monotonic())
                with receiver.lock:
                    receiver.requests.append(req)
                    n = sum(1 for r in receiver.requests if r.path == self.path)
                status, headers, out = receiver.respond(self.path, req, n)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that hung up (the notifier killed mid-request) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            # The handshake runs in accept; a client that fails it is dropped (handle_error).
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path):
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def release(self):
        self.released.set()

    def close(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()
