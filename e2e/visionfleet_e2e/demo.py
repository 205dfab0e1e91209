"""The demo (``make demo``): a slow v2 caught in its shadow step and rolled back, on the local fleet,
with no user request ever answered by it.

    helm install charts/visionfleet ──► CRD, ServiceAccount, least-privilege RBAC, operator Deployment
    visionfleet-operator (here, as the chart's ServiceAccount: a bound token, the chart's RBAC exactly)
    visionfleet-compile  ──► the real EfficientNet-Lite0, OpenVINO int8, accuracy gate, batching choice
    tritonserver ×2      ──► one per revision, serving that artifact with the generated config.pbtxt;
                             v2 is the same model made 300 ms slower per batch (a regression)
    traefik (Gateway)    ──► the operator's HTTPRoute: weighted per-revision Services, and during a
                             shadow step a RequestMirror of every request to the canary's Service
    pod network          ──► the Triton pods' IPs answer on this machine, relayed to each revision's
                             tritonserver (e2e/visionfleet_e2e/podnet.py)
    load                 ──► real images at a steady rate, sent to the Gateway (nothing splits them
                             but the route)
    prometheus           ──► scrapes both Tritons, labelled by revision as a cluster's relabelling would
    the operator's analysis reads p99 / errors from it: v2 fails its shadow step and is rolled back.

The kwok nodes cannot run containers, so the fleet's pods are simulated (compile Jobs report a result,
Triton pods turn Ready); the data plane the analysis judges is the real Triton here, one per revision,
reached through the real Gateway at the pods' IPs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from .chart import CHART, helm, service_account_kubeconfig
from .cluster import LocalCluster
from .fleet import CLASS_LABEL, load_fleet
from .local_process import free_port
from .prometheus import PrometheusServer
from .triton import TritonServer, repository_entry

NAMESPACE, NAME, MODEL, CLASS = "vision", "doorbell", "effnet", "xeon"
RELEASE, SYSTEM_NS = "visionfleet", "visionfleet-system"
SLOW_MS = 300

VD = {
    "apiVersion": "visionfleet.io/v1alpha1",
    "kind": "VisionDeployment",
    "metadata": {"name": NAME, "namespace": NAMESPACE},
    "spec": {
        "model": {"name": MODEL, "version": "1", "uri": "pvc://models/efficientnet-lite0/1/model.onnx",
                  "inputs": [{"name": "images", "dataType": "FP32", "dims": [3, 224, 224]}],
                  "outputs": [{"name": "logits", "dataType": "FP32", "dims": [1000]}]},
        "fleet": {"classes": [{"name": CLASS, "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                               "runtime": "openvino", "precision": "int8", "replicas": {"min": 2, "max": 4}}]},
        "compile": {"calibration": {"uri": "pvc://models/calib/imagenet-300.npz", "samples": 300},
                    "accuracyGate": {"metric": "top1Accuracy", "min": 0.85}},
        "serving": {"modelRepository": "pvc://models/repository"},
        "rollout": {"steps": [{"shadow": {"duration": "40s"}}, {"setWeight": 25, "pause": "20s"},
                              {"setWeight": 50, "pause": "20s"}, {"setWeight": 100}],
                    "traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": NAME}}},
        "analysis": {"interval": "10s", "prometheus": {"url": "http://127.0.0.1:9090", "timeout": "5s"},
                     "slo": {"latencyP99Ms": 150, "errorRate": 0.02, "minRequests": 20},
                     "failureLimit": 1, "inconclusiveLimit": 6},
    },
}


class Show:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.step = 0

    def __call__(self, msg: str) -> None:
        self.step += 1
        print(f"\n==> [{self.step}] {msg}   (t={time.monotonic() - self.t0:.0f}s)", flush=True)

    def info(self, msg: str) -> None:
        print(f"    {msg}", flush=True)


def compiled_entry(show: Show) -> tuple[Path, dict]:
    """The compile program's output for the xeon class, cached by the inputs that define it."""
    import openvino

    from visionfleet_compile import program, zoo

    info = zoo.ensure_sample_model(log=show.info)
    key = hashlib.sha256(f"{info['modelSha256']}|{info['dataSha256']}|{openvino.__version__}|openvino-int8".encode()
                         ).hexdigest()[:12]
    base = Path(os.environ.get("VISIONFLEET_CACHE", Path.home() / ".cache" / "visionfleet")) / "demo" / key
    entry, result_file = base / "repository" / MODEL / f"demo-{CLASS}", base / "result.json"
    if result_file.is_file() and entry.is_dir():
        show.info(f"reusing the compiled artifact in {entry}")
        return entry, json.loads(result_file.read_text())
    req = zoo.compile_request(info, "openvino", "int8", {"metric": "top1Accuracy", "min": 0.85}, 150,
                              f"{MODEL}/demo-{CLASS}")
    os.environ.setdefault("VISIONFLEET_PROFILE_SECONDS", "0.3")
    t = time.monotonic()
    result = program.compile_request(req, base)
    result_file.write_text(json.dumps(result, indent=2))
    show.info(f"compiled in {time.monotonic() - t:.0f}s")
    return entry, result


