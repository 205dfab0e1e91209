"""``visionfleet-fleet``: the local fleet from the command line.

    visionfleet-fleet build              build or reuse the pinned binaries, print their versions
    visionfleet-fleet up [--size N]      start the control plane and create the fleet's nodes
    visionfleet-fleet status             nodes per class, control-plane processes
    visionfleet-fleet env                shell exports (KUBECONFIG, PATH) for this cluster
    visionfleet-fleet kubectl ARGS...    kubectl against this cluster
    visionfleet-fleet demo               up + CRD + operator + the examples, until they are Healthy
    visionfleet-fleet down               stop everything it started; no process is left behind
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .cluster import REPO, ClusterError, LocalCluster, ensure_binaries, say
from .fleet import CLASS_LABEL, FleetError, load_fleet

CRD_DIR = REPO / "crds"
EXAMPLES_DIR = REPO / "docs" / "examples"
DEMO_NAMESPACE = "vision"


def _versions(bin_dir: Path) -> list[tuple[str, str]]:
    probes = {
        "kube-apiserver": ["--version"],
        "kube-controller-manager": ["--version"],
        "kube-scheduler": ["--version"],
        "kubectl": ["version", "--client", "-o", "yaml"],
        "etcd": ["--version"],
        "kwok": ["--version"],
        "kwokctl": ["--version"],
        "helm": ["version", "--short"],
    }
    out = []
    for name, args in probes.items():
        proc = subprocess.run([str(bin_dir / name), *args], text=True, capture_output=True, timeout=30)
        text = (proc.stdout or proc.stderr).strip()
        if name == "kubectl":
            text = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "gitVersion" in line), text)
        out.append((name, text.splitlines()[0] if text else f"exit {proc.returncode}"))
    return out


def cmd_build(args: argparse.Namespace) -> int:
    bin_dir = ensure_binaries()
    for name, version in _versions(bin_dir):
        print(f"{name:26} {version}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    fleet = load_fleet(args.fleet)
    LocalCluster(args.name).up(fleet, size=args.size, timeout=args.timeout)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.name)
    cluster.down()
    left = cluster.processes()
    if left:
        say(f"processes still running: {left}")
        return 1
    say(f"cluster {args.name} stopped; no process left")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.name)
    if not cluster.is_up():
        print(f"cluster {args.name}: not running")
        return 1
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    ready = Counter()
    total = Counter()
    for n in nodes:
        cls = n["metadata"].get("labels", {}).get(CLASS_LABEL, "(none)")
        total[cls] += 1
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", [])):
            ready[cls] += 1
    print(f"cluster {args.name}: running, kubeconfig {cluster.kubeconfig}")
    print(f"control-plane processes: {len(cluster.processes())}")
    for cls in sorted(total):
        print(f"  class {cls:10} {ready[cls]}/{total[cls]} nodes Ready")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.name)
    env = cluster.env()
    print(f"export KUBECONFIG={shlex.quote(env['KUBECONFIG'])}")
    print(f"export PATH={shlex.quote(str(cluster.bin_dir))}:\"$PATH\"")
    return 0


def cmd_kubectl(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.name)
    kubectl = str(cluster.binary("kubectl"))
    return subprocess.run([kubectl, "--kubeconfig", str(cluster.kubeconfig), *args.rest], env=cluster.env()).returncode


def install_crds(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=visionfleet", "-f", str(CRD_DIR))
    cluster.kubectl("wait", "--for=condition=Established", "crd/visiondeployments.visionfleet.io", "--timeout=60s")


GATEWAY_API_GOMOD = REPO / "e2e" / "cluster" / "gomod" / "gateway-api"
GATEWAY_API_CRDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants")


def gateway_api_crd_files() -> list[Path]:
    """The standard-channel Gateway API CRDs of the release pinned in gomod/gateway-api (go.sum
    verified, fetched through the Go module proxy)."""
    proc = subprocess.run(["go", "mod", "download", "-json", "sigs.k8s.io/gateway-api"], cwd=GATEWAY_API_GOMOD,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"could not fetch the Gateway API module: {proc.stderr or proc.stdout}")
    import json
    root = Path(json.loads(proc.stdout)["Dir"]) / "config" / "crd" / "standard"
    return [root / f"gateway.networking.k8s.io_{name}.yaml" for name in GATEWAY_API_CRDS]


def install_gateway_api_crds(cluster: LocalCluster) -> None:
    for f in gateway_api_crd_files():
        cluster.kubectl("apply", "--server-side", "--field-manager=visionfleet-fleet", "-f", str(f))
    cluster.kubectl("wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io",
                    "--timeout=60s")


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    step = 0

    def show(msg: str) -> None:
        nonlocal step
        step += 1
        print(f"\n==> [{step}] {msg}", flush=True)

    show("Building (or reusing) the pinned Kubernetes, etcd, kwok and helm binaries")
    cluster = LocalCluster(args.name)
    cluster.env()
    show(f"Starting the local fleet '{args.fleet}' (real control plane on 127.0.0.1, kwok nodes)")
    cluster.up(load_fleet(args.fleet), size=args.size, timeout=args.timeout)
    print(cluster.kubectl("get", "nodes", "-L", f"{CLASS_LABEL},nvidia.com/gpu.product,kubernetes.io/arch").stdout)
    show("Installing the VisionDeployment CRD (generated from the pydantic models)")
    install_crds(cluster)
    print(cluster.kubectl("get", "crd", "visiondeployments.visionfleet.io").stdout)
    show("Starting the operator (visionfleet-operator, log in "
         f"{cluster.state_dir.relative_to(REPO) if cluster.state_dir.is_relative_to(REPO) else cluster.state_dir}"
         "/operator.log)")
    cluster.start_companion("operator", [str(Path(sys.executable).parent / "visionfleet-operator")])
    show(f"Applying the examples in docs/examples/ to namespace '{DEMO_NAMESPACE}'")
    ns = cluster.kubectl("create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml").stdout
    cluster.kubectl("apply", "-f", "-", input=ns)
    cluster.ensure_claim(DEMO_NAMESPACE, "models")  # the examples keep models on pvc://models/...
    names = []
    for example in sorted(EXAMPLES_DIR.glob("*.yaml")):
        out = cluster.kubectl("apply", "--server-side", "--field-manager=demo", "-n", DEMO_NAMESPACE,
                              "-f", str(example)).stdout.strip()
        names.append(out.split()[0])
        print(f"{example.relative_to(REPO)}: {out}")
    show("Compile Jobs run on each node class (simulated by kwok), then Triton rolls out: waiting for Healthy")
    deadline = time.monotonic() + args.timeout
    while True:
        items = cluster.kubectl_json("get", "vd", "-n", DEMO_NAMESPACE)["items"]
        phases = {i["metadata"]["name"]: i.get("status", {}).get("phase", "Pending") for i in items}
        print("  " + ", ".join(f"{n}: {p}" for n, p in sorted(phases.items())), flush=True)
        if all(p in ("Healthy", "Failed", "RolledBack") for p in phases.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    show("kubectl get vd -o wide")
    print(cluster.kubectl("get", "vd", "-n", DEMO_NAMESPACE, "-o", "wide").stdout)
    show("What the operator created: compile Jobs, Triton Deployments, Services")
    print(cluster.kubectl("get", "jobs,deployments,services", "-n", DEMO_NAMESPACE).stdout)
    print(f"Done in {time.monotonic() - t0:.0f}s. The fleet and the operator keep running:\n"
          f"  eval \"$(.venv/bin/visionfleet-fleet env)\"; kubectl get vd -A; kubectl describe vd -n {DEMO_NAMESPACE}\n"
          f"  .venv/bin/visionfleet-fleet down     # stops them, leaving no process behind")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="visionfleet-fleet",
        description="The local VisionFleet test fleet: a real Kubernetes control plane built from pinned Go "
        "modules, with kwok-simulated GPU and CPU nodes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--name", default="visionfleet", help="cluster name (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    def fleet_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--fleet", default="demo", help="fleet file: a name in e2e/fleets/ or a path (default: %(default)s)")
        p.add_argument("--size", type=int, default=None, help="total nodes (default: the fleet file's size)")
        p.add_argument("--timeout", type=float, default=300, help="seconds to wait for each phase (default: %(default)s)")

    sub.add_parser("build", help="build or reuse the pinned binaries and print their versions").set_defaults(func=cmd_build)
    p = sub.add_parser("up", help="start the control plane and create the fleet's nodes")
    fleet_args(p)
    p.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the cluster and the demo's operator; no process is left behind").set_defaults(
        func=cmd_down)
    sub.add_parser("status", help="nodes per class and control-plane processes").set_defaults(func=cmd_status)
    sub.add_parser("env", help="print shell exports for KUBECONFIG and PATH").set_defaults(func=cmd_env)
    p = sub.add_parser("kubectl", help="run kubectl against the cluster")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_kubectl)
    p = sub.add_parser("demo", help="up + install the CRD + start the operator + apply docs/examples + kubectl get vd")
    fleet_args(p)
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ClusterError, FleetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
