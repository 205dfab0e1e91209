"""``visionfleet-operator``: run the operator (kopf) against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio

import kopf


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
                        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    import visionfleet.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
        standalone=False,
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
