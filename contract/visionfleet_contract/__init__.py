"""What the operator, the compile program and the drift monitor agree on, and nothing else.

Each of the three ships in its own image and imports none of the others; this package is all they
share, so each constant below has exactly one definition:

    operator ──(Job env COMPILE_REQUEST_ENV: the request, schema.CompileRequest)──► compile program
    compile program ──(termination message at TERMINATION_LOG: schema.CompileResult)──► operator
    compile program ──(files in the model repository: ARTIFACT_FILE, CONFIG_FILE, REFERENCE_FILE)──► Triton, monitor
    monitor ──(DRIFT_METRICS on MONITOR_PORT, scraped by Prometheus)──► operator's analysis

Importable with no third-party package (the operator image has no numpy); ``reference`` and ``tasks``
(how each task's outputs are read) need numpy, and only the compile program and the monitor import them.
"""

from __future__ import annotations

# -- the compile Job ---------------------------------------------------------------------------------
COMPILE_REQUEST_ENV = "VISIONFLEET_COMPILE_REQUEST"  # the request JSON (schema.CompileRequest)
TERMINATION_LOG = "/dev/termination-log"  # the result JSON (schema.CompileResult), or the error message
TERMINATION_LOG_ENV = "VISIONFLEET_TERMINATION_LOG"  # overrides TERMINATION_LOG outside a pod
MESSAGE_MAX = 4096  # the kubelet keeps at most 4 KiB of a termination message
PVC_ROOT = "/pvc"  # pvc://<claim>/<path> is read at PVC_ROOT/<claim>/<path> inside the Job
PVC_ROOT_ENV = "VISIONFLEET_PVC_ROOT"

# Exit codes of the compile program. BAD_INPUT and GATE are permanent (no retry can fix a bad model
# or a failed accuracy gate): the Job's podFailurePolicy fails the Job at once on them.
EXIT_OK, EXIT_RETRYABLE, EXIT_BAD_INPUT, EXIT_GATE = 0, 1, 2, 3
PERMANENT_EXIT_CODES = (EXIT_BAD_INPUT, EXIT_GATE)

# -- files of one model repository entry (<repository>/<model>/<revision>-<class>/) -------------------
CONFIG_FILE = "config.pbtxt"
REFERENCE_FILE = "drift-reference.npz"  # the drift monitor's reference, written by the compile Job
ARTIFACT_FILE = {  # per runtime: the file Triton loads (default_model_filename)
    "tensorrt": "model.plan",
    "onnxruntime": "model.onnx",
    "openvino": "model.xml",  # + model.bin beside it
}

# -- labels every object of a VisionDeployment carries -------------------------------------------------
LABEL_VD = "visionfleet.io/vision-deployment"
LABEL_CLASS = "visionfleet.io/class"
LABEL_REVISION = "visionfleet.io/revision"

# -- the drift monitor -------------------------------------------------------------------------------
MONITOR_PORT = 8010
DRIFT_P_VALUE = "visionfleet_drift_p_value"  # gauge: the last test's p-value
DRIFT_WINDOW_FILL = "visionfleet_drift_window_fill"  # gauge: samples held / window size (0..1)
# The input-space test every monitor runs next to its detector (KS per reduced input dimension).
DRIFT_INPUT_P_VALUE = "visionfleet_drift_input_p_value"  # gauge: the last input-space test's p-value
DRIFT_INPUT_DETECTED = "visionfleet_drift_input_detected"  # gauge: 1 when it found drift
# The monitor asks Triton under its own model entry, <model>MONITOR_MODEL_SUFFIX (the same artifact,
# a second name in the repository), so its requests never land in the nv_inference_* series of
# <model> that the latency/error analysis reads.
MONITOR_MODEL_SUFFIX = "__monitor"

# -- shadow steps: the canary gets a mirror of live requests, users see only the stable ----------------
#   gateway ──(RequestMirror to the canary's revision Service, port SHADOW_PORT)──► canary's monitor sidecar
#   sidecar ──(every request, as received)──► its own Triton, under <model>: what the SLO analysis judges
#   sidecar ──(a rate-limited sample, under <model>MONITOR_MODEL_SUFFIX)──► STABLE_URL_ENV: the stable's
#            answer to the same request; the pair's agreement is counted below
SHADOW_PORT = 8011
STABLE_URL_ENV = "VISIONFLEET_STABLE_URL"  # e.g. http://<vd>-stable.<namespace>:8000
LIVE_PAIRS = "visionfleet_live_pairs_total"  # counter: requests answered by both canary and stable
LIVE_AGREEMENT = "visionfleet_live_agreement_total"  # counter: sum over pairs of their agreement (0..1)
LIVE_PAIR_ERRORS = "visionfleet_live_pair_errors_total"  # counter {reason}: pairs that could not be made


def monitor_model_name(model: str) -> str:
    """The monitor's Triton model entry for ``model``: ``<model>__monitor``."""
    return model + MONITOR_MODEL_SUFFIX


def monitor_config(config: str, model: str) -> str:
    """config.pbtxt of ``model``'s monitor entry, from the served entry's own text (``triton_config.render``):
    identical but for the name (``monitor_model_name``) and one instance per instance group.

    Why one instance: the monitor asks at most ``--max-rate`` samples a second (50 by default), and
    every instance of a second entry is a second copy of the weights in memory (a TensorRT engine on
    the GPU); one instance bounds that cost to one copy. Everything else is the served entry's — the
    same max_batch_size (the requests' shapes mean the same thing), dynamic batching (it merges the
    monitor's concurrent requests), the same backend parameters — so the monitor sees the answers the
    clients get. The version directory is the served one's (mounted twice, or a symlink): no copy."""
    lines = config.splitlines()
    want = f'name: "{model}"'
    hits = [i for i, line in enumerate(lines) if line.rstrip() == want]  # top level: not indented
    if len(hits) != 1:
        raise ValueError(f"config.pbtxt has {len(hits)} top-level lines {want!r}; expected exactly one")
    lines[hits[0]] = f'name: "{monitor_model_name(model)}"'
    depth, in_group = 0, False
    for i, line in enumerate(lines):
        s = line.strip()
        if not in_group and depth == 0 and s.startswith("instance_group"):
            in_group = True
        if in_group:
            if s.startswith("count:"):
                lines[i] = line[:len(line) - len(line.lstrip())] + "count: 1"
            depth += s.count("[") + s.count("{") - s.count("]") - s.count("}")
            if depth == 0:
                in_group = False
    return "\n".join(lines) + ("\n" if config.endswith("\n") else "")
