"""Small helpers shared by the integration and e2e tests."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import pytest

from visionfleet_e2e.registry import unreachable

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 90, interval: float = 0.5, what: str = "condition") -> T:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


@contextmanager
def moto_s3(bucket: str, keys: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """A real S3 API (moto's server) on loopback with ``bucket`` created → (endpoint, boto3 client
    signed with ``keys``: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
        client.create_bucket(Bucket=bucket)
        yield endpoint, client
    finally:
        server.stop()


@contextmanager
def registry_needed(what: str) -> Iterator[None]:
    """Around a step that fetches ``what`` from a package registry when no cache holds it yet: when the
    step fails because the registry cannot be reached, the test is skipped, the line that says so its
    reason; any other failure fails the test as before."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unless it is the network's
        line = unreachable(str(e))
        if line is None:
            raise
        pytest.skip(f"needs {what}, and the package registry cannot be reached: {line[:240]}")
