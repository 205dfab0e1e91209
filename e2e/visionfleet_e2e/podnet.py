"""A pod network for kwok pods: their pod IPs answer on this machine, played by local servers.

kwok pods run nothing and have no network; their pod IPs are only strings in ``status.podIP``. A real
gateway (Traefik, gateway.py) sends requests to those IPs — it reads a Service's EndpointSlices, which
the endpointslice controller fills from the Ready pods the Service selects. To make a request reach
something, three pieces:

1. **Pod IPs local to this machine.** Each cluster's kwok controller hands out pod IPs from its own
   /20 of ``POD_NETWORK`` (10.192.0.0/10; ``pod_cidr(name)``, the kwok controller's ``--cidr``
   that cluster.py sets), and ``ensure_route()`` adds one Linux "local" route for the whole range
   (``ip route replace local 10.192.0.0/10 dev lo``, root): every address in it is this machine's,
   so a process can listen on ``<podIP>:<port>`` and Traefik connects to it like to a pod. Not
   127.0.0.0/8, which kwok would take: the API server refuses loopback addresses in EndpointSlices
   ("may not be in the loopback range"), so such pods would never become a Service's endpoints.
2. **A forwarder per pod** (``PodNetwork``): for each Ready pod that a rule selects it listens on
   ``<podIP>:<containerPort>`` and relays every TCP connection to the local server that plays the
   pod (a rule: label selector, container port name or number, local address). Listeners follow the
   pods: a pod that goes away (or stops being Ready) takes its listener with it.
3. **The local servers**: whatever the test or the demo runs (a tiny HTTP server, a tritonserver per
   revision).

    net = PodNetwork(cluster, namespace).start()
    net.forward({"app": "blue"}, "http", ("127.0.0.1", blue.port))     # pods app=blue, port "http"
    net.wait_forwarding({"app": "blue"}, 1)                            # one Ready pod listened for
    ...
    net.stop()

For the operator's Triton pods, ``forward_revision(revision, "http", address)`` selects the pods of a
revision (label ``visionfleet.io/revision``). A connection to a listener whose target is down is
closed at once (the gateway then answers 502, as for a pod that refuses connections).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

POD_NETWORK = "10.192.0.0/10"
POD_PREFIX = 20  # each cluster's range: 4096 pod IPs (kwok's default /24 has 254)
REVISION_LABEL = "visionfleet.io/revision"


class PodNetworkError(RuntimeError):
    pass


def pod_cidr(cluster_name: str) -> str:
    """The /20 of POD_NETWORK that the cluster named ``cluster_name`` takes its pod IPs from (by a
    hash of the name: two clusters share one with probability 1/1024)."""
    net = ipaddress.ip_network(POD_NETWORK)
    count = 2 ** (POD_PREFIX - net.prefixlen)
    index = int(hashlib.sha256(cluster_name.encode()).hexdigest(), 16) % count
    return str(ipaddress.ip_network((int(net.network_address) + index * 2 ** (32 - POD_PREFIX), POD_PREFIX)))


def ensure_route(network: str = POD_NETWORK) -> None:
    """Make every address of ``network`` local to this machine (one route in the kernel's local
    table; idempotent). Needs root (CAP_NET_ADMIN) and iproute2."""
    ip = shutil.which("ip")
    if ip is None:
        raise PodNetworkError("the pod network needs iproute2's `ip` (apt-get install iproute2)")
    shown = subprocess.run([ip, "route", "show", "table", "local", network], capture_output=True, text=True)
    if shown.returncode == 0 and shown.stdout.strip():
        return
    added = subprocess.run([ip, "route", "replace", "local", network, "dev", "lo"], capture_output=True, text=True)
    if added.returncode != 0:
        raise PodNetworkError(f"could not make the pod network {network} local (`ip route replace local {network} "
                              f"dev lo`, needs root): {added.stderr.strip()}")


@dataclass
class Rule:
    selector: dict[str, str]
    port: str | int  # a container port's name, or its number
    target: tuple[str, int]

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector.items())

    def container_ports(self, pod: dict[str, Any]) -> list[int]:
        out = []
        for c in pod.get("spec", {}).get("containers", []):
            for p in c.get("ports") or []:
                if (isinstance(self.port, int) and p.get("containerPort") == self.port) or p.get("name") == self.port:
                    out.append(int(p["containerPort"]))
        return out


@dataclass
class PodNetwork:
    """Forwards ``<podIP>:<containerPort>`` of the Ready pods of ``namespace`` (all namespaces when
    None) that a rule selects to that rule's local address. Polls the API server every ``interval``
    seconds (one LIST of the namespace's pods)."""

    cluster: Any
    namespace: str | None = None
    interval: float = 0.25
    rules: list[Rule] = field(default_factory=list)
    connections: dict[tuple[str, int], int] = field(default_factory=dict)  # listener -> connections relayed

    def __post_init__(self) -> None:
        self._targets: dict[tuple[str, int], tuple[tuple[str, int], dict[str, str]]] = {}
        self._servers: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self._relays: set[asyncio.Task] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._synced = threading.Event()

    # -- configuration ----------------------------------------------------------------------------

    def forward(self, selector: dict[str, str], port: str | int, target: tuple[str, int]) -> "PodNetwork":
        """Pods matching ``selector`` (labels): their container port ``port`` (name or number) is
        played by ``target`` (host, port). A later rule for the same selector and port replaces it."""
        with self._lock:
            self.rules = [r for r in self.rules if not (r.selector == selector and r.port == port)]
            self.rules.append(Rule(dict(selector), port, (target[0], int(target[1]))))
        self._synced.clear()
        return self

    def forward_revision(self, revision: str, port: str | int, target: tuple[str, int]) -> "PodNetwork":
        """The operator's pods of one revision (every class): ``port`` is "http", "grpc", "metrics"…"""
        return self.forward({REVISION_LABEL: revision}, port, target)

    def stop_forwarding(self, selector: dict[str, str]) -> None:
        with self._lock:
            self.rules = [r for r in self.rules if r.selector != selector]
        self._synced.clear()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "PodNetwork":
        ensure_route()
        cidr = ipaddress.ip_network(self.cluster.pod_cidr)
        if not cidr.subnet_of(ipaddress.ip_network(POD_NETWORK)):
            raise PodNetworkError(f"cluster {self.cluster.name}'s pod range {cidr} is not in {POD_NETWORK}")
        self._server_info = self.cluster._server()
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._stopping = asyncio.Event()
            started.set()
            try:
                self._loop.run_until_complete(self._main())
            except BaseException as e:  # surfaced by the next wait_forwarding / stop
                self._error = e
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="podnet", daemon=True)
        self._thread.start()
        started.wait()
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> "PodNetwork":
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def listeners(self) -> dict[tuple[str, int], tuple[str, int]]:
        """(podIP, port) -> the local address it forwards to, as of now."""
        with self._lock:
            return {k: v[0] for k, v in self._targets.items() if k in self._servers}

    def wait_forwarding(self, selector: dict[str, str], count: int, timeout: float = 60) -> list[tuple[str, int]]:
        """Wait until exactly ``count`` listeners serve pods whose labels match ``selector``; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            if self._error is not None:
                raise PodNetworkError(f"the pod network stopped: {self._error!r}")
            with self._lock:
                found = sorted(k for k, (_, labels) in self._targets.items() if k in self._servers
                               and all(labels.get(a) == b for a, b in selector.items()))
            if len(found) == count and self._synced.is_set():
                return found
            if time.monotonic() > deadline:
                raise PodNetworkError(f"{len(found)} pods matching {selector} forwarded after {timeout:.0f}s, "
                                      f"not {count}: {found}")
            time.sleep(0.1)

    # -- the loop ---------------------------------------------------------------------------------

    def _list_pods(self) -> list[dict[str, Any]]:
        server, sslctx, headers = self._server_info
        path = f"/api/v1/namespaces/{urllib.parse.quote(self.namespace)}/pods" if self.namespace else "/api/v1/pods"
        req = urllib.request.Request(server + path, headers=headers)
        with urllib.request.urlopen(req, timeout=10, context=sslctx) as resp:
            return json.loads(resp.read())["items"]

    def _wanted(self, pods: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[tuple[str, int], dict[str, str]]]:
        with self._lock:
            rules = list(self.rules)
        out: dict[tuple[str, int], tuple[tuple[str, int], dict[str, str]]] = {}
        for pod in pods:
            md, status = pod.get("metadata", {}), pod.get("status", {})
            ip = status.get("podIP")
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            if not ip or not ready or md.get("deletionTimestamp"):
                continue
            labels = md.get("labels") or {}
            for rule in rules:
                if rule.matches(labels):
                    for port in rule.container_ports(pod):
                        out.setdefault((ip, port), (rule.target, labels))
        return out

    async def _main(self) -> None:
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                generation = id(self.rules), len(self.rules)
                try:
                    pods = await loop.run_in_executor(None, self._list_pods)
                except Exception:  # the API server busy for a moment: keep the listeners, try again
                    pods = None
                if pods is not None:
                    await self._sync(self._wanted(pods))
                    if generation == (id(self.rules), len(self.rules)):
                        self._synced.set()
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
        finally:
            for server in self._servers.values():
                server.close()
            for task in list(self._relays):
                task.cancel()
            await asyncio.gather(*self._relays, return_exceptions=True)
            for server in self._servers.values():
                await server.wait_closed()
            self._servers.clear()

    async def _sync(self, wanted: dict[tuple[str, int], tuple[tuple[str, int], dict[str, str]]]) -> None:
        for key in [k for k in self._servers if k not in wanted]:
            server = self._servers.pop(key)
            server.close()
        with self._lock:
            self._targets = {**{k: v for k, v in self._targets.items() if k in wanted}, **wanted}
        for key in wanted:
            if key not in self._servers:
                ip, port = key
                try:
                    self._servers[key] = await asyncio.start_server(
                        lambda r, w, key=key: self._relay(key, r, w), host=ip, port=port, reuse_address=True)
                except OSError:
                    # the address is taken (a stale listener of a pod IP reused at once): next round
                    continue

    async def _relay(self, key: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            entry = self._targets.get(key)
        if entry is None:
            writer.close()
            return
        self.connections[key] = self.connections.get(key, 0) + 1
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*entry[0])
        except OSError:
            writer.close()
            self._relays.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                pass

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._relays.discard(task)
            for w in (writer, up_writer):
                w.close()
