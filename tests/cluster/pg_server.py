# SPDX-License-Identifier: Apache-2.0
# A throwaway PostgreSQL server for process-level tests: initdb into a temporary directory,
# pg_ctl on a Unix socket in that directory (no TCP), run as user `postgres` when the tests
# run as root (initdb refuses root), stopped with `-m immediate` and deleted at the end.
import os
import pwd
import shutil
import subprocess
import tempfile


def _bindir():
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and os.path.exists(os.path.join(out.stdout.strip(), "initdb")):
            return out.stdout.strip()
    except OSError:
        pass
    for version in ("17", "16", "15"):
        path = f"/usr/lib/postgresql/{version}/bin"
        if os.path.exists(os.path.join(path, "initdb")):
            return path
    raise AssertionError("PostgreSQL server binaries not found (Debian package `postgresql`; "
                         "./tools/qf installs it)")


class PgServer:
    """`start()` then `dsn(database)`; `stop()` / `start_again()` simulate an outage."""

    def __init__(self, port):
        self.bin = _bindir()
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="qf-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def _run(self, argv, timeout=60):
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def start(self):
        r = self._run([os.path.join(self.bin, "initdb"), "--no-sync", "-A", "trust", "-U", "postgres", "-D", self.data])
        assert r.returncode == 0, f"initdb failed: {r.stderr}"
        self.start_again()
        return self

    def start_again(self):
        options = f"-c listen_addresses='' -k {self.dir} -p {self.port} -c fsync=off -c max_connections=200"
        r = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-o", options, "-l",
                       os.path.join(self.dir, "server.log"), "-w", "start"])
        assert r.returncode == 0, f"pg_ctl start failed: {r.stderr}{r.stdout}"

    def stop_for_outage(self):
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"])

    def create_database(self, name):
        r = self._run([os.path.join(self.bin, "psql"), "-h", self.dir, "-p", str(self.port), "-U", "postgres", "-d",
                       "postgres", "-c", f"CREATE DATABASE {name}"])
        assert r.returncode == 0, f"CREATE DATABASE failed: {r.stderr}"

    def dsn(self, database):
        return f"host={self.dir} port={self.port} user=postgres dbname={database}"

    def stop(self):
        if os.path.exists(self.data):
            self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)
