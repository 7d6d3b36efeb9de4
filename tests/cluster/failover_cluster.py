# SPDX-License-Identifier: Apache-2.0
# Several real qf-coordinator processes on one throwaway PostgreSQL, with real qf-agents:
# certificates from qfctl, free loopback ports, each process's output in its own log.
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from pg_server import PgServer

_spec = importlib.util.spec_from_file_location(
    "api_support", os.path.join(os.path.dirname(__file__), "..", "api", "conftest.py"))
api_support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api_support)
Api = api_support.Api
free_port = api_support.free_port
wait_for = api_support.wait_for
ADMIN_PASSWORD = api_support.ADMIN_PASSWORD


class Coordinator:
    def __init__(self, name, admin_port, agent_port, config):
        self.name = name
        self.admin_port = admin_port
        self.agent_port = agent_port
        self.config = config
        self.process = None
        self.paused = False  # SIGSTOP'ed: it answers nothing until SIGCONT
        self.base = f"http://127.0.0.1:{admin_port}"

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def get_json(self, path, token=None, timeout=2):
        req = urllib.request.Request(self.base + path)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode())

    def cluster_view(self, token):
        try:
            return self.get_json("/api/v1/cluster", token)["data"]
        except (OSError, ValueError, KeyError):
            return None


class PgCluster:
    """`coordinators` coordinators and `agents` agents (group `workers`) on one PostgreSQL."""

    def __init__(self, build_dir, coordinators=3, agents=4, lease_ttl_ms=1500):
        build_dir = os.path.abspath(build_dir)
        self.build = build_dir
        self.dir = tempfile.mkdtemp(prefix="qf-pg-cluster-")
        self.qfctl = os.path.join(build_dir, "tools", "qfctl", "qfctl")
        self.coordinator_bin = os.path.join(build_dir, "examples", "coordinator", "qf-coordinator")
        self.agent_bin = os.path.join(build_dir, "examples", "agent", "qf-agent")
        self.pg = PgServer(free_port()).start()
        try:
            self._setup(coordinators, agents, lease_ttl_ms)
        except BaseException:
            self.pg.stop()  # a throwaway server must not outlive a failed set-up
            raise

    def _setup(self, coordinators, agents, lease_ttl_ms):
        self.pg.create_database("quartzflow")
        self.dsn = self.pg.dsn("quartzflow")
        self.token = None
        self.agents = {}
        self.logs = []
        certs = os.path.join(self.dir, "certs")
        self._qfctl("certs", "init", "--dir", certs)
        self._qfctl("certs", "issue", "--dir", certs, "--coordinator", "127.0.0.1")
        self.coordinators = []
        for i in range(coordinators):
            name = f"c{i + 1}"
            admin_port, agent_port = free_port(), free_port(socket.SOCK_DGRAM)
            config = os.path.join(self.dir, f"{name}.yaml")
            with open(config, "w") as f:
                f.write(f"""coordinator_id: {name}
data_dir: data-{name}
agent_listen: 127.0.0.1:{agent_port}
admin_listen: 127.0.0.1:{admin_port}
agent_tls: {{ca_file: certs/ca.pem, cert_file: certs/coordinator-127.0.0.1.pem, key_file: certs/coordinator-127.0.0.1.key}}
heartbeat_interval_seconds: 1
store: {{postgres_dsn: "{self.dsn}"}}
cluster: {{lease_ttl_ms: {lease_ttl_ms}}}
log_level: debug
""")
            self.coordinators.append(Coordinator(name, admin_port, agent_port, config))
        self.agent_names = [f"a{i + 1}" for i in range(agents)]
        for name in self.agent_names:
            self._qfctl("certs", "issue", "--dir", certs, "--agent", name)
            addresses = ", ".join(f'"127.0.0.1:{c.agent_port}"' for c in self.coordinators)
            with open(os.path.join(self.dir, f"agent-{name}.yaml"), "w") as f:
                f.write(f"""coordinators: [{addresses}]
tls: {{ca_file: certs/ca.pem, cert_file: certs/agent-{name}.pem, key_file: certs/agent-{name}.key}}
data_dir: agent-data-{name}
group_id: workers
log_level: debug
""")

    def _qfctl(self, *args):
        subprocess.run([self.qfctl, *args], check=True, capture_output=True, timeout=30)

    def _start(self, name, argv):
        log = open(os.path.join(self.dir, f"{name}.log"), "a")
        self.logs.append(log)
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log")) as f:
            return f.read()

    def init_admin(self):
        c = self.coordinators[0]
        env = dict(os.environ, QF_ADMIN_PASSWORD=ADMIN_PASSWORD)
        init = subprocess.run([self.coordinator_bin, "--config", c.config, "--init-admin", "admin"], env=env,
                              capture_output=True, text=True, timeout=60, cwd=self.dir)
        assert init.returncode == 0, init.stderr

    def start_coordinator(self, c):
        c.process = self._start(c.name, [self.coordinator_bin, "--config", c.config])
        wait_for(lambda: self._ready(c), 30, f"{c.name}'s /readyz")

    def _ready(self, c):
        try:
            with urllib.request.urlopen(c.base + "/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self):
        self.init_admin()
        for c in self.coordinators:
            self.start_coordinator(c)
        self.api = Api(self.coordinators[0].base)
        r = self.api.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status == 200, r
        self.token = r.data["session_token"]
        self.api = self.api.with_token(self.token)
        for name in self.agent_names:
            self.agents[name] = self._start(
                f"agent-{name}", [self.agent_bin, "--config", os.path.join(self.dir, f"agent-{name}.yaml")])
        return self

    def api_of(self, c):
        return Api(c.base, self.token)

    def leader(self):
        """The coordinator every live coordinator names as leader, or None."""
        names = set()
        for c in self.coordinators:
            if not c.alive() or c.paused:
                continue
            view = c.cluster_view(self.token)
            if view is None:
                return None
            names.add(view.get("leader_id"))
        if len(names) != 1:
            return None
        name = names.pop()
        return next((c for c in self.coordinators if c.name == name and c.alive()), None)

    def stop(self):
        for p in list(self.agents.values()) + [c.process for c in self.coordinators if c.process]:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for p in list(self.agents.values()) + [c.process for c in self.coordinators if c.process]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()
        self.pg.stop()
        api_support.assert_no_sanitizer_reports(self.dir)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def finish(self, ok):
        """Stops the cluster; removes its files after a pass, keeps them (and says where) after a failure."""
        self.stop()
        if ok:
            self.remove()
        else:
            print(f"cluster logs kept in {self.dir}")

    def write_manifest(self, task_entries):
        """Writes tasks.yaml (group `workers` and the tasks, each from task_entry) and names it as
        the first coordinator's manifest_file; call before start()."""
        with open(os.path.join(self.dir, "tasks.yaml"), "w") as f:
            f.write("groups:\n  - name: workers\ntasks:\n" + "".join(task_entries))
        with open(self.coordinators[0].config, "a") as f:
            f.write("manifest_file: tasks.yaml\n")


def run_recorder(runs_file):
    """The shell command the tasks run: appends "<execution id> <unix ms>" to `runs_file`."""
    return f'echo "$QF_EXECUTION_ID $(date +%s%3N)" >> {runs_file}'


def task_entry(name, command, schedule="* * * * * *", placement="{mode: one}", **fields):
    """One task of the manifest's `tasks:` list, in group `workers`, running `command` with
    /bin/sh; `fields` are further task fields (misfire_policy="skip", ...)."""
    lines = [f"  - name: {name}", f'    schedule: "{schedule}"', f"    placement: {placement}",
             "    group_ids: [workers]"]
    lines += [f"    {field}: {value}" for field, value in fields.items()]
    lines.append(f"    shell: {{argv: [/bin/sh, -c, '{command}']}}")
    return "\n".join(lines) + "\n"


def list_all(api, path, page_size=500):
    items, page = [], 1
    while True:
        sep = "&" if "?" in path else "?"
        r = api.get(f"{path}{sep}page={page}&page_size={page_size}")
        assert r.status == 200, r
        data = r.data
        batch = data.get("items", [])
        items.extend(batch)
        if len(items) >= int(data.get("total", 0)) or not batch:
            return items
        page += 1


def now_ms():
    return int(time.time() * 1000)
