# SPDX-License-Identifier: Apache-2.0
"""Cron expressions: ``quartzflow.cron.parse("0 2 * * *", tz="Europe/Paris")``.

The C++ parser and search (5, 6 or 7 fields, names, ``L``, ``W``, ``#``, ``H``, macros),
evaluated in an IANA zone with an explicit policy for daylight-saving gaps (``shift`` or
``skip``) and overlaps (``first``, ``last`` or ``both``). Datetimes go in and come out
zone-aware; a naive datetime is read in the expression's zone.
"""

from __future__ import annotations

import datetime as _dt
from typing import List, NamedTuple, Optional, Union, overload

from . import _native
from ._errors import InvalidSchedule
from ._time import DateTimeLike, TimeZoneLike, from_unix, to_unix, zone

__all__ = ["parse", "CronExpression", "ExplainedFire", "InvalidSchedule"]


class ExplainedFire(NamedTuple):
    """One fire with its local reading and the DST rule that produced it."""

    time: _dt.datetime             #: the fire, aware, in the expression's zone
    utc_offset: _dt.timedelta      #: the zone's offset at that instant
    abbreviation: str              #: e.g. ``CEST``
    rule: str                      #: ``none``, ``gap_shifted``, ``overlap_first``, ``overlap_second``
    near_transition: bool          #: within 24 h of an offset change


class CronExpression:
    """A parsed cron expression bound to a zone and DST policies (immutable, thread-safe)."""

    __slots__ = ("_expr", "_tzinfo")

    def __init__(self, expr: "_native.CronExpr", tzinfo: _dt.tzinfo) -> None:
        self._expr = expr
        self._tzinfo = tzinfo

    @property
    def expression(self) -> str:
        """The expression as written."""
        return self._expr.text

    @property
    def timezone(self) -> str:
        """The IANA zone the fields are read in."""
        return self._expr.time_zone

    @property
    def gap(self) -> str:
        return self._expr.gap

    @property
    def overlap(self) -> str:
        return self._expr.overlap

    @property
    def is_fixed_time(self) -> bool:
        """True when hour and minute are single values (the DST policies apply)."""
        return self._expr.is_fixed_time

    def _with(self, tz: TimeZoneLike, gap: Optional[str], overlap: Optional[str]) -> "CronExpression":
        if tz is None and gap is None and overlap is None:
            return self
        return parse(self._expr.text, tz=tz if tz is not None else self._expr.time_zone,
                     gap=gap or self._expr.gap, overlap=overlap or self._expr.overlap,
                     hash_key=self._expr.hash_key)

    @overload
    def next(self, after: Optional[DateTimeLike] = None, count: None = None, *, tz: TimeZoneLike = None,
             gap: Optional[str] = None, overlap: Optional[str] = None) -> Optional[_dt.datetime]: ...

    @overload
    def next(self, after: Optional[DateTimeLike] = None, count: int = ..., *, tz: TimeZoneLike = None,
             gap: Optional[str] = None, overlap: Optional[str] = None) -> List[_dt.datetime]: ...

    def next(self, after=None, count=None, *, tz=None, gap=None, overlap=None):
        """The first fire strictly after ``after`` (default: now), or None when none is left
        before 2200; with ``count``, a list of up to ``count`` fires. ``tz``, ``gap`` and
        ``overlap`` evaluate the same fields in another zone or under other DST policies.
        Results are aware datetimes in the zone of evaluation."""
        expr = self._with(tz, gap, overlap)
        start = _now() if after is None else to_unix(after, expr._tzinfo, "after")
        n = 1 if count is None else int(count)
        if n < 0:
            raise InvalidSchedule(f"invalid count {count!r}: count: must be 0 or more", "count", "must be 0 or more")
        fires = [from_unix(t, expr._tzinfo) for t in expr._expr.next_n(start, n)]
        if count is None:
            return fires[0] if fires else None
        return fires

    def prev(self, before: Optional[DateTimeLike] = None) -> Optional[_dt.datetime]:
        """The last fire strictly before ``before`` (default: now), or None."""
        start = _now() if before is None else to_unix(before, self._tzinfo, "before")
        return from_unix(self._expr.prev(start), self._tzinfo)

    def explain(self, after: Optional[DateTimeLike] = None, count: int = 1, *, tz: TimeZoneLike = None,
                gap: Optional[str] = None, overlap: Optional[str] = None) -> List[ExplainedFire]:
        """Up to ``count`` next fires with their local reading and DST rule (what
        ``qfctl cron next --explain`` prints)."""
        expr = self._with(tz, gap, overlap)
        t = _now() if after is None else to_unix(after, expr._tzinfo, "after")
        out: List[ExplainedFire] = []
        for _ in range(int(count)):
            fire = expr._expr.explain_next(t)
            if fire is None:
                break
            at, offset, abbreviation, rule, near = fire
            out.append(ExplainedFire(from_unix(at, expr._tzinfo), _dt.timedelta(seconds=offset), abbreviation,
                                     rule, near))
            t = at
        return out

    def describe(self) -> str:
        """A plain-language description, e.g. ``At 02:00, every day``."""
        return self._expr.describe()

    def __str__(self) -> str:
        return self._expr.text

    def __repr__(self) -> str:
        return f"CronExpression({self._expr.text!r}, tz={self._expr.time_zone!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronExpression) and (self.expression, self.timezone, self.gap, self.overlap) == (
            other.expression, other.timezone, other.gap, other.overlap)

    def __hash__(self) -> int:
        return hash((self.expression, self.timezone, self.gap, self.overlap))


def parse(expr: str, tz: TimeZoneLike = "UTC", *, gap: str = "shift", overlap: str = "first",
          hash_key: str = "") -> CronExpression:
    """Parses ``expr`` in zone ``tz``; raises :class:`InvalidSchedule` (a ValueError) naming
    the field and the reason, e.g. ``minute: 61 is out of range 0-59``. ``hash_key`` seeds
    ``H`` fields (normally the job's id)."""
    if not isinstance(expr, str):
        raise InvalidSchedule(f"invalid cron expression {expr!r}: expression: must be a string", "expression",
                              "must be a string")
    name, tzinfo = zone(tz)
    return CronExpression(_native.CronExpr.parse(expr, name, gap, overlap, hash_key), tzinfo)


def _now() -> int:
    import time
    return int(time.time())
