# SPDX-License-Identifier: Apache-2.0
# quartzflow.apscheduler: APScheduler 3.x calls over quartzflow.Scheduler. The example in
# examples/python/apscheduler_port runs unchanged apart from its imports (and, when Debian's
# python3-apscheduler is installed, the same program under APScheduler runs the same jobs);
# triggers fire when APScheduler's would; what QuartzFlow cannot express is refused.
import asyncio
import datetime as dt
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(ROOT, "examples", "python", "apscheduler_port")
BUILD = os.environ.get("QF_BUILD_DIR", os.path.join(ROOT, "build"))
PACKAGE_DIR = os.path.join(BUILD, "bindings", "python")  # quartzflow with its native module
sys.path.insert(0, PACKAGE_DIR)

from quartzflow import apscheduler as qfaps  # noqa: E402

try:
    import apscheduler.triggers.cron as aps_cron
    import apscheduler.triggers.interval  # noqa: F401
except ImportError:
    aps_cron = None

PROGRAM_SECONDS = 6.0


def make_database(path):
    with sqlite3.connect(path) as db, open(os.path.join(EXAMPLE, "schema.sql")) as schema:
        db.executescript(schema.read())
    return path


def start_program(script, db_path, python_path):
    env = dict(os.environ, PYTHONPATH=python_path, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen([sys.executable, os.path.join(EXAMPLE, script), db_path, str(PROGRAM_SECONDS)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(db_path):
    with sqlite3.connect(db_path) as db:
        counts = {row[0]: (row[1], row[2]) for row in db.execute("SELECT id, successes, failures FROM jobs")}
        runs = {}
        for job_id, at, ok in db.execute("SELECT job_id, at, ok FROM runs ORDER BY at"):
            runs.setdefault(job_id, []).append((at, ok))
    return counts, runs


def check_program_outcome(counts, runs, stdout):
    # Loaded at start, with next run times shown: every enabled job, not the disabled one.
    for job_id in ("tick", "even-seconds", "flaky", "weekdays"):
        assert f"{job_id}: next run at " in stdout, stdout
    assert "off:" not in stdout
    assert "weekdays: next run at " in stdout and " 03:00:00" in stdout.split("weekdays: next run at ")[1]
    # One log row per run, and counts that agree with them.
    for job_id, (successes, failures) in counts.items():
        rows = runs.get(job_id, [])
        assert (successes, failures) == (sum(ok for _, ok in rows), sum(not ok for _, ok in rows)), job_id
    assert set(runs) == {"tick", "even-seconds", "flaky", "added"}, runs.keys()
    assert counts["tick"][0] >= PROGRAM_SECONDS - 2 and counts["tick"][1] == 0
    assert PROGRAM_SECONDS / 2 - 2 <= counts["even-seconds"][0] <= PROGRAM_SECONDS / 2 + 1
    assert counts["flaky"][0] == 0 and counts["flaky"][1] >= 1
    assert counts["added"][0] >= 1 and counts["added"][1] == 0
    # Removed while running: no run of flaky after the first run of the job added in its place.
    assert max(at for at, _ in runs["flaky"]) < min(at for at, _ in runs["added"])


def test_the_port_changes_only_imports():
    with open(os.path.join(EXAMPLE, "original.py")) as f:
        original = f.read().splitlines()
    with open(os.path.join(EXAMPLE, "ported.py")) as f:
        ported = f.read().splitlines()
    assert len(original) == len(ported)
    changed = [(a, b) for a, b in zip(original, ported) if a != b]
    assert changed, "ported.py is original.py"
    for a, b in changed:
        assert (a.startswith("from apscheduler.") and b.startswith("from quartzflow.apscheduler import ")) or \
            (a.startswith("#") and b.startswith("#")), (a, b)


def test_the_ported_program_runs_on_quartzflow_as_under_apscheduler(tmp_path):
    ported_db = make_database(str(tmp_path / "ported.db"))
    ported = start_program("ported.py", ported_db, PACKAGE_DIR)
    original = None
    if aps_cron is not None:  # the same program under real APScheduler, at the same time
        original_db = make_database(str(tmp_path / "original.db"))
        original = start_program("original.py", original_db, "")
    out, err = ported.communicate(timeout=60)
    assert ported.returncode == 0, err
    counts, runs = outcome(ported_db)
    check_program_outcome(counts, runs, out)
    if original is not None:
        aps_out, aps_err = original.communicate(timeout=60)
        assert original.returncode == 0, aps_err
        aps_counts, aps_runs = outcome(original_db)
        check_program_outcome(aps_counts, aps_runs, aps_out)
        assert set(aps_runs) == set(runs)
        # Next run times shown at start agree for the job that does not fire during the test.
        ours = out.split("weekdays: next run at ")[1].splitlines()[0]
        theirs = aps_out.split("weekdays: next run at ")[1].splitlines()[0]
        assert ours == theirs


# -- triggers -----------------------------------------------------------------------------------

TRANSLATIONS = [
    (dict(hour=3), "0 0 3 * * *"),
    (dict(minute="*/5"), "0 */5 * * * *"),
    (dict(day_of_week="mon-fri", hour=9, minute=30), "0 30 9 ? * MON,TUE,WED,THU,FRI"),
    (dict(day_of_week="0,6"), "0 0 0 ? * MON,SUN"),  # APScheduler's 0 is Monday
    (dict(day_of_week="*/2", hour=12), "0 0 12 ? * MON,WED,FRI,SUN"),
    (dict(day="last", hour=23, minute=59), "0 59 23 L * *"),
    (dict(day="2nd fri", hour=10), "0 0 10 ? * FRI#2"),
    (dict(day="last sun"), "0 0 0 ? * SUNL"),
    (dict(month="jan-mar", day=15), "0 0 0 15 jan-mar *"),
    (dict(year=2027, month=6), "0 0 0 1 6 * 2027"),
    (dict(second="*/10"), "*/10 * * * * *"),
    (dict(), "* * * * * *"),  # as APScheduler: every second
]


@pytest.mark.parametrize("fields,expression", TRANSLATIONS, ids=[str(f) for f, _ in TRANSLATIONS])
def test_cron_trigger_fields_become_quartzflow_cron(fields, expression):
    assert qfaps.CronTrigger(**fields).expression == expression


def test_from_crontab_reads_five_fields_as_apscheduler_does():
    assert qfaps.CronTrigger.from_crontab("*/15 2 * * mon-fri").expression == "0 */15 2 ? * MON,TUE,WED,THU,FRI"
    assert qfaps.CronTrigger.from_crontab("0 0 1 * *").expression == "0 0 0 1 * *"
    with pytest.raises(ValueError, match="Wrong number of fields; got 6, expected 5"):
        qfaps.CronTrigger.from_crontab("0 0 0 1 * *")


REFUSED = [
    (dict(week=3), r"week: '3': QuartzFlow cron has no ISO week field"),
    (dict(day="1-7", day_of_week="mon"), r"day: '1-7' and day_of_week 'mon': APScheduler runs on days that match both"),
    (dict(day="2nd fri", day_of_week="mon"), r"cannot combine a weekday position with a day of week"),
    (dict(minute=61), r"minute: '61': 61 is out of range 0-59"),
    (dict(hour="5-2"), r"hour: '5-2': the minimum value in a range must not be higher than the maximum"),
    (dict(day_of_week="fri-mon"), r"day_of_week: 'fri-mon': the minimum value in a range"),
    (dict(day_of_week="funday"), r"day_of_week: 'funday' is not a day of week"),
    (dict(minute="L"), r"minute: 'L': 'l' is not a number"),
    (dict(day="15W"), r"day: '15W' is not an APScheduler expression"),
    (dict(second="*/0"), r"second: '\*/0': the step must be positive"),
]


@pytest.mark.parametrize("fields,message", REFUSED, ids=[str(f) for f, _ in REFUSED])
def test_what_quartzflow_cron_cannot_express_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        qfaps.CronTrigger(**fields)


def test_intervals_are_whole_seconds():
    assert qfaps.IntervalTrigger(minutes=1, seconds=30).seconds == 90
    assert qfaps.IntervalTrigger(weeks=1).seconds == 7 * 86400
    with pytest.raises(ValueError, match="seconds: an interval of 0.5 s: QuartzFlow intervals are whole seconds"):
        qfaps.IntervalTrigger(seconds=0.5)
    with pytest.raises(ValueError, match="an interval of 0 s"):
        qfaps.IntervalTrigger()


@pytest.mark.skipif(aps_cron is None, reason="python3-apscheduler is not installed")
@pytest.mark.parametrize("fields", [f for f, _ in TRANSLATIONS if f] + [dict(day_of_week="sat-sun", hour="8-10/2")],
                         ids=[str(f) for f, _ in TRANSLATIONS if f] + ["weekend"])
def test_cron_triggers_fire_when_apschedulers_fire(fields):
    import quartzflow.cron
    utc = dt.timezone.utc
    ours = quartzflow.cron.parse(qfaps.CronTrigger(**fields).expression, "UTC")
    theirs = aps_cron.CronTrigger(timezone="UTC", **fields)
    at = dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=utc)
    expected, previous = [], None
    for _ in range(20):
        previous = theirs.get_next_fire_time(previous, at if previous is None else previous + dt.timedelta(seconds=1))
        if previous is None:
            break
        expected.append(previous)
    got = ours.next(at - dt.timedelta(seconds=1), len(expected))
    assert [t.astimezone(utc) for t in got] == [t.astimezone(utc) for t in expected]


# -- the scheduler ------------------------------------------------------------------------------

@pytest.fixture
def scheduler():
    s = qfaps.BackgroundScheduler(timezone="UTC")
    yield s
    if s.running:
        s.shutdown(wait=True)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_add_get_replace_and_remove_jobs(scheduler):
    ran = []
    job = scheduler.add_job(ran.append, "interval", seconds=1, args=["a"], id="a", name="job a")
    assert scheduler.get_job("a") is job and job.name == "job a" and job.next_run_time is None  # pending
    scheduler.start()
    assert isinstance(job.next_run_time, dt.datetime) and job.next_run_time.tzinfo is not None
    with pytest.raises(qfaps.ConflictingIdError):
        scheduler.add_job(ran.append, "interval", seconds=1, args=["b"], id="a")
    scheduler.add_job(ran.append, "interval", seconds=1, args=["b"], id="a", replace_existing=True)
    assert [j.id for j in scheduler.get_jobs()] == ["a"]
    assert wait_until(lambda: "b" in ran, 5)
    # A refused replacement changes nothing.
    with pytest.raises(ValueError, match="week"):
        scheduler.add_job(ran.append, "cron", week=2, id="a", replace_existing=True)
    assert scheduler.get_job("a").args == ("b",)
    scheduler.remove_job("a")
    assert scheduler.get_job("a") is None and scheduler.get_jobs() == []
    with pytest.raises(qfaps.JobLookupError):
        scheduler.remove_job("a")
    count = len(ran)
    time.sleep(1.5)
    assert len(ran) == count, "a removed job ran"


def test_pause_and_resume_a_job(scheduler):
    ran = []
    scheduler.add_job(lambda: ran.append(time.time()), "cron", second="*", id="tick")
    scheduler.start()
    assert wait_until(lambda: len(ran) >= 1, 5)
    scheduler.pause_job("tick")
    assert scheduler.get_job("tick").next_run_time is None
    scheduler.modify_job("tick", name="still paused")  # a change keeps the job paused
    assert scheduler.get_job("tick").name == "still paused"
    assert scheduler.get_job("tick").next_run_time is None
    count = len(ran)
    time.sleep(2.2)
    assert len(ran) == count, "a paused job ran"
    scheduler.resume_job("tick")
    assert scheduler.get_job("tick").next_run_time is not None
    assert wait_until(lambda: len(ran) > count, 5)


def test_listeners_hear_of_runs_and_errors_and_shutdown_waits(scheduler):
    events = []
    started, finished = threading.Event(), threading.Event()

    def slow():
        started.set()
        time.sleep(1.0)
        finished.set()

    def broken():
        raise KeyError("no such thing")

    scheduled = []
    scheduler.add_listener(lambda e: events.append((e.code, e.job_id, type(e.exception).__name__)),
                           qfaps.EVENT_JOB_EXECUTED | qfaps.EVENT_JOB_ERROR)
    scheduler.add_listener(lambda e: scheduled.append(e.scheduled_run_time), qfaps.EVENT_JOB_EXECUTED)
    scheduler.add_job(lambda: None, "cron", second="*", id="every-second")
    scheduler.add_job(broken, "date", id="broken")
    scheduler.start()
    assert wait_until(lambda: (qfaps.EVENT_JOB_ERROR, "broken", "KeyError") in events, 5), events
    scheduler.add_job(slow, "date", id="slow")
    assert started.wait(5)
    scheduler.shutdown(wait=True)
    assert finished.is_set(), "shutdown(wait=True) returned while a job was running"
    assert (qfaps.EVENT_JOB_EXECUTED, "slow", "NoneType") in events
    # Events carry the time a run was due (a whole second for this cron job), not when it ran.
    assert any(t.microsecond == 0 and t.tzinfo is not None for t in scheduled), scheduled


def test_asyncio_scheduler_runs_coroutines_on_the_loop():
    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        async def job(tag):
            seen.append((tag, asyncio.get_running_loop() is loop))

        s = qfaps.AsyncIOScheduler(timezone="UTC")
        s.add_job(job, "interval", seconds=1, args=["x"], id="co")
        s.start()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        s.shutdown(wait=False)
        return seen

    seen = asyncio.run(main())
    assert seen and seen[0] == ("x", True)


def test_scheduler_options_quartzflow_cannot_honour_are_refused():
    with pytest.raises(ValueError, match="jobstores: QuartzFlow keeps jobs in memory"):
        qfaps.BackgroundScheduler(jobstores={"default": {"type": "sqlalchemy", "url": "sqlite:///x.db"}})
    with pytest.raises(ValueError, match="job_defaults: grace: not an APScheduler job default"):
        qfaps.BackgroundScheduler(job_defaults={"grace": 3})
    s = qfaps.BackgroundScheduler()
    with pytest.raises(ValueError, match="trigger: 'weekly' is not one of cron, interval, date"):
        s.add_job(print, "weekly")
    with pytest.raises(ValueError, match="next_run_time: not supported"):
        s.add_job(print, "interval", seconds=5, next_run_time=None)
    assert s.get_jobs() == []
