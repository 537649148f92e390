"""A real PostgreSQL server for the tests: Debian's `postgresql`, a fresh cluster in a temporary
folder, on loopback or inside a network namespace. initdb refuses to run as root, so as root the
server runs as the `postgres` user the package created. The tests that need it skip, saying why,
where it cannot start (.ci/run installs the package)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`with Server(host, prefix) as url:` a cluster of its own, stopped and removed after."""

    def __init__(self, host: str = "127.0.0.1", prefix: tuple = ()):
        self.host, self.prefix, self.port = host, list(prefix), free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="ptrain-pg-"))  # outside pytest's 0700 tmp
        self.as_user = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no postgres user") from None
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.prefix, *self.as_user, *args], capture_output=True, text=True,
                              timeout=60)
        if done.returncode:
            raise RuntimeError(f"{args[0]}: {(done.stderr or done.stdout).strip()[-300:]}")

    def __enter__(self) -> str:
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        data = str(self.folder / "data")
        self._run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(f"{data}/pg_hba.conf", "a") as f:  # the other host, over the veth link
            f.write("host all all 0.0.0.0/0 trust\n")
        options = f"-h {self.host} -p {self.port} -k {self.folder} -c max_connections=50"
        self._run(pg_ctl, "-D", data, "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def __exit__(self, *exc) -> None:
        try:
            self._run(_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class TwoHosts:
    """`with TwoHosts() as (a, b):` two network namespaces joined by a veth pair, as
    benchmarks/two_nodes.sh makes them: each host is (address, command prefix). Needs root."""

    def __init__(self):
        tag = os.getpid() % 100000
        self.names = (f"ptsw{tag}a", f"ptsw{tag}b")
        self.addresses = ("10.78.0.1", "10.78.0.2")

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def __enter__(self):
        a, b = self.names
        try:
            self._ip("netns", "add", a)
            self._ip("netns", "add", b)
            self._ip("link", "add", f"v{a}", "type", "veth", "peer", "name", f"v{b}")
            for ns, address in zip(self.names, self.addresses):
                self._ip("link", "set", f"v{ns}", "netns", ns)
                self._ip("-n", ns, "addr", "add", f"{address}/24", "dev", f"v{ns}")
                self._ip("-n", ns, "link", "set", "lo", "up")
                self._ip("-n", ns, "link", "set", f"v{ns}", "up")
        except (OSError, subprocess.CalledProcessError) as e:
            self.__exit__()
            raise RuntimeError(f"no network namespaces here: {e}") from None
        return [(address, ("ip", "netns", "exec", ns))
                for ns, address in zip(self.names, self.addresses)]

    def __exit__(self, *exc) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
