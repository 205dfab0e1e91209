"""Telling "the package registry cannot be reached" from "the build is broken".

A few steps of the suite fetch what no cache holds yet: a Go module (prometheus-operator's CRDs,
upstream Prometheus' sources), Debian's packages for the image base (debootstrap), PyPI wheels inside
an image build, the venv's packages (e2e/venv/install-venv.sh). When such a step fails, its output
says which of the two happened; ``unreachable`` finds the line that says a remote host was not
reached (its name did not resolve, the connection was refused or timed out), so a test can be
skipped with that line as its reason while any other failure still fails it (tests/helpers.py,
``registry_needed``).

Only the end of the output is read (``TAIL`` lines): a download that failed once and then went
through, followed by a real error, is the real error. A line naming a loopback address is never the
registry's (a local API server that refuses connections is a broken test fleet, not an outage).

    python3 registry.py < LOG    exit 0 and print the line when LOG says a registry was not reached
"""

from __future__ import annotations

import re
import sys

TAIL = 40

UNREACHABLE = re.compile(
    r"Temporary failure in name resolution"          # glibc (pip, curl, …)
    r"|Temporary failure resolving"                  # apt, debootstrap
    r"|Name or service not known"
    r"|NameResolutionError|Failed to resolve"        # urllib3 (pip)
    r"|Could not resolve host"                       # curl
    r"|no such host|server misbehaving"              # Go's resolver
    r"|lookup \S+ on \S+: .*(refused|timeout|timed out|no such host)"
    r"|dial tcp \S*: (connect: )?(connection refused|connection timed out|network is unreachable"
    r"|no route to host|i/o timeout)"
    r"|TLS handshake timeout"
    r"|ConnectTimeoutError|NewConnectionError|Errno 111\] Connection refused"
    r"|curl: \(7\)"
    r"|Failed getting release file"                  # debootstrap: the mirror did not answer
    r"|Network is unreachable|No route to host",
    re.IGNORECASE)
LOOPBACK = re.compile(r"\b127\.\d+\.\d+\.\d+\b|\[::1\]|\blocalhost\b", re.IGNORECASE)


def unreachable(output: str) -> str | None:
    """The last line among the final ``TAIL`` lines of ``output`` that says a registry could not be
    reached, else None."""
    for line in reversed(output.splitlines()[-TAIL:]):
        if UNREACHABLE.search(line) and not LOOPBACK.search(line):
            return line.strip()
    return None


if __name__ == "__main__":
    found = unreachable(sys.stdin.read())
    if found:
        print(found)
    sys.exit(0 if found else 1)
