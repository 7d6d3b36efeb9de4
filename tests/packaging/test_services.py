# SPDX-License-Identifier: Apache-2.0
# qf-coordinator and qf-agent as services: readiness through $NOTIFY_SOCKET (Type=notify),
# the log file, secret files created 0600 whatever the umask, and the version check at
# registration (agents one minor version away accepted, two refused with the reason).
# The announced versions come from $QUARTZFLOW_TEST_ANNOUNCED_VERSION (test-only override).
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

import pytest

BUILD = os.environ.get("QF_BUILD_DIR", "")
QFCTL = os.path.join(BUILD, "tools", "qfctl", "qfctl")
COORDINATOR = os.path.join(BUILD, "examples", "coordinator", "qf-coordinator")
AGENT = os.path.join(BUILD, "examples", "agent", "qf-agent")


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class Services:
    def __init__(self):
        assert BUILD, "QF_BUILD_DIR must name the build directory"
        self.dir = tempfile.mkdtemp(prefix="qf-services-test-")
        self.processes = {}
        self.certs = os.path.join(self.dir, "certs")
        # umask 0: every mode below is the programs' own choice, not the umask's.
        self.old_umask = os.umask(0)
        self.qfctl("init", "--dir", self.certs)
        self.qfctl("issue", "--dir", self.certs, "--coordinator", "127.0.0.1")
        self.agent_port = free_port(socket.SOCK_DGRAM)
        self.admin_port = free_port(socket.SOCK_STREAM)
        with open(os.path.join(self.dir, "coordinator.yaml"), "w") as f:
            f.write(f"""coordinator_id: services-test
data_dir: data
agent_listen: 127.0.0.1:{self.agent_port}
admin_listen: 127.0.0.1:{self.admin_port}
agent_tls: {{ca_file: certs/ca.pem, cert_file: certs/coordinator-127.0.0.1.pem, key_file: certs/coordinator-127.0.0.1.key}}
heartbeat_interval_seconds: 1
log_level: debug
log: {{file: logs/coordinator.log, max_size_mb: 1, max_files: 2}}
""")
        os.mkdir(os.path.join(self.dir, "logs"))

    def qfctl(self, *args):
        subprocess.run([QFCTL, "certs", *args], check=True, capture_output=True, timeout=30)

    def start(self, name, argv, env):
        log = open(os.path.join(self.dir, f"{name}.stderr"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                             env=dict(os.environ, **env))
        self.processes[name] = p
        return p

    def output(self, name):
        with open(os.path.join(self.dir, f"{name}.stderr")) as f:
            return f.read()

    def start_agent(self, name, version):
        self.qfctl("issue", "--dir", self.certs, "--agent", name)
        config = os.path.join(self.dir, f"{name}.yaml")
        with open(config, "w") as f:
            f.write(f"""coordinators: ["127.0.0.1:{self.agent_port}"]
tls: {{ca_file: certs/ca.pem, cert_file: certs/agent-{name}.pem, key_file: certs/agent-{name}.key}}
data_dir: data-{name}
log_level: debug
""")
        return self.start(name, [AGENT, "--config", config], {"QUARTZFLOW_TEST_ANNOUNCED_VERSION": version})

    def stop(self):
        for p in self.processes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        os.umask(self.old_umask)


@pytest.fixture(scope="module")
def services():
    s = Services()
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


def listen_notify(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    return sock


def test_the_coordinator_tells_its_notify_socket_it_is_ready_once_listening(services):
    notify = os.path.join(services.dir, "coordinator.notify")
    sock = listen_notify(notify)
    services.start("coordinator", [COORDINATOR, "--config", "coordinator.yaml"],
                   {"NOTIFY_SOCKET": notify, "QUARTZFLOW_TEST_ANNOUNCED_VERSION": "0.5.0"})
    message = sock.recv(4096).decode()
    sock.close()
    assert "READY=1" in message.split("\n"), message
    assert f"STATUS=listening for agents on 127.0.0.1:{services.agent_port}" in message
    # Ready means listening: the admin endpoint answers now.
    with socket.create_connection(("127.0.0.1", services.admin_port), timeout=5):
        pass


def test_an_agent_one_minor_version_older_or_newer_registers(services):
    for name, version in (("older", "0.4.2"), ("newer", "0.6.0")):
        services.start_agent(name, version)
    for name, version in (("older", "0.4.2"), ("newer", "0.6.0")):
        wait_for(lambda: "registered with coordinator services-test version 0.5.0" in services.output(name), 20,
                 f"agent {name} ({version}) to register")
        wait_for(lambda: f"agent {name} online" in services.output("coordinator"), 10, f"{name} online")
        assert f"version {version})" in services.output("coordinator")


@pytest.mark.parametrize("name,version,advice", [
    ("too-old", "0.3.9", "upgrade this agent"),
    ("too-new", "0.7.0", "upgrade the coordinator first"),
])
def test_an_agent_two_minor_versions_away_is_refused_with_the_reason_and_keeps_retrying(services, name, version,
                                                                                          advice):
    agent = services.start_agent(name, version)
    reason = (f"agent version {version} is not supported by coordinator version 0.5.0, which accepts agents "
              f"0.4.x-0.6.x (one minor version older or newer); {advice}")
    wait_for(lambda: reason in services.output(name), 20, f"agent {name} to log the refusal")
    assert re.search(r"the coordinator refused this agent \(version " + re.escape(version) + r"\).*retrying every",
                     services.output(name))
    assert reason in services.output("coordinator")
    assert f"agent {name} online" not in services.output("coordinator")
    assert agent.poll() is None  # it waits for an upgrade, it does not exit
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=20) == 0


def test_an_agent_tells_its_notify_socket_it_is_ready(services):
    notify = os.path.join(services.dir, "agent.notify")
    sock = listen_notify(notify)
    services.qfctl("issue", "--dir", services.certs, "--agent", "notified")
    with open(os.path.join(services.dir, "notified.yaml"), "w") as f:
        f.write(f"""coordinators: ["127.0.0.1:{services.agent_port}"]
tls: {{ca_file: certs/ca.pem, cert_file: certs/agent-notified.pem, key_file: certs/agent-notified.key}}
data_dir: data-notified
""")
    services.start("notified", [AGENT, "--config", "notified.yaml"], {"NOTIFY_SOCKET": notify})
    message = sock.recv(4096).decode()
    sock.close()
    assert "READY=1" in message.split("\n"), message


def test_secret_files_are_created_0600_whatever_the_umask(services):
    data = os.path.join(services.dir, "data")
    agent_data = os.path.join(services.dir, "data-older")
    wait_for(lambda: os.path.exists(os.path.join(agent_data, "agent.db-wal")), 10, "the agent's WAL")
    files = [os.path.join(data, name) for name in ("coordinator.db", "coordinator.db-wal", "coordinator.db-shm",
                                                    "alert-secret.key")]
    files += [os.path.join(agent_data, name) for name in ("agent.db", "agent.db-wal", "agent.db-shm")]
    files += [os.path.join(services.certs, name) for name in ("ca.key", "coordinator-127.0.0.1.key",
                                                               "agent-older.key")]
    for path in files:
        assert mode(path) == 0o600, f"{path}: mode {mode(path):04o}"
    # Certificates are public: the CA's certificate stays readable.
    assert mode(os.path.join(services.certs, "ca.pem")) == 0o644


def test_the_coordinator_logs_to_stderr_and_to_its_log_file_0640(services):
    log_file = os.path.join(services.dir, "logs", "coordinator.log")
    with open(log_file) as f:
        text = f.read()
    assert "listening for agents on" in text
    assert "listening for agents on" in services.output("coordinator")  # stderr too (the journal)
    assert mode(log_file) == 0o640


def test_a_bad_log_setting_is_refused_at_start_naming_the_field(services):
    bad = os.path.join(services.dir, "bad-log.yaml")
    with open(os.path.join(services.dir, "coordinator.yaml")) as f:
        config = f.read()
    with open(bad, "w") as f:
        f.write(config.replace("max_files: 2", "max_files: 5000"))
    r = subprocess.run([COORDINATOR, "--config", bad], capture_output=True, text=True, timeout=30, cwd=services.dir)
    assert r.returncode == 2, r.stderr
    assert "log.max_files: 5000 is out of range 1-1000" in r.stderr
