"""Fetch a model or calibration file from its URI and verify it, with errors that name the field.

    pvc://<claim>/<path>   the claim is mounted by the compile Job at $VISIONFLEET_PVC_ROOT/<claim>
                           (default /pvc); read in place
    file:///abs/path       a local file (the local fleet, tests)
    https://host/path      downloaded to the work directory
    s3://bucket/key        downloaded with boto3: credentials and region from the usual AWS chain
                           (env, IRSA web identity, instance profile); AWS_ENDPOINT_URL_S3 or
                           AWS_ENDPOINT_URL for S3-compatible stores (MinIO, Ceph)
    gs://                  refused by the CRD (and here): a clear error, not a guess

Model repositories on s3:// go both ways: ``upload_entry`` (the compile Job writes the entry) and
``fetch_entry`` (a Triton pod's init container, ``visionfleet-compile fetch-entry``, fetches it and
checks every file against the compile result's sha256 before Triton starts).

The drift monitor asks Triton under its own entry, ``<model>__monitor`` (``MONITOR_MODEL_SUFFIX``), so
its requests never count in the served model's SLO series. ``write_monitor_entry`` lays that entry
out next to the served one in a local repository: its config.pbtxt (``monitor_config``: the same text
but the name and one instance) and version directories that are symlinks to the served ones (Triton
follows them; no second copy of the artifact).

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
from typing import Any

from visionfleet_contract import CONFIG_FILE, PVC_ROOT, PVC_ROOT_ENV, monitor_config, monitor_model_name

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


def split_s3(uri: str, field: str, *, key_required: bool = True) -> tuple[str, str]:
    """s3://<bucket>/<key> -> (bucket, key)."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or (key_required and not key.strip("/")):
        raise FetchError(field, f"{uri!r}: expected s3://<bucket>/<key>")
    return bucket, key.strip("/")


def s3_client(field: str, timeout: float = 300) -> Any:
    """boto3's S3 client: endpoint (AWS_ENDPOINT_URL_S3), region and credentials from the usual AWS
    chain, which is what storage.s3 and the pod's identity set up."""
    try:
        import boto3
        import botocore.config
    except ImportError:
        raise FetchError(field, "s3:// needs boto3, which this image lacks; use pvc:// or https://") from None
    # Checksums only where S3 requires them: botocore >= 1.36 otherwise sends aws-chunked uploads with
    # CRC32 trailers, which GCS's S3 API and older MinIO/Ceph refuse. Integrity is the sha256 of each
    # file, checked end to end (upload_entry / fetch_entry).
    cfg = botocore.config.Config(connect_timeout=min(timeout, 30), read_timeout=timeout,
                                 retries={"max_attempts": 5, "mode": "standard"},
                                 request_checksum_calculation="when_required",
                                 response_checksum_validation="when_required")
    return boto3.client("s3", config=cfg)


def _s3_error(uri: str, field: str, e: Exception) -> FetchError:
    import botocore.exceptions

    if isinstance(e, botocore.exceptions.NoCredentialsError):
        return FetchError(field, f"{uri!r}: no AWS credentials (set storage.s3.credentialsSecret, or give the pod's "
                                 "ServiceAccount an identity: IRSA, EKS Pod Identity, GKE workload identity)")
    if isinstance(e, botocore.exceptions.ClientError):
        code = e.response.get("Error", {}).get("Code", "?")
        what = {"404": "no such object", "NoSuchKey": "no such object", "NoSuchBucket": "no such bucket",
                "403": "access denied", "AccessDenied": "access denied",
                "InvalidAccessKeyId": "the access key is not known to the store",
                "SignatureDoesNotMatch": "the secret key does not match the access key"}.get(code, f"error {code}")
        return FetchError(field, f"{uri!r}: {what}")
    return FetchError(field, f"{uri!r}: transfer failed: {e}")


def download_s3(uri: str, workdir: Path, field: str, timeout: float) -> Path:
    bucket, key = split_s3(uri, field)
    client = s3_client(field, timeout)
    import botocore.exceptions

    dest = workdir / Path(key).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.download_file(bucket, key, str(dest))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
        raise _s3_error(uri, field, e) from None
    return dest


REPOSITORY_FIELD = "serving.modelRepository"


