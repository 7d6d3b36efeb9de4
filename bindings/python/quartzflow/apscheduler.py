# SPDX-License-Identifier: Apache-2.0
# APScheduler 3.x calls over quartzflow.Scheduler, so that a program moves by changing its
# imports. What differs is listed in bindings/python/APSCHEDULER.md.
"""APScheduler 3.x compatibility for QuartzFlow.

Change the imports and keep the program::

    # from apscheduler.schedulers.asyncio import AsyncIOScheduler
    # from apscheduler.triggers.cron import CronTrigger
    from quartzflow.apscheduler import AsyncIOScheduler, CronTrigger

    scheduler = AsyncIOScheduler()
    scheduler.add_job(report, CronTrigger.from_crontab("*/5 * * * *"), id="report",
                      replace_existing=True)
    scheduler.start()

Triggers are translated to QuartzFlow schedules when a job is added (``CronTrigger`` to a
6- or 7-field cron expression, ``IntervalTrigger`` to ``@every``, ``DateTrigger`` to
``@once``); what QuartzFlow cannot express (the ``week`` field, a day and a day of week
both restricted, sub-second intervals) is refused with ValueError naming the field, never
run differently. Jobs run on ``quartzflow.Scheduler`` (the C++ TaskEngine): sync
callables on its worker threads, coroutine functions on the asyncio loop.
"""

import asyncio
import datetime as _dt
import importlib
import inspect
import threading
import uuid

__all__ = [
    "AsyncIOScheduler", "BackgroundScheduler", "BlockingScheduler", "CronTrigger", "IntervalTrigger", "DateTrigger",
    "Job", "JobLookupError", "ConflictingIdError", "SchedulerAlreadyRunningError", "SchedulerNotRunningError",
    "JobEvent", "JobExecutionEvent", "EVENT_JOB_EXECUTED", "EVENT_JOB_ERROR", "EVENT_JOB_ADDED", "EVENT_JOB_REMOVED",
    "EVENT_JOB_MISSED", "EVENT_JOB_MAX_INSTANCES", "EVENT_ALL", "STATE_STOPPED", "STATE_RUNNING", "STATE_PAUSED",
]

STATE_STOPPED, STATE_RUNNING, STATE_PAUSED = 0, 1, 2

# Event codes as APScheduler 3.x numbers them (apscheduler.events), so masks carry over.
EVENT_SCHEDULER_STARTED = 2**0
EVENT_SCHEDULER_SHUTDOWN = 2**1
EVENT_JOB_ADDED = 2**9
EVENT_JOB_REMOVED = 2**10
EVENT_JOB_MODIFIED = 2**11
EVENT_JOB_EXECUTED = 2**12
EVENT_JOB_ERROR = 2**13
EVENT_JOB_MISSED = 2**14
EVENT_JOB_SUBMITTED = 2**15
EVENT_JOB_MAX_INSTANCES = 2**16
EVENT_ALL = 2**17 - 1


class JobLookupError(KeyError):
    """No job with that id (as ``apscheduler.jobstores.base.JobLookupError``)."""

    def __init__(self, job_id):
        super().__init__(f"No job by the id of {job_id} was found")


class ConflictingIdError(KeyError):
    """A job with that id exists and ``replace_existing`` was not given."""

    def __init__(self, job_id):
        super().__init__(f"Job identifier ({job_id}) conflicts with an existing job")


class SchedulerAlreadyRunningError(Exception):
    def __str__(self):
        return "Scheduler is already running"


class SchedulerNotRunningError(Exception):
    def __str__(self):
        return "Scheduler is not running"


class JobEvent:
    def __init__(self, code, job_id, jobstore="default"):
        self.code = code
        self.job_id = job_id
        self.jobstore = jobstore


class JobExecutionEvent(JobEvent):
    """What listeners of EVENT_JOB_EXECUTED / EVENT_JOB_ERROR receive."""

    def __init__(self, code, job_id, jobstore, scheduled_run_time, retval=None, exception=None, traceback=None):
        super().__init__(code, job_id, jobstore)
        self.scheduled_run_time = scheduled_run_time
        self.retval = retval
        self.exception = exception
        self.traceback = traceback


# -- triggers ---------------------------------------------------------------------------------

