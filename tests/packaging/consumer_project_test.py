#!/usr/bin/env python3
"""An installed txmq used the way a client developer uses it.

Installs the dev component of this build (libtxmq.a, headers, CMake package, txmq.pc) into
a temporary prefix, checks that the installed client.h compiles alone, then builds
tests/packaging/consumer_project twice, outside the source tree: with
find_package(txmq CONFIG) through CMAKE_PREFIX_PATH, and with a bare compiler command
taking its flags from `pkg-config txmq`. Each program creates a topic, produces one
message and consumes it back from the real broker, started on 127.0.0.1 port 0.
Paths come from the environment set by CTest.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE_DIR = os.environ.get("TXMQ_SOURCE_DIR", ".")
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "support"))
from txmq_harness import Broker  # noqa: E402

BUILD_DIR = os.environ["TXMQ_BUILD_DIR"]
CXX = os.environ.get("TXMQ_CXX", "c++")
PROJECT = os.path.join(SOURCE_DIR, "tests", "packaging", "consumer_project")
# A sanitized build installs a sanitized libtxmq.a; whatever links it needs the runtime.
SANITIZE = ["-fsanitize=address,undefined"] if os.environ.get("TXMQ_SANITIZE") == "ON" else []


def run(cmd, timeout=300, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


class ConsumerProjectTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="txmq-consumer-project-")
        cls.prefix = os.path.join(cls.tmp, "prefix")
        run(["cmake", "--install", BUILD_DIR, "--prefix", cls.prefix, "--component", "dev"])
        cls.broker = Broker(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def produce_consume(self, program, topic):
        result = run([program, self.broker.address, topic], timeout=60)
        self.assertIn("consumed: hello from an installed txmq", result.stdout)

    def test_installed_header_compiles_alone(self):
        # No source tree and no generated file on the include path: only the prefix.
        run([CXX, "-std=c++20", "-fsyntax-only", "-I", os.path.join(self.prefix, "include"),
             "-x", "c++", "-"], input="#include <txmq/client.h>\n")

    def test_find_package_config(self):
        build = os.path.join(self.tmp, "cmake-build")
        flags = " ".join(SANITIZE)
        run(["cmake", "-S", PROJECT, "-B", build, f"-DCMAKE_PREFIX_PATH={self.prefix}",
             f"-DCMAKE_CXX_COMPILER={CXX}", "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_CXX_FLAGS={flags}", f"-DCMAKE_EXE_LINKER_FLAGS={flags}"])
        run(["cmake", "--build", build])
        self.produce_consume(os.path.join(build, "produce_consume"), "via-cmake")

    def test_pkg_config(self):
        pc_dirs = [os.path.dirname(p) for p in
                   glob.glob(os.path.join(self.prefix, "**", "txmq.pc"), recursive=True)]
        self.assertEqual(len(pc_dirs), 1, "one txmq.pc installed")
        env = dict(os.environ, PKG_CONFIG_PATH=pc_dirs[0])
        flags = run(["pkg-config", "--cflags", "--libs", "txmq"], env=env).stdout.split()
        program = os.path.join(self.tmp, "pc-produce-consume")
        run([CXX, "-std=c++20", *SANITIZE, os.path.join(PROJECT, "main.cpp"), "-o", program,
             *flags])
        self.produce_consume(program, "via-pkg-config")


if __name__ == "__main__":
    unittest.main()
