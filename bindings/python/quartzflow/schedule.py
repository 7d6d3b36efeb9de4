# SPDX-License-Identifier: Apache-2.0
"""Schedules: cron, interval, fixed delay, once and manual, each with a zone, an optional
window (no fire before ``start`` or after ``end``), a run limit and stable jitter.

``Schedule.cron("*/5 * * * *")``, ``Schedule.interval(minutes=30)``,
``Schedule.once(datetime(...))``, ``Schedule.from_text("@every 90s")``; then
``.next(after, count)`` for the start times, ``.fires(after, count)`` for nominal and start
times, ``.describe()``.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Dict, List, NamedTuple, Optional

from . import _native
from ._errors import InvalidSchedule
from ._time import DateTimeLike, TimeZoneLike, from_unix, seconds_of, to_unix, zone
from .cron import CronExpression

__all__ = ["Schedule", "Fire"]


class Fire(NamedTuple):
    """One fire: when it was due and when it starts (``scheduled`` plus its jitter)."""

    scheduled: _dt.datetime
    start_at: _dt.datetime


def _period(weeks=0, days=0, hours=0, minutes=0, seconds=0, field="interval") -> int:
    total = _dt.timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    return seconds_of(total, field, minimum=1)


class Schedule:
    """A validated schedule bound to a name (the seed of ``H`` fields and of jitter).

    Immutable; methods may be called from any thread. Build one with the class methods.
    """

    __slots__ = ("_schedule", "_tzinfo", "_name")

    def __init__(self, native: "_native.Schedule", tzinfo: _dt.tzinfo, name: str = "") -> None:
        self._schedule = native
        self._tzinfo = tzinfo
        self._name = name

    # --- construction -----------------------------------------------------------------

    @classmethod
    def _make(cls, kind: str, *, timezone: TimeZoneLike = None, start: Optional[DateTimeLike] = None,
              end: Optional[DateTimeLike] = None, max_runs: int = 0, jitter: Any = 0, name: str = "",
              gap: str = "shift", overlap: str = "first", **fields: Any) -> "Schedule":
        tz_name, tzinfo = zone(timezone)
        native = _native.Schedule.create(
            kind,
            time_zone=tz_name,
            gap=gap,
            overlap=overlap,
            window_start=None if start is None else to_unix(start, tzinfo, "start"),
            window_end=None if end is None else to_unix(end, tzinfo, "end"),
            max_runs=int(max_runs or 0),
            jitter=seconds_of(jitter or 0, "jitter"),
            name=name,
            **fields,
        )
        return cls(native, tzinfo, name)

    @classmethod
    def cron(cls, expression: str, *, timezone: TimeZoneLike = None, gap: str = "shift", overlap: str = "first",
             start: Optional[DateTimeLike] = None, end: Optional[DateTimeLike] = None, max_runs: int = 0,
             jitter: Any = 0, name: str = "") -> "Schedule":
        """A cron expression (5, 6 or 7 fields, or a macro) read in ``timezone``."""
        return cls._make("cron", cron=expression, timezone=timezone, gap=gap, overlap=overlap, start=start,
                         end=end, max_runs=max_runs, jitter=jitter, name=name)

    @classmethod
    def interval(cls, *, weeks: float = 0, days: float = 0, hours: float = 0, minutes: float = 0,
                 seconds: float = 0, timezone: TimeZoneLike = None, start: Optional[DateTimeLike] = None,
                 end: Optional[DateTimeLike] = None, max_runs: int = 0, jitter: Any = 0,
                 name: str = "") -> "Schedule":
        """Every period (whole seconds, at least 1), aligned to ``start`` (else the Unix epoch)."""
        return cls._make("interval", period=_period(weeks, days, hours, minutes, seconds), timezone=timezone,
                         start=start, end=end, max_runs=max_runs, jitter=jitter, name=name)

    @classmethod
    def fixed_delay(cls, *, weeks: float = 0, days: float = 0, hours: float = 0, minutes: float = 0,
                    seconds: float = 0, timezone: TimeZoneLike = None, start: Optional[DateTimeLike] = None,
                    end: Optional[DateTimeLike] = None, max_runs: int = 0, jitter: Any = 0,
                    name: str = "") -> "Schedule":
        """The period after the previous run ended (the first run one period after start)."""
        return cls._make("fixed_delay", period=_period(weeks, days, hours, minutes, seconds, "delay"),
                         timezone=timezone, start=start, end=end, max_runs=max_runs, jitter=jitter, name=name)

    @classmethod
    def once(cls, at: DateTimeLike, *, timezone: TimeZoneLike = None, jitter: Any = 0,
             name: str = "") -> "Schedule":
        """A single run at ``at`` (a naive datetime is read in ``timezone``)."""
        _, tzinfo = zone(timezone)
        return cls._make("once", at=to_unix(at, tzinfo, "run_date"), timezone=timezone, jitter=jitter, name=name)

    @classmethod
    def manual(cls, *, name: str = "") -> "Schedule":
        """No timed fires: runs only when triggered (``Scheduler.run_job``)."""
        return cls._make("manual", name=name)

    @classmethod
    def from_text(cls, text: str, *, timezone: TimeZoneLike = None, name: str = "") -> "Schedule":
        """The short text form: a cron expression or macro, ``@every 90s``, ``@delay 5m``,
        ``@once 2026-12-01T00:00:00Z`` or ``@manual``."""
        tz_name, tzinfo = zone(timezone)
        return cls(_native.Schedule.from_text(text, tz_name, name), tzinfo, name)

    def renamed(self, name: str) -> "Schedule":
        """The same schedule bound to another name (``H`` and jitter depend on it)."""
        if name == self._name:
            return self
        spec = self.spec()
        return Schedule(_native.Schedule.create(name=name, **spec), self._tzinfo, name)

    # --- queries ----------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``cron``, ``interval``, ``fixed_delay``, ``once`` or ``manual``."""
        return self.spec()["kind"]

    @property
    def timezone(self) -> str:
        return self.spec()["time_zone"]

    @property
    def tzinfo(self) -> _dt.tzinfo:
        return self._tzinfo

    @property
    def cron_expression(self) -> Optional[CronExpression]:
        """The cron expression of a cron schedule, else None."""
        expr = self._schedule.cron
        return None if expr is None else CronExpression(expr, self._tzinfo)

    def spec(self) -> Dict[str, Any]:
        """The schedule as plain values (instants as Unix seconds): kind, cron, period, at,
        time_zone, gap, overlap, window_start, window_end, max_runs, jitter."""
        return self._schedule.spec()

    def fires(self, after: Optional[DateTimeLike] = None, count: int = 1) -> List[Fire]:
        """Up to ``count`` fires after ``after`` (default: now), each as if it ran and ended
        at once."""
        start = int(time.time()) if after is None else to_unix(after, self._tzinfo, "after")
        return [Fire(from_unix(s, self._tzinfo), from_unix(a, self._tzinfo))
                for s, a in self._schedule.next_n(start, int(count))]

    def next(self, after: Optional[DateTimeLike] = None, count: Optional[int] = None):
        """The start time of the first fire after ``after`` (default: now), or None; with
        ``count``, a list of up to ``count`` start times."""
        fires = self.fires(after, 1 if count is None else count)
        if count is None:
            return fires[0].start_at if fires else None
        return [f.start_at for f in fires]

    def describe(self) -> str:
        """``At 02:00, every day (Europe/Paris)``, ``Every 1h30m``, ..."""
        return self._schedule.describe()

    def __repr__(self) -> str:
        return f"Schedule({self.describe()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.spec() == other.spec() and self._name == other._name

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.spec().items())), self._name))


__all__ += ["InvalidSchedule"]
