"""The id of the request being served, for log lines (no Django imports: logging loads it early).

`RequestLimitsMiddleware` (registry/limits.py) sets it for each request; `RequestIdFilter`
adds it to every log record, so a 500's traceback can be found from the id a user reports.
"""
from __future__ import annotations

import contextvars
import logging

current = contextvars.ContextVar("hallmark_request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record (the logging config's formatters print it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True
