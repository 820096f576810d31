"""Hiding an app's user values in the text Nephelios writes about a deployment.

An app's env values and build args may be secrets, and the engine or the Docker CLI may
quote them back in an error (the stack file holds them). `hidden_values(app, ...)` lists
them, and `redact(text, values)` replaces each, in the forms the stack file and JSON give
it, with `***`. Values shorter than MIN_CHARS stay: "1" or "on" reveal nothing, and hiding
them would garble every message that has a digit in it. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pipeline.core.config import App

MASK = "***"
MIN_CHARS = 4


def hidden_values(app: App, *extra: str) -> tuple[str, ...]:
    """The values to hide for `app`, longest first (so no part of one is left showing)."""
    values = {*app.env.values(), *app.build.args.values(), *extra}
    forms = {form for value in values if len(value) >= MIN_CHARS for form in _forms(value)}
    return tuple(sorted(forms, key=len, reverse=True))


def _forms(value: str) -> set[str]:
    # The stack file doubles `$` (compose interpolation) and JSON-quotes every string.
    doubled = value.replace("$", "$$")
    return {value, doubled, json.dumps(value)[1:-1], json.dumps(doubled)[1:-1]}


def redact(text: str, values: Iterable[str]) -> str:
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text