def upload_entry(local: Path, prefix_uri: str, sums: dict[str, str], timeout: float = 300) -> None:
    """Upload the files of a repository entry named in ``sums`` ({name: sha256}, as the compile program
    hashed them) to ``prefix_uri`` (s3://bucket/prefix/<model>/<rev>-<class>). Each object carries its
    sha256 as metadata; the Triton pods' init container checks the bytes against the compile result's
    hashes (not against the metadata), so an object replaced later is refused, not served."""
    import botocore.exceptions

    bucket, prefix = split_s3(prefix_uri, REPOSITORY_FIELD)
    client = s3_client(REPOSITORY_FIELD, timeout)
    for name, digest in sorted(sums.items()):
        f = local / name
        key = f"{prefix}/{f.name}"
        try:
            client.upload_file(str(f), bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
            size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
            raise _s3_error(f"s3://{bucket}/{key}", REPOSITORY_FIELD, e) from None
        if size != f.stat().st_size:
            raise FetchError(REPOSITORY_FIELD, f"s3://{bucket}/{key}: the store holds {size} bytes after the upload, "
                                               f"the file has {f.stat().st_size}")


def fetch_entry(source: str, dest: Path, files: dict[str, str], timeout: float = 300) -> list[Path]:
    """Fetch a repository entry's files from ``source`` (s3://bucket/prefix/<model>/<rev>-<class>) into
    ``dest`` and check each against its sha256 (the compile result's). A file arrives under a temporary
    name and is renamed only once it matches, so ``dest`` never holds a partial or unverified file.
    Files already in ``dest`` with the right hash are kept (an init container that runs again)."""
    import botocore.exceptions

    if not files:
        raise FetchError(REPOSITORY_FIELD, "the compile result lists no files to fetch (compiled by an older compile "
                                           "image? recompile with visionfleet.io/retry)")
    bucket, prefix = split_s3(source, REPOSITORY_FIELD)
    client = s3_client(REPOSITORY_FIELD, timeout)
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(".*.partial*"):  # a run killed mid-download (OOM, eviction) left these
        stale.unlink(missing_ok=True)
    out = []
    for name, want in sorted(files.items()):
        if "/" in name or name in (".", ".."):
            raise FetchError(REPOSITORY_FIELD, f"{name!r} is not a file name")
        final = dest / name
        if final.is_file() and sha256_of(final) == want:
            out.append(final)
            continue
        partial = dest / f".{name}.partial"
        uri = f"s3://{bucket}/{prefix}/{name}"
        try:
            client.download_file(bucket, f"{prefix}/{name}", str(partial))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
            partial.unlink(missing_ok=True)
            raise _s3_error(uri, REPOSITORY_FIELD, e) from None
        got = sha256_of(partial)
        if got != want:
            partial.unlink(missing_ok=True)
            raise FetchError(REPOSITORY_FIELD, f"{uri} has sha256 {got}, the compile Job wrote {want}: the object "
                                               "changed after the revision was compiled; refusing to serve it")
        partial.rename(final)
        out.append(final)
    return out


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
        return download_s3(uri, workdir, field, timeout)
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


def write_monitor_entry(repo: Path, model: str) -> Path:
    """Lay out ``<repo>/<model>__monitor`` beside ``<repo>/<model>``: config.pbtxt from the served one's
    (``monitor_config``) and, for each version directory of the served entry, a relative symlink to it.
    Idempotent (an entry already there is replaced). Returns the monitor entry's directory."""
    served = repo / model
    config = served / CONFIG_FILE
    if not config.is_file():
        raise FetchError(REPOSITORY_FIELD, f"{config}: no config.pbtxt to derive the monitor entry from")
    versions = sorted(d.name for d in served.iterdir() if d.is_dir() and d.name.isdigit())
    if not versions:
        raise FetchError(REPOSITORY_FIELD, f"{served}: no version directory to serve the monitor entry from")
    dest = repo / monitor_model_name(model)
    dest.mkdir(parents=True, exist_ok=True)
    for v in versions:
        link = dest / v
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(Path("..") / model / v, target_is_directory=True)
    tmp = dest / f".{CONFIG_FILE}.partial"
    tmp.write_text(monitor_config(config.read_text(), model))
    tmp.rename(dest / CONFIG_FILE)
    return dest
