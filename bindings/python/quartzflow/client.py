# SPDX-License-Identifier: Apache-2.0
# quartzflow.Client: the coordinator's admin API for scripts and CI, in pure Python (the
# standard library's http.client, ssl and json; PyYAML only to read YAML manifests).
"""A client of a QuartzFlow coordinator's admin API (``/api/v1``).

Example::

    import quartzflow
    qf = quartzflow.Client("https://coord:8443", token="qf_...", ca_file="ca.pem")
    qf.apply("tasks.yaml")                        # groups and tasks, as ``qfctl task apply``
    [run] = qf.trigger("report", params={"region": "eu"})
    record = qf.wait(run, timeout=60)             # the final Execution
    print(record["status"], qf.logs(run))

Objects are the API's JSON (protobuf's JSON mapping with proto field names): dicts such as
``{"task": {...}, "next_fire_unix_ms": "...", ...}``; 64-bit integers are strings. List calls
follow every page. A refused request raises :class:`ApiError` carrying the API's fields; a
server that cannot be reached raises :class:`ConnectionFailed` (a subclass).

Thread safety: a Client holds no connection between calls (each request opens one) and may
be shared by threads once built.
"""

import datetime as _datetime
import http.client
import json
import os
import re
import ssl
import time
import urllib.parse

__all__ = ["ApiError", "ConnectionFailed", "Client", "Change", "FINAL_STATUSES"]

#: Execution statuses after which a run does not change any more.
FINAL_STATUSES = frozenset(
    "EXECUTION_STATUS_" + s for s in ("SUCCESS", "FAILURE", "TIMEOUT", "CANCELLED", "SKIPPED", "MISSED"))

_PAGE_SIZE = 500  # the API's maximum
_LOG_PAGE_BYTES = 1 << 20  # the API's maximum log slice


class ApiError(Exception):
    """A request the admin API refused, with the API's fields.

    Attributes:
        status: the HTTP status (400, 401, 403, 404, 409, 413, 429, 503...).
        code: the API's error name (``"INVALID_ARGUMENT"``, ``"NOT_FOUND"``, ``"CONFLICT"``...).
        message: the API's message, e.g. ``invalid task: schedule.cron: minute: 61 is out of
            range 0-59``.
        field: the first detail's field (``"schedule.cron.minute"``), or None.
        details: every ``{"field": ..., "reason": ...}`` the API gave.
        request_id: the server's id of the request (in its logs and audit), or None.
    """

    def __init__(self, status, code, message, details=(), request_id=None, method=None, path=None):
        self.status = status
        self.code = code
        self.message = message
        self.details = [dict(d) for d in details]
        self.field = self.details[0].get("field") if self.details else None
        self.request_id = request_id
        self.method = method
        self.path = path
        text = message
        for d in self.details:
            if d.get("field") and d["field"] not in message:
                text += f"\n  {d['field']}: {d.get('reason', '')}"
        super().__init__(text)

    def __repr__(self):
        return f"ApiError(status={self.status!r}, code={self.code!r}, field={self.field!r}, message={self.message!r})"


class ConnectionFailed(ApiError):
    """The server could not be reached or did not answer (``status`` is None, ``code``
    ``"UNAVAILABLE"``); the message names the URL, the stage and why."""

    def __init__(self, message, method=None, path=None):
        super().__init__(None, "UNAVAILABLE", message, method=method, path=path)


class Change:
    """What :meth:`Client.apply` did (or, with ``dry_run``, would do) to one object.

    ``kind`` is ``"create"``, ``"update"`` or ``"unchanged"``; ``label`` is ``"task report"``
    or ``"group demo"``; ``fields`` lists the top-level fields an update changes."""

    __slots__ = ("kind", "label", "fields", "origin")

    def __init__(self, kind, label, fields=(), origin=""):
        self.kind = kind
        self.label = label
        self.fields = list(fields)
        self.origin = origin

    def __repr__(self):
        marker = {"create": "+", "update": "~", "unchanged": "="}[self.kind]
        return f"<{marker} {self.label}{' ' + ', '.join(self.fields) if self.fields else ''}>"


def _unix_ms(value):
    """A datetime (naive means UTC), a number of seconds since the epoch, or None."""
    if value is None:
        return None
    if isinstance(value, _datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_datetime.timezone.utc)
        return int(value.timestamp() * 1000)
    return int(float(value) * 1000)


