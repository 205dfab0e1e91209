"""``visionfleet-operator``: run the operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlsplit

import kopf


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="visionfleet-operator",
        description="Reconcile VisionDeployments: compile per node class, roll out Triton canaries, "
        "analyse and promote or roll back.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch only this namespace (repeatable); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--liveness", default=None, metavar="URL",
                        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8081/healthz "
                        "(on another port than --metrics-port)")
    parser.add_argument("--metrics-port", type=int, default=8080, metavar="PORT",
                        help="serve the operator's Prometheus metrics on http://ADDRESS:PORT/metrics "
                        "(reconciles, API writes, rollouts, promotions, rollbacks, analysis verdicts, phase "
                        "and canary weight per VisionDeployment); 0 disables (default: 8080)")
    parser.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDRESS",
                        help="address the metrics server binds to (default: 0.0.0.0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if not 0 <= args.metrics_port <= 65535:
        parser.error(f"--metrics-port {args.metrics_port}: must be 0 (off) or a port number")
    if args.metrics_port and args.liveness and _port(args.liveness) == args.metrics_port:
        parser.error(f"--liveness {args.liveness} and --metrics-port {args.metrics_port} use the same port")

    import visionfleet.handlers  # noqa: F401  (registers the handlers)
    from visionfleet.metrics import METRICS

    kopf.configure(verbose=args.verbose)
    if args.metrics_port:
        METRICS.serve(args.metrics_port, args.metrics_address)
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        standalone=False,
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
