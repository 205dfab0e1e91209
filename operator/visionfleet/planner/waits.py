"""Why a pod waits, told the way a user can act on it: the pod's own reason and message, and the fix.

    compile pod Unschedulable ──► the scheduler's message, a missing claim named by its spec field,
                                  and when the class fails (compile.scheduleTimeout)
    ErrImagePull / ImagePullBackOff / InvalidImageName ──► which image field, pull credentials
    CreateContainerConfigError ──► a Secret or ConfigMap the pod names is missing
    serving pod CrashLoopBackOff ──► Triton exits: its log says why

These messages land in the class's status (compile message, class message), the Progressing
condition and a Warning Event when they change. They never carry a running clock ("waited 2m"): a
message that changed on every pass would rewrite the status and post an Event on every pass.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .model import PodWaiting, WaitReason

IMAGE_REASONS = {WaitReason.ERR_IMAGE_PULL, WaitReason.IMAGE_PULL_BACK_OFF, WaitReason.INVALID_IMAGE_NAME}
PREFIX = "waiting: "


def aware(t: datetime) -> datetime:
    """A time from the API client is timezone-aware; one from a test table may not be (UTC then)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def hint(w: PodWaiting, image_field: str) -> str:
    """The fix for a wait, naming the field to change (empty when the message says it all)."""
    if w.reason in IMAGE_REASONS:
        return f"check {image_field} and that the nodes may pull it (imagePullSecrets, registry credentials)"
    if w.reason == WaitReason.CREATE_CONTAINER_CONFIG_ERROR:
        return "create the Secret or ConfigMap the pod names (or fix the spec field that names it)"
    if w.reason == WaitReason.CREATE_CONTAINER_ERROR:
        return "the container runtime could not create the container"
    if w.reason == WaitReason.CRASH_LOOP_BACK_OFF:
        if w.init_container:
            return (f"its init container {w.init_container} keeps failing: for the model fetch, check "
                    "spec.serving.modelRepository and spec.storage.s3 (kubectl logs -c " + w.init_container + ")")
        return "Triton exits at start: kubectl logs --previous on the pod says why"
    return ""


def describe(w: PodWaiting, what: str, image_field: str) -> str:
    """``waiting: compile pod p: ImagePullBackOff: <message>; check spec.compile.image …``."""
    if w.reason == WaitReason.UNSCHEDULABLE:
        text = f"{PREFIX}{what} pod {w.pod} is unschedulable: {w.message}"
    else:
        where = f" init container {w.init_container}" if w.init_container else ""
        text = f"{PREFIX}{what} pod {w.pod}{where}: {w.reason.value}" + (f": {w.message}" if w.message else "")
    fix = hint(w, image_field)
    return f"{text}; {fix}" if fix else text


def is_wait(message: str | None) -> bool:
    return bool(message) and message.startswith(PREFIX)
