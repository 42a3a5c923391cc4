#!/usr/bin/env python3
"""The Debian packages on this machine: install, run the broker as its unit says, produce
and consume with the installed tool, remove, purge, and nothing left running.

Installs build/debs' txmq and libtxmq-dev (TXMQ_DEB_DIR; scripts/test-packages.sh builds
them and runs this) with apt-get. Where systemd runs, the broker is the txmq-broker.service
the package started; elsewhere (containers) it is the unit's own ExecStart command line,
run as the txmq user, with --listen 127.0.0.1:0 --no-metrics appended so that it takes no
fixed port. Exits 77 (a skip) when not root, without packages, or when txmq is already
on this machine (the test would purge it). Every wait has a deadline.
"""

import glob
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get("TXMQ_SOURCE_DIR", ".")
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "support"))
from txmq_harness import read_line_starting, wait_until  # noqa: E402

DEB_DIR = os.environ.get("TXMQ_DEB_DIR", "")
PACKAGES = ["txmq", "libtxmq-dev"]
UNIT_DIR = "/usr/lib/systemd/system"
WANTS = "/etc/systemd/system/multi-user.target.wants"
SYSTEMD = os.path.isdir("/run/systemd/system")
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
# Another apt-get or dpkg on the machine holds the lock for a while: wait for it.
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"]


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(77)