_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # APScheduler's order: 0 is Monday
_CRON_DAY_NAMES = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_RANGES = {"year": (1970, 2199), "month": (1, 12), "day": (1, 31), "week": (1, 53), "day_of_week": (0, 6),
           "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
_DEFAULTS = {"year": "*", "month": 1, "day": 1, "week": "*", "day_of_week": "*", "hour": 0, "minute": 0, "second": 0}
_FIELD_NAMES = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
_ORDINALS = ["1st", "2nd", "3rd", "4th", "5th"]


def _zone_name(timezone):
    """An IANA zone name from a str, a zoneinfo.ZoneInfo, a pytz zone or datetime.timezone.utc."""
    if timezone is None:
        return None
    if isinstance(timezone, str):
        return timezone
    for attribute in ("key", "zone"):  # zoneinfo, pytz
        name = getattr(timezone, attribute, None)
        if isinstance(name, str):
            return name
    if timezone in (_dt.timezone.utc,):
        return "UTC"
    raise ValueError(f"timezone: {timezone!r} is not an IANA zone (give a name such as 'Europe/Paris' or a "
                     "zoneinfo.ZoneInfo)")


def _to_datetime(value, timezone, field):
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{field}: {value!r} is not a date or datetime") from None
    elif isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        value = _dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, _dt.datetime):
        raise ValueError(f"{field}: {value!r} is not a date or datetime")
    if value.tzinfo is None:
        value = value.replace(tzinfo=_zone_info(timezone))
    return value


def _zone_info(name):
    if not name:
        return _local_zone()
    import zoneinfo
    return zoneinfo.ZoneInfo(name)


def _local_zone():
    return _dt.datetime.now().astimezone().tzinfo


