# SPDX-License-Identifier: Apache-2.0
# quartzflow.Client (bindings/python/quartzflow/client.py) against a real qf-coordinator and
# qf-agent, started as tests/api/conftest.py starts them (QF_BUILD_DIR names the build).
import importlib.util
import os
import shutil
import socket
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The API tests' cluster helpers, under a name of their own (this folder may have a conftest).
api_helpers = _load("qf_api_conftest", os.path.join(ROOT, "tests", "api", "conftest.py"))

# The package as built (quartzflow with its native module in <build>/bindings/python).
sys.path.insert(0, os.path.join(os.environ.get("QF_BUILD_DIR", os.path.join(ROOT, "build")), "bindings", "python"))
try:
    from quartzflow import client as qfclient
except ImportError:  # built without the Python module (QUARTZFLOW_PYTHON=OFF): the client is pure Python
    qfclient = _load("quartzflow_client", os.path.join(ROOT, "bindings", "python", "quartzflow", "client.py"))

Client, ApiError, ConnectionFailed = qfclient.Client, qfclient.ApiError, qfclient.ConnectionFailed

MANIFEST = """
tasks:
  - name: py-echo
    description: says hello to a parameter
    schedule: "@manual"
    placement: {mode: one, routing: round_robin}
    group_ids: [workers]
    params:
      - name: who
        default_value: nobody
    shell:
      argv: ["/bin/sh", "-c", "echo hello $QF_PARAM_WHO"]
    timeout_seconds: 10
  - name: py-fail
    schedule: "@every 1h"
    enabled: false
    group_ids: [workers]
    shell:
      argv: ["/bin/sh", "-c", "echo about to fail >&2; exit 3"]
    timeout_seconds: 10
"""


@pytest.fixture(scope="module")
def cluster():
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    c = api_helpers.Cluster(build)
    try:
        c.start_all()
    except BaseException:  # a coordinator started before the failure must not outlive the test
        c.stop()
        shutil.rmtree(c.dir, ignore_errors=True)
        raise
    yield c
    c.stop()
    assert c.coordinator.returncode == 0, c.log("coordinator")[-3000:]
    shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def qf(cluster):
    client = Client.login(cluster.base, "admin", api_helpers.ADMIN_PASSWORD, timeout=10)
    # The one agent must be online before anything is triggered.
    api_helpers.wait_for(lambda: any(a.get("state") == "AGENT_STATE_ONLINE"
                                     for a in client.request("GET", "/agents").get("items", [])),
                         20, "the agent online")
    return client


@pytest.fixture(scope="module")
def manifest_file(tmp_path_factory):
    pytest.importorskip("yaml")
    path = tmp_path_factory.mktemp("manifest") / "tasks.yaml"
    path.write_text(MANIFEST)
    return path


def test_apply_creates_then_leaves_alone_then_updates_what_changed(qf, manifest_file, tmp_path):
    changes = qf.apply(manifest_file)
    assert [(c.kind, c.label) for c in changes] == [("create", "task py-echo"), ("create", "task py-fail")]
    echo = qf.get_task("py-echo")["task"]
    assert echo["schedule"].get("manual") == {}
    assert echo["placement"]["mode"] == "PLACEMENT_MODE_ONE"
    assert echo["placement"]["routing"] == "ROUTING_STRATEGY_ROUND_ROBIN"
    assert echo["enabled"] is True  # a listed task runs unless it says otherwise
    assert qf.get_task("py-fail")["task"]["schedule"]["interval_seconds"] == 3600
    assert qf.get_task("py-fail")["task"]["enabled"] is False

    assert [c.kind for c in qf.apply(manifest_file)] == ["unchanged", "unchanged"]

    changed = tmp_path / "tasks.yaml"
    changed.write_text(MANIFEST.replace("timeout_seconds: 10\n  - name: py-fail", "timeout_seconds: 20\n  - name: py-fail"))
    revision = qf.get_task("py-echo")["task"]["revision"]
    plan = qf.apply(changed, dry_run=True)
    assert [(c.kind, c.fields) for c in plan] == [("update", ["timeout_seconds"]), ("unchanged", [])]
    assert qf.get_task("py-echo")["task"]["revision"] == revision, "a dry run changed the task"
    qf.apply(changed)
    assert qf.get_task("py-echo")["task"]["timeout_seconds"] == 20


