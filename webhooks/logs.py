"""Log output for every `nephelios` process: one line per record, text or JSON.

Records may carry `app`, `deployment` and `delivery` as extras (pipeline.jobs and
pipeline.metrics add them); both formats show them, so a deployment can be followed across
the receiver and the workers with one grep or one query. Messages never hold secrets or env
values by the rules of the code that logs them; the formatter adds nothing from settings.
"""

from __future__ import annotations

import json
import logging
import time

FIELDS = ("app", "deployment", "delivery")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The classic line, with ` app=... deployment=... delivery=...` when the record has them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS if _has(record, name))
        if not tags:
            return line
        head, newline, rest = line.partition("\n")  # keep tracebacks below the tagged line
        return f"{head} {tags}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the fields, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in FIELDS if _has(record, name)})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _has(record: logging.LogRecord, name: str) -> bool:
    return bool(getattr(record, name, None))


def setup_logging(level: str, log_format: str = "text") -> None:
    """Replace the root handlers with one stderr handler in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