def _local_zone_name():
    """The host's IANA zone (APScheduler's default is the local zone, via tzlocal)."""
    import os
    tz = os.environ.get("TZ")
    if tz:
        return tz.lstrip(":")
    try:
        link = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in link:
            return link.split("/zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


class BaseTrigger:
    """A trigger translated to a QuartzFlow schedule (``self.schedule_text``)."""

    timezone = None
    jitter = None
    start_date = None
    end_date = None

    def _quartzflow(self, scheduler_zone):
        """(kind, arguments of quartzflow.Scheduler.add_job) for this trigger."""
        raise NotImplementedError


class CronTrigger(BaseTrigger):
    """``apscheduler.triggers.cron.CronTrigger``: fields as APScheduler reads them (day of
    week 0 is Monday, unset fields below the smallest one given default to their minimum),
    translated to a QuartzFlow cron expression (``second minute hour day month dow [year]``).

    Raises ValueError naming the field for what QuartzFlow cron cannot express: ``week``, a
    ``day`` and a ``day_of_week`` both restricted (APScheduler requires both, cron either),
    ``xth``/``last`` weekday positions beside a restricted day of week."""

    def __init__(self, year=None, month=None, day=None, week=None, day_of_week=None, hour=None, minute=None,
                 second=None, start_date=None, end_date=None, timezone=None, jitter=None):
        self.timezone = _zone_name(timezone)
        self.start_date = _to_datetime(start_date, self.timezone, "start_date")
        self.end_date = _to_datetime(end_date, self.timezone, "end_date")
        self.jitter = jitter
        given = {k: v for k, v in (("year", year), ("month", month), ("day", day), ("week", week),
                                   ("day_of_week", day_of_week), ("hour", hour), ("minute", minute),
                                   ("second", second)) if v is not None}
        self.fields = {}
        assign_defaults = False
        for name in _FIELD_NAMES:  # APScheduler's rule, from most significant to least
            if name in given:
                self.fields[name] = str(given.pop(name)).strip()
                assign_defaults = not given
            elif assign_defaults:
                self.fields[name] = str(_DEFAULTS[name])
            else:
                self.fields[name] = "*"
        self.expression = self._translate()

    @classmethod
    def from_crontab(cls, expr, timezone=None):
        """``minute hour day month day_of_week``, as APScheduler 3.x reads it (its day of
        week numbers start at Monday = 0, unlike cron's Sunday = 0: names such as ``mon-fri``
        mean the same in both)."""
        values = expr.split()
        if len(values) != 5:
            raise ValueError(f"Wrong number of fields; got {len(values)}, expected 5")
        return cls(minute=values[0], hour=values[1], day=values[2], month=values[3], day_of_week=values[4],
                   timezone=timezone)

    def _translate(self):
        f = self.fields
        if f["week"] != "*":
            raise ValueError(f"week: {f['week']!r}: QuartzFlow cron has no ISO week field (use day and month)")
        for name in ("year", "month", "hour", "minute", "second"):
            f_value = f[name]
            for part in f_value.split(","):
                self._check_range_expression(name, part)
        day, dow = f["day"], self._day_of_week(f["day_of_week"])
        day_restricted = not day.startswith("*")
        dow_restricted = dow != "*"
        raw_parts = [p.strip() for p in day.split(",")]
        parts = [p.lower() for p in raw_parts]
        positions = [p for p in parts if p == "last" or p.split(" ")[0] in _ORDINALS + ["last"]]
        if positions:
            if len(parts) != 1:
                raise ValueError(f"day: {day!r}: a weekday position or 'last' cannot be in a list in QuartzFlow cron")
            word, _, weekday = parts[0].partition(" ")
            if not weekday:  # "last": the last day of the month
                day = "L"
            else:
                if dow_restricted:
                    raise ValueError(f"day: {day!r} with day_of_week {f['day_of_week']!r}: QuartzFlow cron cannot "
                                     "combine a weekday position with a day of week")
                weekday_index = self._weekday_index(weekday, "day")
                name = _CRON_DAY_NAMES[weekday_index]
                dow = f"{name}L" if word == "last" else f"{name}#{_ORDINALS.index(word) + 1}"
                day = "?"
        else:
            for part in raw_parts:
                self._check_range_expression("day", part)
            if day_restricted and dow_restricted:
                raise ValueError(f"day: {day!r} and day_of_week {f['day_of_week']!r}: APScheduler runs on days that "
                                 "match both, QuartzFlow cron (Vixie) on days that match either; give one of them")
        if day == "*" and dow_restricted:
            day = "?"
        fields = [f["second"], f["minute"], f["hour"], day, f["month"], dow]
        if f["year"] != "*":
            fields.append(f["year"])
        expression = " ".join(fields)
        try:  # QuartzFlow's own checks (an expression that never fires...), now rather than at start
            from . import cron
        except ImportError:  # the native module is not built: the scheduler will check it
            return expression
        cron.parse(expression, self.timezone or "UTC")
        return expression

    @staticmethod
    def _weekday_index(text, field):
        text = text.strip().lower()
        if text.isdigit() and int(text) <= 6:
            return int(text)
        if text in _WEEKDAYS:
            return _WEEKDAYS.index(text)
        raise ValueError(f"{field}: {text!r} is not a day of week (mon-sun or 0-6, 0 is Monday)")

    def _day_of_week(self, text):
        """APScheduler's day of week (0 = Monday, names, ranges that do not wrap, steps) as an
        explicit cron list of names, so numbering cannot be confused."""
        if text == "*":
            return "*"
        days = set()
        for part in text.split(","):
            part = part.strip().lower()
            step = 1
            if "/" in part:
                part, _, step_text = part.partition("/")
                if not step_text.isdigit() or int(step_text) == 0:
                    raise ValueError(f"day_of_week: {text!r}: step {step_text!r} is not a positive number")
                step = int(step_text)
            if part == "*":
                first, last = 0, 6
            elif "-" in part:
                a, _, b = part.partition("-")
                first, last = self._weekday_index(a, "day_of_week"), self._weekday_index(b, "day_of_week")
                if last < first:
                    raise ValueError(f"day_of_week: {text!r}: the minimum value in a range must not be higher "
                                     "than the maximum")
            else:
                first = self._weekday_index(part, "day_of_week")
                last = 6 if step > 1 else first
            days.update(range(first, last + 1, step))
        if days == set(range(7)):
            return "*"
        return ",".join(_CRON_DAY_NAMES[d] for d in sorted(days))

    @staticmethod
    def _check_range_expression(name, part):
        """APScheduler's forms: ``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, ``a/n`` (names for
        months); anything else (cron's ``L``, ``W``, ``#``, ``H``, ``?``) is not APScheduler."""
        import re
        lo, hi = _RANGES[name]
        text = part.strip().lower()
        if re.fullmatch(r"\*(/\d+)?", text):
            if "/" in text and int(text[2:]) == 0:
                raise ValueError(f"{name}: {part!r}: the step must be positive")
            return
        m = re.fullmatch(r"([a-z]+|\d+)(?:-([a-z]+|\d+))?(?:/(\d+))?", text)
        if not m:
            raise ValueError(f"{name}: {part!r} is not an APScheduler expression (*, */n, a, a-b, a-b/n)")

        def number(token):
            if token.isdigit():
                return int(token)
            if name == "month" and token in _MONTHS:
                return _MONTHS.index(token) + 1
            raise ValueError(f"{name}: {part!r}: {token!r} is not a number")

        first = number(m.group(1))
        last = number(m.group(2)) if m.group(2) else first
        for value in (first, last):
            if not lo <= value <= hi:
                raise ValueError(f"{name}: {part!r}: {value} is out of range {lo}-{hi}")
        if last < first:
            raise ValueError(f"{name}: {part!r}: the minimum value in a range must not be higher than the maximum")
        if m.group(3) is not None and int(m.group(3)) == 0:
            raise ValueError(f"{name}: {part!r}: the step must be positive")

    def _quartzflow(self, scheduler_zone):
        return "cron", {"expr": self.expression, "timezone": self.timezone or scheduler_zone}

    def __repr__(self):
        shown = ", ".join(f"{k}={v!r}" for k, v in self.fields.items() if v != "*")
        return f"<CronTrigger ({shown}, timezone='{self.timezone or 'scheduler'}') -> {self.expression!r}>"

    def __str__(self):
        return "cron[" + ", ".join(f"{k}='{v}'" for k, v in self.fields.items() if v != "*") + "]"


class IntervalTrigger(BaseTrigger):
    """``apscheduler.triggers.interval.IntervalTrigger`` as a QuartzFlow interval of whole
    seconds (at least 1): fires at ``start_date`` + k periods, by default from when the job
    is handed to QuartzFlow (added to a running scheduler, or ``start()``) plus one period."""

    def __init__(self, weeks=0, days=0, hours=0, minutes=0, seconds=0, start_date=None, end_date=None,
                 timezone=None, jitter=None):
        self.interval = _dt.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
        total = self.interval.total_seconds()
        if total < 1 or total != int(total):
            raise ValueError(f"seconds: an interval of {total:g} s: QuartzFlow intervals are whole seconds, at least 1")
        self.seconds = int(total)
        self.timezone = _zone_name(timezone)
        self.start_date = _to_datetime(start_date, self.timezone, "start_date")
        self.end_date = _to_datetime(end_date, self.timezone, "end_date")
        self.jitter = jitter

    def _quartzflow(self, scheduler_zone):
        return "interval", {"seconds": self.seconds}

    def __str__(self):
        return f"interval[{self.interval}]"

    def __repr__(self):
        return f"<IntervalTrigger (interval={self.interval!r})>"


class DateTrigger(BaseTrigger):
    """``apscheduler.triggers.date.DateTrigger``: one run at ``run_date`` (default now)."""

    def __init__(self, run_date=None, timezone=None):
        self.timezone = _zone_name(timezone)
        self.run_date = _to_datetime(run_date, self.timezone, "run_date") or _dt.datetime.now(_dt.timezone.utc)

    def _quartzflow(self, scheduler_zone):
        if self.run_date <= _dt.datetime.now(_dt.timezone.utc):
            return None, {}  # due already (APScheduler runs it within the grace time): run it now
        return "date", {"run_date": self.run_date}

    def __str__(self):
        return f"date[{self.run_date.isoformat()}]"

    def __repr__(self):
        return f"<DateTrigger (run_date={self.run_date.isoformat()!r})>"


def _make_trigger(trigger, trigger_args):
    if trigger is None:
        trigger = "date"
    if isinstance(trigger, BaseTrigger):
        if trigger_args:
            raise TypeError(f"trigger arguments {sorted(trigger_args)} are given with a trigger object")
        return trigger
    kinds = {"cron": CronTrigger, "interval": IntervalTrigger, "date": DateTrigger}
    if trigger not in kinds:
        raise ValueError(f"trigger: {trigger!r} is not one of cron, interval, date (or a trigger object from "
                         "quartzflow.apscheduler)")
    return kinds[trigger](**trigger_args)


# -- jobs and schedulers ----------------------------------------------------------------------

class _Undefined:
    def __repr__(self):
        return "undefined"


undefined = _Undefined()


def _native_id(job_id):
    """QuartzFlow job ids are 1-64 characters of ``[A-Za-z0-9._-]``; APScheduler's are any
    text: others map to a readable prefix and a hash of the whole id."""
    import hashlib
    import re
    if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", job_id):
        return job_id
    digest = hashlib.sha1(job_id.encode()).hexdigest()[:16]
    return re.sub(r"[^A-Za-z0-9._-]", "_", job_id)[:40] + "-" + digest


def _resolve(func):
    if isinstance(func, str):  # APScheduler's textual reference, "package.module:callable"
        module, _, attribute = func.partition(":")
        target = importlib.import_module(module)
        for name in attribute.split("."):
            target = getattr(target, name)
        return target
    if not callable(func):
        raise TypeError(f"func: {func!r} is not callable")
    return func


class Job:
    """A scheduled job, as ``apscheduler.job.Job``: ``id``, ``name``, ``func``, ``args``,
    ``kwargs``, ``trigger``, ``next_run_time`` (None while paused) and the usual methods."""

    __slots__ = ("_scheduler", "id", "func", "trigger", "args", "kwargs", "name", "misfire_grace_time", "coalesce",
                 "max_instances", "paused", "_native_id")

    def __init__(self, scheduler, job_id, func, trigger, args, kwargs, name, misfire_grace_time, coalesce,
                 max_instances):
        self._scheduler = scheduler
        self.id = job_id
        self.func = func
        self.trigger = trigger
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.name = name or getattr(func, "__qualname__", None) or repr(func)
        self.misfire_grace_time = misfire_grace_time
        self.coalesce = coalesce
        self.max_instances = max_instances
        self.paused = False
        self._native_id = _native_id(job_id)

    @property
    def next_run_time(self):
        return self._scheduler._next_run_time(self)

    @property
    def pending(self):
        return not self._scheduler.running

    def modify(self, **changes):
        self._scheduler.modify_job(self.id, **changes)
        return self

    def reschedule(self, trigger, **trigger_args):
        self._scheduler.reschedule_job(self.id, trigger=trigger, **trigger_args)
        return self

    def pause(self):
        self._scheduler.pause_job(self.id)
        return self

    def resume(self):
        self._scheduler.resume_job(self.id)
        return self

    def remove(self):
        self._scheduler.remove_job(self.id)

    def __str__(self):
        when = self.next_run_time
        status = f"next run at: {when:%Y-%m-%d %H:%M:%S %Z}" if when else "paused" if self.paused else "pending"
        return f"{self.name} (trigger: {self.trigger}, {status})"

    def __repr__(self):
        return f"<Job (id={self.id} name={self.name})>"


class BaseScheduler:
    """APScheduler 3.x's scheduler interface over one ``quartzflow.Scheduler``.

    Options as APScheduler's: ``timezone`` (default: the host's zone), ``job_defaults``
    (``misfire_grace_time``, ``coalesce``, ``max_instances``). ``jobstores`` and
    ``executors`` other than the in-memory default and a thread pool are refused: jobs are
    Python callables and live as long as the scheduler; every run is recorded in
    QuartzFlow's store (``scheduler.quartzflow``, the underlying ``quartzflow.Scheduler``).

    Thread safety: calls may come from any thread (a lock guards the job table).
    """

    def __init__(self, gconfig=None, **options):
        options = dict(gconfig or {}, **options)
        self._lock = threading.RLock()
        self._jobs = {}  # id -> Job, in insertion order
        self._job_ids = {}  # QuartzFlow's job id -> APScheduler's
        self._listeners = []
        self.state = STATE_STOPPED
        self.quartzflow = None
        self._timezone = _zone_name(options.pop("timezone", None)) or _local_zone_name()
        defaults = dict(options.pop("job_defaults", None) or {})
        self._job_defaults = {"misfire_grace_time": defaults.pop("misfire_grace_time", 1),
                              "coalesce": defaults.pop("coalesce", True),
                              "max_instances": defaults.pop("max_instances", 1)}
        if defaults:
            raise ValueError(f"job_defaults: {sorted(defaults)[0]}: not an APScheduler job default")
        self._scheduler_options = dict(options.pop("quartzflow", {}))  # passed to quartzflow.Scheduler
        for key in ("jobstores", "executors"):
            value = options.pop(key, None)
            if value and any(not self._acceptable_plugin(key, v) for v in value.values()):
                raise ValueError(f"{key}: QuartzFlow keeps jobs in memory and runs them on its own workers; "
                                 "only the default memory job store and thread pool executor are accepted")
            for plugin in (value or {}).values() if key == "executors" else ():
                workers = plugin.get("max_workers") if isinstance(plugin, dict) else getattr(
                    getattr(plugin, "_pool", None), "_max_workers", None)
                if workers:
                    self._scheduler_options["max_workers"] = int(workers)
        if options:
            raise ValueError(f"{sorted(options)[0]}: not a scheduler option QuartzFlow reads")

    @staticmethod
    def _acceptable_plugin(key, value):
        name = value if isinstance(value, str) else type(value).__name__ if not isinstance(value, dict) else \
            value.get("type", "")
        return str(name).lower() in ("memory", "memoryjobstore", "threadpool", "threadpoolexecutor", "asyncio",
                                     "asyncioexecutor", "default")

    @property
    def running(self):
        return self.state != STATE_STOPPED

    @property
    def timezone(self):
        return _zone_info(self._timezone)

    # -- lifecycle ----------------------------------------------------------------------------

    def _create_quartzflow(self, loop=None):
        import quartzflow
        native = quartzflow.Scheduler(timezone=self._timezone, loop=loop, **self._scheduler_options)
        native.add_listener(self._on_record)
        return native

    def _event_loop(self):
        return None

    def start(self, paused=False):
        """Starts the scheduler: the jobs added so far are handed to a new
        ``quartzflow.Scheduler`` (``self.quartzflow``) and fire from now on."""
        with self._lock:
            if self.running:
                raise SchedulerAlreadyRunningError()
            native = self._create_quartzflow(self._event_loop())
            try:
                for job in list(self._jobs.values()):
                    self._native_add(native, job, paused or job.paused)
                native.start()
            except BaseException:
                native.shutdown(wait=False)
                raise
            self.quartzflow = native
            self.state = STATE_PAUSED if paused else STATE_RUNNING
        self._dispatch(JobEvent(EVENT_SCHEDULER_STARTED, None))

    def shutdown(self, wait=True):
        """Stops firing; with ``wait``, returns once the runs in progress have ended (up to
        the scheduler's ``shutdown_grace``, 30 s, after which they are cancelled)."""
        with self._lock:
            if not self.running:
                raise SchedulerNotRunningError()
            native = self.quartzflow
            self.state = STATE_STOPPED
        native.shutdown(wait=wait)
        self._dispatch(JobEvent(EVENT_SCHEDULER_SHUTDOWN, None))

    def pause(self):
        """Stops firing every job until ``resume()`` (runs in progress go on)."""
        with self._lock:
            if not self.running:
                raise SchedulerNotRunningError()
            for job in self._jobs.values():
                if not job.paused:
                    self.quartzflow.pause_job(job._native_id)
            self.state = STATE_PAUSED

    def resume(self):
        with self._lock:
            if not self.running:
                raise SchedulerNotRunningError()
            for job in self._jobs.values():
                if not job.paused:
                    self.quartzflow.resume_job(job._native_id)
            self.state = STATE_RUNNING

    def wakeup(self):
        """Nothing to do: QuartzFlow's engine wakes itself when jobs change."""

    # -- jobs ---------------------------------------------------------------------------------

    def add_job(self, func, trigger=None, args=None, kwargs=None, id=None, name=None,
                misfire_grace_time=undefined, coalesce=undefined, max_instances=undefined,
                next_run_time=undefined, jobstore="default", executor="default", replace_existing=False,
                **trigger_args):
        """As APScheduler's ``add_job``. ``trigger`` is ``"cron"``, ``"interval"``, ``"date"``
        (with its arguments as keywords) or a trigger object. Raises ConflictingIdError when
        ``id`` exists and ``replace_existing`` is false, ValueError for what QuartzFlow
        cannot schedule (before anything changes)."""
        func = _resolve(func)
        keep_paused = bool(trigger_args.pop("_paused", False))  # modify_job of a paused job
        trigger = _make_trigger(trigger, trigger_args)
        if next_run_time is not undefined:
            raise ValueError("next_run_time: not supported by QuartzFlow (use a DateTrigger, or start_date)")
        if jobstore != "default" or executor != "default":
            raise ValueError("jobstore/executor: QuartzFlow has one job store and one executor, 'default'")
        job = Job(self, str(id) if id is not None else uuid.uuid4().hex, func, trigger, args, kwargs, name,
                  self._job_defaults["misfire_grace_time"] if misfire_grace_time is undefined else misfire_grace_time,
                  self._job_defaults["coalesce"] if coalesce is undefined else coalesce,
                  self._job_defaults["max_instances"] if max_instances is undefined else max_instances)
        job.paused = keep_paused
        if not isinstance(job.max_instances, int) or job.max_instances < 1:
            raise ValueError(f"max_instances: {job.max_instances!r} is not a positive integer")
        with self._lock:
            old = self._jobs.get(job.id)
            if old is not None and not replace_existing:
                raise ConflictingIdError(job.id)
            if self.running:  # quartzflow.Scheduler replaces atomically: a refusal keeps the old job
                self._native_add(self.quartzflow, job, self.state == STATE_PAUSED or job.paused)
            self._jobs[job.id] = job
            self._job_ids[job._native_id] = job.id
        self._dispatch(JobEvent(EVENT_JOB_ADDED, job.id))
        return job

    def scheduled_job(self, trigger, args=None, kwargs=None, id=None, name=None, **options):
        """The decorator form of add_job."""
        def decorate(func):
            self.add_job(func, trigger, args, kwargs, id, name, **options)
            return func
        return decorate

    def get_job(self, job_id, jobstore=None):
        with self._lock:
            return self._jobs.get(job_id)

    def get_jobs(self, jobstore=None, pending=None):
        """The jobs, in the order APScheduler gives them: by next run time, paused last."""
        with self._lock:
            jobs = list(self._jobs.values())
        far = _dt.datetime.max.replace(tzinfo=_dt.timezone.utc)
        return sorted(jobs, key=lambda j: j.next_run_time or far)

    def remove_job(self, job_id, jobstore=None):
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                raise JobLookupError(job_id)
            self._job_ids.pop(job._native_id, None)
            if self.running:
                self.quartzflow.remove_job(job._native_id)
        self._dispatch(JobEvent(EVENT_JOB_REMOVED, job_id))

    def remove_all_jobs(self, jobstore=None):
        for job_id in list(self._jobs):
            self.remove_job(job_id)

    def pause_job(self, job_id, jobstore=None):
        with self._lock:
            job = self._lookup(job_id)
            if self.running:
                self.quartzflow.pause_job(job._native_id)
            job.paused = True
        return job

    def resume_job(self, job_id, jobstore=None):
        with self._lock:
            job = self._lookup(job_id)
            if self.running and self.state != STATE_PAUSED:
                self.quartzflow.resume_job(job._native_id)
            job.paused = False
        return job

    def modify_job(self, job_id, jobstore=None, **changes):
        with self._lock:
            job = self._lookup(job_id)
            unknown = set(changes) - {"func", "args", "kwargs", "name", "trigger", "misfire_grace_time", "coalesce",
                                      "max_instances"}
            if unknown:
                raise AttributeError(f"{sorted(unknown)[0]}: not a job attribute that can be modified")
            values = {k: getattr(job, k) for k in ("func", "trigger", "args", "kwargs", "name",
                                                   "misfire_grace_time", "coalesce", "max_instances")}
            values.update(changes)
            return self.add_job(values.pop("func"), values.pop("trigger"), id=job_id, replace_existing=True,
                                _paused=job.paused, **values)

    def reschedule_job(self, job_id, jobstore=None, trigger=None, **trigger_args):
        return self.modify_job(job_id, trigger=_make_trigger(trigger, trigger_args))

    def print_jobs(self, jobstore=None, out=None):
        import sys
        out = out or sys.stdout
        print("Jobstore default:", file=out)
        jobs = self.get_jobs()
        for job in jobs:
            print(f"    {job}", file=out)
        if not jobs:
            print("    No scheduled jobs", file=out)

    def _lookup(self, job_id):
        job = self._jobs.get(job_id)
        if job is None:
            raise JobLookupError(job_id)
        return job

    # -- listeners ----------------------------------------------------------------------------

    def add_listener(self, callback, mask=EVENT_ALL):
        with self._lock:
            self._listeners.append((callback, mask))

    def remove_listener(self, callback):
        with self._lock:
            self._listeners = [(c, m) for c, m in self._listeners if c != callback]

    def _dispatch(self, event):
        for callback, mask in list(self._listeners):
            if event.code & mask:
                try:
                    callback(event)
                except Exception:  # as APScheduler: a listener's error is logged, not raised
                    import logging
                    logging.getLogger("quartzflow.apscheduler").exception("listener %r failed", callback)

    # -- the QuartzFlow side --------------------------------------------------------------------

    def _runner(self, job):
        """The callable QuartzFlow runs: the job's function with its arguments, reporting to
        listeners; an exception still propagates, so QuartzFlow records a FAILURE."""
        func = job.func
        if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None)):
            return _CoroutineRunner(self, job)
        return _Runner(self, job)

    def _policies(self, job):
        """APScheduler's run options as QuartzFlow's: ``coalesce`` -> misfire ``fire_once``
        (else ``fire_all``); ``max_instances`` -> concurrent runs, a fire beyond them
        skipped (recorded SKIPPED, as APScheduler skips it with a warning)."""
        return {"misfire_policy": "fire_once" if job.coalesce else "fire_all",
                "max_instances": job.max_instances, "overlap_policy": "skip"}

    def _native_add(self, native, job, paused):
        kind, trigger_args = job.trigger._quartzflow(self._timezone)
        trigger = job.trigger
        if trigger.start_date is not None:
            trigger_args["start_date"] = trigger.start_date
        if trigger.end_date is not None:
            trigger_args["end_date"] = trigger.end_date
        if trigger.jitter:
            trigger_args["jitter"] = int(trigger.jitter)
        native.add_job(self._runner(job), kind, id=job._native_id, name=job.name, replace_existing=True,
                       paused=paused, **trigger_args, **self._policies(job))

    def _next_run_time(self, job):
        native = self.quartzflow
        if job.paused or not self.running or self.state == STATE_PAUSED:
            return None
        found = native.get_job(job._native_id)
        when = found.next_run_time if found is not None else None
        return when.astimezone(_zone_info(job.trigger.timezone or self._timezone)) if when else None

    def _on_record(self, execution):
        """QuartzFlow's final records that APScheduler reports as events of their own."""
        if execution.status not in ("missed", "skipped"):
            return
        job_id = self._job_ids.get(execution.job_id, execution.job_id)
        code = EVENT_JOB_MISSED if execution.status == "missed" else EVENT_JOB_MAX_INSTANCES
        self._dispatch(JobExecutionEvent(code, job_id, "default", execution.scheduled_time))


