# SPDX-License-Identifier: Apache-2.0
"""Exceptions of the quartzflow package."""

__all__ = ["InvalidSchedule"]


class InvalidSchedule(ValueError):
    """A schedule (or a job setting) that QuartzFlow refuses.

    ``str(error)`` is the full message, e.g. ``invalid cron expression "61 * * * *":
    minute: 61 is out of range 0-59``; ``field`` names the offending part (``minute``,
    ``schedule.time_zone``, ``overlap_policy``) and ``reason`` says why.
    """

    def __init__(self, message: str, field: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason

    def __reduce__(self):
        return (type(self), (str(self), self.field, self.reason))
