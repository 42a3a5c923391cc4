"""The secure run (`run_scenario.py --secure`): TLS on the broker's port, and one user per
service, each allowed only what it does.

Made per run, in <work dir>/secure (mode 0700):
  ca.pem, ca.key          a CA the clients verify the broker's certificate with
  broker.pem, broker.key  the broker's certificate, for 127.0.0.1 (an IP subjectAltName:
                          the clients check the address they dialled)
  users                   the broker's users file, written with `txmq users add`
  <user>.password         each user's password, mode 0600, given to its service as
                          --password-file (or to the notifier as password_file)
  acl.toml                ACL below

The ACL is least privilege, found by running each service with nothing and adding what its
NotAuthorized lines named. No service gets "all" or "*"; the runner itself is an operator
that may only make the run's topics, configure the warehouse's group and read what it
checks.
"""

import os
import secrets
import subprocess

# One user per process that talks to the broker. The notifier is a user like the others.
ORDER_USER = "order-service"
WAREHOUSE_USER = "warehouse"
POINTS_USER = "points"
NOTIFIER_USER = "notifier"
OPERATOR_USER = "runner"
USERS = (ORDER_USER, WAREHOUSE_USER, POINTS_USER, NOTIFIER_USER, OPERATOR_USER)

ACL = """\
# The order service: prepares each order on `orders` as producer group order-service (and
# answers its check-backs), and reads the warehouse's cancellations as group order-service.
[[allow]]
users = ["order-service"]
topics = ["orders"]
operations = ["produce"]

[[allow]]
users = ["order-service"]
producer_groups = ["order-service"]
operations = ["transact"]

[[allow]]
users = ["order-service"]
topics = ["order-cancellations"]
operations = ["consume"]

[[allow]]
users = ["order-service"]
groups = ["order-service"]
operations = ["consume"]

# The warehouse: consumes `orders` as group warehouse, reads that group's dead letters
# (warehouse.dlq: dead-letters on group warehouse) as group warehouse-compensation, and
# asks for cancellations.
[[allow]]
users = ["warehouse"]
topics = ["orders"]
operations = ["consume"]

[[allow]]
users = ["warehouse"]
groups = ["warehouse", "warehouse-compensation"]
operations = ["consume"]

[[allow]]
users = ["warehouse"]
groups = ["warehouse"]
operations = ["dead-letters"]

[[allow]]
users = ["warehouse"]
topics = ["order-cancellations"]
operations = ["produce"]

# The notifier: consumes `orders` as group notifier-points, records what it gave up on.
# At start it describes the topic, sets its group's lease from the subscription and looks
# for the give-up topic, which the runner made (it would need create only to make it).
[[allow]]
users = ["notifier"]
topics = ["orders"]
operations = ["consume", "describe"]

[[allow]]
users = ["notifier"]
groups = ["notifier-points"]
operations = ["consume", "configure"]

[[allow]]
users = ["notifier"]
topics = ["notifier-points.gave-up"]
operations = ["produce", "describe"]

# The points service: reconciles the notifier's give-ups as group points-reconcile.
[[allow]]
users = ["points"]
topics = ["notifier-points.gave-up"]
operations = ["consume"]

[[allow]]
users = ["points"]
groups = ["points-reconcile"]
operations = ["consume"]

# The runner, as operator: makes the topics, configures the warehouse's retries, and reads
# the open transactions and the size of warehouse.dlq for its checks. (Without describe on
# producer group order-service, txn list would show it no transaction, and the check that
# none is left open would pass unseen.)
[[allow]]
users = ["runner"]
topics = ["orders", "order-cancellations", "notifier-points.gave-up"]
operations = ["create"]

[[allow]]
users = ["runner"]
groups = ["warehouse"]
operations = ["configure"]

[[allow]]
users = ["runner"]
topics = ["warehouse.dlq"]
operations = ["describe"]

[[allow]]
users = ["runner"]
producer_groups = ["order-service"]
operations = ["describe"]
"""


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed ({r.returncode}): {r.stderr.strip()}")