class _Runner:
    """What QuartzFlow runs for a job (one small object per job, not closures: 100,000 jobs
    are 100,000 of them)."""

    __slots__ = ("scheduler", "job")

    def __init__(self, scheduler, job):
        self.scheduler = scheduler
        self.job = job

    @property
    def __name__(self):  # QuartzFlow's default job name and its logs
        return getattr(self.job.func, "__name__", "job")

    @staticmethod
    def _scheduled_time():
        from .scheduler import current_run
        run = current_run()
        return run.scheduled_time if run is not None else _dt.datetime.now(_dt.timezone.utc)

    def _executed(self, result, scheduled):
        self.scheduler._dispatch(JobExecutionEvent(EVENT_JOB_EXECUTED, self.job.id, "default", scheduled,
                                                   retval=result))

    def _failed(self, error, scheduled):
        import traceback
        self.scheduler._dispatch(JobExecutionEvent(EVENT_JOB_ERROR, self.job.id, "default", scheduled,
                                                   exception=error,
                                                   traceback="".join(traceback.format_exception(error))))

    def __call__(self):
        job = self.job
        scheduled = self._scheduled_time()
        try:
            result = job.func(*job.args, **job.kwargs)
        except Exception as error:
            self._failed(error, scheduled)
            raise
        self._executed(result, scheduled)
        return result


