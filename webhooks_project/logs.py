"""Log formats: `json` (one object per line, for log shippers) or `plain` (for a terminal).

`WEBHOOKS_LOG_FORMAT` chooses; dev defaults to plain. Structured fields are passed as
`extra={"fields": {...}}` and become top-level keys of the JSON line (the attempt log uses this).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

from . import tracing


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the record's `fields`, and the
    exception text if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if tracing.ENABLED:  # a log line names the trace it was written in
            line.update(tracing.log_fields())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()
