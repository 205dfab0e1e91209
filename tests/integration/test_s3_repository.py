"""An s3:// model repository end to end, with a real S3 API (moto's server on loopback) and the real
tritonserver:

    the operator's compile Job manifest ─► visionfleet-compile compile, run with exactly that
        container's env (+ the credentials Secret its envFrom names) ─► entry uploaded to the bucket
    the Job's termination message ─► the operator's parser ─► CompileResult (with every file's sha256)
    the operator's Triton Deployment ─► its init container's command (fetch-entry), same env
        ─► the entry in the pod's version directory, each file checked ─► tritonserver loads it
        with the operator's ConfigMap and answers an inference like the fp32 model

and what goes wrong: an object replaced after the compile, no credentials.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.builders.manifests import build_compile_job, build_config_map, build_triton_deployment
from visionfleet.observe.kube import parse_result
from visionfleet.planner.classes import resolve_classes
from visionfleet_compile import zoo
from visionfleet_e2e.triton import TritonServer

from ..helpers import moto_s3

REV, VD, NS, BUCKET = "0123456789ab", "doorbell", "vision", "vision-models"
SECRET = {"AWS_ACCESS_KEY_ID": "AKIAVISIONFLEET", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def s3():
    with moto_s3(BUCKET, SECRET) as s3_api:
        yield s3_api


@pytest.fixture(scope="module")
def sample():
    return zoo.ensure_sample_model()


def vd_spec(sample: dict, endpoint: str) -> VisionDeploymentSpec:
    return VisionDeploymentSpec.model_validate({
        "model": {"name": "effnet", "version": "1", "uri": f"file://{sample['model']}",
                  "sha256": sample["modelSha256"], "inputs": [sample["input"]], "outputs": [sample["output"]]},
        "fleet": {"classes": [{"name": "xeon", "nodeSelector": {"kubernetes.io/arch": "amd64"},
                               "runtime": "onnxruntime", "precision": "fp32"}]},
        "compile": {"calibration": {"uri": f"file://{sample['data']}", "samples": 100},
                    "batching": {"mode": "auto", "latencyBudgetMs": 200}},
        "serving": {"modelRepository": f"s3://{BUCKET}/triton"},
        "storage": {"s3": {"endpoint": endpoint, "region": "us-east-1", "credentialsSecret": "s3-credentials"}},
    })


def pod_env(container: dict, secrets: dict[str, dict[str, str]], **extra: str) -> dict[str, str]:
    """The environment the kubelet would give ``container``: its env values and every key of each
    Secret its envFrom names — nothing of this machine's own AWS setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")
    for src in container.get("envFrom") or []:
        env.update(secrets[src["secretRef"]["name"]])
    for e in container.get("env") or []:
        env[e["name"]] = e["value"]
    env.update(extra)
    return env