def test_apply_refuses_a_bad_manifest_before_sending_anything(qf):
    before = len(qf.list_tasks())
    with pytest.raises(ValueError, match=r"tasks\[1\]\.placement\.mode: 'everywhere' is not one of all, one, sharded"):
        qf.apply({"tasks": [{"name": "py-never-1", "schedule": "@manual", "group_ids": ["workers"],
                             "shell": {"argv": ["true"]}},
                            {"name": "py-never-2", "schedule": "@manual", "placement": {"mode": "everywhere"},
                             "shell": {"argv": ["true"]}}]})
    with pytest.raises(ValueError, match=r'tasks\[0\]\.group_ids\[0\]: no group with id or name "nowhere"'):
        qf.apply({"tasks": [{"name": "py-never-3", "schedule": "@manual", "group_ids": ["nowhere"],
                             "shell": {"argv": ["true"]}}]})
    with pytest.raises(ValueError, match=r'tasks\[0\]\.schedule: "soon" is not a duration'):
        qf.apply({"tasks": [{"name": "py-never-4", "schedule": "@every soon", "shell": {"argv": ["true"]}}]})
    assert len(qf.list_tasks()) == before


def test_trigger_with_params_waits_and_reads_the_log(qf):
    [run] = qf.trigger("py-echo", params={"who": "python"}, reason="test_client")
    record = qf.wait(run, timeout=20)
    assert record["status"] == "EXECUTION_STATUS_SUCCESS"
    assert record["params"] == {"who": "python"}
    assert qf.logs(run) == "hello python\n"
    assert run in [e["execution_id"] for e in qf.list_executions(task_id="py-echo", status="success")]
    assert run not in [e["execution_id"] for e in qf.list_executions(task_id="py-echo", status="failure")]


def test_a_failing_run_is_a_failure_in_executions_and_stats(qf):
    qf.enable_task("py-fail")
    [run] = qf.trigger("py-fail")
    record = qf.wait(run, timeout=20)
    assert record["status"] == "EXECUTION_STATUS_FAILURE"
    assert record["exit_code"] == 3
    assert "about to fail" in qf.logs(run)
    summary = qf.stats(task_id="py-fail", range="24h")["summary"]
    assert (summary["failure"], summary["success"]) == ("1", "0")
    qf.disable_task("py-fail")
    assert qf.get_task("py-fail")["task"]["enabled"] is False


def test_lists_follow_every_page(qf):
    runs = [qf.trigger("py-echo", params={"who": str(i)})[0] for i in range(5)]
    for run in runs:
        qf.wait(run, timeout=20)
    paged = Client(qf.server, token=qf.token)
    paged.page_size = 2
    listed = [e["execution_id"] for e in paged.list_executions(task_id="py-echo")]
    assert set(runs) <= set(listed)
    assert len(listed) == len(set(listed)) == len(qf.list_executions(task_id="py-echo"))
    assert len(paged.list_executions(task_id="py-echo", limit=3)) == 3


def test_a_long_log_is_read_page_by_page(qf):
    qf.create_task({"id": "py-long-log", "name": "py-long-log", "enabled": True, "group_ids": ["workers"],
                    "schedule": {"manual": {}}, "timeout_seconds": 10,
                    "shell": {"argv": ["/bin/sh", "-c", "for i in $(seq 1 3000); do echo line-$i; done"]}})
    [run] = qf.trigger("py-long-log")
    assert qf.wait(run, timeout=20)["status"] == "EXECUTION_STATUS_SUCCESS"
    expected = "".join(f"line-{i}\n" for i in range(1, 3001))  # 30 KB: past the record's 10 KB
    pages = list(qf.iter_logs(run, max_bytes=8192))
    assert len(pages) >= 4
    assert "".join(p["chunk"]["data"] for p in pages) == expected
    assert qf.logs(run) == expected


