"""Telling "the package registry cannot be reached" from "the build is broken".

A few steps of the suite fetch what no cache holds yet: a Go module (prometheus-operator's CRDs,
upstream Prometheus' sources), Debian's packages for the image base (debootstrap), PyPI wheels inside
an image build. When such a step fails, its output says which of the two happened; ``unreachable``
finds the line that says the registry was not reached (name resolution failed, the connection was
refused, or it timed out), so a test can be skipped with that line as its reason while any other
failure still fails it (tests/helpers.py, ``registry_needed``).
"""

from __future__ import annotations

import re

UNREACHABLE = re.compile(
    r"Temporary failure in name resolution"
    r"|Could not resolve host"
    r"|no such host"
    r"|lookup \S+ on \S+: .*(refused|timeout|timed out|no such host)"
    r"|dial tcp \S*: (connect: )?(connection refused|network is unreachable|i/o timeout)"
    r"|Failed getting release file"
    r"|Network is unreachable",
    re.IGNORECASE)


def unreachable(output: str) -> str | None:
    """The first line of ``output`` that says a registry could not be reached, else None."""
    for line in output.splitlines():
        if UNREACHABLE.search(line):
            return line.strip()
    return None