def run(container: dict, secrets: dict, tmp: Path, **extra: str) -> subprocess.CompletedProcess:
    argv = [str(BIN / (container.get("command") or ["visionfleet-compile"])[0]), *container["args"]]
    return subprocess.run(argv, env=pod_env(container, secrets, VISIONFLEET_TERMINATION_LOG=str(tmp / "termination"),
                                            VISIONFLEET_PROFILE_SECONDS="0.2", TMPDIR=str(tmp), **extra),
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def compiled(s3, sample, tmp_path_factory):
    """The compile Job, as its manifest says, uploading to the bucket."""
    endpoint, _ = s3
    spec = vd_spec(sample, endpoint)
    cls = next(c for c in resolve_classes(spec, []) if c.name == "xeon")
    job = build_compile_job(VD, NS, "uid", spec, cls, REV)
    container = job["spec"]["template"]["spec"]["containers"][0]
    tmp = tmp_path_factory.mktemp("compile-job")
    proc = run(container, {"s3-credentials": SECRET}, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    result, why = parse_result((tmp / "termination").read_text())
    assert why is None, why
    return spec, cls, result


def test_the_compile_job_uploads_its_entry_with_checksums(s3, compiled):
    _, client = s3
    spec, _, result = compiled
    prefix = f"triton/effnet/{REV}-xeon/"
    keys = {o["Key"][len(prefix):] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert keys == {"model.onnx", "config.pbtxt", "drift-reference.npz"}
    assert result.artifact == f"s3://{BUCKET}/{prefix}model.onnx"
    assert set(result.files) == {"model.onnx", "drift-reference.npz"} and result.files["model.onnx"] == result.sha256
    import hashlib
    for name, digest in result.files.items():
        obj = client.get_object(Bucket=BUCKET, Key=prefix + name)
        assert obj["Metadata"]["sha256"] == digest == hashlib.sha256(obj["Body"].read()).hexdigest()


def init_container(spec, cls, result) -> dict:
    dep = build_triton_deployment(VD, NS, "uid", spec, cls, REV, 1, result, "stable")
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    return init


def test_triton_serves_what_the_init_container_fetched_and_checked(compiled, sample, tmp_path):
    spec, cls, result = compiled
    init = init_container(spec, cls, result)
    repo = tmp_path / "models"
    # The pod's /models/effnet/1 is the emptyDir: here a directory at the same relative place.
    init = {**init, "args": [a.replace("--dest=/models", f"--dest={repo}") for a in init["args"]]}
    # what a run killed mid-download (OOM, eviction) leaves in the emptyDir
    (repo / "effnet" / "1").mkdir(parents=True)
    (repo / "effnet" / "1" / ".model.onnx.partial.1f2e3d").write_bytes(b"half a model")
    proc = run(init, {"s3-credentials": SECRET}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fetched = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fetched["phase"] == "fetched" and fetched["files"] == 2
    assert sorted(p.name for p in (repo / "effnet" / "1").iterdir()) == ["drift-reference.npz", "model.onnx"]
    # Triton's config.pbtxt comes from the operator's ConfigMap, as the pod mounts it.
    cm = build_config_map(VD, NS, "uid", spec, cls, REV, result)
    (repo / "effnet" / "config.pbtxt").write_text(cm["data"]["config.pbtxt"])
    server = TritonServer(repo, tmp_path / "triton", models=["effnet"]).start()
    try:
        import tritonclient.http as http

        images = np.load(sample["data"])["images"][:4].astype(np.float32)
        client = http.InferenceServerClient(server.url)
        outs = []
        for image in images:  # one request each: the batching the profile chose may be small
            inp = http.InferInput(sample["input"]["name"], [1, *image.shape], "FP32")
            inp.set_data_from_numpy(image[None])
            outs.append(client.infer("effnet", [inp]).as_numpy(sample["output"]["name"]))
        out = np.concatenate(outs)
        assert out.shape == (4, 1000)
        import onnxruntime as ort

        ref = ort.InferenceSession(sample["model"]).run(None, {sample["input"]["name"]: images})[0]
        assert (out.argmax(1) == ref.argmax(1)).all(), "the served model is the compiled fp32 model"
    finally:
        server.stop()


def test_an_object_replaced_after_the_compile_is_refused(s3, compiled, tmp_path):
    _, client = s3
    spec, cls, result = compiled
    key = f"triton/effnet/{REV}-xeon/drift-reference.npz"
    original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=original + b"tampered")
    try:
        init = init_container(spec, cls, result)
        dest = tmp_path / "v1"
        init = {**init, "args": [a if not a.startswith("--dest=") else f"--dest={dest}" for a in init["args"]]}
        proc = run(init, {"s3-credentials": SECRET}, tmp_path)
        assert proc.returncode == 2
        message = (tmp_path / "termination").read_text()
        assert message.startswith("serving.modelRepository: ") and "changed after the revision was compiled" in message
        assert result.files["drift-reference.npz"] in message
        assert not (dest / "drift-reference.npz").exists() and not list(dest.glob(".*.partial"))
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=original)


def test_no_credentials_says_where_they_come_from(compiled, tmp_path):
    spec, cls, result = compiled
    init = init_container(spec, cls, result)
    init = {**init, "args": [a if not a.startswith("--dest=") else f"--dest={tmp_path / 'v1'}" for a in init["args"]]}
    proc = run(init, {"s3-credentials": {}}, tmp_path)  # the Secret exists but holds no keys
    assert proc.returncode == 2
    message = (tmp_path / "termination").read_text()
    assert message.startswith("serving.modelRepository: ") and "no AWS credentials" in message
    assert "credentialsSecret" in message and "ServiceAccount" in message
