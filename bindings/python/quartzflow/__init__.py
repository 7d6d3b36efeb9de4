# SPDX-License-Identifier: Apache-2.0
"""QuartzFlow for Python: cron schedules and an embedded scheduler over the C++ library.

- ``quartzflow.cron.parse(expr, tz)``: cron expressions (5, 6 or 7 fields, ``L``, ``W``,
  ``#``, ``H``, macros) with ``.next()``, ``.prev()``, ``.explain()``, ``.describe()`` in any
  IANA zone, with explicit DST gap and overlap policies.
- ``quartzflow.Schedule``: cron, interval, fixed delay, once and manual schedules with
  windows, run limits and jitter.
- ``quartzflow.Scheduler``: jobs (callables or coroutines) run by the C++ TaskEngine, every
  run recorded in its LocalStore (history, logs, daily statistics).
- ``quartzflow.InvalidSchedule``: the ValueError raised for a refused schedule or setting,
  with ``field`` and ``reason``.
- ``quartzflow.Client``: the admin API of a qf-coordinator, for scripts and CI
  (``quartzflow.client``); ``quartzflow.apscheduler``: APScheduler 3.x calls over
  ``quartzflow.Scheduler``.

``quartzflow.__version__`` is the version of the C++ library the module was built from.
"""

from ._errors import InvalidSchedule
from . import _native
from . import cron
from .client import ApiError, Client, ConnectionFailed
from .cron import CronExpression
from .schedule import Fire, Schedule
from .scheduler import (
    ConflictingIdError,
    DailyStats,
    Execution,
    Job,
    JobLookupError,
    RunInfo,
    Scheduler,
    SchedulerNotRunning,
    current_run,
)

__version__: str = _native.__version__

__all__ = [
    "__version__",
    "cron",
    "CronExpression",
    "Schedule",
    "Fire",
    "Scheduler",
    "Job",
    "Execution",
    "DailyStats",
    "RunInfo",
    "current_run",
    "InvalidSchedule",
    "SchedulerNotRunning",
    "JobLookupError",
    "ConflictingIdError",
    "Client",
    "ApiError",
    "ConnectionFailed",
]
