"""The PersistentVolumeClaims the spec names (pvc://<claim>/<path>), checked before anything waits on them.

    spec.model.uri, spec.compile.calibration.uri, spec.serving.modelRepository ─► claims to read
      a claim that does not exist ──► every compile pod that mounts it stays Pending (the scheduler
                                      says only 'persistentvolumeclaim "models" not found'): the
                                      status names the field, the claim and the namespace
      a claim not bound yet ───────► nothing: with volumeBindingMode WaitForFirstConsumer it binds
                                      only once a pod that mounts it is scheduled (an unbound claim
                                      that keeps a pod waiting shows in the pod's wait instead)
      the model repository's claim ReadWriteOnce (or ReadWriteOncePod), and serving pods that may
        land on several nodes (several classes, or replicas.min > 1) ──► Degraded names the field,
        the claim, its access modes and the fix: a ReadWriteOnce volume attaches to one node only,
        so the pods elsewhere never start (Multi-Attach error, seen only in the pod's Events).
        One class with one replica is left alone: its pods fit on one node.

A claim absent from ``Observed.claims`` was not read (no RBAC to read it, an API error): nothing is
said about it, rather than something wrong.
"""

from __future__ import annotations

from visionfleet.api.spec import VisionDeploymentSpec

from .model import ClaimUse, Observed

SHARED_MODES = {"ReadWriteMany", "ReadOnlyMany"}
SINGLE_NODE_MODES = {"ReadWriteOnce", "ReadWriteOncePod"}


def claim_of(uri: str | None) -> str | None:
    """pvc://<claim>/<path> -> claim; None for any other URI."""
    if not uri or not uri.startswith("pvc://"):
        return None
    return uri[len("pvc://"):].partition("/")[0] or None


def named_claims(spec: VisionDeploymentSpec) -> list[tuple[ClaimUse, str]]:
    """(field, claim) for every pvc:// URI of the spec, in the order the fields are listed."""
    calibration = spec.compile.calibration.uri if spec.compile.calibration else None
    uses = [(ClaimUse.MODEL, spec.model.uri), (ClaimUse.CALIBRATION, calibration),
            (ClaimUse.REPOSITORY, spec.serving.model_repository)]
    return [(use, claim) for use, uri in uses if (claim := claim_of(uri)) is not None]


def assess_missing_claims(spec: VisionDeploymentSpec, observed: Observed, namespace: str) -> list[str]:
    """One message per claim the spec names that does not exist (the fields that name it, the claim,
    the fix)."""
    fields: dict[str, list[str]] = {}
    for use, claim in named_claims(spec):
        fields.setdefault(claim, []).append(use.value)
    out = []
    for claim, uses in fields.items():
        seen = observed.claim(claim)
        where, verb = " and ".join(uses), "name" if len(uses) > 1 else "names"
        if seen is None:
            continue
        if not seen.exists:
            out.append(f"{where} {verb} PersistentVolumeClaim {claim!r}, which does not exist in namespace "
                       f"{namespace}: create it (ReadWriteMany storage for the model repository, see "
                       f"docs/serving.md) or point {uses[0]} at a claim that exists; the compile pods wait for it")
    return out


def serving_spread(spec_classes: list[tuple[str, int]]) -> bool:
    """Whether serving pods may land on several nodes: more than one class, or one with several pods."""
    return len(spec_classes) > 1 or any(n > 1 for _, n in spec_classes)


def assess_repository_claim(spec: VisionDeploymentSpec, observed: Observed,
                            spec_classes: list[tuple[str, int]]) -> str | None:
    """A model repository on a single-node claim while serving pods spread over nodes: why, and the fix.
    ``spec_classes``: (class, replicas) of the classes that serve."""
    claim = claim_of(spec.serving.model_repository)
    seen = observed.claim(claim) if claim else None
    if seen is None or not seen.exists or not seen.access_modes:
        return None
    modes = set(seen.access_modes)
    if modes & SHARED_MODES or not modes & SINGLE_NODE_MODES or not serving_spread(spec_classes):
        return None
    pods = sum(n for _, n in spec_classes)
    return (f"{ClaimUse.REPOSITORY.value} names PersistentVolumeClaim {claim!r} with access modes "
            f"{', '.join(seen.access_modes)}: it mounts on one node only, but the serving pods ({pods} across "
            f"{len(spec_classes)} classes, plus the canary's during a rollout) run on several nodes, and those "
            "elsewhere never start (Multi-Attach error); use a claim on ReadWriteMany or ReadOnlyMany storage (NFS, "
            "CephFS, EFS, Filestore) or an s3:// repository (docs/serving.md)")
