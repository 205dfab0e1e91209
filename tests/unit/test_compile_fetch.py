"""Fetching and verifying the model: every failure names the spec field and says what was expected."""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visionfleet_compile.fetch import FetchError, fetch

DATA = b"not really onnx, but bytes with a known digest"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture()
def pvc(tmp_path, monkeypatch):
    root = tmp_path / "pvc"
    (root / "models" / "effnet").mkdir(parents=True)
    (root / "models" / "effnet" / "model.onnx").write_bytes(DATA)
    monkeypatch.setenv("VISIONFLEET_PVC_ROOT", str(root))
    return root


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    d = tmp_path_factory.mktemp("web")
    (d / "model.onnx").write_bytes(DATA)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(d)))
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_pvc_is_read_in_place_and_verified(pvc, tmp_path):
    path = fetch("pvc://models/effnet/model.onnx", SHA, "model.uri", tmp_path / "work")
    assert path == pvc / "models" / "effnet" / "model.onnx"


def test_file_uri(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(DATA)
    assert fetch(f"file://{f}", None, "model.uri", tmp_path) == f


def test_https_is_downloaded_into_the_work_dir(tmp_path, monkeypatch):
    from visionfleet_compile import fetch as mod
    calls = []

    def fake_download(url, dest, field, timeout=300):
        calls.append((url, dest, field))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(DATA)
        return dest
    monkeypatch.setattr(mod, "download", fake_download)
    path = fetch("https://models.example.com/gate/m.onnx", SHA, "model.uri", tmp_path / "dl")
    assert calls == [("https://models.example.com/gate/m.onnx", tmp_path / "dl" / "m.onnx", "model.uri")]
    assert path.read_bytes() == DATA


def test_download_over_a_real_socket(web, tmp_path):
    from visionfleet_compile.fetch import download
    assert download(web + "/model.onnx", tmp_path / "m.onnx", "model.uri").read_bytes() == DATA
    with pytest.raises(FetchError, match="model.uri: .*HTTP 404"):
        download(web + "/nope.onnx", tmp_path / "n.onnx", "model.uri")


@pytest.mark.parametrize(
    ("uri", "sha", "field", "message"),
    [
        pytest.param("pvc://models/effnet/missing.onnx", None, "model.uri", "no such file on claim 'models'",
                     id="missing-file"),
        pytest.param("pvc://other/x.onnx", None, "model.uri", "claim 'other' is not mounted", id="claim-not-mounted"),
        pytest.param("pvc://models", None, "model.uri", "expected pvc://<claim>/<path>", id="no-path"),
        pytest.param("pvc://models/effnet/model.onnx", "0" * 64, "model.sha256", f"has sha256 {SHA}",
                     id="bad-hash"),
        pytest.param("gs://bucket/m.onnx", None, "model.uri", "gs:// is not supported", id="gs"),
        pytest.param("s3://bucket", None, "model.uri", "expected s3://<bucket>/<key>", id="s3-no-key"),
        pytest.param("ftp://x/m.onnx", None, "model.uri", "unknown scheme 'ftp'", id="scheme"),
        pytest.param("m.onnx", None, "model.uri", "is not a URI", id="not-a-uri"),
        pytest.param("pvc://models/effnet/model.onnx", "0" * 64, "compile.calibration.sha256", "the spec says",
                     id="calibration-hash"),
    ],
)
def test_failures_name_the_field(pvc, tmp_path, uri, sha, field, message):
    source_field = field.replace(".sha256", ".uri")
    with pytest.raises(FetchError) as err:
        fetch(uri, sha, source_field, tmp_path)
    assert err.value.field == field and message in str(err.value) and str(err.value).startswith(field + ":")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 API (moto's server) on loopback, reached by boto3 exactly as a cluster's S3 would be."""
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        client.put_object(Bucket="models", Key="effnet/model.onnx", Body=DATA)
        yield client
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        server.stop()


def test_s3_download_with_hash(s3, tmp_path):
    path = fetch("s3://models/effnet/model.onnx", SHA, "model.uri", tmp_path)
    assert path.read_bytes() == DATA and path.parent == tmp_path


@pytest.mark.parametrize(("uri", "sha", "field", "message"), [
    pytest.param("s3://models/effnet/missing.onnx", None, "model.uri", "no such object", id="missing-key"),
    pytest.param("s3://nobucket/m.onnx", None, "model.uri", "no such", id="missing-bucket"),
    pytest.param("s3://models/effnet/model.onnx", "1" * 64, "model.sha256", f"has sha256 {SHA}", id="bad-hash"),
])
def test_s3_failures_name_the_field(s3, tmp_path, uri, sha, field, message):
    with pytest.raises(FetchError) as err:
        fetch(uri, sha, "model.uri", tmp_path)
    assert err.value.field == field and message in str(err.value)
