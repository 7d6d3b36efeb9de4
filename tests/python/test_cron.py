# SPDX-License-Identifier: Apache-2.0
# quartzflow.cron and quartzflow.Schedule against the C++ reference: the hand-computed fires
# of tests/unit/cron_reference.cpp (DST policies, day specials, ranges, names, years), and
# random expressions against a naive minute scanner written here from the dialect's rules.
import datetime as dt
import os
import random
import sys
from zoneinfo import ZoneInfo

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.environ.get("QF_BUILD_DIR", os.path.join(ROOT, "build")), "bindings", "python"))

import quartzflow  # noqa: E402
from quartzflow import InvalidSchedule, Schedule, cron  # noqa: E402

UTC = dt.timezone.utc


def iso(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# (expression, zone, gap, overlap, after, expected fires): tests/unit/cron_reference.cpp's
# "hand-computed fires" cases, as the C++ test states them.
HAND_CASES = [
    ("30 2 * * *", "America/New_York", "shift", "first", "2026-03-07T12:00:00Z",
     ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]),
    ("30 2 * * *", "America/New_York", "skip", "first", "2026-03-07T12:00:00Z",
     ["2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]),
    ("0,30 2 * * *", "America/New_York", "shift", "first", "2026-03-07T12:00:00Z",
     ["2026-03-09T06:00:00Z", "2026-03-09T06:30:00Z"]),
    ("30 1 * * *", "America/New_York", "shift", "first", "2026-10-31T12:00:00Z",
     ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]),
    ("30 1 * * *", "America/New_York", "shift", "last", "2026-10-31T12:00:00Z",
     ["2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"]),
    ("30 1 * * *", "America/New_York", "shift", "both", "2026-10-31T12:00:00Z",
     ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"]),
    ("0 30 1 * * *", "America/New_York", "skip", "last", "2026-11-01T05:30:00Z", ["2026-11-01T06:30:00Z"]),
    ("30 1 * * *", "America/New_York", "shift", "first", "2026-11-01T05:30:00Z", ["2026-11-02T06:30:00Z"]),
    ("*/30 * * * *", "America/New_York", "skip", "both", "2026-11-01T04:59:59Z",
     ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z",
      "2026-11-01T07:00:00Z"]),
    ("15 2 * * *", "Australia/Lord_Howe", "shift", "first", "2026-10-03T00:00:00Z",
     ["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]),
    ("15 2 * * *", "Australia/Lord_Howe", "skip", "first", "2026-10-03T00:00:00Z",
     ["2026-10-04T15:15:00Z", "2026-10-05T15:15:00Z"]),
    ("45 1 * * *", "Australia/Lord_Howe", "shift", "first", "2026-04-04T00:00:00Z",
     ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]),
    ("45 1 * * *", "Australia/Lord_Howe", "shift", "last", "2026-04-04T00:00:00Z",
     ["2026-04-04T15:15:00Z", "2026-04-05T15:15:00Z"]),
    ("0 0 1W * ?", "UTC", "shift", "first", "2026-07-31T12:00:00Z", ["2026-08-03T00:00:00Z"]),
    ("0 0 31W * ?", "UTC", "shift", "first", "2026-01-01T00:00:00Z",
     ["2026-01-30T00:00:00Z", "2026-03-31T00:00:00Z"]),
    ("0 0 LW * ?", "UTC", "shift", "first", "2026-05-01T00:00:00Z", ["2026-05-29T00:00:00Z"]),
    ("0 0 L-2 FEB ?", "UTC", "shift", "first", "2027-12-31T00:00:00Z",
     ["2028-02-27T00:00:00Z", "2029-02-26T00:00:00Z"]),
    ("0 12 ? * 5L", "UTC", "shift", "first", "2026-01-01T00:00:00Z",
     ["2026-01-30T12:00:00Z", "2026-02-27T12:00:00Z"]),
    ("0 12 ? * 1#5", "UTC", "shift", "first", "2026-01-01T00:00:00Z",
     ["2026-03-30T12:00:00Z", "2026-06-29T12:00:00Z"]),
    ("0 0 * * 7", "UTC", "shift", "first", "2026-01-01T00:00:00Z", ["2026-01-04T00:00:00Z"]),
    ("@weekly", "UTC", "shift", "first", "2026-01-01T00:00:00Z", ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]),
    ("0 0 13 * FRI", "UTC", "shift", "first", "2026-01-01T00:00:00Z",
     ["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z"]),
    ("0 9 * * fri-MON", "UTC", "shift", "first", "2026-01-01T10:00:00Z",
     ["2026-01-02T09:00:00Z", "2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z", "2026-01-05T09:00:00Z",
      "2026-01-09T09:00:00Z"]),
    ("0 0 22-2/2 * * *", "UTC", "shift", "first", "2026-01-01T03:00:00Z",
     ["2026-01-01T22:00:00Z", "2026-01-02T00:00:00Z", "2026-01-02T02:00:00Z", "2026-01-02T22:00:00Z"]),
    ("5/20 * * * * *", "UTC", "shift", "first", "2026-01-01T00:00:00Z",
     ["2026-01-01T00:00:05Z", "2026-01-01T00:00:25Z", "2026-01-01T00:00:45Z", "2026-01-01T00:01:05Z"]),
    ("0 0 1 nov-Feb *", "UTC", "shift", "first", "2026-01-15T00:00:00Z",
     ["2026-02-01T00:00:00Z", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"]),
    ("30 15 10 * * * 2027", "UTC", "shift", "first", "2026-06-01T00:00:00Z", ["2027-01-01T10:15:30Z"]),
    ("0 9 * * *", "Asia/Kolkata", "shift", "first", "2026-01-01T00:00:00Z",
     ["2026-01-01T03:30:00Z", "2026-01-02T03:30:00Z"]),
]


@pytest.mark.parametrize("expr,zone,gap,overlap,after,expected", HAND_CASES,
                         ids=[f"{c[0]} {c[1]} {c[2]}/{c[3]}" for c in HAND_CASES])
def test_hand_computed_fires_match_the_cpp_reference(expr, zone, gap, overlap, after, expected):
    e = cron.parse(expr, tz=zone, gap=gap, overlap=overlap)
    fires = e.next(at(after), count=len(expected))
    assert [iso(f) for f in fires] == expected
    # Results are aware datetimes in the expression's zone.
    assert all(f.tzinfo is not None and f.utcoffset() == f.astimezone(ZoneInfo(zone) if zone != "UTC" else UTC)
               .utcoffset() for f in fires)


def test_prev_and_per_call_zone_and_policies():
    e = cron.parse("30 2 * * *", tz="America/New_York")
    assert iso(e.prev(at("2026-03-08T12:00:00Z"))) == "2026-03-08T07:00:00Z"
    assert iso(e.next(at("2026-03-07T12:00:00Z"), gap="skip")) == "2026-03-09T06:30:00Z"
    # The same fields read in another zone.
    assert iso(e.next(at("2026-01-01T00:00:00Z"), tz="Asia/Kolkata")) == "2026-01-01T21:00:00Z"
    # A naive datetime is read in the expression's zone.
    assert iso(e.next(dt.datetime(2026, 1, 1, 2, 30))) == "2026-01-02T07:30:00Z"
    first = e.next(at("2026-01-01T00:00:00Z"))
    assert first.tzinfo.key == "America/New_York" and (first.hour, first.minute) == (2, 30)


def test_explain_names_the_dst_rule():
    e = cron.parse("30 1 * * *", tz="America/New_York", overlap="both")
    fires = e.explain(at("2026-10-31T12:00:00Z"), count=3)
    assert [f.rule for f in fires] == ["overlap_first", "overlap_second", "none"]
    assert [f.abbreviation for f in fires] == ["EDT", "EST", "EST"]
    assert fires[0].utc_offset == dt.timedelta(hours=-4) and fires[0].near_transition
    gap = cron.parse("30 2 * * *", tz="America/New_York").explain(at("2026-03-07T12:00:00Z"))[0]
    assert gap.rule == "gap_shifted" and iso(gap.time) == "2026-03-08T07:00:00Z"


def test_describe_and_properties():
    e = cron.parse("0 2 * * *", tz="Europe/Paris")
    assert "02:00" in e.describe()
    assert (e.expression, e.timezone, e.is_fixed_time) == ("0 2 * * *", "Europe/Paris", True)
    assert e.next(at("2026-01-01T00:00:00Z"), count=0) == []


@pytest.mark.parametrize("expr,field", [("61 * * * *", "minute"), ("* 24 * * *", "hour"),
                                        ("* * * * * * * *", ""), ("0 0 30 2 *", "")])
def test_invalid_expressions_raise_invalid_schedule_with_field_and_reason(expr, field):
    with pytest.raises(InvalidSchedule) as info:
        cron.parse(expr)
    assert isinstance(info.value, ValueError)
    assert info.value.reason and info.value.reason in str(info.value)
    if field:
        assert info.value.field == field
        assert f"{field}: " in str(info.value)


def test_bad_zone_and_policy_name_the_field():
    with pytest.raises(InvalidSchedule) as info:
        cron.parse("* * * * *", tz="Mars/Olympus")
    assert info.value.field == "timezone"
    with pytest.raises(InvalidSchedule) as info:
        cron.parse("* * * * *", gap="later")
    assert info.value.field == "gap" and "shift, skip" in info.value.reason


def test_schedules_interval_window_jitter_once_and_text():
    start = at("2026-01-01T00:00:00Z")
    every = Schedule.interval(minutes=90, start=start, end=at("2026-01-01T05:00:00Z"))
    # Fires strictly after `after`; the window's start is the first.
    assert [iso(t) for t in every.next(start - dt.timedelta(seconds=1), count=10)] == [
        "2026-01-01T00:00:00Z", "2026-01-01T01:30:00Z", "2026-01-01T03:00:00Z", "2026-01-01T04:30:00Z"]
    jittered = Schedule.cron("0 * * * *", jitter=30, name="job-a")
    fires = jittered.fires(start, 5)
    assert all(dt.timedelta(0) <= f.start_at - f.scheduled <= dt.timedelta(seconds=30) for f in fires)
    # Jitter is stable for a name.
    assert fires == Schedule.cron("0 * * * *", jitter=30, name="job-a").fires(start, 5)
    once = Schedule.once(dt.datetime(2026, 6, 1, 12, 0), timezone="Europe/Paris")
    assert [iso(t) for t in once.next(start, count=3)] == ["2026-06-01T10:00:00Z"]
    assert Schedule.from_text("@every 90s").spec()["period"] == 90
    assert Schedule.from_text("@every 90s").kind == "interval"
    with pytest.raises(InvalidSchedule) as info:
        Schedule.interval(seconds=0)
    assert info.value.field == "interval"


# --- a naive minute scanner, from the dialect's rules ----------------------------------

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def field_values(text, lo, hi, names=None, base=0):
    def number(tok):
        if names and tok.upper() in names:
            return names.index(tok.upper()) + base
        return int(tok)

    out = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, s = part.split("/")
            step = int(s)
        if part in ("*", "?"):
            a, b = lo, hi
        elif "-" in part:
            a, b = (number(x) for x in part.split("-"))
        else:
            a = number(part)
            b = hi if step > 1 else a
        out.update(range(a, b + 1, step))
    return out


class Reference:
    def __init__(self, expr):
        minute, hour, dom, month, dow = expr.split()
        self.minute = field_values(minute, 0, 59)
        self.hour = field_values(hour, 0, 23)
        self.dom = field_values(dom, 1, 31)
        self.month = field_values(month, 1, 12, MONTHS, 1)
        self.dow = {d % 7 for d in field_values(dow, 0, 7, DAYS, 0)}
        self.dom_restricted = not dom.startswith(("*", "?"))
        self.dow_restricted = not dow.startswith(("*", "?"))

    def matches(self, local):
        if local.minute not in self.minute or local.hour not in self.hour or local.month not in self.month:
            return False
        dom_ok = local.day in self.dom
        dow_ok = local.isoweekday() % 7 in self.dow
        if self.dom_restricted and self.dow_restricted:
            return dom_ok or dow_ok
        return dom_ok and dow_ok

    def fires(self, after, count, tz, horizon_minutes):
        out = []
        t = (int(after.timestamp()) // 60 + 1) * 60
        for _ in range(horizon_minutes):
            if self.matches(dt.datetime.fromtimestamp(t, tz)):
                out.append(t)
                if len(out) == count:
                    break
            t += 60
        return out


def random_field(rng, lo, hi, names=None, base=0):
    kind = rng.randrange(6)
    if kind == 0:
        return "*"
    if kind == 1:
        return f"*/{rng.randint(2, max(2, (hi - lo) // 2))}"
    if kind == 2:
        a = rng.randint(lo, hi)
        return names[a - base] if names and rng.random() < 0.5 else str(a)
    if kind == 3:
        a = rng.randint(lo, hi - 1)
        return f"{a}-{rng.randint(a, hi)}"
    if kind == 4:
        a = rng.randint(lo, hi - 1)
        return f"{a}-{rng.randint(a, hi)}/{rng.randint(1, 4)}"
    return ",".join(str(v) for v in sorted(rng.sample(range(lo, hi + 1), rng.randint(2, 4))))


def random_expr(rng):
    return " ".join([
        random_field(rng, 0, 59), random_field(rng, 0, 23), random_field(rng, 1, 28),
        random_field(rng, 1, 12, MONTHS, 1), random_field(rng, 0, 6, DAYS, 0)])


def test_random_expressions_agree_with_a_minute_scanner_in_utc():
    rng = random.Random(18)
    compared = 0
    after = at("2026-02-20T13:17:00Z")
    for _ in range(60):
        text = random_expr(rng)
        expected = Reference(text).fires(after, 5, UTC, 6 * 24 * 60)
        try:
            got = [int(t.timestamp()) for t in cron.parse(text).next(after, count=len(expected))]
        except InvalidSchedule:  # never fires (e.g. 30 FEB): the scanner finds nothing either
            assert expected == []
            continue
        assert got == expected, text
        compared += len(expected)
    assert compared > 50


def test_non_fixed_expressions_around_dst_agree_with_the_scanner():
    # Not fixed-time, so every local reading fires: none in the spring gap, twice in the
    # autumn overlap (the C++ reference's rule for such expressions), whatever the policy.
    zone = ZoneInfo("America/New_York")
    for text in ["*/20 * * * *", "0,30 1-3 * * *", "15 */2 * * *", "*/10 2 * * SUN", "0 0-4 * * *"]:
        for start in ("2026-03-07T20:00:00Z", "2026-10-31T20:00:00Z"):
            expected = Reference(text).fires(at(start), 40, zone, 36 * 60)
            for overlap in ("first", "last", "both"):
                got = cron.parse(text, tz="America/New_York", overlap=overlap).next(at(start), count=len(expected))
                assert [int(t.timestamp()) for t in got] == expected, (text, start, overlap)


def test_version_is_the_cpp_library_version():
    header = open(os.path.join(ROOT, "include", "quartzflow", "version.hpp")).read()
    assert f'"{quartzflow.__version__}"' in header
