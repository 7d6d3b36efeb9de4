# SPDX-License-Identifier: Apache-2.0
"""The embedded scheduler: QuartzFlow's C++ TaskEngine and LocalStore behind a Pythonic API.

Jobs are Python callables or coroutine functions with a schedule (cron, interval, date, ...)
and the engine's policies (misfire, overlap, retries, timeout). Every run is recorded in the
LocalStore (SQLite): history, the log of each run (an exception's traceback), daily
statistics. Sync callables run on a pool of worker threads; coroutines on the asyncio loop
the scheduler is bound to (the running loop at ``start()``). The engine runs on a thread of
its own and the GIL is released whenever C++ waits.

Example::

    import asyncio, quartzflow

    async def report():
        ...

    async def main():
        scheduler = quartzflow.Scheduler(db_path="jobs.db", timezone="Europe/Paris")
        scheduler.add_job(report, "cron", expr="0 8 * * mon-fri", id="report")
        scheduler.add_job(print, "interval", minutes=30, args=["tick"], id="tick")
        scheduler.start()                      # binds to this loop
        await asyncio.sleep(3600)
        await scheduler.aclose()
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as _dt
import functools
import inspect
import logging
import queue
import re
import threading
import time
import traceback
import uuid
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from . import _native
from ._errors import InvalidSchedule
from ._time import DateTimeLike, TimeZoneLike, from_unix, from_unix_ms, seconds_of, to_unix, zone
from .schedule import Schedule

__all__ = [
    "Scheduler",
    "Job",
    "Execution",
    "DailyStats",
    "RunInfo",
    "current_run",
    "SchedulerNotRunning",
    "JobLookupError",
    "ConflictingIdError",
]

_log = logging.getLogger("quartzflow")

#: Task ids of the engine: what a job id may be.
_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Output kept in a SUCCESS record: the repr of the return value, cut to this.
_MAX_RESULT_REPR = 4096


class SchedulerNotRunning(RuntimeError):
    """The scheduler is not running (never started, or shut down)."""


class JobLookupError(KeyError):
    """No job with that id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job with the id {self.job_id!r}"