def http_route(parent_ref: dict[str, str]) -> dict:
    """The user's HTTPRoute: the model's requests to the VisionDeployment's Service. The operator
    rewrites its backendRefs to per-revision Services with weights (and a mirror in a shadow step)."""
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"parentRefs": [parent_ref],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{MODEL}"}}],
                                "backendRefs": [{"name": NAME, "port": 8000}]}]}}


class DataPlane:
    """One real Triton per revision, a Prometheus scraping them (file-based discovery, labels per
    revision) and a steady stream of real images sent to the Gateway, which routes them by the
    operator's HTTPRoute to the revisions' pod IPs (the pod network relays those to the Tritons)."""

    def __init__(self, workdir: Path, entry: Path, images: np.ndarray, gateway_url: str, net, rate: float = 12.0):
        self.workdir, self.entry, self.images, self.rate = workdir, entry, images, rate
        self.gateway_url, self.net = gateway_url, net
        self.servers: dict[str, TritonServer] = {}
        self.targets_file = workdir / "triton-targets.json"
        self.targets_file.parent.mkdir(parents=True, exist_ok=True)
        self.targets_file.write_text("[]")
        self.prometheus = PrometheusServer(workdir / "prometheus", {}, file_sd={"triton": self.targets_file})
        self.sent = {"ok": 0, "error": 0}
        self._stop = threading.Event()
        self._local = threading.local()

    def start(self) -> "DataPlane":
        self.prometheus.start()
        return self

    def start_load(self, timeout: float = 120) -> None:
        """Once the first revision answers through the Gateway: a steady load from then on."""
        deadline = time.monotonic() + timeout
        url = self.gateway_url.split("//", 1)[-1]
        while True:
            try:
                self._one(url, 0, probe=True)
                break
            except Exception as e:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer through the Gateway at {self.gateway_url} in {timeout:.0f}s: {e}")
                time.sleep(0.5)
        threading.Thread(target=self._drive, name="demo-load", daemon=True).start()

    def serve(self, revision: str, slow: bool) -> TritonServer:
        if revision not in self.servers:
            repo = self.workdir / f"repo-{revision[:12]}"
            repository_entry(repo, MODEL, "1", self.entry)
            env = {"VISIONFLEET_TRITON_DELAY_MS": str(SLOW_MS)} if slow else {}
            server = self.servers[revision] = TritonServer(repo, self.workdir / f"triton-{revision[:12]}", env=env).start()
            self._write_targets()
            host, _, port = server.url.rpartition(":")
            self.net.forward_revision(revision, "http", (host or "127.0.0.1", int(port)))
        return self.servers[revision]

    def answered(self) -> dict[str, int]:
        """Successful inferences each revision's Triton served (nv_inference_request_success)."""
        return {rev: int(sum(float(line.rsplit(" ", 1)[1]) for line in s.metrics().splitlines()
                             if line.startswith("nv_inference_request_success{")))
                for rev, s in self.servers.items()}

    def _write_targets(self) -> None:
        groups = [{"targets": [s.metrics_url.split("//")[1].split("/")[0]],
                   "labels": {"namespace": NAMESPACE, "vision_deployment": NAME, "revision": rev, "class": CLASS}}
                  for rev, s in self.servers.items()]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)  # atomic: Prometheus never reads half a file

    def _client(self, url: str):
        import tritonclient.http as http

        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if url not in clients:
            clients[url] = http.InferenceServerClient(url, connection_timeout=10, network_timeout=10)
        return clients[url]

    def _one(self, url: str, i: int, probe: bool = False) -> None:
        import tritonclient.http as http

        try:
            inp = http.InferInput("images", [1, 3, 224, 224], "FP32")
            inp.set_data_from_numpy(self.images[i % len(self.images)][None], binary_data=True)
            self._client(url).infer(MODEL, [inp])
            self.sent["ok"] += 1
        except Exception:
            if probe:  # the route not there yet: not part of the load
                raise
            self.sent["error"] += 1

    def _drive(self) -> None:
        url = self.gateway_url.split("//", 1)[-1]
        with ThreadPoolExecutor(8) as pool:
            i, next_at = 0, time.monotonic()
            while not self._stop.is_set():
                if self.servers:  # the route answers once the first revision serves
                    pool.submit(self._one, url, i)
                    i += 1
                next_at += 1 / self.rate
                time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for s in self.servers.values():
            s.stop()
        self.prometheus.stop()