def _write_secret(path, text):
    """Writes a file only its owner can read: 0600 from its creation, never wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Security:
    """The secure run's files, and the flags and config keys that point at them."""

    def __init__(self, workdir, cli_bin):
        self.dir = os.path.join(workdir, "secure")
        os.mkdir(self.dir, 0o700)
        path = lambda name: os.path.join(self.dir, name)
        self.ca_file = path("ca.pem")
        self.cert_file = path("broker.pem")
        self.key_file = path("broker.key")
        self.users_file = path("users")
        self.acl_file = path("acl.toml")
        self.password_files = {user: path(user + ".password") for user in USERS}
        self._make_certificates()
        for user, password_file in self.password_files.items():
            _write_secret(password_file, secrets.token_urlsafe(24) + "\n")
            r = subprocess.run([cli_bin, "users", "add", user, "--users-file", self.users_file,
                                "--password-file", password_file], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"txmq users add {user} failed ({r.returncode}): {r.stderr.strip()}")
        with open(self.acl_file, "w") as f:
            f.write(ACL)

    def _make_certificates(self):
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
                 "-subj", "/CN=order-warehouse example CA", cwd=self.dir)
        with open(os.path.join(self.dir, "broker.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        _openssl("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=txmq-broker", cwd=self.dir)
        _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-extfile", "broker.ext", "-out", "broker.pem", cwd=self.dir)
        os.chmod(self.key_file, 0o600)

    def broker_config(self):
        """The broker config's [tls] and [auth] sections. No anonymous access."""
        return f"""\
[tls]
enabled = true
cert_file = "{self.cert_file}"
key_file = "{self.key_file}"
[auth]
enabled = true
users_file = "{self.users_file}"
acl_file = "{self.acl_file}"
# Against guessing; short here, where the only wrong credentials are the runner's own
# least-privilege checks.
failure_delay_ms = 100
"""

    def client_flags(self, user):
        """A service's or the txmq tool's flags for the broker, as user."""
        return ["--tls-ca", self.ca_file, "--user", user, "--password-file", self.password_files[user]]

    def notifier_keys(self):
        """The notifier's [notifier] keys for the broker."""
        return f"""\
tls_ca_file = "{self.ca_file}"
user = "{NOTIFIER_USER}"
password_file = "{self.password_files[NOTIFIER_USER]}"
"""


def least_privilege_violations(system):
    """Each user may do only what the ACL allows, and nobody gets in without credentials
    and TLS. Returns the violations (empty: least privilege holds)."""
    s = system.security
    violations = []

    def refused(what, flags, args, expected):
        r = subprocess.run([system.bins.cli, "--broker", system.broker_address, *flags, *args],
                           input="not an order\n", capture_output=True, text=True, timeout=60)
        if r.returncode == 0 or expected not in r.stderr:
            violations.append(f"{what}: exit {r.returncode}, expected '{expected}', got: {r.stderr.strip()!r}")

    # Run before the first order, so that a request wrongly allowed fails this check and no
    # other: there is nothing to take or redrive yet, and the message the warehouse tries
    # to produce would come due a day after the run.
    refused("the warehouse produces to orders", s.client_flags(WAREHOUSE_USER), ["produce", "orders", "--delay", "24h"],
            "NotAuthorized: user 'warehouse' may not produce topic 'orders'")
    refused("the points service reads orders as group warehouse", s.client_flags(POINTS_USER),
            ["consume", "orders", "--group", "warehouse", "--max", "1", "--timeout-ms", "2000"], "NotAuthorized")
    refused("the order service redrives the warehouse's dead letters", s.client_flags(ORDER_USER),
            ["dlq", "redrive", "--group", "warehouse"], "NotAuthorized")
    refused("a TLS client without credentials", ["--tls-ca", s.ca_file], ["topic", "list"], "AuthenticationFailed")
    refused("a plain client", [], ["topic", "list"], "this broker port takes TLS connections only")
    return violations
