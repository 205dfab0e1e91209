"""The Dockerfile's images, built for real (buildah, cached by content hash) and run as their pod
specs run them: the user, read-only root filesystem, capabilities, command and arguments come from
the manifests the operator builds (compile Job, drift monitor sidecar) and from the chart (the
operator: tests/e2e/test_chart_rbac.py), so the images and the pod specs cannot drift apart.

    compile image ─ compiles the real EfficientNet-Lite0 from a mounted claim, result in the
                    termination message, artifact + config.pbtxt + drift reference on the output claim
    monitor image ─ serves /healthz, /v1/status and /metrics on that drift reference
    operator image ─ holds the operator and the contract only; the size budget
    compile-gpu   ─ built; TensorRT and torch import; what a machine without a GPU cannot check is said
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.observe.kube import parse_result
from visionfleet.builders import manifests
from visionfleet.planner.classes import resolve_classes
from visionfleet_e2e import images
from visionfleet_e2e.local_process import free_port

from ..helpers import moto_s3, registry_needed, wait_for

pytestmark = pytest.mark.images

# The operator image: the Debian base with Python 3.11 (160 MB) and a virtualenv of kopf, the
# Kubernetes client (130 MB of it, sources and bytecode), pydantic and the contract: 335 MB measured.
# A budget, not a guess: raising it is a decision to write down in docs/operating.md.
OPERATOR_IMAGE_BUDGET_MB = 350


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    """target -> Built, built (or found) once per session."""
    log = tmp_path_factory.mktemp("images") / "build.log"
    built: dict[str, images.Built] = {}

    def get(target: str) -> images.Built:
        if target not in built:
            with registry_needed(f"Debian's and PyPI's packages for the {target} image (not yet cached)"):
                built[target] = images.build(target, log)
        return built[target]
    return get


def python_in(ref: str, code: str) -> str:
    return images.podman("run", "--rm", "--pull=never", "--read-only", "--entrypoint=python", ref, "-c", code).stdout


@pytest.mark.parametrize("target", ["operator", "compile", "monitor", "monitor-mmd"])
def test_images_run_as_non_root_numeric_user_with_a_read_only_root(image, target):
    ref = image(target).ref
    assert images.image_user(ref) == "65532:65532"
    # Python 3.11 from the base, HOME on /tmp, and nothing written outside /tmp at start-up.
    out = python_in(ref, "import os, sys; print(sys.version_info[:2], os.environ['HOME'], os.getuid())")
    assert out.split() == ["(3,", "11)", "/tmp", "65532"], out


def test_operator_image_holds_the_operator_and_the_contract_only(image):
    built = image("operator")
    found = json.loads(python_in(built.ref, (
        "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
        "['visionfleet', 'visionfleet_contract', 'kopf', 'kubernetes', 'visionfleet_compile', "
        "'visionfleet_monitor', 'visionfleet_e2e', 'numpy', 'torch', 'onnx']}))")))
    assert found == {"visionfleet": True, "visionfleet_contract": True, "kopf": True, "kubernetes": True,
                     "visionfleet_compile": False, "visionfleet_monitor": False, "visionfleet_e2e": False,
                     "numpy": False, "torch": False, "onnx": False}
    assert built.size_bytes < OPERATOR_IMAGE_BUDGET_MB * 1e6, \
        f"operator image is {built.size_bytes / 1e6:.0f} MB, over its {OPERATOR_IMAGE_BUDGET_MB} MB budget"


def _spec(info: dict, drift: bool = True, s3_endpoint: str | None = None) -> VisionDeploymentSpec:
    return VisionDeploymentSpec.model_validate({
        "model": {"name": "effnet", "version": "1", "uri": "pvc://models/effnet/model.onnx",
                  "sha256": info["modelSha256"], "inputs": [info["input"]], "outputs": [info["output"]]},
        "fleet": {"classes": [{"name": "xeon", "nodeSelector": {"pool": "xeon"}, "runtime": "onnxruntime",
                               "precision": "fp32"}]},
        "compile": {"calibration": {"uri": "pvc://models/effnet/imagenet-sample.npz",
                                    "sha256": info["dataSha256"], "samples": info["calibrationSamples"]},
                    "accuracyGate": {"metric": "top1Agreement", "min": 0.99},
                    "batching": {"mode": "auto", "latencyBudgetMs": 200}},
        "serving": {"modelRepository": f"s3://{BUCKET}/models" if s3_endpoint else "pvc://repository/models"},
        **({"storage": {"s3": {"endpoint": s3_endpoint, "region": "us-east-1", "credentialsSecret": "s3"}}}
           if s3_endpoint else {}),
        **({"analysis": {"drift": {"detector": "bbsd-ks", "window": 50}}} if drift else {}),
    })


BUCKET, S3_KEYS = "vision-models", {"AWS_ACCESS_KEY_ID": "AKIAVISIONFLEET", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}


@pytest.fixture(scope="module")
def s3():
    """A real S3 API (moto's server) on this machine's loopback: the images run with the host's network."""
    with moto_s3(BUCKET, S3_KEYS) as s3_api:
        yield s3_api


@pytest.fixture(scope="module")
def compiled(image, s3, tmp_path_factory):
    """The compile image run as the operator's compile Job runs it, on the real EfficientNet-Lite0,
    writing to an s3:// repository; then the same image as a Triton pod's init container fetches the
    entry (checking every file) into the directory Triton and the drift monitor read."""
    from visionfleet_compile import zoo

    info = zoo.ensure_sample_model()
    root = tmp_path_factory.mktemp("compile-image")
    models, repo = root / "models", root / "repository"
    (models / "effnet").mkdir(parents=True)
    for src, name in ((info["model"], "model.onnx"), (info["data"], "imagenet-sample.npz")):
        (models / "effnet" / name).write_bytes(Path(src).read_bytes())
    term = root / "termination-log"
    term.write_text("")
    term.chmod(0o666)
    spec = _spec(info, s3_endpoint=s3[0])
    cls = resolve_classes(spec, [])[0]
    job = manifests.build_compile_job("doorbell", "ns", "uid-1", spec, cls, "0123456789abcdef")
    pod = job["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert set(claims.values()) == {"models"}, "an s3:// repository mounts no claim"
    host = {name: str(models) for name in claims}
    built = image("compile")
    name = f"vf-compile-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    proc = images.podman("run", "--rm", f"--name={name}", *images.run_args(pod, "compile", host, env_from={"s3": S3_KEYS}),
                         f"--volume={term}:/dev/termination-log:rw", "--env=VISIONFLEET_PROFILE_SECONDS=0.2",
                         built.ref, *images.command_of(pod, "compile"), check=False)
    out = {"proc": proc, "term": term, "repo": repo, "spec": spec, "seconds": time.monotonic() - t0, "fetch": None}
    parsed, _ = parse_result(term.read_text())
    if proc.returncode == 0 and parsed is not None:
        entry = repo / "models" / "effnet" / "0123456789abcdef-xeon"
        entry.mkdir(parents=True)
        entry.chmod(0o777)  # the emptyDir: writable by the pod's user
        dep = manifests.build_triton_deployment("doorbell", "ns", "uid-1", spec, cls, "0123456789abcdef", 1, parsed,
                                                "stable")
        tpod = dep["spec"]["template"]["spec"]
        fetch_ref = next(c["image"] for c in tpod["initContainers"])
        assert fetch_ref.split("/")[-1].startswith("compile:")
        out["fetch"] = images.podman("run", "--rm", *images.run_args(tpod, "fetch-model", {"artifact": str(entry)},
                                                                      env_from={"s3": S3_KEYS}),
                                     built.ref, *images.command_of(tpod, "fetch-model"), check=False)
    return out


def test_compile_image_compiles_efficientnet_as_the_job_runs_it(compiled, s3):
    proc = compiled["proc"]
    assert proc.returncode == 0, f"compile image exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(compiled["term"].read_text())
    # ... and the operator reads it as it reads a Job's termination message.
    parsed, error = parse_result(compiled["term"].read_text())
    assert error is None and parsed.sha256 == result["sha256"] and parsed.batching is not None
    assert result["artifact"] == f"s3://{BUCKET}/models/effnet/0123456789abcdef-xeon/model.onnx"
    assert result["accuracy"] >= 0.99 and result["batching"]["maxBatchSize"] >= 1
    # The config the image uploaded is byte for byte what the operator's ConfigMap carries.
    spec = compiled["spec"]
    cm = manifests.build_config_map("doorbell", "ns", "uid", spec, resolve_classes(spec, [])[0], "0123456789abcdef",
                                    parsed)
    uploaded = s3[1].get_object(Bucket=BUCKET, Key="models/effnet/0123456789abcdef-xeon/config.pbtxt")
    assert uploaded["Body"].read().decode() == cm["data"]["config.pbtxt"]


def test_the_fetch_init_container_puts_the_checked_entry_where_triton_reads_it(compiled):
    fetch = compiled["fetch"]
    assert fetch is not None and fetch.returncode == 0, f"fetch exited:\n{fetch.stdout[-2000:]}\n{fetch.stderr[-2000:]}"
    parsed, _ = parse_result(compiled["term"].read_text())
    entry = compiled["repo"] / "models" / "effnet" / "0123456789abcdef-xeon"
    assert {p.name for p in entry.iterdir()} == set(parsed.files) == {"model.onnx", "drift-reference.npz"}
    import hashlib
    assert all(hashlib.sha256((entry / n).read_bytes()).hexdigest() == h for n, h in parsed.files.items())


def _monitor_pod(spec, port: int, detector: str) -> dict:
    """The sidecar exactly as the operator builds it, listening on a free port of this machine."""
    container = manifests.drift_monitor_container(spec, [{"name": "artifact", "mountPath": "/models/effnet/1"}])
    container["args"] = [f"--listen=127.0.0.1:{port}" if a.startswith("--listen=") else
                         f"--detector={detector}" if a.startswith("--detector=") else a for a in container["args"]]
    return {"securityContext": manifests.RESTRICTED_POD, "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}},
                        {"name": "artifact", "persistentVolumeClaim": {"claimName": "repository"}}]}


