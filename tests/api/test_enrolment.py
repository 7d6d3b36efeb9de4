# SPDX-License-Identifier: Apache-2.0
# Agent enrolment end to end: a fresh host with no certificate joins with a join token over
# HTTPS (the cluster CA checked against the hash in the token), comes online in the token's
# group and runs a task; the single-use token is refused the second time with nothing
# written; the certificate is renewed before it expires; a revoked agent is disconnected
# and cannot come back.
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from conftest import ADMIN_PASSWORD, Cluster, wait_for

VALIDITY = 15  # seconds: renewed after 10


class HttpsApi:
    def __init__(self, base, context, token=None):
        self.base, self.context, self.token = base, context, token

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.context) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        try:
            return status, json.loads(body or b"null")
        except ValueError:
            return status, body

    def data(self, method, path, body=None):
        status, answer = self.call(method, path, body)
        assert status < 300 and answer["code"] == 0, (status, answer)
        return answer["data"]


def join(c, name, url, token):
    """Runs `qf-agent --join` for a new host `name` (its own directory: config and data dir)."""
    os.makedirs(os.path.join(c.dir, name), exist_ok=True)
    config = os.path.join(c.dir, name, "agent.yaml")
    return config, c.start(name, [c.agent_bin, "--config", config, "--join", url, "--token", token])


def test_enrolment_routes_say_enrolment_is_off_without_a_ca_key(admin, anonymous):
    """The shared cluster has no enrolment.ca_key_file: joining is refused, naming the setting."""
    for api, method, path, body in ((admin, "POST", "/api/v1/enrolment-tokens", {}),
                                    (anonymous, "GET", "/api/v1/enrol/ca", None),
                                    (anonymous, "POST", "/api/v1/enrol", {"join_token": "x", "csr_pem": "y"}),
                                    (anonymous, "POST", "/api/v1/enrol/renew", {})):
        r = api.call(method, path, body)
        assert r.status == 503 and "enrolment.ca_key_file" in r.json["message"], (path, r)
    assert admin.get("/api/v1/enrolment-tokens").data["items"] == []
    r = admin.delete("/api/v1/enrolment-tokens/et_0000000000000000", pattern="/api/v1/enrolment-tokens/{id}")
    assert r.status == 404, r
    r = admin.post("/api/v1/agents/nobody/revoke", pattern="/api/v1/agents/{id}/revoke")
    assert r.status == 404 and "no certificate" in r.json["message"], r
    assert anonymous.post("/api/v1/enrolment-tokens", {}).status == 401


