"""The four images of the Dockerfile, built without a Docker engine: buildah (``--isolation chroot``)
on a Debian bookworm base made by debootstrap, cached by content hash.

    debootstrap bookworm (python3, python3-venv, python-is-python3)   Python 3.11, as python:3.11-slim-bookworm
      └─ podman import ─► localhost/visionfleet/python:bookworm-<key>      (key: suite + packages + mirror)
           └─ buildah bud --target T --build-arg PYTHON=<that base> ─► localhost/visionfleet/T:<hash>

``<hash>`` covers the Dockerfile, the files of the folders the target copies, the base image and the
build arguments: when none changed, the image is there and a build costs one ``podman image exists``.

The registries are reached through a proxy whose certificate is in the machine's CA bundle: each
build mounts that bundle and a pip.conf naming it (``--volume``, build time only) and the images never
carry either. pip's cache is mounted too, so a cold build downloads what ``make venv`` already did
only once. Needs root (debootstrap, buildah's chroot isolation) and Debian's buildah, podman and
debootstrap (``make image-tools``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .cluster import REPO, ensure_binaries, say

REGISTRY = "localhost/visionfleet"
SUITE = "bookworm"
MIRROR = os.environ.get("VISIONFLEET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3-venv: the Dockerfile's `python3 -m venv`; ca-certificates: Debian's own bundle (as the public
# python image has), never the build machine's.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DOCKERFILE = REPO / "Dockerfile"
# What each target's image is made of: the folders its stages copy (the wheels stage copies all
# four, but an image installs only its own component's wheel and the contract's).
TARGETS: dict[str, tuple[str, ...]] = {
    "operator": ("contract", "operator"),
    "compile": ("contract", "compiler_jobs"),
    "compile-gpu": ("contract", "compiler_jobs"),
    "monitor": ("contract", "monitors"),
    "monitor-mmd": ("contract", "monitors"),
}
CACHE = Path(os.environ.get("VISIONFLEET_CACHE", Path.home() / ".cache" / "visionfleet")) / "images"


# How podman runs containers on this kind of machine: cgroups v1+v2 "hybrid" (crun refuses it; runc
# does not) and a hard open-files limit below podman's default ulimits (the runtime's setrlimit fails),
# so the limits are set explicitly, as a kubelet's container runtime would.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


# The image store lives with the other caches ($VISIONFLEET_CACHE, which CI keeps), not in
# /var/lib/containers: a machine that keeps the binaries keeps the images.
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}/storage"
runroot = "{root}/run"
"""