class ConflictingIdError(KeyError):
    """A job with that id exists already (pass ``replace_existing=True`` to replace it)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"a job with the id {self.job_id!r} exists already"


# --- records --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Execution:
    """One run of a job as recorded in the LocalStore.

    ``status``: ``pending``, ``running``, ``success``, ``failure``, ``timeout``,
    ``cancelled``, ``skipped`` or ``missed``. ``trigger``: ``scheduled``, ``manual``,
    ``retry`` or ``misfire_catchup``. ``output``: the head (10 KB) of the run's log: the
    lines of ``current_run().log()``, then the repr of the return value or the traceback of
    the exception (the whole log: ``Scheduler.get_log``).
    ``retry_of``: for a retry, the id of the job's first attempt.
    """

    id: str
    job_id: str
    status: str
    trigger: str
    scheduled_time: Optional[_dt.datetime]
    start_time: Optional[_dt.datetime]
    end_time: Optional[_dt.datetime]
    duration: Optional[_dt.timedelta]
    attempt: int
    output: str
    error: str
    failure_reason: str
    skip_reason: str
    skip_detail: str
    cancelled_by: str
    retry_of: str
    params: Dict[str, str]

    @property
    def finished(self) -> bool:
        """True once the run reached a final state."""
        return self.status not in ("pending", "running", "unspecified")

    @classmethod
    def _from_record(cls, r: Mapping[str, Any], tzinfo: _dt.tzinfo) -> "Execution":
        ended = r["ended_unix_ms"]
        return cls(
            id=r["execution_id"],
            job_id=r["task_id"],
            status=r["status"],
            trigger=r["trigger"],
            scheduled_time=from_unix_ms(r["scheduled_unix_ms"], tzinfo),
            start_time=from_unix_ms(r["started_unix_ms"], tzinfo),
            end_time=from_unix_ms(ended, tzinfo),
            duration=_dt.timedelta(milliseconds=r["duration_ms"]) if ended else None,
            attempt=r["attempt"],
            output=r["output"],
            error=r["error_message"],
            failure_reason=r["failure_reason"],
            skip_reason=r["skip_reason"] if r["skip_reason"] != "unspecified" else "",
            skip_detail=r["skip_detail"],
            cancelled_by=r["cancelled_by"],
            retry_of=r["retry_of_execution_id"] or (r["root_execution_id"] if r["attempt"] > 1 else ""),
            params=dict(r["params"]),
        )


@dataclasses.dataclass(frozen=True)
class DailyStats:
    """The runs of one job on one local day (in the scheduler's zone)."""

    date: _dt.date
    job_id: str
    total: int
    success: int
    failure: int
    timeout: int
    cancelled: int
    skipped: int
    missed: int
    total_duration: _dt.timedelta
    avg_duration: _dt.timedelta
    min_duration: _dt.timedelta
    max_duration: _dt.timedelta
    runs_per_hour: List[int]

    @classmethod
    def _from_record(cls, r: Mapping[str, Any]) -> "DailyStats":
        ms = lambda key: _dt.timedelta(milliseconds=r[key])  # noqa: E731
        return cls(
            date=_dt.date.fromisoformat(r["date"]),
            job_id=r["task_id"],
            total=r["total"],
            success=r["success"],
            failure=r["failure"],
            timeout=r["timeout"],
            cancelled=r["cancelled"],
            skipped=r["skipped"],
            missed=r["missed"],
            total_duration=ms("total_duration_ms"),
            avg_duration=ms("avg_duration_ms"),
            min_duration=ms("min_duration_ms"),
            max_duration=ms("max_duration_ms"),
            runs_per_hour=list(r["runs_per_hour"]),
        )


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """The run a job function is executing: ``quartzflow.current_run()`` inside a job."""

    job_id: str
    execution_id: str
    attempt: int
    scheduled_time: _dt.datetime
    params: Dict[str, str]
    _lines: List[str] = dataclasses.field(default_factory=list, repr=False, compare=False)

    def log(self, *parts: Any) -> None:
        """Adds a line (the parts joined by spaces) to the run's log, which is recorded with
        the run (``Scheduler.get_log``, the head in ``Execution.output``) before the
        result's repr or the traceback. Thread-safe."""
        self._lines.append(" ".join(str(p) for p in parts) + "\n")

    def _output(self, tail: str) -> str:
        return "".join(self._lines) + tail


_current_run: contextvars.ContextVar[Optional[RunInfo]] = contextvars.ContextVar("quartzflow_run", default=None)


def current_run() -> Optional[RunInfo]:
    """The run of the job executing in this thread or task; None outside a job."""
    return _current_run.get()


# --- jobs -----------------------------------------------------------------------------

_OPTION_NAMES = (
    "misfire_policy",
    "misfire_fire_all_limit",
    "overlap_policy",
    "max_instances",
    "max_queued",
    "timeout",
    "retries",
    "retry_interval",
    "retry_backoff",
    "retry_max_interval",
    "retry_jitter",
    "retry_on_timeout",
)


class Job:
    """A job registered with a :class:`Scheduler`.

    Attributes: ``id``, ``name``, ``func``, ``args``, ``kwargs``, ``trigger`` (a
    :class:`quartzflow.Schedule`), ``paused``, ``options`` (the policies it runs under),
    ``next_run_time`` (aware datetime, None while paused or when no fire is left).
    """

    __slots__ = ("_scheduler", "id", "name", "func", "args", "kwargs", "trigger", "paused", "options",
                 "_is_coroutine", "__weakref__")

    def __init__(self, scheduler: "Scheduler", id: str, name: str, func: Callable[..., Any], args: tuple,
                 kwargs: dict, trigger: Schedule, paused: bool, options: Dict[str, Any]) -> None:
        self._scheduler = scheduler
        self.id = id
        self.name = name
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.trigger = trigger
        self.paused = paused
        self.options = options
        self._is_coroutine = _is_coroutine_function(func)

    @property
    def next_run_time(self) -> Optional[_dt.datetime]:
        """When the job runs next (in the scheduler's zone); None while paused or when done."""
        return self._scheduler._next_run_time(self)

    def pause(self) -> "Job":
        """Stops firing the job (it stays registered); see :meth:`Scheduler.pause_job`."""
        self._scheduler.pause_job(self.id)
        return self

    def resume(self) -> "Job":
        """Fires the job again from its next time; see :meth:`Scheduler.resume_job`."""
        self._scheduler.resume_job(self.id)
        return self

    def remove(self) -> None:
        """Unregisters the job; see :meth:`Scheduler.remove_job`."""
        self._scheduler.remove_job(self.id)

    def modify(self, **changes: Any) -> "Job":
        """See :meth:`Scheduler.modify_job`."""
        return self._scheduler.modify_job(self.id, **changes)

    def reschedule(self, trigger: Union[str, Schedule, None] = None, **trigger_args: Any) -> "Job":
        """See :meth:`Scheduler.reschedule_job`."""
        return self._scheduler.reschedule_job(self.id, trigger, **trigger_args)

    def __repr__(self) -> str:
        state = "paused" if self.paused else f"next run at: {self.next_run_time}"
        return f"<Job (id={self.id} name={self.name}) {self.trigger.describe()}, {state}>"


def _is_coroutine_function(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def _callable_name(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _result_output(result: Any) -> str:
    if result is None:
        return ""
    try:
        text = repr(result)
    except Exception as exc:  # a broken __repr__ must not fail the run
        text = f"<unrepresentable {type(result).__name__}: {_describe_exception(exc)}>"
    return text[:_MAX_RESULT_REPR]


# --- the worker pool --------------------------------------------------------------------


class _WorkerPool:
    """Daemon worker threads for sync jobs, started on demand up to ``size``.

    Daemon threads: a job still running at interpreter exit does not hold the exit up (the
    engine records it CANCELLED, ``agent shutdown``, before the interpreter goes).
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: "queue.SimpleQueue[Optional[Callable[[], None]]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            self._queue.put(fn)
            if self._idle == 0 and len(self._threads) < self._size:
                t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads) + 1}", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._idle -= 1 if self._idle > 0 else 0

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except BaseException:  # noqa: B902 - reported by the job wrapper already
                _log.exception("quartzflow: worker error")
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool, timeout: Optional[float] = None) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for t in threads:
                if t is threading.current_thread():
                    continue
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


# --- the scheduler ----------------------------------------------------------------------

_live_schedulers: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()


def _shutdown_at_exit() -> None:
    # Runs at interpreter exit before threads are joined (threading's own exit hooks, which
    # run before atexit's and before concurrent.futures joins its workers): the engine
    # records runs still going as CANCELLED and its thread ends while the interpreter can
    # still take calls from it.
    for scheduler in list(_live_schedulers):
        try:
            scheduler.shutdown(wait=False)
        except Exception:  # at exit, report and go on with the next one
            _log.exception("quartzflow: shutdown at exit failed")


try:
    threading._register_atexit(_shutdown_at_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - older Pythons, or imported at exit
    import atexit

    atexit.register(_shutdown_at_exit)


class Scheduler:
    """An embedded scheduler over the C++ TaskEngine and its LocalStore.

    Args:
        db_path: the LocalStore's SQLite file; ``":memory:"`` (the default) keeps the
            history in memory. With a file, run history, logs and statistics survive
            restarts, and the misfire policy catches up the fires a job (same id) owed
            while the program was down.
        timezone: the default zone of cron, interval and date triggers, and the zone whose
            local days the daily statistics count (IANA name or ``zoneinfo.ZoneInfo``).
        max_workers: threads running sync jobs (started on demand).
        loop: the asyncio loop coroutine jobs run on; default: the loop running when
            ``start()`` is called, else a private loop on a thread of the scheduler.
        job_defaults: default options of every job (the keyword options of ``add_job``:
            ``misfire_policy``, ``overlap_policy``, ``max_instances``, ``timeout``,
            ``retries``, ...).
        shutdown_grace: seconds ``shutdown(wait=True)`` gives running jobs before they are
            cancelled.
        agent_id: the last part of execution ids (``<job>:<time>:<agent_id>``).
        full_logs_per_task: full logs kept per job (older runs keep their record's head).
        retention: how long records are kept (a ``timedelta``; default 7 days).

    Thread safety: every method may be called from any thread (jobs and listeners included),
    except ``shutdown`` from a listener.
    """

    def __init__(self, *, db_path: str = ":memory:", timezone: TimeZoneLike = "UTC", max_workers: int = 10,
                 loop: Optional[asyncio.AbstractEventLoop] = None, job_defaults: Optional[Mapping[str, Any]] = None,
                 shutdown_grace: float = 30.0, agent_id: str = "python", full_logs_per_task: int = 20,
                 retention: _dt.timedelta = _dt.timedelta(days=7)) -> None:
        self._tz_name, self._tzinfo = zone(timezone)
        if max_workers < 1:
            raise ValueError("max_workers: must be at least 1")
        self._db_path = db_path
        self._agent_id = agent_id
        self._full_logs_per_task = int(full_logs_per_task)
        self._retention_hours = max(1, int(retention.total_seconds() // 3600))
        self._max_workers = int(max_workers)
        self._given_loop = loop
        self._shutdown_grace = float(shutdown_grace)
        self._defaults: Dict[str, Any] = {}
        for key, value in (job_defaults or {}).items():
            if key not in _OPTION_NAMES:
                raise ValueError(f"job_defaults: unknown option {key!r} (one of {', '.join(_OPTION_NAMES)})")
            self._defaults[key] = value
        self._lock = threading.RLock()
        self._jobs: Dict[str, Job] = {}
        self._run_now: List[str] = []  # jobs added without a trigger: run once at start
        self._engine: Optional[_native.Engine] = None
        self._pool: Optional[_WorkerPool] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._private_loop: Optional[asyncio.AbstractEventLoop] = None
        self._private_loop_thread: Optional[threading.Thread] = None
        self._running = False
        self._listeners: List[Callable[[Execution], None]] = []
        # The engine thread calls in (_dispatch, _on_final) while a caller of add_job & co may
        # hold self._lock and wait for that thread: those paths take only these two locks.
        self._finished = threading.Condition(threading.Lock())
        self._loop_lock = threading.Lock()
        self._tasks: "set[asyncio.Task[Any]]" = set()

    # --- lifecycle --------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``shutdown()``."""
        return self._running

    @property
    def timezone(self) -> str:
        """The scheduler's zone (IANA name)."""
        return self._tz_name

    def start(self) -> None:
        """Starts firing jobs. Called inside a running asyncio loop, binds coroutine jobs to
        that loop. Records left RUNNING by a crash become FAILURE (``agent restarted``) and
        each job's misfire policy handles the fires owed since its last recorded one.
        Raises RuntimeError when already running."""
        with self._lock:
            if self._running:
                raise RuntimeError("the scheduler is already running")
            loop = self._given_loop
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
            self._loop = loop
            engine = self._ensure_engine()
            self._pool = _WorkerPool(self._max_workers, "quartzflow-worker")
            self._running = True
            _live_schedulers.add(self)
            run_now, self._run_now = self._run_now, []
        engine.start()
        for job_id in run_now:
            if job_id in self._jobs:
                engine.trigger(job_id, {})

    def shutdown(self, wait: bool = True, grace: Optional[float] = None) -> None:
        """Stops firing; gives running jobs ``grace`` seconds (default: ``shutdown_grace``
        with ``wait``, else 0), then cancels those still running (recorded CANCELLED,
        ``agent shutdown``) and waits until every record is written. A sync function still
        running goes on in its thread (Python cannot stop a thread); its outcome is ignored.
        Called on the bound loop's thread, coroutine jobs cannot progress while it waits:
        use ``await aclose()`` there. Idempotent; jobs stay registered, ``start()`` again
        resumes them."""
        with self._lock:
            engine = self._engine  # kept (closed) so that the history stays readable
            if not self._running and (engine is None or engine.closed):
                return
            self._running = False
            pool, self._pool = self._pool, None
            private_loop, self._private_loop = self._private_loop, None
            private_thread, self._private_loop_thread = self._private_loop_thread, None
            _live_schedulers.discard(self)
        if grace is None:
            grace = self._shutdown_grace if wait else 0.0
        if self._loop is not None and self._on_loop_thread(self._loop) and self._coroutines_running():
            grace = 0.0  # the loop is blocked here: waiting would only delay the cancel
        if engine is not None:
            engine.close(float(grace))
        if pool is not None:
            pool.shutdown(wait=False)
        if private_loop is not None:
            private_loop.call_soon_threadsafe(private_loop.stop)
            if private_thread is not None and private_thread is not threading.current_thread():
                private_thread.join(5.0)
        with self._finished:
            self._finished.notify_all()

    async def aclose(self, grace: Optional[float] = None) -> None:
        """``shutdown(wait=True)`` for a coroutine on the bound loop: the loop keeps running
        (coroutine jobs can finish) while the engine stops on another thread."""
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self.shutdown, True, grace))

    def __enter__(self) -> "Scheduler":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # --- jobs -------------------------------------------------------------------------

    def add_job(self, func: Callable[..., Any], trigger: Union[str, Schedule, None] = None,
                args: Optional[Sequence[Any]] = None, kwargs: Optional[Mapping[str, Any]] = None,
                id: Optional[str] = None, name: Optional[str] = None, *, replace_existing: bool = False,
                paused: bool = False, misfire_policy: Optional[str] = None,
                misfire_fire_all_limit: Optional[int] = None, overlap_policy: Optional[str] = None,
                max_instances: Optional[int] = None, max_queued: Optional[int] = None,
                timeout: Optional[float] = None, retries: Optional[int] = None,
                retry_interval: Optional[float] = None, retry_backoff: Optional[float] = None,
                retry_max_interval: Optional[float] = None, retry_jitter: Optional[float] = None,
                retry_on_timeout: Optional[bool] = None, **trigger_args: Any) -> Job:
        """Registers ``func`` (a callable or a coroutine function) and returns its :class:`Job`.

        Triggers (``trigger_args`` are their keywords):

        - ``"cron"``: ``expr="*/5 * * * *"`` (5, 6 or 7 fields, or a macro), or the fields
          ``second``, ``minute``, ``hour``, ``day``, ``month``, ``day_of_week``, ``year``
          (cron syntax each, e.g. ``day_of_week="mon-fri"``; 0 or 7 is Sunday). As in
          APScheduler, fields below the most significant one given default to their
          minimum, the others to ``*``. Also ``timezone``, ``start_date``, ``end_date``,
          ``jitter`` (seconds), ``gap`` (``shift``/``skip``), ``overlap`` (``first``/
          ``last``/``both``), ``max_runs``.
        - ``"interval"``: ``weeks``, ``days``, ``hours``, ``minutes``, ``seconds`` (whole
          seconds, at least 1); fires at ``start_date`` + k periods (default start: now +
          one period); ``end_date``, ``jitter``, ``max_runs``.
        - ``"fixed_delay"``: the same period after the previous run ended.
        - ``"date"``: ``run_date`` (datetime or ISO text; naive = the scheduler's zone).
        - ``"manual"``: runs only through :meth:`run_job`.
        - a :class:`quartzflow.Schedule` (its zone and window as built).
        - ``None``: runs once, as soon as the scheduler runs.

        Options (default: the scheduler's ``job_defaults``, else the engine's):
        ``misfire_policy`` (``skip``, ``fire_once`` [default], ``fire_all``; fires owed
        after downtime), ``misfire_fire_all_limit``, ``overlap_policy`` (``skip``
        [default], ``queue``, ``allow``, ``replace``; what a fire does while
        ``max_instances`` [default 1] runs are going), ``max_queued`` (``queue`` policy),
        ``timeout`` (seconds, 1-86400, default 300: the run is recorded TIMEOUT and a
        coroutine cancelled; a thread cannot be stopped and runs on), ``retries`` (0-100),
        ``retry_interval`` (seconds, default 60), ``retry_backoff`` (factor 1-10),
        ``retry_max_interval``, ``retry_jitter``, ``retry_on_timeout``.

        The job id must be 1-64 characters of ``[A-Za-z0-9._-]`` (default: a random one);
        ``name`` is free text (default: the function's name). An existing id raises
        :class:`ConflictingIdError` unless ``replace_existing``. Invalid settings raise
        :class:`quartzflow.InvalidSchedule` naming the field, and change nothing.
        """
        if not callable(func):
            raise TypeError(f"func: {func!r} is not callable")
        job_id = uuid.uuid4().hex if id is None else str(id)
        if not _ID_RE.match(job_id):
            raise InvalidSchedule(f"invalid job id {job_id!r}: id: must be 1-64 characters of A-Z a-z 0-9 . _ -",
                                  "id", "must be 1-64 characters of A-Z a-z 0-9 . _ -")
        options = dict(self._defaults)
        given = dict(misfire_policy=misfire_policy, misfire_fire_all_limit=misfire_fire_all_limit,
                     overlap_policy=overlap_policy, max_instances=max_instances, max_queued=max_queued,
                     timeout=timeout, retries=retries, retry_interval=retry_interval, retry_backoff=retry_backoff,
                     retry_max_interval=retry_max_interval, retry_jitter=retry_jitter,
                     retry_on_timeout=retry_on_timeout)
        options.update({k: v for k, v in given.items() if v is not None})
        schedule, run_now = self._make_trigger(trigger, job_id, trigger_args)
        job = Job(self, job_id, name if name is not None else _callable_name(func), func, tuple(args or ()),
                  dict(kwargs or {}), schedule, bool(paused), options)
        with self._lock:
            if job_id in self._jobs and not replace_existing:
                raise ConflictingIdError(job_id)
            self._upsert(job)
            self._jobs[job_id] = job
            if run_now and not paused:
                if self._running and self._engine is not None:
                    self._engine.trigger(job_id, {})
                else:
                    self._run_now.append(job_id)
        return job

    def scheduled_job(self, trigger: Union[str, Schedule, None] = None, **kwargs: Any):
        """Decorator form of :meth:`add_job`: ``@scheduler.scheduled_job("cron", expr="0 * * * *")``."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            self.add_job(func, trigger, **kwargs)
            return func

        return register

    def modify_job(self, job_id: str, **changes: Any) -> Job:
        """Changes ``func``, ``args``, ``kwargs``, ``name`` or any option of ``add_job``
        (``timeout=60``, ``overlap_policy="queue"``, ...); returns the job. Runs in
        progress keep the settings they started with."""
        with self._lock:
            job = self._get(job_id)
            options = dict(job.options)
            fields = {"func": job.func, "args": job.args, "kwargs": job.kwargs, "name": job.name}
            for key, value in changes.items():
                if key in _OPTION_NAMES:
                    options[key] = value
                elif key in fields:
                    fields[key] = value
                else:
                    raise TypeError(f"modify_job: unknown setting {key!r}")
            updated = Job(self, job.id, fields["name"], fields["func"], tuple(fields["args"] or ()),
                          dict(fields["kwargs"] or {}), job.trigger, job.paused, options)
            if not callable(updated.func):
                raise TypeError(f"func: {updated.func!r} is not callable")
            if options != job.options:
                self._upsert(updated)
            self._jobs[job_id] = updated
            return updated

    def reschedule_job(self, job_id: str, trigger: Union[str, Schedule, None] = None, **trigger_args: Any) -> Job:
        """Gives the job another trigger (the same forms as ``add_job``); returns the job."""
        with self._lock:
            job = self._get(job_id)
            schedule, run_now = self._make_trigger(trigger, job_id, trigger_args)
            updated = Job(self, job.id, job.name, job.func, job.args, job.kwargs, schedule, job.paused, job.options)
            self._upsert(updated)
            self._jobs[job_id] = updated
            if run_now and not job.paused and self._running and self._engine is not None:
                self._engine.trigger(job_id, {})
            return updated

    def remove_job(self, job_id: str) -> None:
        """Unregisters the job (:class:`JobLookupError` when unknown). A run in progress
        finishes and is recorded; queued fires are recorded CANCELLED."""
        with self._lock:
            self._get(job_id)
            if self._engine is not None and not self._engine.closed:
                self._engine.update([], [job_id])
            del self._jobs[job_id]

    def remove_all_jobs(self) -> None:
        """Unregisters every job."""
        with self._lock:
            ids = list(self._jobs)
            if self._engine is not None and not self._engine.closed and ids:
                self._engine.update([], ids)
            self._jobs.clear()

    def pause_job(self, job_id: str) -> Job:
        """Stops firing the job; it stays registered (``next_run_time`` is None)."""
        return self._set_paused(job_id, True)

    def resume_job(self, job_id: str) -> Job:
        """Fires the job again from its next time after now."""
        return self._set_paused(job_id, False)

    def get_job(self, job_id: str) -> Optional[Job]:
        """The job, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def get_jobs(self) -> List[Job]:
        """Every job, paused ones included; ``job.next_run_time`` tells when each runs next."""
        with self._lock:
            return list(self._jobs.values())

    def run_job(self, job_id: str, params: Optional[Mapping[str, str]] = None) -> str:
        """Runs the job now (trigger ``manual``) under its policies; returns the execution
        id. ``params`` reach the function through ``current_run().params``."""
        with self._lock:
            self._get(job_id)
            engine = self._require_running()
        return engine.trigger(job_id, {str(k): str(v) for k, v in (params or {}).items()})

    def cancel(self, execution_id: str, reason: str = "") -> bool:
        """Cancels a pending or running execution (a coroutine is cancelled; a thread runs on
        but its outcome is ignored); False when there is none with that id."""
        return self._require_running().cancel(execution_id, "user", reason)

    # --- history ----------------------------------------------------------------------

    def get_executions(self, job_id: Optional[str] = None, status: Optional[str] = None, limit: int = 100,
                       offset: int = 0, since: Optional[DateTimeLike] = None, until: Optional[DateTimeLike] = None,
                       newest_first: bool = True) -> List[Execution]:
        """Recorded runs, newest first: of one job, of one status (``success``,
        ``failure``, ...), scheduled in [since, until)."""
        engine = self._require_engine()
        rows = engine.executions(
            job_id, status, int(limit), int(offset), bool(newest_first),
            None if since is None else to_unix(since, self._tzinfo, "since"),
            None if until is None else to_unix(until, self._tzinfo, "until"))
        return [Execution._from_record(r, self._tzinfo) for r in rows]

    def get_execution(self, execution_id: str) -> Optional[Execution]:
        """One recorded run, or None."""
        row = self._require_engine().execution(execution_id)
        return None if row is None else Execution._from_record(row, self._tzinfo)

    def get_log(self, execution_id: str) -> Optional[str]:
        """The full log of a finished run (the traceback of an exception, the repr of a
        result) while retention keeps it; None otherwise."""
        return self._require_engine().full_log(execution_id)

    def get_daily_stats(self, start: Union[_dt.date, str, None] = None, end: Union[_dt.date, str, None] = None,
                        job_id: Optional[str] = None) -> List[DailyStats]:
        """Per-job counts of the local days [start, end] (default: today) in the scheduler's
        zone: total, success, failure, timeout, cancelled, skipped, missed, durations."""
        today = _dt.datetime.now(self._tzinfo).date()
        first = _as_date(start, today, "start")
        last = _as_date(end, first, "end")
        rows = self._require_engine().daily_stats(first.isoformat(), last.isoformat(), job_id)
        return [DailyStats._from_record(r) for r in rows]

    def wait_for(self, execution_id: str, timeout: Optional[float] = None) -> Execution:
        """Blocks until the execution reaches a final state and returns it; TimeoutError
        after ``timeout`` seconds. (From a coroutine: ``await loop.run_in_executor(...)``.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.get_execution(execution_id)
            if found is not None and found.finished:
                return found
            with self._finished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"execution {execution_id} did not finish within {timeout} s")
                self._finished.wait(0.05 if remaining is None else min(0.05, remaining))

    def add_listener(self, callback: Callable[[Execution], None]) -> None:
        """Calls ``callback(execution)`` for every run that reaches a final state (once it is
        durable). It runs on the engine's thread: keep it short; exceptions are reported
        and ignored."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[Execution], None]) -> None:
        with self._lock:
            self._listeners.remove(callback)

    # --- internals --------------------------------------------------------------------

    def _get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobLookupError(job_id)
        return job

    def _require_engine(self) -> "_native.Engine":
        """The engine, for reads: after shutdown, the closed one (its store stays readable)."""
        with self._lock:
            return self._engine if self._engine is not None else self._ensure_engine()

    def _require_running(self) -> "_native.Engine":
        with self._lock:
            if not self._running or self._engine is None:
                raise SchedulerNotRunning("the scheduler is not running")
            return self._engine

    def _ensure_engine(self) -> "_native.Engine":
        """A live engine holding every job; a new one after shutdown (a ``:memory:`` store
        then starts an empty history)."""
        if self._engine is None or self._engine.closed:
            engine = _native.Engine(self._db_path, self._tz_name, self._agent_id, self._full_logs_per_task,
                                    self._retention_hours, 10 * 1024, self._dispatch)
            _live_schedulers.add(self)  # closed at exit, started or not
            engine.set_listener(self._on_final)
            if self._jobs:
                refused = engine.update([self._job_spec(j) for j in self._jobs.values()], [])
                if refused:
                    engine.close(0.0)
                    raise InvalidSchedule(refused[0][3], refused[0][1], refused[0][2])
            self._engine = engine
        return self._engine

    def _upsert(self, job: Job) -> None:
        spec = self._job_spec(job)
        engine = self._ensure_engine()
        engine.validate(spec)  # refused before anything changes
        refused = engine.update([spec], [])
        if refused:
            _, field, reason, message = refused[0]
            raise InvalidSchedule(message, field, reason)

    def _set_paused(self, job_id: str, paused: bool) -> Job:
        with self._lock:
            job = self._get(job_id)
            if job.paused != paused:
                updated = Job(self, job.id, job.name, job.func, job.args, job.kwargs, job.trigger, paused, job.options)
                self._upsert(updated)
                self._jobs[job_id] = updated
                job = updated
            return job

    def _job_spec(self, job: Job) -> Dict[str, Any]:
        o = job.options
        spec: Dict[str, Any] = {
            "id": job.id,
            "description": job.name[:512],
            "enabled": not job.paused,
            "schedule": job.trigger.spec(),
        }
        if o.get("timeout") is not None:
            spec["timeout"] = seconds_of(o["timeout"], "timeout", minimum=1)
        if o.get("max_instances") is not None:
            spec["max_concurrent"] = int(o["max_instances"])
        if o.get("overlap_policy") is not None:
            spec["overlap"] = str(o["overlap_policy"])
        if o.get("max_queued") is not None:
            spec["max_queued"] = int(o["max_queued"])
        if o.get("misfire_policy") is not None:
            spec["misfire"] = str(o["misfire_policy"])
        if o.get("misfire_fire_all_limit") is not None:
            spec["misfire_fire_all_limit"] = int(o["misfire_fire_all_limit"])
        if o.get("retries"):
            spec["retry"] = {
                "max_retries": int(o["retries"]),
                "interval": seconds_of(o["retry_interval"], "retry_interval") if o.get("retry_interval") else 0,
                "backoff": float(o.get("retry_backoff") or 0.0),
                "max_interval": seconds_of(o["retry_max_interval"], "retry_max_interval")
                if o.get("retry_max_interval") else 0,
                "jitter": seconds_of(o["retry_jitter"], "retry_jitter") if o.get("retry_jitter") else 0,
                "on_timeout": bool(o.get("retry_on_timeout")),
            }
        return spec

    def _make_trigger(self, trigger: Union[str, Schedule, None], job_id: str, args: Dict[str, Any]):
        """The Schedule of a trigger, and whether the job runs once right away (no trigger)."""
        args = dict(args)
        if isinstance(trigger, Schedule):
            if args:
                raise TypeError(f"unexpected trigger arguments with a Schedule: {', '.join(args)}")
            return trigger.renamed(job_id), False
        if trigger is None:
            if args:
                raise TypeError(f"unexpected trigger arguments without a trigger: {', '.join(args)}")
            return Schedule.manual(name=job_id), True
        if not isinstance(trigger, str):
            raise TypeError(f"trigger: {trigger!r} is neither a trigger name nor a quartzflow.Schedule")
        tz = args.pop("timezone", None)
        tz = self._tz_name if tz is None else tz
        common = dict(timezone=tz, name=job_id)
        if trigger in ("cron", "interval", "fixed_delay"):
            common.update(start=args.pop("start_date", None), end=args.pop("end_date", None),
                          jitter=args.pop("jitter", None) or 0, max_runs=args.pop("max_runs", 0))
        if trigger == "cron":
            expr = args.pop("expr", None) or args.pop("cron", None)
            gap = args.pop("gap", "shift")
            overlap = args.pop("overlap", "first")
            fields = {k: args.pop(k) for k in list(args) if k in _CRON_FIELDS}
            if expr is None:
                expr = _cron_from_fields(fields)
            elif fields:
                raise TypeError(f"cron: give expr or the fields ({', '.join(fields)}), not both")
            schedule = Schedule.cron(expr, gap=gap, overlap=overlap, **common)
        elif trigger in ("interval", "fixed_delay"):
            period = {k: args.pop(k) for k in ("weeks", "days", "hours", "minutes", "seconds") if k in args}
            if trigger == "interval" and common["start"] is None:
                total = seconds_of(_dt.timedelta(**{k: float(v) for k, v in period.items()}), "interval", 1)
                common["start"] = int(time.time()) + total
            make = Schedule.interval if trigger == "interval" else Schedule.fixed_delay
            schedule = make(**period, **common)
        elif trigger == "date":
            run_date = args.pop("run_date", None)
            if run_date is None:
                raise InvalidSchedule("invalid date trigger: run_date: is required", "run_date", "is required")
            schedule = Schedule.once(run_date, timezone=tz, name=job_id)
        elif trigger == "manual":
            schedule = Schedule.manual(name=job_id)
        else:
            raise InvalidSchedule(f"invalid trigger {trigger!r}: trigger: must be one of cron, interval, "
                                  "fixed_delay, date, manual", "trigger",
                                  "must be one of cron, interval, fixed_delay, date, manual")
        if args:
            raise TypeError(f"unexpected {trigger} trigger arguments: {', '.join(sorted(args))}")
        return schedule, False

    def _next_run_time(self, job: Job) -> Optional[_dt.datetime]:
        if job.paused:
            return None
        fire = job.trigger.fires(int(time.time()), 1)
        return fire[0].start_at.astimezone(self._tzinfo) if fire else None

    # Engine thread, GIL held: hand the run over and return at once.
    def _dispatch(self, job_id: str, execution_id: str, attempt: int, scheduled: int, params: Dict[str, str],
                  handle: "_native.RunHandle") -> None:
        job = self._jobs.get(job_id)
        if job is None:
            handle.finish("failure", "", f"no job {job_id!r} is registered in this scheduler", "unknown job")
            return
        run = RunInfo(job_id, execution_id, attempt, from_unix(scheduled, self._tzinfo), dict(params))
        try:
            if job._is_coroutine:
                loop = self._coroutine_loop()
                loop.call_soon_threadsafe(self._start_coroutine, loop, job, run, handle)
            else:
                pool = self._pool
                if pool is None:
                    raise RuntimeError("the scheduler is shutting down")
                pool.submit(functools.partial(self._run_sync, job, run, handle))
        except RuntimeError as exc:
            handle.finish("failure", "", f"could not start the job: {exc}", "not started")

    @staticmethod
    def _run_sync(job: Job, run: RunInfo, handle: "_native.RunHandle") -> None:
        if handle.finished:  # cancelled or timed out while it waited for a worker
            return
        token = _current_run.set(run)
        try:
            result = job.func(*job.args, **job.kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except BaseException as exc:  # noqa: B902 - every failure is the job's outcome
            handle.finish("failure", run._output(_format_traceback(exc)), _describe_exception(exc), "exception")
        else:
            handle.finish("success", run._output(_result_output(result)))
        finally:
            _current_run.reset(token)

    def _start_coroutine(self, loop: asyncio.AbstractEventLoop, job: Job, run: RunInfo,
                         handle: "_native.RunHandle") -> None:
        if handle.finished:
            return
        context = contextvars.copy_context()
        context.run(_current_run.set, run)
        try:
            coro = context.run(job.func, *job.args, **job.kwargs)
            task = loop.create_task(coro, context=context)
        except BaseException as exc:  # noqa: B902
            handle.finish("failure", run._output(_format_traceback(exc)), _describe_exception(exc), "exception")
            return
        self._tasks.add(task)

        def stop(reason: str) -> None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop is closed: nothing left to cancel
                pass

        if not handle.set_stop_callback(stop):
            task.cancel()
        task.add_done_callback(functools.partial(self._coroutine_done, handle, run))

    def _coroutine_done(self, handle: "_native.RunHandle", run: RunInfo, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if task.cancelled():
            handle.finish("cancelled", run._output(""), "the coroutine was cancelled", "cancelled")
            return
        exc = task.exception()
        if exc is not None:
            handle.finish("failure", run._output(_format_traceback(exc)), _describe_exception(exc), "exception")
        else:
            handle.finish("success", run._output(_result_output(task.result())))

    def _coroutines_running(self) -> bool:
        return any(not t.done() for t in list(self._tasks))

    @staticmethod
    def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False

    def _coroutine_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None:
            if self._loop.is_closed():
                raise RuntimeError("the scheduler's event loop is closed")
            return self._loop
        with self._loop_lock:
            if self._private_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="quartzflow-asyncio", daemon=True)
                thread.start()
                self._private_loop, self._private_loop_thread = loop, thread
            return self._private_loop

    # Engine thread, GIL held.
    def _on_final(self, record: Dict[str, Any]) -> None:
        with self._finished:
            self._finished.notify_all()
        listeners = list(self._listeners)
        if not listeners:
            return
        execution = Execution._from_record(record, self._tzinfo)
        for listener in listeners:
            try:
                listener(execution)
            except Exception:
                _log.exception("quartzflow: listener %r failed", listener)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _as_date(value: Union[_dt.date, str, None], default: _dt.date, field: str) -> _dt.date:
    if value is None:
        return default
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidSchedule(f"invalid {field} {value!r}: {field}: is not a date (YYYY-MM-DD)", field,
                              "is not a date (YYYY-MM-DD)") from None


_CRON_FIELDS = ("second", "minute", "hour", "day", "month", "day_of_week", "year", "week")


def _cron_from_fields(fields: Dict[str, Any]) -> str:
    """A 7-field expression from APScheduler-style fields: the fields below the most
    significant one given default to their minimum, the others to ``*``."""
    if "week" in fields:
        raise InvalidSchedule("invalid cron trigger: week: ISO week numbers are not supported", "week",
                              "ISO week numbers are not supported")
    order = ["year", "month", "day", "day_of_week", "hour", "minute", "second"]
    minimum = {"year": "*", "month": "1", "day": "1", "day_of_week": "*", "hour": "0", "minute": "0",
               "second": "0"}
    given = [f for f in order if f in fields and fields[f] is not None]
    if not given:
        raise InvalidSchedule("invalid cron trigger: expr: give an expression or at least one field", "expr",
                              "give an expression or at least one field")
    most = min(order.index(f) for f in given)
    values = {}
    for i, f in enumerate(order):
        if f in fields and fields[f] is not None:
            values[f] = str(fields[f]).replace(" ", "")
        elif i > most and f != "day_of_week":
            values[f] = minimum[f]
        else:
            values[f] = "*"
    if values["day_of_week"] != "*" and values["day"] in ("1", "*") and "day" not in fields:
        values["day"] = "*"
    fields_out = ["second", "minute", "hour", "day", "month", "day_of_week"] + (["year"] if values["year"] != "*" else [])
    return " ".join(values[f] for f in fields_out)
