# SPDX-License-Identifier: Apache-2.0
"""Datetimes, zones and Unix seconds as the package passes them to the C++ library."""

from __future__ import annotations

import datetime as _dt
import math
from typing import Optional, Tuple, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._errors import InvalidSchedule

TimeZoneLike = Union[str, _dt.tzinfo, None]
DateTimeLike = Union[_dt.datetime, _dt.date, str, int, float]


def zone(tz: TimeZoneLike, field: str = "timezone") -> Tuple[str, _dt.tzinfo]:
    """The IANA name and tzinfo of ``tz``: a name, a ``ZoneInfo``, ``datetime.timezone.utc``
    (or a pytz zone); ``None`` is UTC. Fixed offsets other than UTC have no IANA name and
    are refused, as are unknown names."""
    if tz is None:
        return "UTC", _dt.timezone.utc
    if isinstance(tz, str):
        name = tz
    elif isinstance(tz, ZoneInfo):
        name = tz.key
    elif getattr(tz, "zone", None):  # pytz
        name = tz.zone
    elif tz is _dt.timezone.utc or (isinstance(tz, _dt.timezone) and tz.utcoffset(None) == _dt.timedelta(0)):
        return "UTC", _dt.timezone.utc
    else:
        raise InvalidSchedule(f"invalid time zone {tz!r}: {field}: is not an IANA zone (use zoneinfo.ZoneInfo)",
                              field, "is not an IANA zone (use zoneinfo.ZoneInfo)")
    if name in ("UTC", "Etc/UTC", "Z"):
        return "UTC", _dt.timezone.utc
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"invalid time zone \"{name}\": {field}: unknown IANA time zone",
                              field, "unknown IANA time zone") from None


def to_unix(value: DateTimeLike, tzinfo: _dt.tzinfo, field: str) -> int:
    """Whole Unix seconds (rounded down) of an aware datetime; a naive one (or a date, or an
    ISO 8601 text without offset) is read in ``tzinfo``; numbers are Unix seconds."""
    if isinstance(value, bool):
        raise InvalidSchedule(f"invalid {field} {value!r}: {field}: must be a datetime", field, "must be a datetime")
    if isinstance(value, (int, float)):
        return int(math.floor(value))
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise InvalidSchedule(f"invalid {field} {value!r}: {field}: is not an ISO 8601 date or time",
                                  field, "is not an ISO 8601 date or time") from None
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        value = _dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, _dt.datetime):
        raise InvalidSchedule(f"invalid {field} {value!r}: {field}: must be a datetime", field, "must be a datetime")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=tzinfo)
    return int(math.floor(value.timestamp()))


def from_unix(seconds: Optional[int], tzinfo: _dt.tzinfo) -> Optional[_dt.datetime]:
    """An aware datetime in ``tzinfo``, or None."""
    if seconds is None:
        return None
    return _dt.datetime.fromtimestamp(seconds, tz=tzinfo)


def from_unix_ms(ms: int, tzinfo: _dt.tzinfo) -> Optional[_dt.datetime]:
    """An aware datetime of a record's ``*_unix_ms`` field; None when it is 0 (not set)."""
    if not ms:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=tzinfo)


def seconds_of(value, field: str, minimum: int = 0) -> int:
    """Whole seconds of a number or a timedelta (rounded up), at least ``minimum``."""
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidSchedule(f"invalid {field} {value!r}: {field}: must be a number of seconds or a timedelta",
                              field, "must be a number of seconds or a timedelta")
    whole = int(math.ceil(value))
    if whole < minimum:
        raise InvalidSchedule(f"invalid {field} {value!r}: {field}: must be at least {minimum} s",
                              field, f"must be at least {minimum} s")
    return whole
