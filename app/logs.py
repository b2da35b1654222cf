"""Structured logs: one JSON object per line on stderr; the access log carries one line per request."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from app.clock import format_instant, utcnow


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": format_instant(utcnow()), "level": record.levelname.lower(),
                                "logger": record.name}
        if isinstance(record.msg, dict):
            line.update(record.msg)
        else:
            line["msg"] = record.getMessage()
        # Exception text stays in the server's log (never in a response); it names code, not data.
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Attach the JSON handler to the `sbt` loggers once per process."""
    logger = logging.getLogger("sbt")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