def _query_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _duration_seconds(text):
    """``1h30m`` -> 5400, as the coordinator reads ``@every``/``@delay`` (d, h, m, s)."""
    if not re.fullmatch(r"(\d+[dhms])+", text or ""):
        return None
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", text))


def schedule_from_text(text, field="schedule"):
    """A manifest's one-line schedule (``"*/5 * * * *"``, ``@every 1h``, ``@delay 5m``,
    ``@once 2026-12-01T00:00:00Z``, ``@manual``) as the API's Schedule object."""
    text = text.strip()
    if not text:
        raise ValueError(f"{field}: is empty")
    keyword, _, argument = text.partition(" ")
    keyword, argument = keyword.lower(), argument.strip()
    if keyword in ("@every", "@delay"):
        seconds = _duration_seconds(argument)
        if not seconds:
            raise ValueError(f'{field}: "{argument}" is not a duration such as 90s or 1h30m')
        return {"interval_seconds" if keyword == "@every" else "fixed_delay_seconds": seconds}
    if keyword == "@once":
        try:
            at = _datetime.datetime.fromisoformat(argument.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            raise ValueError(f'{field}: "{argument}" is not an RFC 3339 instant such as 2026-12-01T00:00:00Z')
        return {"once_at_unix_ms": str(_unix_ms(at))}
    if keyword == "@manual":
        if argument:
            raise ValueError(f"{field}: @manual takes no argument")
        return {"manual": {}}
    return {"cron": text}


def _is_default(value):
    return value in (None, "", 0, "0", False, [], {}) or (isinstance(value, str) and value.endswith("_UNSPECIFIED"))


def _equivalent(a, b):
    """JSON values equal up to defaults (an absent field reads as its default, as protobuf
    compares)."""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = a or {}, b or {}
        if not isinstance(a, dict) or not isinstance(b, dict):
            return False
        return all(_equivalent(a.get(k), b.get(k)) for k in set(a) | set(b))
    if isinstance(a, list) or isinstance(b, list):
        a, b = a or [], b or []
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
            _equivalent(x, y) for x, y in zip(a, b))
    if _is_default(a) and _is_default(b):
        return True
    if isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, str) or \
            isinstance(b, (int, float)) and not isinstance(b, bool) and isinstance(a, str):
        return str(a) == str(b)  # int64 fields are strings in JSON
    return a == b


_TASK_OUTPUT_FIELDS = ("group_names", "upstream_task_ids", "revision", "config_version", "created_at_unix_ms",
                       "updated_at_unix_ms", "created_by", "updated_by")
_GROUP_OUTPUT_FIELDS = ("revision", "created_at_unix_ms", "updated_at_unix_ms", "created_by")


def _changed_fields(stored, wanted, output_fields):
    keys = (set(stored) | set(wanted)) - set(output_fields)
    return sorted(k for k in keys if not _equivalent(stored.get(k), wanted.get(k)))


