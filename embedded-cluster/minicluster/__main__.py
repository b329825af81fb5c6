"""`python -m minicluster up --dir D`: start the control plane, the node agents (one, or `--nodes
N`), kube-proxy (when this cluster holds the host's kube-proxy lock), metrics-server, the S3 object
store and, with `--kueue`, Kueue's manager (see `kueue.py`); print one JSON line with the admin
kubeconfig once the cluster is ready (also written to `D/ready.json`, with the ClusterIP routing
line `make cluster-up` prints in `D/routing.txt` and its object-store line in `D/objectstore.txt`),
and run until SIGTERM/SIGINT, answering node commands (`python -m minicluster node
kill|partition|heal|status NAME --dir D`, see `nodes.py`); then stop everything and undo what it
changed on the host."""

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

from kubeforge_operator.ports import free_port

from . import nodes
from .agent import NODE_CPUS_ENV, AgentSettings, NodeAgent, node_cpus
from .clusterwide import ClusterWide
from .containers import CgroupParents, cgroup_parents, remove_cgroup_parents
from .controlplane import ControlPlane, rss_bytes
from .kubeapi import KubeClient
from .kueue import Kueue
from .kueue import build as build_kueue
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
    network = PodNetwork.claim() if args.bridge == "auto" else PodNetwork(args.bridge, args.cidr)
    specs, beat = _plan(args, cpu, network)
    root.mkdir(parents=True, exist_ok=True)
    for stale in ("ready.json", "routing.txt", "objectstore.txt"):
        (root / stale).unlink(missing_ok=True)
    binary = Path(args.binary) if args.binary else build_binary()
    ms_binary = None if args.no_metrics_server else build_binary("build-metrics-server.sh")
    store_binary = None if args.no_object_store else build_binary("build-seaweedfs.sh")
    kueue_binary = build_kueue() if args.kueue else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    cp = ControlPlane(binary, root, network.gateway, [s.name for s in specs], beat.controller_manager_flags())
    agents: dict[str, NodeAgent] = {}
    wide: ClusterWide | None = None
    cgroups = None
    proxy = ServiceProxy(binary, cp.kubeconfig("kube-proxy"), cp.logs, specs[0].name, network.bridge, network.gateway,
                         str(network.net))
    metrics = None if ms_binary is None else MetricsServer(
        ms_binary, cp.kubeconfig("metrics-server"), cp.identities["metrics-server"].user, cp.ca,
        root / "metrics-server", cp.logs, network.gateway, free_port())
    store = None if store_binary is None else ObjectStore(store_binary, root, cp.logs, network.gateway)
    queues = None if kueue_binary is None else Kueue(kueue_binary, cp.kubeconfig("admin"), root / "kueue", cp.logs)
    admin: KubeClient | None = None
    try:
        network.up()
        store_started = _Background(lambda: store.start() if store else None)
        cp.start()
        admin = KubeClient.from_kubeconfig(cp.kubeconfig("admin"))
        ms_started = _Background(lambda: metrics.start(admin) if metrics and admin else None)
        kueue_started = _Background(lambda: queues.start() if queues else None)
        cgroups = cgroup_parents(f"kubeforge-{network.bridge}")
        wide = ClusterWide(admin, network.gateway, root / "node" / "volumes")
        wide.start()
        _start_agents(agents, specs, beat, cp, admin, network, cgroups)
        _start_proxy(proxy, args.no_kube_proxy)
        for agent in agents.values():
            agent.set_api_endpoint(*((KUBERNETES_SERVICE_IP, 443) if proxy.enabled else (network.gateway, cp.api_port)))
        ms_started.result()
        store_started.result()
        kueue_started.result()
        info = _ready_info(time.monotonic() - t0, cp, network, cpu, proxy, metrics, queues, specs, beat)
        _publish(root, info, proxy.summary(), store)
        handle = _node_commands(agents)
        while not stop.wait(0.2):
            nodes.serve(root, handle)
        return 0
    finally:
        _stop(store, queues, lambda: metrics.stop(admin) if metrics is not None and admin is not None else None,
              proxy, list(agents.values()), wide, network, cgroups, cp)


