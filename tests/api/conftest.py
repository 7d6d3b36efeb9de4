# SPDX-License-Identifier: Apache-2.0
# A real qf-coordinator (and one qf-agent) for the admin API tests: certificates from
# qfctl, an admin from --init-admin, free loopback ports, stopped with SIGTERM at the end.
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

ADMIN_PASSWORD = "correct horse battery staple"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def data(self):
        assert self.json is not None and self.json.get("code") == 0, f"not a success: {self.status} {self.body}"
        return self.json["data"]

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Api:
    """A plain HTTP client (urllib) that remembers which route patterns it exercised. With a
    `source` address (another 127.0.0.x), it connects from there (http.client)."""

    def __init__(self, base, token=None, source=None):
        self.base = base
        self.token = token
        self.source = source
        self.hits = set()

    def with_token(self, token):
        api = Api(self.base, token, self.source)
        api.hits = self.hits
        return api

    def from_address(self, source):
        api = Api(self.base, self.token, source)
        api.hits = self.hits
        return api

    def call(self, method, path, body=None, raw=None, headers=None, pattern=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        self.hits.add((method, pattern or path.split("?")[0]))
        if self.source:
            return self._call_from_source(method, path, data, req.header_items())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return Response(r.status, r.headers, r.read().decode())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read().decode())

    def _call_from_source(self, method, path, data, headers):
        url = urllib.parse.urlsplit(self.base)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30, source_address=(self.source, 0))
        try:
            connection.request(method, path, body=data, headers=dict(headers))
            r = connection.getresponse()
            return Response(r.status, r.headers, r.read().decode())
        finally:
            connection.close()

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body if body is not None else {}, **kw)

    def put(self, path, body, **kw):
        return self.call("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


class Cluster:
    def __init__(self, build_dir):
        self.pg = None
        try:
            self._setup(build_dir)
        except BaseException:
            if self.pg is not None:  # a throwaway server must not outlive a failed set-up
                self.pg.stop()
            raise

    def _setup(self, build_dir):
        self.build = build_dir
        self.dir = tempfile.mkdtemp(prefix="qf-api-test-")
        self.qfctl = os.path.join(build_dir, "tools", "qfctl", "qfctl")
        self.coordinator_bin = os.path.join(build_dir, "examples", "coordinator", "qf-coordinator")
        self.agent_bin = os.path.join(build_dir, "examples", "agent", "qf-agent")
        self.admin_port = free_port()
        self.agent_port = free_port(socket.SOCK_DGRAM)
        self.processes = []
        certs = os.path.join(self.dir, "certs")
        for args in (["init", "--dir", certs], ["issue", "--dir", certs, "--coordinator", "127.0.0.1"],
                     ["issue", "--dir", certs, "--agent", "api-agent"]):
            subprocess.run([self.qfctl, "certs", *args], check=True, capture_output=True, timeout=30)
        with open(os.path.join(self.dir, "tasks.yaml"), "w") as f:
            f.write("groups:\n  - name: workers\n")
        # QF_TEST_POSTGRES=1: the same suite against a coordinator on a throwaway PostgreSQL.
        self.pg = None
        store = ""
        if os.environ.get("QF_TEST_POSTGRES") == "1":
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
            from pg_server import PgServer
            self.pg = PgServer(free_port()).start()
            self.pg.create_database("quartzflow")
            store = f'store: {{postgres_dsn: "{self.pg.dsn("quartzflow")}"}}\n'
        self.config = os.path.join(self.dir, "coordinator.yaml")
        with open(self.config, "w") as f:
            f.write(f"""coordinator_id: api-test
data_dir: data
agent_listen: 127.0.0.1:{self.agent_port}
admin_listen: 127.0.0.1:{self.admin_port}
agent_tls: {{ca_file: certs/ca.pem, cert_file: certs/coordinator-127.0.0.1.pem, key_file: certs/coordinator-127.0.0.1.key}}
heartbeat_interval_seconds: 1
manifest_file: tasks.yaml
log_level: debug
alerts: {{p95_refresh_seconds: 1}}
{store}""")
        with open(os.path.join(self.dir, "agent.yaml"), "w") as f:
            f.write(f"""coordinators: ["127.0.0.1:{self.agent_port}"]
tls: {{ca_file: certs/ca.pem, cert_file: certs/agent-api-agent.pem, key_file: certs/agent-api-agent.key}}
data_dir: agent-data
group_id: workers
log_level: debug
""")
        env = dict(os.environ, QF_ADMIN_PASSWORD=ADMIN_PASSWORD)
        init = subprocess.run([self.coordinator_bin, "--config", self.config, "--init-admin", "admin"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert init.returncode == 0, init.stderr
        self.base = f"http://127.0.0.1:{self.admin_port}"

    def start(self, name, argv):
        log = open(os.path.join(self.dir, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.processes.append(p)
        return p

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log")) as f:
            return f.read()

    def start_all(self):
        self.coordinator = self.start("coordinator", [self.coordinator_bin, "--config", self.config])
        wait_for(lambda: self.ready(), 30, "the coordinator's /readyz")
        self.agent = self.start("agent", [self.agent_bin, "--config", os.path.join(self.dir, "agent.yaml")])

    def add_agent(self, name, group="workers"):
        """Starts another qf-agent (its own certificate and data directory) in `group`."""
        certs = os.path.join(self.dir, "certs")
        subprocess.run([self.qfctl, "certs", "issue", "--dir", certs, "--agent", name], check=True,
                       capture_output=True, timeout=30)
        config = os.path.join(self.dir, f"agent-{name}.yaml")
        with open(config, "w") as f:
            f.write(f"""coordinators: ["127.0.0.1:{self.agent_port}"]
tls: {{ca_file: certs/ca.pem, cert_file: certs/agent-{name}.pem, key_file: certs/agent-{name}.key}}
data_dir: agent-data-{name}
group_id: {group}
log_level: debug
""")
        return self.start(f"agent-{name}", [self.agent_bin, "--config", config])

    def ready(self):
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        for p in reversed(self.processes):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.pg is not None:
            self.pg.stop()
        assert_no_sanitizer_reports(self.dir)


# What AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer and ThreadSanitizer print
# (to the process's stderr, which the clusters send to <name>.log).
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|: runtime error: ")


def assert_no_sanitizer_reports(directory):
    """Fails naming each log of `directory` that holds a sanitizer report, with the report's
    first lines: a process built with -fsanitize may report and still exit 0 (TSan, a UBSan
    build that recovers), or be killed by the test before its exit status is looked at."""
    reports = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(directory, name), errors="replace") as f:
            lines = f.read().splitlines()
        at = next((i for i, line in enumerate(lines) if SANITIZER_REPORT.search(line)), None)
        if at is not None:
            reports.append(f"{name}:\n" + "\n".join(lines[at:at + 40]))
    assert not reports, f"sanitizer reports (logs kept in {directory}):\n" + "\n".join(reports)


def started_cluster():
    """A new Cluster from QF_BUILD_DIR, started."""
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    c = Cluster(build)
    c.start_all()
    return c


@pytest.fixture(scope="session")
def cluster():
    c = started_cluster()
    yield c
    c.stop()
    assert c.coordinator.returncode == 0, c.log("coordinator")[-3000:]
    shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def anonymous(cluster):
    return Api(cluster.base)


@pytest.fixture(scope="session")
def admin(anonymous):
    r = anonymous.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200, r
    return anonymous.with_token(r.data["session_token"])


def pytest_collection_modifyitems(items):
    """Checks over the whole session (`test_zz_*`: every route exercised) run after every
    file's tests, not after their own file's."""
    items.sort(key=lambda item: item.name.startswith("test_zz_"))