class Client:
    """A coordinator's admin API.

    Args:
        server: the API's URL (``http://127.0.0.1:8443``, ``https://coord:8443``); default
            ``$QF_SERVER``, else ``http://127.0.0.1:8443``.
        token: an API token (``qf_...``) or a session token; default ``$QF_TOKEN``.
        ca_file: PEM file of the CA that signed the server's certificate (HTTPS); default
            ``$QF_CA_FILE``, else the system trust store.
        insecure: skip the certificate check (HTTPS), as ``qfctl --insecure``.
        timeout: seconds to connect and for each request (30, as qfctl).
    """

    def __init__(self, server=None, token=None, ca_file=None, insecure=False, timeout=30.0):
        server = server or os.environ.get("QF_SERVER") or "http://127.0.0.1:8443"
        url = urllib.parse.urlsplit(server if "://" in server else "http://" + server)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"server: {server!r} is not an http:// or https:// URL")
        if not url.hostname:
            raise ValueError(f"server: {server!r} names no host")
        self.server = server
        self.token = token if token is not None else os.environ.get("QF_TOKEN") or None
        self.timeout = float(timeout)
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._base_path = url.path.rstrip("/")
        self._ssl = None
        if self._https:
            ca_file = ca_file or os.environ.get("QF_CA_FILE") or None
            if insecure:
                self._ssl = ssl._create_unverified_context()
            else:
                self._ssl = ssl.create_default_context(cafile=ca_file)
        self._enum_values = None  # field name -> enum value names, from the OpenAPI document
        #: Items asked for per page of a list (the API allows up to 500).
        self.page_size = _PAGE_SIZE

    @classmethod
    def login(cls, server, username, password, totp=None, **kwargs):
        """A Client holding a session token from ``POST /api/v1/auth/login``."""
        client = cls(server, token="", **kwargs)
        body = {"username": username, "password": password}
        if totp:
            body["totp_code"] = str(totp)
        client.token = client.request("POST", "/auth/login", body=body)["session_token"]
        return client

    def __repr__(self):
        return f"quartzflow.Client({self.server!r})"

    # -- transport --------------------------------------------------------------------------

    def request(self, method, path, query=None, body=None):
        """One call of ``/api/v1`` + ``path``; returns the answer's ``data``.

        ``query`` is a dict (None values are left out; lists repeat the parameter). Raises
        :class:`ApiError` for an error answer, :class:`ConnectionFailed` when there is none.
        """
        target = self._base_path + "/api/v1" + path
        if query:
            pairs = []
            for key, value in query.items():
                if value is None:
                    continue
                for v in value if isinstance(value, (list, tuple)) else [value]:
                    pairs.append((key, _query_value(v)))
            if pairs:
                target += "?" + urllib.parse.urlencode(pairs)
        headers = {"Accept": "application/json", "User-Agent": "quartzflow-python"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        status, text = self._exchange(method, target, payload, headers)
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(status, "INTERNAL", f"{method} {path}: HTTP {status} with no JSON body: {text[:200]!r}",
                           method=method, path=path)
        if status >= 400 or answer.get("code", 0) != 0:
            raise ApiError(status, answer.get("error") or str(answer.get("code")), answer.get("message", ""),
                           answer.get("details") or (), answer.get("request_id"), method, path)
        return answer.get("data")

    def _exchange(self, method, target, payload, headers):
        url = f"{'https' if self._https else 'http'}://{self._host}:{self._port}"
        stage = "connect"
        if self._https:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._ssl)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            connection.connect()
            stage = "send"
            connection.request(method, target, body=payload, headers=headers)
            stage = "receive"
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except ssl.SSLCertVerificationError as e:
            raise ConnectionFailed(f"{url}: the server's certificate did not verify: {e.verify_message}",
                                   method, target) from e
        except TimeoutError as e:
            raise ConnectionFailed(f"{url}: {stage}: no answer within {self.timeout:g} s (timeout)", method,
                                   target) from e
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed(f"{url}: {stage}: {getattr(e, 'strerror', None) or e}", method, target) from e
        finally:
            connection.close()

    def _pages(self, path, query, limit=None):
        """Every item of a paged list, page after page (500 a page)."""
        query = {k: v for k, v in (query or {}).items() if v is not None}
        page_size = min(self.page_size, limit) if limit else self.page_size
        seen = 0
        page = 1
        while True:
            data = self.request("GET", path, dict(query, page=page, page_size=page_size))
            items = data.get("items") or []
            for item in items:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not items or seen >= int(data.get("total") or 0):
                return
            page += 1

    @staticmethod
    def _id(value):
        return urllib.parse.quote(str(value), safe="")

    # -- tasks ------------------------------------------------------------------------------

    def list_tasks(self, keyword=None, enabled=None, group_id=None, last_status=None, label_selector=None,
                   sort=None, limit=None):
        """Task summaries (``{"task": {...}, "next_fire_unix_ms", "last_status", ...}``),
        every page. Filters as the API's: ``last_status="failure"``, ``sort="-name"``."""
        return list(self._pages("/tasks", {"keyword": keyword, "enabled": enabled, "group_id": group_id,
                                           "last_status": last_status, "label_selector": label_selector,
                                           "sort": sort}, limit))

    def get_task(self, task_id):
        """One task's summary (the task under ``"task"``); ApiError 404 when there is none."""
        return self.request("GET", f"/tasks/{self._id(task_id)}")

    def create_task(self, task):
        """Creates a task (a dict in the API's JSON); returns it as stored."""
        return self.request("POST", "/tasks", body=task)

    def update_task(self, task_id, task, force=False):
        """Replaces a task (give the ``revision`` read to refuse a concurrent change: 409)."""
        return self.request("PUT", f"/tasks/{self._id(task_id)}", {"force": True} if force else None, task)

    def delete_task(self, task_id, force=False):
        """Deletes a task (its history stays); ``force`` while runs of it are in progress."""
        return self.request("DELETE", f"/tasks/{self._id(task_id)}", {"force": True} if force else None)

    def enable_task(self, task_id):
        return self.request("POST", f"/tasks/{self._id(task_id)}/enable", body={})

    def disable_task(self, task_id):
        return self.request("POST", f"/tasks/{self._id(task_id)}/disable", body={})

    def trigger(self, task_id, params=None, reason=None, agent_ids=None):
        """Runs a task now; returns the new executions' ids (one, or one per agent/shard)."""
        body = {}
        if params:
            body["params"] = {str(k): str(v) for k, v in params.items()}
        if reason:
            body["reason"] = reason
        if agent_ids:
            body["agent_ids"] = list(agent_ids)
        return list(self.request("POST", f"/tasks/{self._id(task_id)}/trigger", body=body).get("execution_ids") or [])

    def next_fires(self, task_id, count=5):
        """The task's next fire times (``GET /tasks/{id}/next``)."""
        return self.request("GET", f"/tasks/{self._id(task_id)}/next", {"count": count})

    def list_groups(self, keyword=None, limit=None):
        return list(self._pages("/groups", {"keyword": keyword}, limit))

    # -- apply ------------------------------------------------------------------------------

    def apply(self, manifest, dry_run=False, force=False):
        """Makes a task manifest true, as ``qfctl task apply``: groups by name, then tasks by
        id (a task without one has its name as id), else by name; what already matches is
        left alone.

        ``manifest`` is a dict (``{"groups": [...], "tasks": [...]}``), a path to a YAML or
        JSON file (YAML needs PyYAML), or a directory of ``*.yaml``/``*.yml`` files. It is
        written as ``manifest_file`` is: one-line schedules (``"*/5 * * * *"``, ``@every
        1h``) and enum short names (``mode: all``) are accepted. Every object is checked
        before anything is sent. Returns one :class:`Change` per object; ``dry_run`` changes
        nothing. An object the server refuses raises ApiError; those before it were applied.
        """
        groups, tasks = [], []
        for origin, doc in self._read_manifests(manifest):
            if not isinstance(doc, dict):
                raise ValueError(f"{origin}: a manifest is a map with groups: and tasks:")
            unknown = set(doc) - {"groups", "tasks"}
            if unknown:
                raise ValueError(f"{origin}: {sorted(unknown)[0]}: unknown field (a manifest has groups: and tasks:)")
            for i, g in enumerate(doc.get("groups") or []):
                groups.append((f"{origin}: groups[{i}]", self._normalize(dict(g), f"groups[{i}]")))
            for i, t in enumerate(doc.get("tasks") or []):
                t = self._normalize(dict(t), f"tasks[{i}]")
                if not t.get("name"):
                    raise ValueError(f"{origin}: tasks[{i}].name: is required")
                t.setdefault("id", t["name"])
                t.setdefault("enabled", True)  # declarative: a listed task runs unless it says otherwise
                tasks.append((f"{origin}: tasks[{i}]", t))
        seen = {}
        for origin, g in groups:
            key = "group " + str(g.get("name"))
            if key in seen:
                raise ValueError(f'{origin}: name: group "{g.get("name")}" is also defined at {seen[key]}')
            seen[key] = origin
        for origin, t in tasks:
            key = "task " + t["id"]
            if key in seen:
                raise ValueError(f'{origin}: id: task "{t["id"]}" is also defined at {seen[key]}')
            seen[key] = origin

        group_ids = {}
        stored_groups = {}
        for summary in self._pages("/groups", {}):
            g = summary.get("group") or {}
            group_ids[g.get("name")] = group_ids[g.get("id")] = g.get("id")
            stored_groups[g.get("name")] = g
        plan = []
        for origin, g in groups:
            stored = stored_groups.get(g.get("name"))
            if stored is not None:
                g["id"], g["revision"] = stored["id"], stored.get("revision")
            else:
                g.setdefault("id", g.get("name"))  # as the coordinator does
            group_ids[g.get("name")] = group_ids[g["id"]] = g["id"]
            plan.append(self._plan("group", origin, g, stored, _GROUP_OUTPUT_FIELDS))
        for origin, t in tasks:
            refs = t.get("group_ids") or []
            for i, ref in enumerate(refs):
                if ref not in group_ids:
                    raise ValueError(f'{origin}.group_ids[{i}]: no group with id or name "{ref}"')
                refs[i] = group_ids[ref]
            stored = None
            try:
                stored = self.get_task(t["id"]).get("task")
            except ApiError as e:
                if e.status != 404:
                    raise
                for s in self._pages("/tasks", {"keyword": t["name"]}):
                    if s["task"].get("name") == t["name"]:
                        stored = s["task"]
            if stored is not None:
                t["id"], t["revision"] = stored["id"], stored.get("revision")
            plan.append(self._plan("task", origin, t, stored, _TASK_OUTPUT_FIELDS))
        if dry_run:
            return [change for change, _, _ in plan]
        for change, collection, obj in plan:
            if change.kind == "create":
                self.request("POST", f"/{collection}", body=obj)
            elif change.kind == "update":
                query = {"force": True} if force and collection == "tasks" else None
                self.request("PUT", f"/{collection}/{self._id(obj['id'])}", query, obj)
        return [change for change, _, _ in plan]

    @staticmethod
    def _plan(kind, origin, wanted, stored, output_fields):
        label = f"{kind} {wanted.get('name')}"
        collection = kind + "s"
        if stored is None:
            return Change("create", label, origin=origin), collection, wanted
        fields = _changed_fields(stored, wanted, output_fields)
        return Change("update" if fields else "unchanged", label, fields, origin), collection, wanted

    @staticmethod
    def _read_manifests(manifest):
        if isinstance(manifest, dict):
            return [("manifest", manifest)]
        path = os.fspath(manifest)
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".yaml", ".yml")))
            if not files:
                raise ValueError(f"{path}: no .yaml or .yml files in it")
        else:
            files = [path]
        docs = []
        for file in files:
            with open(file, encoding="utf-8") as f:
                text = f.read()
            if file.endswith(".json"):
                docs.append((file, json.loads(text)))
                continue
            try:
                import yaml
            except ImportError:
                try:
                    docs.append((file, json.loads(text)))
                    continue
                except ValueError:
                    raise ValueError(f"{file}: reading YAML needs PyYAML (python3-yaml); "
                                     "give a dict or a JSON file instead") from None
            docs.append((file, yaml.safe_load(text) or {}))
        return docs

    def _normalize(self, obj, path):
        """Manifest spellings as the API's JSON: one-line schedules, enum short names."""
        if self._enum_values is None:
            self._enum_values = self._load_enum_values()
        return self._normalize_value(obj, path)

    def _normalize_value(self, value, path, key=None):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                sub = f"{path}.{k}"
                if k == "schedule" and isinstance(v, str):
                    out[k] = schedule_from_text(v, sub)
                elif k in ("labels", "env", "params") and isinstance(v, dict):
                    out[k] = v  # maps: keys are the user's
                else:
                    out[k] = self._normalize_value(v, sub, k)
            return out
        if isinstance(value, list):
            return [self._normalize_value(v, f"{path}[{i}]", key) for i, v in enumerate(value)]
        if isinstance(value, str) and key in self._enum_values:
            names = self._enum_values[key]
            if value in names:
                return value
            for name in names:
                if name.endswith("_" + value.upper()) and not name.endswith("_UNSPECIFIED"):
                    return name
            short = sorted(n.rsplit("_", 1)[-1].lower() for n in names if not n.endswith("_UNSPECIFIED"))
            raise ValueError(f"{path}: {value!r} is not one of {', '.join(short)}")
        if isinstance(value, _datetime.datetime):
            return str(_unix_ms(value))
        return value

    def _load_enum_values(self):
        """Field name -> enum value names, from the server's OpenAPI document (so the client
        follows the server's enums without a copy of them)."""
        document = self._openapi()
        values = {}

        def walk(schema, name=None):
            if isinstance(schema, dict):
                if name and "enum" in schema:
                    values.setdefault(name, set()).update(schema["enum"])
                for k, v in (schema.get("properties") or {}).items():
                    walk(v, k)
                if "items" in schema:
                    walk(schema["items"], name)

        for schema in (document.get("components", {}).get("schemas") or {}).values():
            walk(schema)
        return values

    def _openapi(self):
        status, text = self._exchange("GET", self._base_path + "/api/v1/openapi.json", None,
                                      {"Accept": "application/json"})
        if status != 200:
            raise ApiError(status, "INTERNAL", f"GET /api/v1/openapi.json: HTTP {status}")
        return json.loads(text)

    # -- executions -------------------------------------------------------------------------

    def list_executions(self, task_id=None, agent_id=None, group_id=None, status=None, trigger=None, since=None,
                        until=None, keyword=None, sort=None, limit=None):
        """Executions, newest first unless ``sort`` says otherwise, every page (or the first
        ``limit``). ``status``/``trigger`` take short names (``"failure"``); ``since`` and
        ``until`` are datetimes or Unix seconds."""
        return list(self._pages("/executions", {
            "task_id": task_id, "agent_id": agent_id, "group_id": group_id, "status": status, "trigger": trigger,
            "from_unix_ms": _unix_ms(since), "to_unix_ms": _unix_ms(until), "keyword": keyword, "sort": sort}, limit))

    def get_execution(self, execution_id):
        return self.request("GET", f"/executions/{self._id(execution_id)}")

    def wait(self, execution_id, timeout=60.0, poll_interval=0.25):
        """Polls an execution until it is final (SUCCESS, FAILURE, TIMEOUT, CANCELLED,
        SKIPPED, MISSED) and returns it. A run not recorded yet (404) is waited for too.
        Raises TimeoutError after ``timeout`` seconds, naming the last status seen."""
        deadline = time.monotonic() + timeout
        status = "not recorded yet"
        while True:
            try:
                record = self.get_execution(execution_id)
                status = record.get("status")
                if status in FINAL_STATUSES:
                    return record
            except ApiError as e:
                if e.status != 404:
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"execution {execution_id}: not final after {timeout:g} s (last status: {status})")
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    def iter_logs(self, execution_id, offset=0, max_bytes=_LOG_PAGE_BYTES):
        """The log of an execution as chunks (``ExecutionLogResponse`` dicts: ``chunk``
        with ``data``, ``next_offset``, ``eof``, and ``source``/``agent_log_error``), from
        ``offset`` to its end, a slice of up to ``max_bytes`` (at most 1 MiB) at a time."""
        while True:
            page = self.request("GET", f"/executions/{self._id(execution_id)}/logs",
                                {"offset": offset, "max_bytes": max_bytes})
            yield page
            chunk = page.get("chunk") or {}
            next_offset = int(chunk.get("next_offset") or 0)
            if chunk.get("eof") or next_offset <= offset:
                return
            offset = next_offset

    def logs(self, execution_id):
        """An execution's whole output as text (what the coordinator or its agent keeps)."""
        return "".join((page.get("chunk") or {}).get("data", "") for page in self.iter_logs(execution_id))

    def cancel(self, execution_id, reason=None):
        return self.request("POST", f"/executions/{self._id(execution_id)}/cancel",
                            body={"reason": reason} if reason else {})

    def retry(self, execution_id):
        """Runs an execution again on the agent it ran on; returns the API's answer."""
        return self.request("POST", f"/executions/{self._id(execution_id)}/retry", body={})

    # -- statistics -------------------------------------------------------------------------

    def stats(self, task_id=None, group_id=None, agent_id=None, range=None, since=None, until=None, group_by=None,
              time_zone=None, top_n=None):
        """Run counts, success rate and durations (``GET /executions/stats``); ``range`` as
        ``"24h"``/``"7d"``; ``group_by="agent"|"task"`` for one row each."""
        return self.request("GET", "/executions/stats", {
            "task_id": task_id, "group_id": group_id, "agent_id": agent_id, "range": range,
            "from_unix_ms": _unix_ms(since), "to_unix_ms": _unix_ms(until), "group_by": group_by,
            "time_zone": time_zone, "top_n": top_n})

    def daily_stats(self, task_id=None, agent_id=None, from_date=None, to_date=None):
        """Per-day counts (``GET /stats/daily``); dates as ``YYYY-MM-DD`` or ``date``."""
        return self.request("GET", "/stats/daily", {"task_id": task_id, "agent_id": agent_id,
                                                    "from_date": from_date and str(from_date),
                                                    "to_date": to_date and str(to_date)})