@pytest.mark.parametrize("target, detector", [("monitor", "bbsd-ks"), ("monitor-mmd", "mmd")])
def test_monitor_image_serves_its_endpoints_on_the_compiled_reference(image, compiled, target, detector):
    assert compiled["proc"].returncode == 0
    entry = compiled["repo"] / "models" / "effnet" / "0123456789abcdef-xeon"
    # the image the operator picks for this detector when analysis.drift.image is unset
    assert manifests.monitor_image(_spec_with_detector(compiled["spec"], detector)).split("/")[-1].startswith(target + ":")
    port = free_port()
    pod = _monitor_pod(compiled["spec"], port, detector)
    built = image(target)
    name = f"vf-monitor-{uuid.uuid4().hex[:6]}"
    images.podman("run", "-d", f"--name={name}", *images.run_args(pod, "drift-monitor", {"artifact": str(entry)}),
                  built.ref, *images.command_of(pod, "drift-monitor"))
    try:
        def get(path: str) -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return None
        try:
            wait_for(lambda: get("/healthz") is not None, timeout=90, what=f"the {target} image's /healthz")
        except AssertionError:
            logs = images.podman("logs", name, check=False)
            raise AssertionError(f"{target} image never served:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}") from None
        status = json.loads(get("/v1/status"))
        assert status["referenceSamples"] >= 20
        assert "visionfleet_drift_window_fill" in get("/metrics")
    finally:
        images.podman("rm", "-f", name, check=False)