def test_wait_gives_up_after_its_timeout(qf):
    qf.create_task({"id": "py-slow", "name": "py-slow", "enabled": True, "group_ids": ["workers"],
                    "schedule": {"manual": {}}, "timeout_seconds": 30, "shell": {"argv": ["sleep", "5"]}})
    [run] = qf.trigger("py-slow")
    with pytest.raises(TimeoutError, match=f"execution {run}: not final after 0.5 s"):
        qf.wait(run, timeout=0.5)
    qf.cancel(run, reason="test over")
    assert qf.wait(run, timeout=20)["status"] == "EXECUTION_STATUS_CANCELLED"


def test_errors_carry_the_api_fields(qf, cluster):
    with pytest.raises(ApiError) as bad:
        qf.create_task({"name": "py-bad", "group_ids": ["workers"], "schedule": {"cron": "61 * * * *"},
                        "shell": {"argv": ["true"]}})
    e = bad.value
    assert (e.status, e.code, e.field) == (400, "INVALID_ARGUMENT", "schedule.cron.minute")
    assert "61 is out of range 0-59" in e.message and e.request_id
    with pytest.raises(ApiError) as missing:
        qf.get_task("py-bad")
    assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")
    with pytest.raises(ApiError) as anonymous:
        Client(cluster.base).list_tasks()
    assert anonymous.value.status == 401
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(ConnectionFailed, match=f"http://127.0.0.1:{closed}: connect: Connection refused"):
        Client(f"http://127.0.0.1:{closed}", timeout=2).list_tasks()
    with pytest.raises(ValueError, match="server: 'ftp://x' is not an http"):
        Client("ftp://x")


def test_delete_removes_the_task_and_keeps_its_history(qf):
    runs_before = len(qf.list_executions(task_id="py-echo"))
    qf.delete_task("py-echo")
    with pytest.raises(ApiError) as gone:
        qf.get_task("py-echo")
    assert gone.value.status == 404
    assert "py-echo" not in [s["task"]["id"] for s in qf.list_tasks()]
    assert len(qf.list_executions(task_id="py-echo")) == runs_before


def test_https_verifies_the_server_against_the_ca_file():
    c = api_helpers.Cluster(os.environ["QF_BUILD_DIR"])
    with open(c.config, "a") as f:
        f.write("admin_tls: {cert_file: certs/coordinator-127.0.0.1.pem, key_file: certs/coordinator-127.0.0.1.key}\n")
    base = f"https://127.0.0.1:{c.admin_port}"
    ca_file = os.path.join(c.dir, "certs", "ca.pem")
    try:
        coordinator = c.start("coordinator", [c.coordinator_bin, "--config", c.config])

        def ready():  # any answer over TLS (401 without a token) means it is up
            try:
                Client(base, ca_file=ca_file, timeout=2).request("GET", "/auth/me")
            except ConnectionFailed:
                return False
            except ApiError as e:
                return e.status == 401
            return True

        api_helpers.wait_for(ready, 30, "the coordinator over HTTPS")
        qf = Client.login(base, "admin", api_helpers.ADMIN_PASSWORD, ca_file=ca_file)
        assert isinstance(qf.list_tasks(), list)
        with pytest.raises(ConnectionFailed, match=f"{base}: the server's certificate did not verify"):
            Client(base, token=qf.token).list_tasks()  # the system store does not know the cluster CA
        assert isinstance(Client(base, token=qf.token, insecure=True).list_tasks(), list)
    finally:
        c.stop()
        shutil.rmtree(c.dir, ignore_errors=True)
    assert coordinator.returncode == 0, c.log("coordinator")[-2000:]
