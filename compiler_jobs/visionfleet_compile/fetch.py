"""Fetch a model or calibration file from its URI and verify it, with errors that name the field.

    pvc://<claim>/<path>   the claim is mounted by the compile Job at $VISIONFLEET_PVC_ROOT/<claim>
                           (default /pvc); read in place
    file:///abs/path       a local file (the local fleet, tests)
    https://host/path      downloaded to the work directory
    s3://bucket/key        downloaded with boto3: credentials and region from the usual AWS chain
                           (env, IRSA web identity, instance profile); AWS_ENDPOINT_URL_S3 or
                           AWS_ENDPOINT_URL for S3-compatible stores (MinIO, Ceph)
    gs://                  not supported by this compile image: a clear error, not a guess

A sha256, when given, must match; a mismatch names the field and both digests. Every error is a
``FetchError`` carrying the spec field it concerns, which the compile program reports in its
result and turns into exit code 2 (bad input: the Job is not retried).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from visionfleet_contract import PVC_ROOT, PVC_ROOT_ENV

CHUNK = 1 << 20


class FetchError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def pvc_root() -> Path:
    return Path(os.environ.get(PVC_ROOT_ENV, PVC_ROOT))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, field: str, timeout: float = 300) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out, CHUNK)
    except urllib.error.HTTPError as e:
        raise FetchError(field, f"{url!r}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(field, f"{url!r}: download failed: {getattr(e, 'reason', e)}") from e
    return dest


def download_s3(uri: str, rest: str, workdir: Path, field: str, timeout: float) -> Path:
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise FetchError(field, f"{uri!r}: expected s3://<bucket>/<key>")
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError:
        raise FetchError(field, "s3:// needs boto3, which this compile image lacks; use pvc:// or https://") from None
    dest = workdir / Path(key).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    cfg = botocore.config.Config(connect_timeout=min(timeout, 30), read_timeout=timeout,
                                 retries={"max_attempts": 3, "mode": "standard"})
    try:
        boto3.client("s3", config=cfg).download_file(bucket, key, str(dest))
    except botocore.exceptions.NoCredentialsError:
        raise FetchError(field, f"{uri!r}: no AWS credentials (give the compile Job's ServiceAccount an IAM role, "
                                "or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)") from None
    except botocore.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "?")
        what = {"404": "no such object", "NoSuchKey": "no such object", "NoSuchBucket": "no such bucket",
                "403": "access denied", "AccessDenied": "access denied"}.get(code, f"error {code}")
        raise FetchError(field, f"{uri!r}: {what}") from None
    except (botocore.exceptions.BotoCoreError, OSError) as e:
        raise FetchError(field, f"{uri!r}: download failed: {e}") from None
    return dest


def resolve(uri: str, field: str, workdir: Path, timeout: float = 300) -> Path:
    """The local path of ``uri``, downloading it into ``workdir`` when it is remote."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise FetchError(field, f"{uri!r} is not a URI (expected pvc://, file://, https://, s3:// or gs://)")
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        if not claim or not path:
            raise FetchError(field, f"{uri!r}: expected pvc://<claim>/<path>")
        local = pvc_root() / claim / path
        if not (pvc_root() / claim).is_dir():
            raise FetchError(field, f"claim {claim!r} is not mounted at {pvc_root() / claim}")
        if not local.is_file():
            raise FetchError(field, f"{uri!r}: no such file on claim {claim!r} (looked at {local})")
        return local
    if scheme == "file":
        local = Path("/" + rest.lstrip("/"))
        if not local.is_file():
            raise FetchError(field, f"{uri!r}: no such file")
        return local
    if scheme == "https":
        return download(uri, workdir / (Path(rest).name or "download"), field, timeout)
    if scheme == "s3":
        return download_s3(uri, rest, workdir, field, timeout)
    if scheme == "gs":
        raise FetchError(field, "gs:// is not supported by this compile image; use pvc://, s3:// or an "
                                "https:// URL (a signed URL works), with sha256")
    raise FetchError(field, f"unknown scheme {scheme!r} in {uri!r}")


def fetch(uri: str, sha256: str | None, field: str, workdir: Path) -> Path:
    """Resolve ``uri`` and check its sha256 (``field`` is the spec field of the URI, e.g. model.uri)."""
    path = resolve(uri, field, workdir)
    if sha256:
        got = sha256_of(path)
        if got != sha256.lower():
            sha_field = field.rsplit(".", 1)[0] + ".sha256"
            raise FetchError(sha_field, f"the file at {uri} has sha256 {got}, the spec says {sha256}")
    return path
