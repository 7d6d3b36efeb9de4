# SPDX-License-Identifier: Apache-2.0
# A small APScheduler 3.x program: jobs come from a SQLite table at start, one is added and
# one removed while it runs, every run writes a log row and counts successes and failures.
# ported.py is this file with its imports changed to quartzflow.apscheduler (nothing else).
import asyncio
import sqlite3
import sys
import time

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger


def run_job(db_path, job_id, command):
    ok = command != "fail"
    with sqlite3.connect(db_path, timeout=10) as db:
        db.execute("INSERT INTO runs (job_id, at, ok) VALUES (?, ?, ?)", (job_id, time.time(), ok))
        db.execute("UPDATE jobs SET successes = successes + ?, failures = failures + ? WHERE id = ?",
                   (int(ok), int(not ok), job_id))
    if not ok:
        raise RuntimeError(f"job {job_id} failed")


def trigger_of(kind, spec):
    if kind == "interval":
        return IntervalTrigger(seconds=int(spec))
    fields = spec.split()
    if len(fields) == 6:  # seconds first, as the source system wrote them
        return CronTrigger(second=fields[0], minute=fields[1], hour=fields[2], day=fields[3],
                           month=fields[4], day_of_week=fields[5])
    return CronTrigger.from_crontab(spec)


def add(scheduler, db_path, job_id, kind, spec, command):
    scheduler.add_job(run_job, trigger_of(kind, spec), args=[db_path, job_id, command], id=job_id,
                      name=job_id, replace_existing=True, coalesce=True, max_instances=1)


async def main(db_path, seconds):
    scheduler = AsyncIOScheduler(timezone="UTC")
    with sqlite3.connect(db_path) as db:
        for job_id, kind, spec, command in db.execute(
                "SELECT id, kind, spec, command FROM jobs WHERE enabled ORDER BY id").fetchall():
            add(scheduler, db_path, job_id, kind, spec, command)
    scheduler.start()
    for job in scheduler.get_jobs():
        print(f"{job.id}: next run at {job.next_run_time}")
    await asyncio.sleep(seconds / 2)
    with sqlite3.connect(db_path) as db:
        db.execute("INSERT INTO jobs (id, kind, spec, command, enabled) VALUES ('added', 'interval', '1', 'ok', 1)")
    add(scheduler, db_path, "added", "interval", "1", "ok")
    scheduler.remove_job("flaky")
    await asyncio.sleep(seconds / 2)
    scheduler.shutdown(wait=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 6.0))
