"""Child processes for the scenario: start, wait for a line, SIGKILL, restart.

Every wait here has a deadline and polls a condition; nothing sleeps to synchronise.
A service's stdout is read line by line on a thread (so the pipe never fills and the runner
can wait for "ready" or "paused ..."); its stderr, the log, is appended to a file that
survives restarts, for the report's alarm count and for a reader after a failure.
"""

import os
import signal
import socket
import subprocess
import threading
import time


def free_port():
    """A loopback port free right now (for the processes that must come back on the same
    port after a restart: the broker, which the others reconnect to, and the points
    service, whose URL is in the notifier's config)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate until it is true; raises TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Process:
    """One long-running child: `argv_for()` gives its command line at each (re)start."""

    def __init__(self, name, log_path, env=None):
        self.name = name
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.lines = []          # stdout lines of the current run
        self.starts = 0
        self._lock = threading.Lock()
        self._reader = None

    def start(self, argv, ready_line="ready", timeout=30.0):
        """Starts the child and waits for a stdout line starting with ready_line."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        with self._lock:
            self.lines = []
        log = open(self.log_path, "ab")
        log.write(f"--- start {self.starts + 1}: {' '.join(argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=self.env,
                                     start_new_session=True)
        log.close()
        self.starts += 1
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        self.wait_line(ready_line, timeout)

    def _read(self, proc):
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                if proc is self.proc:
                    self.lines.append(line)

    def line_starting(self, prefix):
        with self._lock:
            return next((l for l in self.lines if l.startswith(prefix)), None)

    def wait_line(self, prefix, timeout):
        """Waits for a stdout line starting with prefix and returns it; fails early when
        the process exits first."""
        def seen():
            if self.line_starting(prefix) is not None:
                return True
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before printing "
                                   f"'{prefix}'; see {self.log_path}")
            return False
        wait_until(seen, timeout, what=f"{self.name} to print '{prefix}'")
        return self.line_starting(prefix)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """A crash: SIGKILL and reap."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
            self.proc.stdout.close()

    def terminate(self, timeout=15.0):
        """A polite stop; returns the exit code (SIGKILLs after timeout and returns None)."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
        self.proc.stdout.close()
        return code

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def listening_address(process):
    """The HOST:PORT of a process's "listening on HOST:PORT" line."""
    return process.line_starting("listening on ").split()[-1]