def podman_env() -> dict[str, str]:
    """The environment of every buildah and podman call: the settings above and the store."""
    files = {"containers.conf": CONTAINERS_CONF, "storage.conf": STORAGE_CONF.format(root=CACHE / "containers")}
    for name, text in files.items():
        path = CACHE / name
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return {**os.environ, "CONTAINERS_CONF": str(CACHE / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(CACHE / "storage.conf")}



class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Built:
    target: str
    ref: str  # localhost/visionfleet/<target>:<hash>
    cached: bool
    seconds: float
    size_bytes: int


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise ImageError(f"{name} not found: run `make image-tools` (installs Debian's buildah, podman, runc "
                         f"and debootstrap)")
    return path


def _run(cmd: list[str], log: Path | None = None, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", podman_env())
    if log is None:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise ImageError(f"{cmd[0]} {cmd[1]} failed (exit {proc.returncode}); the end of {log}:\n{tail}")
    return proc


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def image_size(ref: str) -> int:
    out = podman("image", "inspect", "--format", "{{.Size}}", ref).stdout
    return int(out.strip())


def base_key() -> str:
    return hashlib.sha256(json.dumps([SUITE, sorted(BASE_PACKAGES), MIRROR]).encode()).hexdigest()[:12]


def ensure_base(log: Path) -> str:
    """The Debian base image (Python 3.11 from bookworm), made once by debootstrap and imported."""
    ref = f"{REGISTRY}/python:{SUITE}-{base_key()}"
    if image_exists(ref):
        return ref
    if os.geteuid() != 0:
        raise ImageError("building the base image needs root (debootstrap and buildah's chroot isolation)")
    _tool("debootstrap")
    say(f"making the {SUITE} base with debootstrap ({', '.join(BASE_PACKAGES)}); a few minutes, once")
    CACHE.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="base-", dir=CACHE))
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(root), MIRROR],
             log)
        # What an image does not need: apt's lists and caches, docs and man pages.
        for junk in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            _run([_tool("podman"), "import", "--change", "CMD [\"python3\"]", "-", ref], log, stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return ref


def content_hash(target: str, base_ref: str, build_args: dict[str, str]) -> str:
    h = hashlib.sha256()
    base_id = podman("image", "inspect", "--format", "{{.Id}}", base_ref).stdout.strip()
    h.update(json.dumps([target, base_id, sorted(build_args.items())]).encode())
    h.update(DOCKERFILE.read_bytes())
    for folder in TARGETS[target]:
        for path in sorted((REPO / folder).rglob("*")):
            rel = path.relative_to(REPO)
            if path.is_file() and not any(p == "__pycache__" or p.endswith(".egg-info") or p == "build"
                                           for p in rel.parts):
                h.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _pip_conf(directory: Path) -> Path:
    """pip.conf for the build's RUN steps: the machine's CA bundle (and its index, when it has one)."""
    lines = ["[global]", f"cert = {CA_BUNDLE}"]
    if os.environ.get("PIP_INDEX_URL"):
        lines.append(f"index-url = {os.environ['PIP_INDEX_URL']}")
    if os.environ.get("PIP_EXTRA_INDEX_URL"):
        lines.append(f"extra-index-url = {os.environ['PIP_EXTRA_INDEX_URL']}")
    path = directory / "pip.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def build(target: str, log: Path, build_args: dict[str, str] | None = None) -> Built:
    """Build ``target`` (or find it built from the same content) → its reference. One build at a time
    on this machine (a file lock in the image cache): two test shards asking for the same image share
    one build, and one's prune of older layers never pulls them from under the other's build."""
    if target not in TARGETS:
        raise ImageError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(target, log, build_args)


def _build(target: str, log: Path, build_args: dict[str, str] | None) -> Built:
    buildah = _tool("buildah")
    t0 = time.monotonic()
    base = ensure_base(log)
    args = {"PYTHON": base, **(build_args or {})}
    if target == "compile-gpu" and "TENSORRT_BASE" not in args:
        # NVIDIA's TensorRT image (the Dockerfile's default) is not reachable from a machine that has
        # only the package registries: the Debian base stands in, so everything but TensorRT itself is
        # built and checked (the image's `visionfleet-compile targets` then says TensorRT is missing).
        args["TENSORRT_BASE"] = base
    if target == "monitor-mmd" and "TORCH_INDEX_URL" not in args:
        # download.pytorch.org is not one of the registries either: PyPI's (CUDA) torch stands in.
        args["TORCH_INDEX_URL"] = ""
    ref = f"{REGISTRY}/{target}:{content_hash(target, base, args)}"
    if image_exists(ref):
        return Built(target, ref, True, time.monotonic() - t0, image_size(ref))
    say(f"building image {target} ({ref})")
    with tempfile.TemporaryDirectory(prefix="vf-build-") as tmp:
        pip_conf = _pip_conf(Path(tmp))
        pip_cache = Path.home() / ".cache" / "pip"
        pip_cache.mkdir(parents=True, exist_ok=True)
        # --force-rm: a failed or interrupted build leaves no working container behind (each holds a
        # copy of its stage: measured here, 60 GB of them after two failed GPU-image builds).
        cmd = [buildah, "bud", "--isolation", "chroot", "--layers", "--force-rm", "--target", target,
               "-f", str(DOCKERFILE),
               "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--volume", f"{pip_conf}:/etc/pip.conf:ro",
               "--volume", f"{pip_cache}:/root/.cache/pip",
               *(a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")),
               "-t", ref, "-t", f"{REGISTRY}/{target}:dev", str(REPO)]
        _run(cmd, log)
    _drop_older(target, ref)
    return Built(target, ref, False, time.monotonic() - t0, image_size(ref))


def _drop_older(target: str, keep: str) -> None:
    """Older builds of ``target`` (other content hashes) are never used again; the GPU image alone is
    several GB. Their untagged layers, and the intermediate images of superseded stages, go too:
    measured here, a day of rebuilds left 30 GB of them and a build ran out of disk."""
    out = podman("images", "--format", "{{.Repository}}:{{.Tag}}", f"{REGISTRY}/{target}", check=False).stdout
    old = [r for r in out.split() if r not in (keep, f"{REGISTRY}/{target}:dev") and not r.endswith(":<none>")]
    if old:
        podman("rmi", *old, check=False)
    podman("image", "prune", "-f", check=False)


def sbom(ref: str, dest: Path) -> dict:
    """The image's software bill of materials, CycloneDX JSON, by syft (pinned in e2e/cluster/gomod/syft),
    from the image's root filesystem (``podman image mount``): every Debian and Python package with its
    version. Written to ``dest``; returned parsed."""
    syft = ensure_binaries() / "syft"
    root = podman("image", "mount", ref).stdout.strip()
    try:
        proc = subprocess.run([str(syft), "scan", f"dir:{root}", "--quiet", "--source-name", ref,
                               "-o", f"cyclonedx-json={dest}"], capture_output=True, text=True,
                              env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"})
        if proc.returncode:
            raise ImageError(f"syft failed on {ref} (exit {proc.returncode}): {proc.stderr[-2000:]}")
    finally:
        podman("image", "unmount", ref, check=False)
    return json.loads(dest.read_text())


# What the report names per image (when the image has it).
KEY_PACKAGES = ("visionfleet", "visionfleet-compile", "visionfleet-monitor", "visionfleet-contract", "kopf",
                "kubernetes", "pydantic", "onnxruntime", "openvino", "nncf", "torch", "tensorrt", "alibi-detect",
                "numpy", "scipy")


def python_packages(bom: dict) -> dict[str, str]:
    """name -> version of the Python packages a CycloneDX SBOM lists (purl pkg:pypi/...)."""
    return {c["name"].lower().replace("_", "-"): c.get("version", "") for c in bom.get("components", [])
            if c.get("purl", "").startswith("pkg:pypi/")}


# -- running an image as a pod spec says ------------------------------------------------------------
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def image_user(ref: str) -> str:
    return podman("image", "inspect", "--format", "{{.Config.User}}", ref).stdout.strip()


def _container(pod_spec: dict, name: str) -> dict:
    return next(x for x in pod_spec["containers"] + pod_spec.get("initContainers", []) if x["name"] == name)


def run_args(pod_spec: dict, container: str, host_paths: dict[str, str] | None = None,
             service_account_dir: Path | None = None, field_refs: dict[str, str] | None = None,
             env_from: dict[str, dict[str, str]] | None = None) -> list[str]:
    """``podman run`` options that run ``container`` of ``pod_spec`` as the kubelet would: its user and
    group, read-only root filesystem, dropped capabilities, no privilege escalation, its env, command
    and args; emptyDir volumes become tmpfs, other volumes the host directories ``host_paths`` names
    (by volume name; an emptyDir named there too is that directory, so an init container and the
    containers after it share it); the ServiceAccount token at its place when the pod mounts one; the
    keys of each Secret/ConfigMap its envFrom names, from ``env_from`` (by object name). The image
    reference and the command go after these options: ``[*run_args(...), ref, *command_of(...)]``."""
    c = _container(pod_spec, container)
    pod_sc, sc = pod_spec.get("securityContext") or {}, c.get("securityContext") or {}
    opts: list[str] = ["--network=host", "--pull=never"]
    user, group = sc.get("runAsUser", pod_sc.get("runAsUser")), sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if user is not None:
        opts.append(f"--user={user}:{group if group is not None else user}")
    if pod_sc.get("fsGroup") is not None:
        opts.append(f"--group-add={pod_sc['fsGroup']}")
    if sc.get("readOnlyRootFilesystem"):
        opts.append("--read-only")
    for cap in (sc.get("capabilities") or {}).get("drop", []):
        opts.append(f"--cap-drop={cap}")
    if sc.get("allowPrivilegeEscalation") is False:
        opts.append("--security-opt=no-new-privileges")
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "emptyDir" in v and m["name"] not in (host_paths or {}):
            opts.append(f"--tmpfs={m['mountPath']}:rw,mode=1777")
        else:
            host = (host_paths or {})[m["name"]]
            sub = m.get("subPath")
            opts.append(f"--volume={Path(host, sub) if sub else host}:{m['mountPath']}:{'ro' if m.get('readOnly') else 'rw'}")
    if pod_spec.get("automountServiceAccountToken", True) and service_account_dir is not None:
        opts.append(f"--volume={service_account_dir}:{SA_DIR}:ro")
    for src in c.get("envFrom", []):
        ref = src.get("secretRef") or src.get("configMapRef")
        opts += [f"--env={k}={v}" for k, v in (env_from or {})[ref["name"]].items()]
    for e in c.get("env", []):
        if "value" in e:
            opts.append(f"--env={e['name']}={e['value']}")
        elif "fieldRef" in (e.get("valueFrom") or {}):
            opts.append(f"--env={e['name']}={(field_refs or {})[e['valueFrom']['fieldRef']['fieldPath']]}")
    if c.get("command"):
        opts.append(f"--entrypoint={json.dumps(c['command'])}")
    return opts


def command_of(pod_spec: dict, container: str) -> list[str]:
    c = _container(pod_spec, container)
    return list(c.get("args", []))


def podman(*args: str, check: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([_tool("podman"), *args], capture_output=True, text=True, timeout=timeout,
                          env=podman_env())
    if check and proc.returncode:
        raise ImageError(f"podman {' '.join(args[:2])} failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc
