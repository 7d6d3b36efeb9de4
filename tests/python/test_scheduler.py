# SPDX-License-Identifier: Apache-2.0
# quartzflow.Scheduler: jobs on time, thread and coroutine jobs, exceptions recorded as
# FAILURE with their traceback, policies (timeout, retries, overlap), job management, daily
# stats, shutdown while jobs run, and interpreter exit with a running scheduler.
import asyncio
import datetime as dt
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_DIR = os.path.join(os.environ.get("QF_BUILD_DIR", os.path.join(ROOT, "build")), "bindings", "python")
sys.path.insert(0, PACKAGE_DIR)

import quartzflow  # noqa: E402
from quartzflow import InvalidSchedule, JobLookupError, Scheduler  # noqa: E402


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def scheduler(tmp_path):
    s = Scheduler(db_path=str(tmp_path / "jobs.db"), timezone="Europe/Paris", shutdown_grace=2)
    yield s
    s.shutdown(wait=False)


def test_a_cron_job_runs_on_time_on_a_worker_thread(scheduler):
    seen = []
    scheduler.add_job(lambda: seen.append((time.time(), threading.current_thread().name)), "cron",
                      expr="* * * * * *", id="every-second")
    scheduler.start()
    assert wait_until(lambda: len(seen) >= 2, 4)
    scheduler.shutdown()
    runs = scheduler.get_executions("every-second", status="success", newest_first=False)
    assert len(runs) >= 2
    for run in runs:
        assert run.scheduled_time.microsecond == 0 and run.trigger == "scheduled"
        lateness = (run.start_time - run.scheduled_time).total_seconds()
        assert 0 <= lateness < 0.75, lateness  # (typically a few ms; room for a loaded CI machine)
        assert str(run.scheduled_time.tzinfo) == "Europe/Paris"
    assert (runs[1].scheduled_time - runs[0].scheduled_time) == dt.timedelta(seconds=1)
    assert all(name.startswith("quartzflow-worker") for _, name in seen)