def _ready_info(seconds: float, cp: ControlPlane, network: PodNetwork, cpu: str, proxy: ServiceProxy,
                metrics: MetricsServer | None, queues: Kueue | None, specs: list[nodes.NodeSpec],
                beat: nodes.Heartbeat) -> dict[str, object]:
    """What ready.json says of a started cluster: its parts, addresses, pids and sizes."""
    procs = {"kube-proxy": proxy.proc, "metrics-server": metrics.proc if metrics else None,
             "kueue": queues.proc if queues else None}
    addons = {name: p.pid for name, p in procs.items() if p is not None}
    return {"ready": True, "seconds": round(seconds, 1), **cp.describe(),
            "addonPids": addons, "bridge": network.bridge, "podCIDR": str(network.net), "gateway": network.gateway,
            "nodeCpus": cpu, "kubeProxy": proxy.describe(), "metricsServer": metrics is not None,
            "kueue": queues.describe() if queues else None,
            "nodes": [{"name": s.name, "podCIDR": s.pod_cidr} for s in specs],
            "nodeGracePeriodSeconds": beat.grace_seconds, "pid": os.getpid(),
            "controlPlaneRssBytes": cp.rss_bytes(),
            "addonsRssBytes": rss_bytes(addons.values())}


def _stop(store: ObjectStore | None, queues: Kueue | None, stop_metrics: Callable[[], object], proxy: ServiceProxy,
          agents: list[NodeAgent], wide: ClusterWide | None, network: PodNetwork, cgroups: CgroupParents | None,
          cp: ControlPlane) -> None:
    """Stop what `up` started, last started first; the object store stops beside the rest: it takes a
    few seconds, and nothing here needs it."""
    store_stopped = _Background(lambda: _timed("object store", store.stop) if store is not None else None)
    _timed("kueue", queues.stop if queues is not None else lambda: None)
    _timed("metrics-server", stop_metrics)
    _timed("kube-proxy", proxy.stop)
    _timed("node agents", lambda: _stop_agents(agents))
    _timed("cluster DNS and storage", wide.stop if wide is not None else lambda: None)
    network.down()
    if cgroups is not None:
        remove_cgroup_parents(cgroups)
    _timed("control plane", cp.stop)
    store_stopped.result()


def _start_proxy(proxy: ServiceProxy, disabled: bool) -> None:
    if disabled:
        proxy.reason = "started with --no-kube-proxy"
    else:
        proxy.start(free_port(), free_port())


def _plan(args: argparse.Namespace, cpu: str, network: PodNetwork) -> tuple[list[nodes.NodeSpec], nodes.Heartbeat]:
    """The nodes and their heartbeat from the flags; bad flags fail here, before anything starts."""
    try:
        specs = nodes.node_specs(args.nodes, cpu, args.gpus, str(network.net), labels=args.node_label,
                                 taints=args.node_taint, cpus_per_node=args.node_cpus,
                                 gpus_per_node=args.node_gpus, check_cpus=node_cpus)
        return specs, nodes.heartbeat(args.nodes, args.node_grace_period)
    except ValueError as e:
        network.down()
        raise SystemExit(f"minicluster up: {e}") from None


def _start_agents(agents: dict[str, NodeAgent], specs: list[nodes.NodeSpec], beat: nodes.Heartbeat,
                  cp: ControlPlane, admin: KubeClient, network: PodNetwork, cgroups: CgroupParents) -> None:
    """Start a node agent per spec, each with its own identity and pod range (into `agents` as they start,
    so the caller stops those that did even when a later one fails)."""
    for spec in specs:
        state = cp.root / "node" if len(specs) == 1 else cp.root / "node" / "nodes" / spec.name
        settings = AgentSettings(spec.name, state, cpu=spec.cpus, gpus=spec.gpus,
                                 tls_cert=cp.pki / "apiserver.crt", tls_key=cp.pki / "apiserver.key",
                                 labels=spec.labels, taints=spec.taints, pod_cidr=spec.pod_cidr,
                                 renew_seconds=beat.renew_seconds, lease_seconds=beat.lease_seconds,
                                 status_seconds=min(10.0, float(beat.lease_seconds)))
        client = KubeClient.from_kubeconfig(cp.kubeconfig(cp.node_identity(spec.name)))
        agents[spec.name] = NodeAgent(client, admin, settings, network.range(spec.pod_cidr), cgroups)
        agents[spec.name].start()


def _stop_agents(agents: list[NodeAgent]) -> None:
    stopping = [_Background(a.stop) for a in agents]
    for b in stopping:
        b.result()