def install_chart(cluster: LocalCluster, show: Show) -> Path:
    crd = "crd/visiondeployments.visionfleet.io"
    if cluster.kubectl("get", crd, check=False).returncode == 0:
        # installed by an earlier `kubectl apply`: adopt it into the release (docs/operating.md)
        cluster.kubectl("annotate", "--overwrite", crd, f"meta.helm.sh/release-name={RELEASE}",
                        f"meta.helm.sh/release-namespace={SYSTEM_NS}")
        cluster.kubectl("label", "--overwrite", crd, "app.kubernetes.io/managed-by=Helm")
    helm(cluster, "upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM_NS, "--create-namespace",
         "--wait", "--timeout", "180s")
    show.info(helm(cluster, "list", "-n", SYSTEM_NS).stdout.strip().replace("\n", "\n    "))
    return service_account_kubeconfig(cluster, SYSTEM_NS, f"{RELEASE}", cluster.state_dir / "operator.kubeconfig",
                                      hours=24)


def watch(cluster: LocalCluster, plane: DataPlane, slow: set[int], version: int, until: Callable[[dict], bool],
          timeout: float) -> dict:
    """Follow the VisionDeployment: start a Triton for each new revision, route the load by weight,
    print every change of phase, step, weight or analysis."""
    deadline, last, status = time.monotonic() + timeout, None, {}
    while time.monotonic() < deadline:
        vd = cluster.kubectl_json("get", "vd", NAME, "-n", NAMESPACE)
        status = vd.get("status", {})
        for rev in (status.get("stableRevision"), status.get("canaryRevision")):
            if rev and rev not in plane.servers:
                plane.serve(rev, slow=version in slow)
                print(f"    tritonserver for revision {rev[:12]} (v{version}{', +%d ms per batch' % SLOW_MS if version in slow else ''}) "
                      f"at {plane.servers[rev].url}", flush=True)
        a = status.get("analysis") or {}
        line = (f"phase={status.get('phase')} step={status.get('step')} canaryWeight={status.get('canaryWeight')}"
                + (f" mirror={status.get('canaryMirror')}%" if status.get("canaryMirror") else "")
                + (f" | analysis {a.get('verdict')}: p99={a.get('p99Ms')} ms errors={a.get('errorRate')} "
                   f"requests={a.get('requests')} — {a.get('reason')}" if a else ""))
        if line != last:
            print(f"    {time.monotonic() - SHOW.t0:5.0f}s  {line}", flush=True)
            last = line
        if until(status):
            return status
        time.sleep(1)
    raise TimeoutError(f"{NAME} did not get there in {timeout:.0f}s (last: {last})")


SHOW = Show()