def test_coroutine_jobs_run_on_the_application_loop(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        async def job(tag):
            await asyncio.sleep(0.01)
            seen.append((tag, asyncio.get_running_loop() is loop, threading.current_thread() is threading.main_thread(),
                         quartzflow.current_run().job_id))
            return tag * 2

        s = Scheduler(db_path=str(tmp_path / "a.db"))
        s.add_job(job, "manual", args=["x"], id="coro")
        s.start()
        execution_id = s.run_job("coro")
        result = await loop.run_in_executor(None, s.wait_for, execution_id, 5)
        await s.aclose()
        return seen, result, s.get_log(execution_id)

    seen, result, log = asyncio.run(main())
    assert seen == [("x", True, True, "coro")]
    assert result.status == "success" and result.output == "'xx'" and log == "'xx'"


def test_an_exception_becomes_failure_with_its_traceback_in_the_log(scheduler):
    def broken_job(n):
        quartzflow.current_run().log("step", 1, "of", n)
        raise ValueError(f"boom {n}")

    async def broken_coroutine():
        await asyncio.sleep(0)
        raise KeyError("missing")

    scheduler.add_job(broken_job, "manual", args=[7], id="broken")
    scheduler.add_job(broken_coroutine, "manual", id="broken-coro")
    scheduler.start()
    run = scheduler.wait_for(scheduler.run_job("broken"), 5)
    assert (run.status, run.error, run.failure_reason) == ("failure", "ValueError: boom 7", "exception")
    log = scheduler.get_log(run.id)
    assert log.startswith("step 1 of 7\nTraceback (most recent call last):")
    assert run.output == log  # the head of the log (all of it, here)
    assert "in broken_job" in log and 'raise ValueError(f"boom {n}")' in log and log.rstrip().endswith("boom 7")
    coro_run = scheduler.wait_for(scheduler.run_job("broken-coro"), 5)
    assert coro_run.status == "failure" and coro_run.error == "KeyError: 'missing'"
    assert "in broken_coroutine" in scheduler.get_log(coro_run.id)
    stats = scheduler.get_daily_stats(job_id="broken")
    assert [(s.job_id, s.total, s.failure, s.success) for s in stats] == [("broken", 1, 1, 0)]


def test_timeout_cancels_a_coroutine_and_retries_run_again(scheduler):
    cancelled = threading.Event()
    attempts = []

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def flaky():
        attempts.append(quartzflow.current_run().attempt)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    scheduler.add_job(slow, "manual", id="slow", timeout=1)
    scheduler.add_job(flaky, "manual", id="flaky", retries=2, retry_interval=1)
    scheduler.start()
    slow_run = scheduler.run_job("slow")
    first = scheduler.run_job("flaky")
    assert scheduler.wait_for(slow_run, 5).status == "timeout"
    assert cancelled.wait(2)
    assert wait_until(lambda: len(scheduler.get_executions("flaky", status="success")) == 1, 5)
    runs = scheduler.get_executions("flaky", newest_first=False)
    assert [(r.attempt, r.status, r.trigger) for r in runs] == [(1, "failure", "manual"), (2, "success", "retry")]
    assert runs[0].id == first and runs[1].retry_of == first


def test_overlap_skip_records_skipped_fires(scheduler):
    scheduler.add_job(time.sleep, "interval", seconds=1, args=[1.6], id="long", start_date=time.time() + 0.2)
    scheduler.start()
    assert wait_until(lambda: len(scheduler.get_executions("long", status="success")) >= 1, 5)
    skipped = scheduler.get_executions("long", status="skipped")
    assert skipped and skipped[0].skip_reason == "overlap"


def test_jobs_are_added_listed_paused_resumed_and_removed(scheduler):
    job = scheduler.add_job(print, "cron", hour=3, id="nightly", name="nightly report")
    interval = scheduler.add_job(print, "interval", minutes=30, id="half-hourly")
    once = scheduler.add_job(print, "date", run_date=dt.datetime(2030, 1, 1, 9, 0), id="once")
    assert job.trigger.spec()["cron"] == "0 0 3 * * *"
    assert {j.id for j in scheduler.get_jobs()} == {"nightly", "half-hourly", "once"}
    nxt = job.next_run_time
    assert (nxt.hour, nxt.minute, str(nxt.tzinfo)) == (3, 0, "Europe/Paris") and nxt > dt.datetime.now(dt.timezone.utc)
    assert 29 * 60 < (interval.next_run_time - dt.datetime.now(dt.timezone.utc)).total_seconds() <= 30 * 60
    assert once.next_run_time == dt.datetime(2030, 1, 1, 9, 0, tzinfo=once.next_run_time.tzinfo)
    scheduler.start()
    assert scheduler.pause_job("nightly").next_run_time is None
    assert scheduler.resume_job("nightly").next_run_time == nxt
    scheduler.remove_job("once")
    assert scheduler.get_job("once") is None
    with pytest.raises(JobLookupError):
        scheduler.remove_job("once")
    with pytest.raises(quartzflow.ConflictingIdError):
        scheduler.add_job(print, "cron", expr="* * * * *", id="nightly")
    replaced = scheduler.add_job(print, "cron", expr="0 4 * * *", id="nightly", replace_existing=True)
    assert replaced.next_run_time.hour == 4


def test_bad_settings_raise_invalid_schedule_and_change_nothing(scheduler):
    scheduler.add_job(print, "cron", expr="0 3 * * *", id="kept")
    before = [(j.id, j.trigger.spec()) for j in scheduler.get_jobs()]
    cases = [
        (dict(trigger="cron", expr="61 * * * *"), "minute"),
        (dict(trigger="cron", expr="0 4 * * *", overlap_policy="sometimes"), "overlap_policy"),
        (dict(trigger="cron", expr="0 4 * * *", timeout=100000), "timeout_seconds"),
        (dict(trigger="interval", seconds=0), "interval"),
        (dict(trigger="date"), "run_date"),
        (dict(trigger="cron", expr="0 4 * * *", timezone="Nowhere/City"), "timezone"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidSchedule) as info:
            scheduler.add_job(print, id="kept", replace_existing=True, **kwargs)
        assert field in info.value.field, (kwargs, info.value.field, str(info.value))
        assert info.value.reason in str(info.value)
    with pytest.raises(InvalidSchedule) as info:
        scheduler.add_job(print, "cron", expr="* * * * *", id="no:colons")
    assert info.value.field == "id"
    assert [(j.id, j.trigger.spec()) for j in scheduler.get_jobs()] == before
    scheduler.start()
    assert scheduler.get_job("kept").next_run_time.hour == 3


def test_listeners_see_final_states(scheduler):
    finished = []
    scheduler.add_listener(finished.append)
    scheduler.add_job(lambda: 42, id="now")  # no trigger: runs once at start
    scheduler.start()
    assert wait_until(lambda: finished, 5)
    assert [(e.job_id, e.status, e.output) for e in finished] == [("now", "success", "42")]


def test_shutdown_while_jobs_run_returns_and_records_them(scheduler):
    started = threading.Event()

    def sleepy():
        started.set()
        time.sleep(3)

    async def sleepy_coroutine():
        await asyncio.sleep(30)

    scheduler.add_job(sleepy, "manual", id="sleepy")
    scheduler.add_job(sleepy_coroutine, "manual", id="sleepy-coro")
    scheduler.start()
    ids = [scheduler.run_job("sleepy"), scheduler.run_job("sleepy-coro")]
    assert started.wait(2)
    begun = time.monotonic()
    scheduler.shutdown(wait=False)
    assert time.monotonic() - begun < 2
    runs = [scheduler.get_execution(i) for i in ids]
    assert [r.status for r in runs] == ["cancelled", "cancelled"]
    assert all("shutdown" in r.error for r in runs), [r.error for r in runs]
    assert not scheduler.running


def test_interpreter_exit_with_a_running_scheduler(tmp_path):
    db = tmp_path / "exit.db"
    script = textwrap.dedent(f"""
        import asyncio, sys, threading, time
        sys.path.insert(0, {PACKAGE_DIR!r})
        import quartzflow
        started = threading.Event()
        def sleepy():
            started.set()
            time.sleep(60)
        async def ticking():
            await asyncio.sleep(60)
        s = quartzflow.Scheduler(db_path={str(db)!r})
        s.add_job(sleepy, "manual", id="sleepy")
        s.add_job(ticking, "manual", id="ticking")
        s.add_job(print, "cron", expr="* * * * * *", args=["tick"], id="tick")
        s.start()
        s.run_job("sleepy"); s.run_job("ticking")
        started.wait(5)
        print("exiting", flush=True)
    """)
    begun = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert "exiting" in done.stdout and "Traceback" not in done.stderr, done.stderr
    assert time.monotonic() - begun < 10
    reopened = Scheduler(db_path=str(db))
    runs = {r.job_id: r for r in reopened.get_executions() if r.job_id in ("sleepy", "ticking")}
    assert {k: (v.status, "shutdown" in v.error) for k, v in runs.items()} == {
        "sleepy": ("cancelled", True), "ticking": ("cancelled", True)}


def test_misfires_after_a_restart_follow_the_policy(tmp_path):
    db = str(tmp_path / "misfire.db")
    first = Scheduler(db_path=db)
    first.add_job(lambda: None, "cron", expr="* * * * * *", id="tick", misfire_policy="fire_once")
    first.start()
    assert wait_until(lambda: first.get_executions("tick", status="success"), 3)
    first.shutdown()
    time.sleep(2.5)  # two or three fires fall due while nothing runs
    second = Scheduler(db_path=db)
    second.add_job(lambda: None, "cron", expr="* * * * * *", id="tick", misfire_policy="fire_once")
    second.start()
    assert wait_until(lambda: second.get_executions("tick", status="missed"), 3)
    second.shutdown()
    runs = second.get_executions("tick", newest_first=False)
    catch_up = [r for r in runs if r.trigger == "misfire_catchup"]
    assert len(catch_up) == 1 and catch_up[0].status == "success"
    missed = [r for r in runs if r.status == "missed"]
    # fire_once runs the latest owed fire and records the others MISSED, each once.
    assert missed and all(m.scheduled_time < catch_up[0].scheduled_time for m in missed)
    assert len({r.scheduled_time for r in runs}) == len(runs)
