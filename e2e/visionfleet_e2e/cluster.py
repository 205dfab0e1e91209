"""Start and stop a real Kubernetes control plane on loopback, with a kwok-simulated fleet.

    build-binaries.sh ──► kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
                          etcd, kwok, kwokctl, helm   (pinned Go modules, cached by go.mod hash)
    kwokctl (binary runtime, every binary a local path, 127.0.0.1 only)
        └─► etcd ─ kube-apiserver ─ controller-manager ─ scheduler ─ kwok controller
    fleet file ──► Node objects (kwok.x-k8s.io/node=fake) ──► Ready within seconds
    stages ──► Deployment pods become Ready; Job pods run, then Succeed (or fail on request)
    sim policies ──► Triton pods of a namespace labelled sim.visionfleet.io/ready-after=20s
                     become Ready 20 s after they start (sim_policies.py)

Hazards handled here, each found in kwokctl's code or on this machine:

* kwokctl takes kubectl from PATH first: our binaries directory goes first on PATH.
* ``create cluster --wait`` only logs a failed wait and still exits 0: we poll ``/readyz`` ourselves.
* without a default route the API server refuses to start: ``advertise-address=127.0.0.1``.
* kwokctl edits ``~/.kube/config`` unless told otherwise: ``--kubeconfig`` points at our state dir
  and ``KWOK_WORKDIR`` keeps its files there too.
* a namespace's ``default`` ServiceAccount appears asynchronously: ``up()`` waits for it.
* ``kwokctl delete cluster`` trusts its pid files: ``down()`` checks every recorded process is gone
  and kills what is left, so a stop leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .fleet import FLEET_LABEL, FleetSpec
from .sim_policies import apply_sim_policies

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "e2e" / "cluster" / "build-binaries.sh"
STAGES_FILE = Path(__file__).resolve().parent / "stages" / "fleet-stages.yaml"
KUBE_VERSION = "v1.36.3"
DEFAULT_STATE = REPO / ".fleet"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl",
            "etcd", "etcdctl", "kwok", "kwokctl", "helm", "syft")


class ClusterError(RuntimeError):
    pass


def say(msg: str) -> None:
    print(f"[fleet] {msg}", file=sys.stderr, flush=True)


def ensure_binaries(log: Callable[[str], None] = say) -> Path:
    """Build or reuse the pinned binaries; returns the directory that holds them all."""
    env = dict(os.environ)
    t0 = time.monotonic()
    proc = subprocess.run([str(BUILD_SCRIPT), "--print-dir"], stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise ClusterError(f"building the local fleet's binaries failed (exit {proc.returncode}); see the log above")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (bin_dir / b).exists()]
    if missing:
        raise ClusterError(f"{bin_dir} lacks {', '.join(missing)} after the build")
    log(f"binaries ready in {bin_dir} ({time.monotonic() - t0:.1f}s)")
    return bin_dir


SERVICE_CIDR = "10.96.0.0/16"  # apart from podnet's 10.192.0.0/10


@dataclass
class LocalCluster:
    """One named local cluster; its files live in ``state_dir/<name>``."""

    name: str = "visionfleet"
    state_root: Path = field(default_factory=lambda: Path(os.environ.get("VISIONFLEET_STATE", DEFAULT_STATE)))
    bin_dir: Path | None = None
    log: Callable[[str], None] = say

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def kwok_workdir(self) -> Path:
        return self.state_dir / "kwok"

    @property
    def cluster_dir(self) -> Path:
        return self.kwok_workdir / "clusters" / self.name

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.bin_dir is None:
            self.bin_dir = ensure_binaries(self.log)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["KWOK_WORKDIR"] = str(self.kwok_workdir)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    # -- commands -----------------------------------------------------------------------------

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300,
            capture: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(args), input=input, text=True, env=self.env(), timeout=timeout,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None)
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(args[:4])}… failed (exit {proc.returncode}):\n{proc.stderr or ''}")
        return proc

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args,
                        input=input, check=check, timeout=timeout)

    def wait_established(self, *crds: str, timeout: float = 60) -> None:
        """Wait for CRDs (names, or crd/<name>) to be Established. Not `kubectl wait`: on a CRD applied
        a moment ago it fails at once while the status has no conditions yet (a race seen on a busy
        control plane)."""
        names = [c.removeprefix("crd/") for c in crds]
        deadline = time.monotonic() + timeout
        while True:
            proc = self.kubectl("get", "crd", *names, "-o", "json", check=False)
            established = set()
            if proc.returncode == 0:
                data = json.loads(proc.stdout)
                for item in data.get("items", [data]):
                    if any(c.get("type") == "Established" and c.get("status") == "True"
                           for c in (item.get("status") or {}).get("conditions") or []):
                        established.add(item["metadata"]["name"])
            if established == set(names):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"CRDs not Established after {timeout:.0f}s: "
                                   f"{', '.join(sorted(set(names) - established))} ({proc.stderr.strip()})")
            time.sleep(0.3)

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def binary(self, name: str) -> Path:
        if self.bin_dir is None:
            self.bin_dir = ensure_binaries(self.log)
        return self.bin_dir / name

    # -- lifecycle ----------------------------------------------------------------------------

    def is_up(self) -> bool:
        return self.kubeconfig.exists() and self._readyz(timeout=2)

    def up(self, fleet: FleetSpec | None = None, size: int | None = None, timeout: float = 240) -> None:
        """Start the control plane (or reuse a running one) and create the fleet's nodes."""
        t0 = time.monotonic()
        if self.is_up():
            self.log(f"cluster {self.name} already running ({self.kubeconfig})")
        else:
            self._create(timeout)
            self.log(f"control plane ready in {time.monotonic() - t0:.1f}s")
        self._wait_default_serviceaccount(timeout)
        # the simulation's admission policies (a namespace's opt-in readiness delay for Triton pods)
        apply_sim_policies(self)
        if fleet is not None:
            self.apply_fleet(fleet, size, timeout)
        self.log(f"cluster {self.name} up in {time.monotonic() - t0:.1f}s; export KUBECONFIG={self.kubeconfig}")

    def _create(self, timeout: float) -> None:
        env = self.env()  # builds the binaries first, if needed
        if self.cluster_dir.exists():
            # A previous run died without `down`: clear its processes and files, then start clean.
            self.log(f"removing stale cluster files in {self.cluster_dir}")
            self.down()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "kwokctl.yaml"
        config.write_text(self._config_text())
        if self.kubeconfig.exists():
            self.kubeconfig.unlink()
        self.log(f"starting cluster {self.name} (Kubernetes {KUBE_VERSION}, kwok, binaries in {self.bin_dir})")
        cmd = [str(self.binary("kwokctl")), "--name", self.name, "create", "cluster",
               "--config", str(config), "--kubeconfig", str(self.kubeconfig), "--runtime", "binary",
               "--wait", "0s", "--timeout", f"{int(timeout)}s"]
        proc = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout + 30)
        if proc.returncode != 0:
            raise ClusterError(f"kwokctl create cluster failed (exit {proc.returncode}):\n{proc.stdout}")
        deadline = time.monotonic() + timeout
        while not self._readyz(timeout=2):
            if time.monotonic() > deadline:
                raise ClusterError(f"the API server of {self.name} did not become ready within {timeout:.0f}s; "
                                   f"logs in {self.cluster_dir / 'logs'}\n{proc.stdout[-2000:]}")
            time.sleep(0.5)

    def _config_text(self) -> str:
        b = self.bin_dir
        assert b is not None
        conf = {
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            "kind": "KwokctlConfiguration",
            "options": {
                "runtime": "binary",
                "bindAddress": "127.0.0.1",
                "kubeVersion": KUBE_VERSION,
                "securePort": True,
                "kubeAuthorization": True,
                "kubeApiserverBinary": str(b / "kube-apiserver"),
                "kubeControllerManagerBinary": str(b / "kube-controller-manager"),
                "kubeSchedulerBinary": str(b / "kube-scheduler"),
                "kubectlBinary": str(b / "kubectl"),
                "etcdBinary": str(b / "etcd"),
                "etcdctlBinary": str(b / "etcdctl"),
                "kwokControllerBinary": str(b / "kwok"),
            },
            "componentsPatches": [
                # Service IPs from a /16, not kube-apiserver's default 10.0.0.0/24: the whole suite shares one
                # cluster, and its VisionDeployments' Services (3 or more each; the spec fuzzer applies
                # hundreds) filled 254 addresses ("failed to allocate a serviceIP: range is full").
                {"name": "kube-apiserver", "extraArgs": [{"key": "advertise-address", "value": "127.0.0.1"},
                                                         {"key": "service-cluster-ip-range", "value": SERVICE_CIDR}]
                 + self._aggregation_args()},
                # the HPA controller (on by default) at a pace tests can wait for (metrics_adapter.py)
                {"name": "kube-controller-manager", "extraArgs": [
                    {"key": "horizontal-pod-autoscaler-sync-period", "value": "5s"},
                    {"key": "horizontal-pod-autoscaler-downscale-stabilization", "value": "15s"}]},
            ],
        }
        # Pod IPs from this cluster's range of the pod network (podnet.py: a local route away from this
        # machine), instead of kwok's 10.0.0.0/24 for every cluster. A flag, not a KwokConfiguration
        # document: kwok does not default the options a partial one leaves out.
        conf["componentsPatches"].append(
            {"name": "kwok-controller", "extraArgs": [{"key": "cidr", "value": self.pod_cidr}]})
        return yaml.safe_dump(conf, sort_keys=False) + "---\n" + STAGES_FILE.read_text()

    @property
    def pod_cidr(self) -> str:
        """The range kwok gives this cluster's pod IPs: a /20 of podnet.POD_NETWORK chosen by name."""
        from .podnet import pod_cidr

        return pod_cidr(self.name)

    # -- the Gateway API implementation: Traefik (gateway.py) ------------------------------------

    def gateway(self) -> "Gateway":
        """This cluster's Gateway (Traefik, its kubernetesGateway provider, on a loopback port): started
        on first use, reused while its process runs (across test sessions too); ``down()`` stops it."""
        from .gateway import Gateway

        current = getattr(self, "_gateway", None)
        if current is not None and current.running():
            return current
        self._gateway = Gateway.start(self)
        return self._gateway

    def _aggregation_args(self) -> list[dict[str, str]]:
        """The front-proxy (requestheader) flags kwokctl leaves out: it gives the API server a proxy
        client certificate (the admin's, CN kwok-admin, signed by the cluster CA) but no CA for
        extension API servers to check it with, so they could not trust the user the aggregator
        forwards in X-Remote-*. With these, kube-system/extension-apiserver-authentication carries
        them (metrics_adapter.py). The CA is the client CA too, so the API server insists on allowed
        names: only kwok-admin's certificate may assert another user through these headers."""
        ca = str(self.cluster_dir / "pki" / "ca.crt")
        return [{"key": "requestheader-client-ca-file", "value": ca},
                {"key": "requestheader-allowed-names", "value": "kwok-admin"},
                {"key": "requestheader-username-headers", "value": "X-Remote-User"},
                {"key": "requestheader-group-headers", "value": "X-Remote-Group"},
                {"key": "requestheader-extra-headers-prefix", "value": "X-Remote-Extra-"}]

    # -- custom metrics for the HPA: visionfleet-metrics-adapter (metrics_adapter.py) ------------

    def metrics_adapter(self, prometheus_url: str) -> "MetricsAdapter":
        """The custom metrics adapter on this cluster, reading ``prometheus_url``: started (and its
        APIService registered) on first use, restarted for another Prometheus; ``down()`` stops it."""
        from .metrics_adapter import MetricsAdapter

        current = getattr(self, "_metrics_adapter", None)
        if current is not None and current.prometheus_url == prometheus_url and current.running():
            return current
        if current is not None:
            current.stop()
        self._metrics_adapter = MetricsAdapter(self, prometheus_url).start()
        return self._metrics_adapter

    def _server(self) -> tuple[str, ssl.SSLContext | None, dict[str, str]]:
        kc = yaml.safe_load(self.kubeconfig.read_text())
        ctx_name = kc["current-context"]
        ctx = next(c["context"] for c in kc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in kc["users"] if u["name"] == ctx["user"])
        server = cluster["server"]
        if not server.startswith("https"):
            return server, None, {}
        sslctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        if cluster.get("insecure-skip-tls-verify"):
            sslctx.check_hostname = False
            sslctx.verify_mode = ssl.CERT_NONE
        if user.get("client-certificate"):
            sslctx.load_cert_chain(user["client-certificate"], user.get("client-key"))
        headers = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
        return server, sslctx, headers

    def _readyz(self, timeout: float) -> bool:
        try:
            server, sslctx, headers = self._server()
            req = urllib.request.Request(f"{server}/readyz", headers=headers)
            with urllib.request.urlopen(req, timeout=timeout, context=sslctx) as resp:
                return resp.status == 200
        except Exception:
            return False

    def _wait_default_serviceaccount(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ClusterError("the default ServiceAccount never appeared: is kube-controller-manager running? "
                                   f"logs in {self.cluster_dir / 'logs'}")
            time.sleep(0.5)

    def apply_fleet(self, fleet: FleetSpec, size: int | None = None, timeout: float = 240) -> None:
        nodes = fleet.nodes(size)
        counts = fleet.counts(size)
        self.log(f"fleet {fleet.name}: {len(nodes)} nodes ("
                 + ", ".join(f"{n} {c}" for c, n in counts.items()) + ")")
        t0 = time.monotonic()
        # Node status (capacity, allocatable) is only writable through the status subresource, so the
        # objects are created, then their status is set; kwok then keeps them Ready.
        existing = set(self.kubectl("get", "nodes", "-l", f"{FLEET_LABEL}={fleet.name}", "-o", "name").stdout.split())
        wanted = {f"node/{n['metadata']['name']}" for n in nodes}
        stale = sorted(existing - wanted)
        if stale:
            self.kubectl("delete", *stale, "--wait=false")
        docs = {"apiVersion": "v1", "kind": "List", "items": nodes}
        self.kubectl("apply", "--server-side", "--field-manager=visionfleet-fleet", "--force-conflicts",
                     "-f", "-", input=json.dumps(docs), timeout=timeout)
        self.kubectl("apply", "--server-side", "--field-manager=visionfleet-fleet", "--force-conflicts",
                     "--subresource=status", "-f", "-", input=json.dumps(docs), timeout=timeout)
        self.kubectl("wait", "--for=condition=Ready", "node", "-l", f"{FLEET_LABEL}={fleet.name}",
                     f"--timeout={int(timeout)}s", timeout=timeout + 30)
        self.log(f"{len(nodes)} nodes Ready in {time.monotonic() - t0:.1f}s")

    def ensure_claim(self, namespace: str, claim: str = "models", size: str = "10Gi") -> None:
        """A bound PersistentVolumeClaim ``claim`` in ``namespace`` (statically provisioned: a
        hostPath PersistentVolume reserved for it), as a cluster with a models volume has. kwok pods
        never touch its files; the scheduler only needs the claim to exist and be bound."""
        pv = {"apiVersion": "v1", "kind": "PersistentVolume",
              "metadata": {"name": f"{namespace}-{claim}", "labels": {"visionfleet.io/fleet-volume": "true"}},
              "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteMany"],
                       "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                       "hostPath": {"path": f"/var/lib/visionfleet/{namespace}/{claim}"},
                       "claimRef": {"namespace": namespace, "name": claim}}}
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
               "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"{namespace}-{claim}",
                        "resources": {"requests": {"storage": size}}}}
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))
        deadline = time.monotonic() + 60
        while self.kubectl_json("get", "pvc", claim, "-n", namespace).get("status", {}).get("phase") != "Bound":
            if time.monotonic() > deadline:
                raise ClusterError(f"claim {namespace}/{claim} did not bind to its volume within 60s")
            time.sleep(0.3)

    # -- companions: processes started beside the cluster (the demo's operator, Prometheus) ------

    def start_companion(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start ``argv`` detached, logging to ``<state>/<name>.log``; ``down()`` stops it."""
        self.stop_companion(name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / f"{name}.log", "a")
        proc = subprocess.Popen(argv, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        (self.state_dir / f"{name}.pid").write_text(f"{proc.pid}\n{argv[0]}\n")
        return proc.pid

    def stop_companion(self, name: str) -> None:
        pidfile = self.state_dir / f"{name}.pid"
        if not pidfile.exists():
            return
        pid_s, _, exe = pidfile.read_text().partition("\n")
        pid, exe = int(pid_s), exe.strip()

        def alive() -> bool:
            return _running_with(pid, exe)

        if alive():
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if alive():
                os.killpg(pid, signal.SIGKILL)
        pidfile.unlink()

    def companions(self) -> list[str]:
        return sorted(p.stem for p in self.state_dir.glob("*.pid")) if self.state_dir.exists() else []

    def down(self) -> list[int]:
        """Stop the cluster and every process it started; returns pids that had to be killed."""
        for name in self.companions():
            self.stop_companion(name)
        pids = self._recorded_pids()
        if self.cluster_dir.exists():
            subprocess.run([str(self.binary("kwokctl")), "--name", self.name, "delete", "cluster",
                            "--kubeconfig", str(self.kubeconfig)],
                           env=self.env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        killed = []
        deadline = time.monotonic() + 10
        for pid in pids:
            while self._owns(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._owns(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        if killed:
            self.log(f"killed leftover processes {killed}")
        if self.cluster_dir.exists():
            subprocess.run(["rm", "-rf", str(self.cluster_dir)], check=False)
        if self.kubeconfig.exists():
            self.kubeconfig.unlink()
        return killed

    def _owns(self, pid: int) -> bool:
        """Is ``pid`` alive and one of this cluster's processes (not a reused pid, not a zombie)?"""
        return _running_with(pid, str(self.cluster_dir))

    def processes(self) -> list[int]:
        """Live processes whose command line points into this cluster's files."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and self._owns(int(d.name)):
                out.append(int(d.name))
        return sorted(out)

    def _recorded_pids(self) -> list[int]:
        out = self.processes()
        for f in (self.cluster_dir / "pids").glob("*.pid"):
            try:
                out.append(int(f.read_text().strip()))
            except ValueError:
                continue
        return out


def _running_with(pid: int, needle: str) -> bool:
    """Is ``pid`` alive (not a zombie) with ``needle`` in its command line? Guards against pid reuse."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and needle in cmdline
