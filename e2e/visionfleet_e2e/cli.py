"""``visionfleet-fleet``: the local fleet from the command line.

    visionfleet-fleet build              build or reuse the pinned binaries, print their versions
    visionfleet-fleet up [--size N]      start the control plane and create the fleet's nodes
    visionfleet-fleet status             nodes per class, control-plane processes
    visionfleet-fleet env                shell exports (KUBECONFIG, PATH) for this cluster
    visionfleet-fleet kubectl ARGS...    kubectl against this cluster
    visionfleet-fleet demo               up + chart + operator + real Triton/Prometheus: v1 Healthy, slow v2
                                         rolled back by the canary analysis
    visionfleet-fleet down               stop everything it started; no process is left behind
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

from .cluster import REPO, ClusterError, LocalCluster, ensure_binaries, say
from .fleet import CLASS_LABEL, FleetError, load_fleet
from .images import ImageError
from .prometheus import PrometheusError
from .triton import TritonError

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
    cluster.wait_established("visiondeployments.visionfleet.io")


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
    cluster.wait_established("httproutes.gateway.networking.k8s.io")


def cmd_images(args: argparse.Namespace) -> int:
    from . import images

    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{'TARGET':12} {'IMAGE':52} {'SIZE':>9} {'TIME':>7}  ")
    built = []
    for target in args.targets or list(images.TARGETS):
        b = images.build(target, log)
        built.append(b)
        print(f"{b.target:12} {b.ref:52} {b.size_bytes / 1e6:7.0f}MB {b.seconds:6.1f}s  "
              f"{'(cached)' if b.cached else '(built)'}", flush=True)
    if args.sbom:
        out = Path(args.sbom)
        out.mkdir(parents=True, exist_ok=True)
        print(f"\nSBOMs (CycloneDX JSON, syft) in {out}:\n")
        print("| image | size | Python packages | key packages |\n|---|---|---|---|")
        for b in built:
            pkgs = images.python_packages(images.sbom(b.ref, out / f"{b.target}.cdx.json"))
            key = ", ".join(f"{k} {pkgs[k]}" for k in images.KEY_PACKAGES if k in pkgs)
            print(f"| {b.target} | {b.size_bytes / 1e6:.0f} MB | {len(pkgs)} | {key} |", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(args)


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
    p = sub.add_parser("images", help="build the Dockerfile's images with buildah (cached by content hash) and "
                       "print their sizes")
    p.add_argument("targets", nargs="*", help="operator, compile, compile-gpu, monitor, monitor-mmd (default: all)")
    p.add_argument("--log", default=str(REPO / ".fleet" / "images.log"), help="build log (default: %(default)s)")
    p.add_argument("--sbom", metavar="DIR", help="also write each image's SBOM (CycloneDX JSON, by syft) to DIR "
                   "and print a table of its Python packages")
    p.set_defaults(func=cmd_images)
    p = sub.add_parser("demo", help="up + helm install + the operator + a real Triton per revision: v1 Healthy, "
                       "then a slow v2 caught by the canary analysis and rolled back")
    fleet_args(p)
    p.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ClusterError, FleetError, PrometheusError, TritonError, ImageError) as e:
        # A missing tool or a cluster that would not start is one line naming the fix, never a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