def _spec_with_detector(spec, detector: str):
    s = spec.model_copy(deep=True)
    s.analysis.drift.detector = detector
    return s


def test_the_bbsd_monitor_image_refuses_mmd_at_once_saying_which_image_has_it(image, compiled):
    entry = compiled["repo"] / "models" / "effnet" / "0123456789abcdef-xeon"
    pod = _monitor_pod(compiled["spec"], free_port(), "mmd")
    proc = images.podman("run", "--rm", *images.run_args(pod, "drift-monitor", {"artifact": str(entry)}),
                         image("monitor").ref, *images.command_of(pod, "drift-monitor"), check=False, timeout=120)
    assert proc.returncode == 2 and "monitor-mmd image" in proc.stderr, proc.stderr[-2000:]


def test_compile_gpu_image_builds_and_says_what_it_cannot_check_here(image):
    """NVIDIA's TensorRT image (the Dockerfile's TENSORRT_BASE) is not reachable from a machine with only
    the package registries, so the Debian base stands in for it: everything of the GPU image but
    TensorRT is built and checked here (the virtualenv over the base's site-packages, torch with its
    CUDA libraries, onnxconverter-common, the compile program, the user), and the image itself says
    what is missing, as it would on a CPU node."""
    built = image("compile-gpu")
    assert images.image_user(built.ref) == "65532:65532"
    out = json.loads(python_in(built.ref, (
        "import json, sys, torch, onnxconverter_common, visionfleet_compile\n"
        "from visionfleet_compile import tensorrt_target\n"
        "print(json.dumps({'system_site': sys.flags.no_site == 0 and any('dist-packages' in p for p in sys.path), "
        "'torch_cuda': torch.version.cuda, 'missing': tensorrt_target.available()}))")))
    assert out["system_site"], "the virtualenv must see the base image's site-packages (TensorRT lives there)"
    assert out["torch_cuda"], "torch must be the CUDA build (it carries the CUDA libraries TensorRT buffers use)"
    # What this machine cannot check, in the image's own words: no GPU, and no TensorRT in the stand-in base.
    assert "no NVIDIA GPU is visible" in out["missing"] and "tensorrt package is not installed" in out["missing"]



def test_the_operator_images_sbom_lists_what_is_installed(image, tmp_path):
    """syft's SBOM (CycloneDX) of the operator image names each Python package at the version pip in the
    image reports, and none of the compile program's or the monitor's."""
    built = image("operator")
    bom = images.sbom(built.ref, tmp_path / "operator.cdx.json")
    assert bom["bomFormat"] == "CycloneDX"
    listed = images.python_packages(bom)
    installed = json.loads(python_in(built.ref, (
        "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): "
        "d.version for d in m.distributions()}))")))
    assert listed == installed
    assert {"visionfleet", "visionfleet-contract", "kopf", "kubernetes"} <= set(listed)
    assert not {"visionfleet-compile", "visionfleet-monitor", "visionfleet-fleet", "numpy", "torch"} & set(listed)
