#!/usr/bin/env python3
"""`txmq users add|passwd|remove|list`: the users file of SCRAM-SHA-256 logins.

Runs the real txmq tool on files in a temporary directory; no broker is needed, since these
commands only edit the file. Each stored secret is checked against the password with
Python's hashlib (RFC 5802's StoredKey and ServerKey), independently of the C++ code.
"""

import base64
import hashlib
import hmac
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

CLI = os.environ["TXMQ_CLI_BIN"]
USAGE = "usage"  # txmq's code for a refused command line
SECRET = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")


def matches(secret, password):
    """Whether the users file's secret text was derived from password."""
    m = SECRET.match(secret)
    if not m:
        return False
    iterations, salt, stored, server = int(m[1]), *(base64.b64decode(g) for g in m.groups()[1:])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return (hashlib.sha256(client_key).digest() == stored
            and hmac.new(salted, b"Server Key", "sha256").digest() == server)


class UsersCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="txmq-users-cli-")
        self.users = os.path.join(self.tmp, "users")
        self.env = {k: v for k, v in os.environ.items() if k != "TXMQ_PASSWORD"}

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def txmq(self, *args, stdin="", password=None, code=0):
        """Runs the tool; code USAGE accepts any usage error (CLI11's own codes, above 1)."""
        env = dict(self.env, TXMQ_PASSWORD=password) if password is not None else self.env
        r = subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)
        if code == USAGE:
            self.assertGreater(r.returncode, 1, f"txmq {' '.join(args)}: {r.stdout} {r.stderr}")
        else:
            self.assertEqual(r.returncode, code, f"txmq {' '.join(args)}: {r.stdout} {r.stderr}")
        return r

    def password_file(self, text):
        path = os.path.join(self.tmp, "password")
        with open(path, "w") as f:
            f.write(text)
        return path

    def secrets(self):
        """User name -> secret text, for the file's user lines."""
        with open(self.users) as f:
            lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
        return dict(l.split(":", 1) for l in lines)

    def file_text(self):
        with open(self.users) as f:
            return f.read()

    def test_add_with_a_password_file_creates_the_file_0600_without_the_password(self):
        r = self.txmq("users", "add", "orders", "--users-file", self.users,
                      "--password-file", self.password_file("s3cret-orders\n"))
        self.assertIn("added user 'orders'", r.stdout)
        self.assertIn("reload the broker with SIGHUP (kill -HUP <pid>) to apply", r.stdout)
        self.assertEqual(stat.S_IMODE(os.stat(self.users).st_mode), 0o600)
        self.assertNotIn("s3cret", self.file_text())
        self.assertTrue(matches(self.secrets()["orders"], "s3cret-orders"))
        self.assertEqual(SECRET.match(self.secrets()["orders"])[1], "4096")

    def test_add_takes_the_password_from_the_environment(self):
        self.txmq("users", "add", "warehouse", "--users-file", self.users, password="from-env")
        self.assertTrue(matches(self.secrets()["warehouse"], "from-env"))
        self.assertNotIn("from-env", self.file_text())

    def test_add_reads_one_line_from_piped_stdin(self):
        self.txmq("users", "add", "points", "--users-file", self.users, stdin="piped pw\nsecond line\n")
        self.assertTrue(matches(self.secrets()["points"], "piped pw"))

    def test_the_password_file_wins_over_the_environment(self):
        self.txmq("users", "add", "orders", "--users-file", self.users,
                  "--password-file", self.password_file("from-file"), password="from-env")
        self.assertTrue(matches(self.secrets()["orders"], "from-file"))

    def test_an_empty_password_is_refused(self):
        r = self.txmq("users", "add", "orders", "--users-file", self.users, stdin="\n", code=1)
        self.assertIn("empty", r.stderr)
        self.assertFalse(os.path.exists(self.users))

    def test_add_twice_fails_and_keeps_the_first(self):
        self.txmq("users", "add", "orders", "--users-file", self.users, password="first")
        r = self.txmq("users", "add", "orders", "--users-file", self.users, password="second", code=1)
        self.assertIn("already exists", r.stderr)
        self.assertTrue(matches(self.secrets()["orders"], "first"))

    def test_passwd_changes_the_line_in_place(self):
        with open(self.users, "w") as f:
            f.write("# order system\n")
        self.txmq("users", "add", "orders", "--users-file", self.users, password="old")
        self.txmq("users", "add", "warehouse", "--users-file", self.users, password="wh")
        before = self.secrets()
        r = self.txmq("users", "passwd", "orders", "--users-file", self.users, "--iterations", "8192",
                      password="new")
        self.assertIn("changed the password of user 'orders'", r.stdout)
        self.assertIn("SIGHUP", r.stdout)
        after = self.secrets()
        self.assertNotEqual(after["orders"], before["orders"])
        self.assertTrue(matches(after["orders"], "new"))
        self.assertEqual(SECRET.match(after["orders"])[1], "8192")
        self.assertEqual(after["warehouse"], before["warehouse"])
        self.assertEqual(self.file_text().splitlines()[0], "# order system")
        self.assertEqual(list(after), ["orders", "warehouse"])
        self.assertEqual(stat.S_IMODE(os.stat(self.users).st_mode), 0o600)

    def test_passwd_and_remove_of_an_unknown_user_fail(self):
        self.txmq("users", "add", "orders", "--users-file", self.users, password="pw")
        r = self.txmq("users", "passwd", "ghost", "--users-file", self.users, password="pw", code=1)
        self.assertIn("no user 'ghost'", r.stderr)
        r = self.txmq("users", "remove", "ghost", "--users-file", self.users, code=1)
        self.assertIn("no user 'ghost'", r.stderr)

    def test_remove_and_list(self):
        for user in ("orders", "warehouse", "points"):
            self.txmq("users", "add", user, "--users-file", self.users, password="pw-" + user)
        self.assertEqual(self.txmq("users", "list", "--users-file", self.users).stdout,
                         "orders\nwarehouse\npoints\n")
        r = self.txmq("users", "remove", "warehouse", "--users-file", self.users)
        self.assertIn("removed user 'warehouse'", r.stdout)
        self.assertIn("SIGHUP", r.stdout)
        self.assertEqual(self.txmq("users", "list", "--users-file", self.users).stdout, "orders\npoints\n")
        self.assertTrue(matches(self.secrets()["points"], "pw-points"))

    def test_a_missing_file_is_an_error_except_for_add(self):
        for args in (["list"], ["remove", "orders"], ["passwd", "orders"]):
            r = self.txmq("users", *args, "--users-file", self.users, password="pw", code=1)
            self.assertIn("no such users file", r.stderr)
        self.assertFalse(os.path.exists(self.users))

    def test_a_password_on_the_command_line_is_refused(self):
        r = self.txmq("users", "add", "orders", "hunter2", "--users-file", self.users, password="pw", code=USAGE)
        self.assertIn("hunter2", r.stderr)  # CLI11 names the argument it did not expect
        self.assertFalse(os.path.exists(self.users))
        self.txmq("users", "add", "orders", "--password", "hunter2", "--users-file", self.users, code=USAGE)
        self.assertFalse(os.path.exists(self.users))

    def test_bad_names_and_anonymous_are_refused_before_asking_for_a_password(self):
        for name in ("anonymous", "bad name", "a/b", ".."):
            r = self.txmq("users", "add", name, "--users-file", self.users, code=1)
            self.assertIn("user names are", r.stderr)
        self.assertFalse(os.path.exists(self.users))

    def test_iterations_below_4096_are_refused(self):
        self.txmq("users", "add", "orders", "--users-file", self.users, "--iterations", "1000", password="pw",
                  code=USAGE)
        self.assertFalse(os.path.exists(self.users))

    def test_a_damaged_file_is_reported_with_its_line_and_left_alone(self):
        with open(self.users, "w") as f:
            f.write("# users\norders:SCRAM-SHA-256$4096:notbase64!$x:y\n")
        r = self.txmq("users", "add", "points", "--users-file", self.users, password="pw", code=1)
        self.assertIn(self.users + ":2:", r.stderr)
        self.assertNotIn("points", self.file_text())


if __name__ == "__main__":
    unittest.main(verbosity=2)