def run(cmd, timeout=300, check=True, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def installed(package):
    r = run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return r.returncode == 0 and "install ok installed" in r.stdout


def known_to_dpkg(package):
    """Installed, or removed with its configuration left: something a purge would clear."""
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return r.returncode == 0 and not r.stdout.startswith("un")


def running_as_txmq():
    r = run(["pgrep", "-u", "txmq", "-l"], check=False) if user_exists() else None
    return r.stdout.strip() if r and r.returncode == 0 else ""


def purge(check=True):
    # Only what dpkg still knows: after a remove libtxmq-dev (no conffiles) is gone, and
    # apt-get refuses to purge a package it does not know.
    known = [p for p in PACKAGES if known_to_dpkg(p)]
    if known:
        run([*APT, "purge", *known], env=APT_ENV, check=check)


def running_packaged_binaries():
    """Processes running a binary of the txmq package, by any user. (Other txmq-brokers,
    from build trees, may run on the same machine: their names are no evidence.)"""
    found = []
    for pid in os.listdir("/proc"):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.removesuffix(" (deleted)") in ("/usr/bin/txmq-broker", "/usr/bin/txmq-notifier"):
            found.append(f"{pid} {exe}")
    return found


def user_exists():
    try:
        pwd.getpwnam("txmq")
        return True
    except KeyError:
        return False


def exec_start(unit):
    with open(os.path.join(UNIT_DIR, unit)) as f:
        for line in f:
            if line.startswith("ExecStart="):
                return shlex.split(line[len("ExecStart="):])
    raise AssertionError(f"{unit} has no ExecStart")


class DebPackageTest(unittest.TestCase):
    def setUp(self):
        self.debs = sorted(glob.glob(os.path.join(DEB_DIR, "*.deb")))
        self.broker = None  # the broker process, when this test started it (no systemd)

    def tearDown(self):
        # Whatever failed, leave the machine as it was: no broker, no packages.
        if self.broker and self.broker.poll() is None:
            self.broker.kill()
            self.broker.wait(timeout=20)
        purge(check=False)

    def start_broker(self):
        """The broker as the installed unit runs it; returns its HOST:PORT."""
        if SYSTEMD:
            # postinst started (or restarted) it; the address is the installed config's.
            wait_until(lambda: run(["systemctl", "is-active", "txmq-broker.service"],
                                   check=False).stdout.strip() == "active", 30, "txmq-broker active")
            return "127.0.0.1:7411"
        cmd = exec_start("txmq-broker.service") + ["--listen", "127.0.0.1:0", "--no-metrics"]
        # setpriv execs the broker (runuser would stay its parent and turn SIGTERM into a kill).
        as_txmq = ["setpriv", "--reuid=txmq", "--regid=txmq", "--init-groups", "--"]
        # Its log goes to a file: a pipe nobody reads could fill and stall it.
        self.broker_log = tempfile.TemporaryFile(mode="w+")
        self.broker = subprocess.Popen([*as_txmq, *cmd], cwd="/",
                                       stdout=subprocess.PIPE, stderr=self.broker_log, text=True)
        return read_line_starting(self.broker, "listening on ", 30, "installed txmq-broker")

    def stop_broker(self):
        if SYSTEMD:
            run(["systemctl", "stop", "txmq-broker.service"], timeout=90)
            status = run(["systemctl", "show", "-p", "ExecMainStatus", "--value",
                          "txmq-broker.service"]).stdout.strip()
            self.assertEqual(status, "0", "the broker stops cleanly on the unit's SIGTERM")
            return
        self.broker.send_signal(signal.SIGTERM)
        code = self.broker.wait(timeout=30)
        self.broker.stdout.close()
        self.broker_log.seek(0)
        log = self.broker_log.read()
        self.broker_log.close()
        self.assertEqual(code, 0, f"the broker stops cleanly on SIGTERM\n{log}")

    def txmq(self, address, *args, stdin=None):
        return run(["/usr/bin/txmq", "--broker", address, *args], input=stdin, timeout=60)

    def test_install_run_remove_purge(self):
        print(f"systemd running: {SYSTEMD}", flush=True)
        started = time.monotonic()
        run([*APT, "install", "--no-install-recommends", *self.debs],
            env=APT_ENV)
        for p in PACKAGES:
            self.assertTrue(installed(p), p)

        # What the packages put where.
        for path in ["/usr/bin/txmq-broker", "/usr/bin/txmq", "/usr/bin/txmq-notifier",
                     "/usr/include/txmq/client.h", "/usr/include/txmq/common/result.h",
                     f"{UNIT_DIR}/txmq-broker.service", f"{UNIT_DIR}/txmq-notifier.service"]:
            self.assertTrue(os.path.exists(path), path)
        self.assertEqual(len(glob.glob("/usr/lib/*/libtxmq.a")), 1)
        self.assertEqual(len(glob.glob("/usr/lib/*/cmake/txmq/txmqConfig.cmake")), 1)
        self.assertEqual(len(glob.glob("/usr/lib/*/pkgconfig/txmq.pc")), 1)
        self.assertIn("/etc/txmq/txmq-broker.toml",
                      run(["dpkg-query", "--control-show", "txmq", "conffiles"]).stdout)
        with open("/etc/txmq/txmq-broker.toml") as f:
            self.assertIn('data_dir = "/var/lib/txmq"', f.read())
        for binary in ["/usr/bin/txmq-broker", "/usr/bin/txmq", "/usr/bin/txmq-notifier"]:
            self.assertNotIn("not found", run(["ldd", binary]).stdout, binary)
            run([binary, "--help"])
        if shutil.which("systemd-analyze"):
            run(["systemd-analyze", "verify", f"{UNIT_DIR}/txmq-broker.service",
                 f"{UNIT_DIR}/txmq-notifier.service"])
        self.assertTrue(user_exists(), "postinst creates the txmq user")
        data = os.stat("/var/lib/txmq")
        self.assertEqual(pwd.getpwuid(data.st_uid).pw_name, "txmq")
        # Enabled (the links exist even where systemd does not run).
        self.assertTrue(os.path.islink(f"{WANTS}/txmq-broker.service"))

        address = self.start_broker()
        self.txmq(address, "topic", "create", "packaged")
        self.txmq(address, "produce", "packaged", stdin="from the installed tool\n")
        out = self.txmq(address, "consume", "packaged", "--group", "deb-test", "--max", "1",
                        "--timeout-ms", "10000").stdout
        self.assertEqual(out.strip(), "from the installed tool")
        self.assertEqual(pwd.getpwuid(os.stat("/var/lib/txmq/data.mdb").st_uid).pw_name, "txmq",
                         "the store is the txmq user's")
        self.stop_broker()

        # Remove: binaries and units go, the configuration stays, and the units are masked
        # so that the enablement links left behind cannot start a missing binary.
        run([*APT, "remove", *PACKAGES], env=APT_ENV)
        self.assertFalse(os.path.exists("/usr/bin/txmq-broker"))
        self.assertTrue(os.path.exists("/etc/txmq/txmq-broker.toml"))
        self.assertEqual(os.path.realpath("/etc/systemd/system/txmq-broker.service"), "/dev/null")
        self.assertEqual(running_as_txmq(), "")
        self.assertEqual(running_packaged_binaries(), [])

        # Purge: configuration, data, links and masks go; nothing runs as txmq.
        purge()
        for p in PACKAGES:
            self.assertFalse(installed(p), p)
        for path in ["/etc/txmq", "/var/lib/txmq", "/etc/systemd/system/txmq-broker.service",
                     f"{WANTS}/txmq-broker.service", f"{WANTS}/txmq-notifier.service"]:
            self.assertFalse(os.path.lexists(path), path)
        self.assertEqual(running_as_txmq(), "")
        self.assertEqual(running_packaged_binaries(), [])
        print(f"install to purge: {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        skip("installing packages needs root")
    if not DEB_DIR or not glob.glob(os.path.join(DEB_DIR, "*.deb")):
        skip("no packages in TXMQ_DEB_DIR: scripts/test-packages.sh builds them and runs this")
    for p in PACKAGES:
        if known_to_dpkg(p):
            skip(f"{p} is already on this machine and the test would purge it")
    unittest.main()
