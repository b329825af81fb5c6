"""`python -m minicluster up --dir D`: start the control plane, the node agent, kube-proxy (when
this cluster holds the host's kube-proxy lock), metrics-server and the S3 object store, print one
JSON line with the admin kubeconfig once the cluster is ready (also written to `D/ready.json`, with
the ClusterIP routing line `make cluster-up` prints in `D/routing.txt` and its object-store line in
`D/objectstore.txt`), and run until SIGTERM/SIGINT; then stop everything and undo what it changed
on the host."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .agent import NODE_CPUS_ENV, AgentSettings, NodeAgent, node_cpus
from .controlplane import NODE_NAME, ControlPlane, free_port, rss_bytes
from .demo import demo
from .kubeapi import KubeClient
from .localinstall import operator_down, operator_up
from .metricsserver import MetricsServer
from .network import PodNetwork
from .objectstore import ObjectStore
from .serviceproxy import KUBERNETES_SERVICE_IP, ServiceProxy

HERE = Path(__file__).resolve().parent.parent


def build_binary(script: str = "build-minicp.sh") -> Path:
    out = subprocess.run([str(HERE / script)], check=True, capture_output=False,
                         stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


class _Background(threading.Thread):
    """Run `fn` in a thread; `result()` re-raises what it raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as e:
            self.error = e

    def result(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


def up(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    cpu = args.cpus or node_cpus()  # a bad KUBEFORGE_NODE_CPUS fails here, before anything starts
    root.mkdir(parents=True, exist_ok=True)
    for stale in ("ready.json", "routing.txt", "objectstore.txt"):
        (root / stale).unlink(missing_ok=True)
    binary = Path(args.binary) if args.binary else build_binary()
    ms_binary = None if args.no_metrics_server else build_binary("build-metrics-server.sh")
    store_binary = None if args.no_object_store else build_binary("build-seaweedfs.sh")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    network = PodNetwork.claim() if args.bridge == "auto" else PodNetwork(args.bridge, args.cidr)
    cp = ControlPlane(binary, root, network.gateway)
    agent: NodeAgent | None = None
    proxy = ServiceProxy(binary, cp.kubeconfig("kube-proxy"), cp.logs, NODE_NAME, network.bridge, network.gateway,
                         str(network.net))
    metrics = None if ms_binary is None else MetricsServer(
        ms_binary, cp.kubeconfig("metrics-server"), cp.identities["metrics-server"].user, cp.ca,
        root / "metrics-server", cp.logs, network.gateway, free_port())
    store = None if store_binary is None else ObjectStore(store_binary, root, cp.logs, network.gateway)
    admin: KubeClient | None = None
    try:
        network.up()
        store_started = _Background(lambda: store.start() if store else None)
        cp.start()
        admin = KubeClient.from_kubeconfig(cp.kubeconfig("admin"))
        ms_started = _Background(lambda: metrics.start(admin) if metrics and admin else None)
        settings = AgentSettings(NODE_NAME, root / "node", cpu=cpu, gpus=args.gpus,
                                 tls_cert=cp.pki / "apiserver.crt", tls_key=cp.pki / "apiserver.key")
        agent = NodeAgent(KubeClient.from_kubeconfig(cp.kubeconfig("node")), admin, settings, network)
        agent.start()
        if args.no_kube_proxy:
            proxy.reason = "started with --no-kube-proxy"
        else:
            proxy.start(free_port(), free_port())
        if proxy.enabled:
            agent.set_api_endpoint(KUBERNETES_SERVICE_IP, 443)
        else:
            agent.set_api_endpoint(network.gateway, cp.api_port)
        ms_started.result()
        store_started.result()
        procs = {"kube-proxy": proxy.proc, "metrics-server": metrics.proc if metrics else None}
        addons = {name: p.pid for name, p in procs.items() if p is not None}
        info = {"ready": True, "seconds": round(time.monotonic() - t0, 1), **cp.describe(),
                "addonPids": addons, "bridge": network.bridge, "podCIDR": str(network.net), "gateway": network.gateway,
                "nodeCpus": cpu, "kubeProxy": proxy.describe(), "metricsServer": metrics is not None,
                "controlPlaneRssBytes": cp.rss_bytes(),
                "addonsRssBytes": rss_bytes(addons.values())}
        _publish(root, info, proxy.summary(), store)
        stop.wait()
        return 0
    finally:  # the object store stops beside the rest: it takes a few seconds, and nothing here needs it
        store_stopped = _Background(lambda: _timed("object store", store.stop) if store is not None else None)
        _timed("metrics-server", lambda: metrics.stop(admin) if metrics is not None and admin is not None else None)
        _timed("kube-proxy", proxy.stop)
        _timed("node agent", agent.stop if agent is not None else network.down)
        _timed("control plane", cp.stop)
        store_stopped.result()


def _publish(root: Path, info: dict[str, object], routing: str, store: ObjectStore | None) -> None:
    """Write the lines `make cluster-up` prints and ready.json (only its owner may read it: it holds
    the object store's secret key), then print ready.json's line."""
    if store is not None and store.proc is not None:
        info |= {"objectStore": store.describe(), "objectStorePid": store.proc.pid,
                 "objectStoreRssBytes": rss_bytes([store.proc.pid])}
        (root / "objectstore.txt").write_text(
            f"object store (S3): {store.endpoint} (keys: objectStore in {root / 'ready.json'})\n")
    (root / "routing.txt").write_text(routing + "\n")
    ready = root / "ready.json"
    ready.touch(mode=0o600)
    ready.write_text(json.dumps(info))
    print(json.dumps(info), flush=True)


def _timed(what: str, stop: Callable[[], object]) -> None:
    t = time.monotonic()
    stop()
    logging.getLogger("minicluster").info("stopped %s in %.1f s", what, time.monotonic() - t)


def _cpus(value: str) -> str:
    try:
        return node_cpus(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="minicluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start the cluster and run until interrupted")
    p.add_argument("--dir", required=True)
    p.add_argument("--binary", help="a built minicp binary (default: build or reuse the cached one)")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity the node advertises")
    p.add_argument("--cpus", type=_cpus, default=None, help=(
        f"CPU capacity the node advertises (default: ${NODE_CPUS_ENV}, else this machine's CPUs, "
        "its cgroup's quota included)"))
    p.add_argument("--bridge", default="auto", help="pod bridge (default: the first free kft<k>)")
    p.add_argument("--cidr", default="10.244.0.0/16", help="pod range, with an explicit --bridge")
    p.add_argument("--no-kube-proxy", action="store_true", help="no ClusterIP routing (leave the host alone)")
    p.add_argument("--no-metrics-server", action="store_true", help="no resource metrics (kubectl top, HPA)")
    p.add_argument("--no-object-store", action="store_true", help="no S3-compatible object store")
    sub.add_parser("build", help="build (or find the cached) control-plane binary and print its path")
    o = sub.add_parser("operator-up", help="install CRDs+RBAC and run the operator in the background as its SA")
    o.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")))
    o.add_argument("--dir", required=True)
    m = sub.add_parser("demo", help="cluster + operator + every sample TrainingJob to a terminal state")
    m.add_argument("--samples", type=Path, default=HERE.parent / "manifests" / "samples")
    m.add_argument("--keep", action="store_true", help="leave the cluster and operator running")
    d = sub.add_parser("operator-down", help="stop the operator started by operator-up")
    d.add_argument("--dir", required=True)
    args = parser.parse_args()
    if args.cmd == "build":
        print(build_binary())
        return 0
    if args.cmd == "operator-up":
        return operator_up(Path(args.kubeconfig), Path(args.dir))
    if args.cmd == "demo":
        return demo(args.samples, args.keep)
    if args.cmd == "operator-down":
        return operator_down(Path(args.dir))
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