def run(args) -> int:
    show = SHOW
    cluster = LocalCluster(args.name)
    show("Building (or reusing) the pinned Kubernetes, etcd, kwok and helm binaries")
    cluster.env()
    show(f"Starting the local fleet '{args.fleet}' (real control plane on 127.0.0.1, kwok nodes)")
    cluster.up(load_fleet(args.fleet), size=args.size, timeout=args.timeout)
    print(cluster.kubectl("get", "nodes", "-L", f"{CLASS_LABEL},node.kubernetes.io/instance-type").stdout)
    show("Installing the Helm chart charts/visionfleet (CRD, ServiceAccount, least-privilege RBAC, operator)")
    kubeconfig = install_chart(cluster, show)
    show("Starting the operator with the chart's ServiceAccount identity (log: "
         f"{cluster.state_dir / 'operator.log'}); its Deployment's pod is a kwok simulation")
    metrics_port = free_port()
    env = {**cluster.env(), "KUBECONFIG": str(kubeconfig)}
    cluster.start_companion("operator", [str(Path(sys.executable).parent / "visionfleet-operator"),
                                         f"--metrics-port={metrics_port}", "--metrics-address=127.0.0.1"], env=env)
    show.info(f"operator metrics: http://127.0.0.1:{metrics_port}/metrics")
    show("Compiling the real EfficientNet-Lite0 for the xeon class (OpenVINO int8, accuracy gate, batching)")
    entry, result = compiled_entry(show)
    show.info(f"artifact {result.get('artifact')}: top-1 {result.get('top1Accuracy')} "
              f"(fp32 {result.get('referenceTop1Accuracy')}), batching {json.dumps(result.get('batching'))}")
    show("Starting the data plane: the Gateway (Traefik), the pod network, Prometheus, one real tritonserver "
         "per revision, a steady load of real images through the Gateway")
    from visionfleet_compile import zoo

    from .podnet import PodNetwork

    info = zoo.ensure_sample_model(log=show.info)
    images = np.load(info["data"])["images"][info["calibrationSamples"]:].astype(np.float32)
    gateway = cluster.gateway()
    net = PodNetwork(cluster, NAMESPACE)
    plane = DataPlane(cluster.state_dir / "demo", entry, images, gateway.url, net).start()
    show.info(f"gateway at {gateway.url} (log {gateway.log_path}); prometheus at {plane.prometheus.url}; "
              f"load {plane.rate:.0f} requests/s")
    try:
        vd = copy.deepcopy(VD)
        vd["spec"]["analysis"]["prometheus"]["url"] = plane.prometheus.url
        ns = cluster.kubectl("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml").stdout
        cluster.kubectl("apply", "-f", "-", input=ns)
        cluster.ensure_claim(NAMESPACE, "models")
        net.start()
        cluster.kubectl("delete", "vd", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=60s")
        cluster.kubectl("apply", "-f", "-", input=json.dumps(http_route(gateway.parent_ref())))
        show(f"Applying v1 of {NAMESPACE}/{NAME} (SLO: p99 ≤ 150 ms, errors ≤ 2 %; traffic: HTTPRoute {NAME} "
             "on the Gateway): compile Jobs, Triton, Healthy")
        cluster.kubectl("apply", "--server-side", "--field-manager=demo", "-f", "-", input=yaml.safe_dump(vd))
        watch(cluster, plane, set(), 1, lambda s: s.get("phase") == "Healthy", args.timeout)
        plane.start_load()
        print(cluster.kubectl("get", "vd", "-n", NAMESPACE).stdout)
        show(f"Applying v2 — the same model, {SLOW_MS} ms slower per batch. Its first step is a shadow: it gets "
             "a mirror of every request, users get v1's answers; the analysis should catch it there")
        vd["spec"]["model"]["version"] = "2"
        cluster.kubectl("apply", "--server-side", "--field-manager=demo", "-f", "-", input=yaml.safe_dump(vd))
        final = watch(cluster, plane, {2}, 2, lambda s: s.get("phase") in ("RolledBack", "Healthy", "Failed")
                      and s.get("observedGeneration") == cluster.kubectl_json("get", "vd", NAME, "-n", NAMESPACE)
                      ["metadata"]["generation"] and not s.get("canaryRevision"), args.timeout)
        show("Events the SRE sees, and the status through the kubectl plugin (kubectl vision status)")
        print(cluster.kubectl("get", "events", "-n", NAMESPACE, "--field-selector",
                              f"involvedObject.name={NAME}", "--sort-by=.lastTimestamp").stdout)
        vision = str(Path(sys.executable).parent / "kubectl-vision")
        print(cluster.run(vision, "status", NAME, "-n", NAMESPACE, check=False).stdout)
        show("kubectl get vd; kubectl vision history")
        print(cluster.kubectl("get", "vd", "-n", NAMESPACE).stdout)
        proc = cluster.run(vision, "history", NAME, "-n", NAMESPACE, check=False)
        print(proc.stdout or proc.stderr)
        time.sleep(1)  # the last requests in flight
        answered = plane.answered()
        stable, canary = (final.get("stableRevision") or ""), next((r for r in answered if r != final.get("stableRevision")), "")
        print(f"load sent through the Gateway: {plane.sent['ok']} answered, {plane.sent['error']} errors; "
              f"served by v1's Triton: {answered.get(stable, 0)}, by v2's: {answered.get(canary, 0)} "
              f"(mirrored copies); user requests answered by v2: {max(0, plane.sent['ok'] - answered.get(stable, 0))}")
        ok = final.get("phase") == "RolledBack"
        print(("v2 was rolled back automatically" if ok else f"unexpected end: {final.get('phase')}")
              + f" — demo done in {time.monotonic() - show.t0:.0f}s.\n"
              "The fleet and the operator keep running (the demo's Tritons and Prometheus stop now):\n"
              f"  eval \"$(.venv/bin/visionfleet-fleet env)\"; kubectl get vd -A; kubectl vision status {NAME} -n {NAMESPACE}\n"
              "  .venv/bin/visionfleet-fleet down     # stops everything, leaving no process behind")
        return 0 if ok else 1
    finally:
        plane.stop()
        net.stop()
