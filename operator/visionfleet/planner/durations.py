"""Go-style durations ("30s", "1h30m", "500ms"), as the CRD's pattern admits them."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def seconds(duration: str | None) -> float:
    if not duration:
        return 0.0
    parts = _PART.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r} (use e.g. 30s, 2m, 1h30m, 500ms)")
    return sum(float(n) * _UNITS[u] for n, u in parts)