def _node_commands(agents: dict[str, NodeAgent]) -> Callable[[str, str], str]:
    """What `python -m minicluster node ACTION NAME` does in the running cluster."""
    def handle(name: str, action: str) -> str:
        if action == "status" and name == "all":
            return "\n".join(f"{n}\t{a.state}" for n, a in agents.items())
        agent = agents.get(name)
        if agent is None:
            raise LookupError(f"no node {name!r} in this cluster (nodes: {', '.join(agents)})")
        actions: dict[str, Callable[[], str]] = {
            "kill": agent.kill, "partition": agent.partition, "heal": agent.heal,
            "revive": lambda: _revive(agents, name), "status": lambda: f"{name}\t{agent.state}"}
        if action not in actions:
            raise ValueError(f"unknown node action {action!r}: want one of {', '.join(actions)}")
        logging.getLogger("minicluster").info("node %s: %s", name, action)
        return actions[action]()
    return handle


def _revive(agents: dict[str, NodeAgent], name: str) -> str:
    """A killed node comes back as a new agent of the same Node (identity, resources, pod range): it
    posts Ready again and runs whatever is bound to it from then on (a rebooted machine rejoining)."""
    dead = agents[name]
    if dead.state != "Dead":
        raise ValueError(f"{name} is {dead.state}: only a killed node is revived (heal ends a partition)")
    dead.node.link_down.clear()
    agent = NodeAgent(dead.node, dead.admin, dead.s, dead.network, dead.cgroups)
    agent.base_env = dict(dead.base_env)
    agent.start()
    agents[name] = agent
    return f"{name} revived: a new agent posts Ready and runs the pods bound to the node"


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


def _node(root: Path, action: str, name: str) -> int:
    if not name or (name == "all" and action != "status"):
        print("minicluster node: name the node (NODE=...)", file=sys.stderr)
        return 2
    try:
        answer = nodes.send(root.resolve(), name, action)
    except RuntimeError as e:
        print(f"minicluster node: {e}", file=sys.stderr)
        return 1
    print(answer["message"], file=sys.stdout if answer["ok"] else sys.stderr)
    return 0 if answer["ok"] else 1


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
    p.add_argument("--kueue", action="store_true", help=(
        "also run Kueue's manager (built from its Go module once; its CRDs applied) for queued admission"))
    p.add_argument("--nodes", type=int, default=1, help=(
        "node agents (default 1: node kf-node; several: kf-node-1...kf-node-N, a /24 pod range each)"))
    p.add_argument("--node-cpus", action="append", default=[], metavar="NODE=CPUS",
                   help="CPU capacity of one node (NODE `all` for every node), instead of --cpus")
    p.add_argument("--node-gpus", action="append", default=[], metavar="NODE=N",
                   help="nvidia.com/gpu capacity of one node, instead of --gpus")
    p.add_argument("--node-label", action="append", default=[], metavar="NODE=KEY=VALUE", help="a node label")
    p.add_argument("--node-taint", action="append", default=[], metavar="NODE=KEY[=VALUE]:EFFECT",
                   help="a node taint, registered with the node")
    p.add_argument("--node-grace-period", type=float, default=None, metavar="SECONDS", help=(
        "how long a node may miss its Lease before the node lifecycle controller marks it unreachable "
        f"(default: {nodes.FAST_GRACE_SECONDS:g} with several nodes, the stock 50 with one)"))
    n = sub.add_parser("node", help="kill, partition or heal a node of a running cluster (rehearse failures)")
    n.add_argument("action", choices=nodes.ACTIONS)
    n.add_argument("name", nargs="?", default="all", help="the node (status: default all)")
    n.add_argument("--dir", required=True, help="the running cluster's state directory")
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
    if args.cmd == "node":  # imports nothing more: a node kill should not wait for the operator's modules
        return _node(Path(args.dir), args.action, args.name)
    if args.cmd == "build":
        print(build_binary())
        return 0
    from .demo import demo
    from .localinstall import operator_down, operator_up

    if args.cmd == "operator-up":
        return operator_up(Path(args.kubeconfig), Path(args.dir))
    if args.cmd == "demo":
        return demo(args.samples, args.keep)
    if args.cmd == "operator-down":
        return operator_down(Path(args.dir))
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