class _CoroutineRunner(_Runner):
    __slots__ = ()

    async def __call__(self):
        job = self.job
        scheduled = self._scheduled_time()
        try:
            result = await job.func(*job.args, **job.kwargs)
        except Exception as error:
            self._failed(error, scheduled)
            raise
        self._executed(result, scheduled)
        return result


class BackgroundScheduler(BaseScheduler):
    """Runs in the background (QuartzFlow's engine thread); ``start()`` returns at once."""


class BlockingScheduler(BaseScheduler):
    """``start()`` blocks until ``shutdown()`` is called from a job or another thread."""

    def start(self, paused=False):
        self._stopped = threading.Event()
        super().start(paused)
        self._stopped.wait()

    def shutdown(self, wait=True):
        super().shutdown(wait)
        self._stopped.set()


class AsyncIOScheduler(BaseScheduler):
    """For asyncio programs: coroutine jobs run on the event loop (``event_loop`` option, else
    the loop running when ``start()`` is called, else the thread's event loop, as
    APScheduler), sync jobs on worker threads."""

    def __init__(self, gconfig=None, **options):
        self._eventloop = options.pop("event_loop", None)
        super().__init__(gconfig, **options)

    def _event_loop(self):
        if self._eventloop is None:
            try:
                self._eventloop = asyncio.get_running_loop()
            except RuntimeError:
                self._eventloop = asyncio.get_event_loop_policy().get_event_loop()
        return self._eventloop
