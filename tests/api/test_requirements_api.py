# SPDX-License-Identifier: Apache-2.0
# A client written from the requirements' section 8 works unchanged: its query parameter
# names (client_id, start_time/end_time, date_range, numeric statuses) are aliases of ours.
import time
import urllib.parse

import pytest

from conftest import wait_for


def rfc3339(unix_s):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


@pytest.fixture(scope="module")
def finished_run(admin, cluster):
    groups = admin.get("/api/v1/groups?keyword=workers").data["items"]
    workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
    task = admin.post("/api/v1/tasks", {
        "name": "requirements-client", "enabled": True, "schedule": {"manual": {}}, "group_ids": [workers],
        "placement": {"mode": "PLACEMENT_MODE_ONE"}, "shell": {"argv": ["/bin/true"]}, "timeout_seconds": 30})
    assert task.status == 201, task
    wait_for(lambda: admin.get("/api/v1/agents?state=online").data["total"] == "1", 30, "the agent online")
    before = int(time.time()) - 1
    r = admin.post(f"/api/v1/tasks/{task.data['id']}/trigger", {"reason": "requirements client"})
    assert r.status == 200, r
    [eid] = r.data["execution_ids"]
    path = "/api/v1/executions/" + urllib.parse.quote(eid, safe="")
    wait_for(lambda: admin.get(path).data["status"] == "EXECUTION_STATUS_SUCCESS", 30, "the run to succeed")
    return {"task_id": task.data["id"], "execution_id": eid, "before": before, "after": int(time.time()) + 1}


def listed(admin, query):
    r = admin.get("/api/v1/executions?" + query)
    assert r.status == 200, r
    return [e["execution_id"] for e in r.data["items"]]


def test_execution_list_takes_the_requirements_parameter_names(admin, finished_run):
    tid, eid = finished_run["task_id"], finished_run["execution_id"]
    start, end = rfc3339(finished_run["before"]), rfc3339(finished_run["after"])
    # The requirements' own example: task_id, client_id, status=3 (success), start/end time, page.
    assert listed(admin, f"task_id={tid}&client_id=api-agent&status=3&start_time={start}&end_time={end}&page=1") == [eid]
    # Each alias filters: another agent, another status, a window before the run.
    assert listed(admin, f"task_id={tid}&client_id=another-host") == []
    assert listed(admin, f"task_id={tid}&status=4") == []
    assert listed(admin, f"task_id={tid}&end_time={rfc3339(finished_run['before'] - 3600)}") == []
    assert listed(admin, f"task_id={tid}&start_time={rfc3339(finished_run['after'] + 3600)}") == []
    # Unix milliseconds are taken too, like from_unix_ms.
    assert listed(admin, f"task_id={tid}&start_time={finished_run['before'] * 1000}") == [eid]
    assert listed(admin, f"task_id={tid}&status=1&status=3") == [eid]


def test_bad_alias_values_are_refused_naming_the_parameter(admin, finished_run):
    bad = admin.get("/api/v1/executions?start_time=yesterday")
    assert bad.status == 400 and bad.json["message"].startswith("invalid query: start_time: must be RFC 3339"), bad
    twice = admin.get("/api/v1/executions?client_id=a&agent_id=b")
    assert twice.status == 400 and "given more than once" in twice.json["message"], twice
    status = admin.get("/api/v1/executions?status=42")
    assert status.status == 400 and "status" in status.json["message"], status
    unknown = admin.get("/api/v1/executions?client=a")
    assert unknown.status == 400 and "client: unknown query parameter" in unknown.json["message"], unknown


def test_stats_take_date_range_and_client_id(admin, finished_run):
    tid = finished_run["task_id"]
    stats = admin.get(f"/api/v1/executions/stats?task_id={tid}&date_range=7d")
    assert stats.status == 200, stats
    assert int(stats.data["summary"]["success"]) == 1, stats.data
    other = admin.get(f"/api/v1/executions/stats?task_id={tid}&date_range=7d&client_id=another-host").data
    assert int(other["summary"].get("total", "0")) == 0, other
    bad = admin.get("/api/v1/executions/stats?date_range=soon")
    assert bad.status == 400 and "range" in bad.json["message"], bad


def test_openapi_documents_the_aliases(anonymous):
    doc = anonymous.get("/api/v1/openapi.json").json
    params = {p["name"]: p for p in doc["paths"]["/api/v1/executions"]["get"]["parameters"]}
    for alias, field in (("client_id", "agent_id"), ("start_time", "from_unix_ms"), ("end_time", "to_unix_ms")):
        assert params[alias]["description"].startswith("Alias of " + field), params[alias]
    assert "number" in params["status"]["description"]
    stats = {p["name"] for p in doc["paths"]["/api/v1/executions/stats"]["get"]["parameters"]}
    assert {"date_range", "client_id"} <= stats