def test_a_fresh_agent_joins_with_a_token_runs_a_task_renews_and_is_revoked():
    c = Cluster(os.environ["QF_BUILD_DIR"])
    with open(c.config, "a") as f:
        f.write("admin_tls: {cert_file: certs/coordinator-127.0.0.1.pem, key_file: certs/coordinator-127.0.0.1.key}\n"
                f"enrolment: {{ca_key_file: certs/ca.key, certificate_validity_seconds: {VALIDITY}}}\n")
    url = f"https://127.0.0.1:{c.admin_port}"
    context = ssl.create_default_context(cafile=os.path.join(c.dir, "certs", "ca.pem"))
    anonymous = HttpsApi(url, context)
    try:
        c.start("coordinator", [c.coordinator_bin, "--config", c.config])

        def ready():
            try:
                return anonymous.call("GET", "/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, 30, "/readyz over HTTPS")
        login = anonymous.data("POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        admin = HttpsApi(url, context, login["session_token"])
        qfctl_env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(c.dir, "qfctl-config"))

        def qfctl(*args):
            return subprocess.run([c.qfctl, *args, "--server", url, "--ca-file", os.path.join(c.dir, "certs", "ca.pem"),
                                   "--token", admin.token], env=qfctl_env, capture_output=True, text=True, timeout=30)

        made = qfctl("token", "create", "--enrol", "--group", "workers", "--expires", "10m")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("qfe1.") and "qf-agent" in made.stderr
        [listed] = admin.data("GET", "/api/v1/enrolment-tokens")["items"]
        assert listed["max_uses"] == 1 and listed["uses"] == 0 and token.split(".")[2] not in json.dumps(listed)

        # A fresh host: no configuration, no certificate.
        config, agent = join(c, "fresh", url, token)
        tls_dir = os.path.join(c.dir, "fresh", "qf-agent-data", "tls")
        wait_for(lambda: os.path.exists(os.path.join(tls_dir, "agent.pem")), 10, "the enrolled certificate")
        with open(config) as f:
            written = json.loads(f.read().split("\n", 1)[1])
        agent_id = written["agent_id"]
        assert written["enrolment"]["url"] == url and written["coordinators"] == [f"127.0.0.1:{c.agent_port}"]
        for name in ("agent.key", "agent.pem"):
            assert stat.S_IMODE(os.stat(os.path.join(tls_dir, name)).st_mode) == 0o600, name
        first_cert = open(os.path.join(tls_dir, "agent.pem")).read()

        def online():
            status, answer = admin.call("GET", f"/api/v1/agents/{agent_id}")
            return status == 200 and answer["data"]["state"] == "AGENT_STATE_ONLINE" and answer["data"]
        record = wait_for(online, 10, f"{agent_id} online")
        groups = admin.data("GET", "/api/v1/groups?keyword=workers")["items"]
        workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
        assert record["group_id"] == workers

        task = admin.data("POST", "/api/v1/tasks", {
            "name": "enrolled-echo", "group_ids": [workers], "schedule": {"manual": {}},
            "placement": {"mode": "PLACEMENT_MODE_ONE"}, "shell": {"argv": ["echo", "joined"]}})
        [eid] = admin.data("POST", f"/api/v1/tasks/{task['id']}/trigger", {})["execution_ids"]
        quoted = urllib.parse.quote(eid, safe="")
        done = wait_for(lambda: (lambda e: e if e["status"] == "EXECUTION_STATUS_SUCCESS" else None)(
            admin.data("GET", f"/api/v1/executions/{quoted}")), 10, "the task's run")
        assert done["agent_id"] == agent_id

        # The single-use token again: refused, and the second host has nothing written.
        second_config, second = join(c, "second", url, token)
        assert second.wait(timeout=15) != 0
        assert "used up" in c.log("second") and "nothing changed" in c.log("second")
        assert os.listdir(os.path.join(c.dir, "second")) == [], "a refused join wrote something"
        # A token of another cluster's CA is refused before anything is sent.
        parts = token.split(".")
        forged = ".".join(parts[:3] + ["A" * 43])
        third_config, third = join(c, "third", url, forged)
        assert third.wait(timeout=15) != 0 and "not the one the token names" in c.log("third")
        audit = admin.data("GET", "/api/v1/audit?action=agent.")["items"]
        assert any(a["action"] == "agent.enrol" and a["success"] and a["target_id"] == agent_id for a in audit)
        assert any(a["action"] == "agent.enrol" and not a["success"] and "used up" in a["detail"] for a in audit)

        # Renewal before expiry; the session stays up.
        wait_for(lambda: open(os.path.join(tls_dir, "agent.pem")).read() != first_cert, VALIDITY, "the renewal")
        assert stat.S_IMODE(os.stat(os.path.join(tls_dir, "agent.key")).st_mode) == 0o600
        assert online()
        assert any(a["action"] == "agent.renew" and a["success"] for a in admin.data("GET", "/api/v1/audit?action=agent.")["items"])

        # Revocation: the session is closed and the agent cannot come back.
        revoked = qfctl("agent", "revoke", agent_id)
        assert revoked.returncode == 0 and "revoked agent" in revoked.stdout, revoked.stderr
        wait_for(lambda: not online(), 10, f"{agent_id} disconnected")
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)
        refusals = c.log("coordinator").count("its certificate was revoked")
        c.start("fresh-again", [c.agent_bin, "--config", config])
        wait_for(lambda: c.log("coordinator").count("its certificate was revoked") > refusals, 10,
                 "the restarted agent refused")
        time.sleep(1)
        assert not online()
        assert any(a["action"] == "agent.revoke" and a["target_id"] == agent_id
                   for a in admin.data("GET", "/api/v1/audit?action=agent.")["items"])
    finally:
        c.stop()
        shutil.rmtree(c.dir, ignore_errors=True)
