"""Several nodes in one embedded cluster, and failures to rehearse on them.

What each node is (`NodeSpec`: name, CPUs, GPUs, labels, taints, its pod range on the shared
bridge), how fast node loss is noticed (`Heartbeat`: the agents' Lease schedule and the
controller-manager's node-monitor flags), and the control channel through which a user kills,
partitions and heals a node of a running cluster (`python -m minicluster node kill|partition|heal
NAME --dir D`; `revive` brings a killed node back as a new agent). The channel is a folder in the
cluster's state directory, `D/control`: a command is a file `<id>.request` (JSON: node, action),
written whole (rename), and the running cluster answers with `<id>.reply` (JSON: ok, message).
Only the state directory's owner can write there, and it needs neither a socket (path length
limits) nor a signal (which process to send it to).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_NAME = "kf-node"  # the only node of a one-node cluster; nodes of a larger one are kf-node-1...
MAX_NODES = 32
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ACTIONS = ("kill", "partition", "heal", "status", "revive")  # revive: a killed node back as a new agent
FAST_GRACE_SECONDS = 5.0  # node-monitor-grace-period of a cluster with several nodes (stock: 50 s)
# A label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


@dataclass(frozen=True)
class NodeSpec:
    """One node as given: what it advertises and where its pods' addresses come from."""

    name: str
    cpus: str
    gpus: int
    pod_cidr: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Heartbeat:
    """How often agents renew their Lease, and the node-monitor flags the controller-manager runs
    with (`None`: its defaults, 5 s period and 50 s grace, with the kubelet's 10 s renewal)."""

    renew_seconds: float = 10.0
    lease_seconds: int = 40
    grace_seconds: float | None = None

    def controller_manager_flags(self) -> list[str]:
        """Node death noticed within `grace_seconds`: checked every fifth of it (at most every 5 s),
        and unreachable nodes tainted without the default one-node-per-10-s rate limit (which is
        there to protect large clusters from a flapping network)."""
        if self.grace_seconds is None:
            return []
        period = min(5.0, max(0.5, self.grace_seconds / 5))
        return [f"--node-monitor-period={period:g}s", f"--node-monitor-grace-period={self.grace_seconds:g}s",
                "--node-eviction-rate=10"]


def heartbeat(nodes: int, grace: float | None) -> Heartbeat:
    """One node keeps the kubelet's and controller-manager's stock schedule unless `grace` is given;
    several nodes notice a death within `grace` (default FAST_GRACE_SECONDS): the Lease is renewed
    five times per grace period, so a busy machine has to stall four renewals in a row to flap."""
    if grace is None and nodes == 1:
        return Heartbeat()
    g = FAST_GRACE_SECONDS if grace is None else grace
    if g < 2:
        raise ValueError(f"a node grace period under 2 s would flap on a busy machine (got {g:g})")
    return Heartbeat(renew_seconds=min(10.0, g / 5), lease_seconds=max(1, math.ceil(g)), grace_seconds=g)


def node_names(count: int) -> list[str]:
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"nodes: want 1 to {MAX_NODES}, got {count}")
    return [NODE_NAME] if count == 1 else [f"{NODE_NAME}-{i}" for i in range(1, count + 1)]


def pod_ranges(cidr: str, count: int) -> list[str]:
    """Each node's pod range within the bridge's: the whole of it for one node, else a /24 each,
    skipping the first (it holds the gateway). Pods keep the bridge's prefix on their interface,
    so pods of all nodes reach each other on the shared bridge."""
    net = ipaddress.ip_network(cidr)
    if count == 1:
        return [str(net)]
    subnets = list(net.subnets(new_prefix=24)) if net.prefixlen <= 24 else []
    if len(subnets) < count + 1:
        raise ValueError(f"pod range {cidr} has no room for {count} nodes of a /24 each")
    return [str(s) for s in subnets[1:count + 1]]


def parse_label(text: str) -> tuple[str, str]:
    """`KEY=VALUE` -> (key, value), with Kubernetes' syntax checked."""
    key, eq, value = text.partition("=")
    if not eq or not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"not a label KEY=VALUE: {text!r}")
    return key, value


def parse_taint(text: str) -> dict[str, str]:
    """`KEY[=VALUE]:EFFECT` (kubectl taint's syntax) -> a Node taint."""
    kv, colon, effect = text.rpartition(":")
    if not colon or effect not in TAINT_EFFECTS:
        raise ValueError(f"not a taint KEY[=VALUE]:EFFECT with EFFECT one of {', '.join(TAINT_EFFECTS)}: {text!r}")
    key, eq, value = kv.partition("=")
    if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"not a taint KEY[=VALUE]:EFFECT: {text!r}")
    return {"key": key, "value": value, "effect": effect} if eq else {"key": key, "effect": effect}


def _per_node(items: Iterable[str], names: list[str], what: str) -> list[tuple[list[str], str]]:
    """`NODE=REST` (or `all=REST`) -> (the nodes it names, REST)."""
    out = []
    for item in items:
        node, eq, rest = item.partition("=")
        if not eq or (node != "all" and node not in names):
            raise ValueError(f"{what} {item!r}: want NODE=..., NODE one of {', '.join(names)} or all")
        out.append((names if node == "all" else [node], rest))
    return out


def node_specs(count: int, cpus: str, gpus: int, cidr: str, *, labels: Iterable[str] = (),
               taints: Iterable[str] = (), cpus_per_node: Iterable[str] = (), gpus_per_node: Iterable[str] = (),
               check_cpus: Callable[[str], str] = str) -> list[NodeSpec]:
    """The nodes of a cluster from `up`'s flags: `count` nodes advertising `cpus` and `gpus` each,
    overridden per node by `NODE=CPUS` / `NODE=GPUS`, with `NODE=KEY=VALUE` labels and
    `NODE=KEY[=VALUE]:EFFECT` taints (NODE `all` for every node). Raises ValueError naming what is wrong."""
    names = node_names(count)
    cpu = dict.fromkeys(names, cpus)
    gpu = dict.fromkeys(names, gpus)
    node_labels: dict[str, dict[str, str]] = {n: {} for n in names}
    node_taints: dict[str, list[dict[str, str]]] = {n: [] for n in names}
    for nodes, rest in _per_node(cpus_per_node, names, "--node-cpus"):
        cpu |= dict.fromkeys(nodes, check_cpus(rest))
    for nodes, rest in _per_node(gpus_per_node, names, "--node-gpus"):
        if not rest.isdigit():
            raise ValueError(f"--node-gpus: not a GPU count: {rest!r}")
        gpu |= dict.fromkeys(nodes, int(rest))
    for nodes, rest in _per_node(labels, names, "--node-label"):
        key, value = parse_label(rest)
        for n in nodes:
            node_labels[n][key] = value
    for nodes, rest in _per_node(taints, names, "--node-taint"):
        taint = parse_taint(rest)
        for n in nodes:
            node_taints[n] = [t for t in node_taints[n] if (t["key"], t["effect"]) != (taint["key"], taint["effect"])]
            node_taints[n].append(taint)
    return [NodeSpec(n, cpu[n], gpu[n], r, node_labels[n], tuple(node_taints[n]))
            for n, r in zip(names, pod_ranges(cidr, count), strict=True)]


# ----- the control channel -----
def control_dir(root: Path) -> Path:
    return root / "control"


def send(root: Path, node: str, action: str, timeout: float = 60.0) -> dict[str, Any]:
    """Ask the cluster running in state directory `root` to `action` node `node`; its answer
    (`ok`, `message`). Raises RuntimeError when no running cluster answers."""
    if action not in ACTIONS:
        raise ValueError(f"unknown node action {action!r}: want one of {', '.join(ACTIONS)}")
    if not (root / "ready.json").exists():
        raise RuntimeError(f"no running cluster in {root} (no ready.json)")
    folder = control_dir(root)
    folder.mkdir(mode=0o700, exist_ok=True)
    rid = uuid.uuid4().hex
    tmp = folder / f"{rid}.tmp"
    tmp.write_text(json.dumps({"node": node, "action": action}))
    os.replace(tmp, folder / f"{rid}.request")
    reply = folder / f"{rid}.reply"
    deadline = time.monotonic() + timeout
    while not reply.exists():
        if time.monotonic() > deadline:
            (folder / f"{rid}.request").unlink(missing_ok=True)
            raise RuntimeError(f"the cluster in {root} did not answer within {timeout:g} s; is it running?")
        time.sleep(0.05)
    answer = dict(json.loads(reply.read_text()))
    reply.unlink(missing_ok=True)
    return answer


def serve(root: Path, handle: Callable[[str, str], str]) -> int:
    """Answer every waiting request in `root`'s control folder with `handle(node, action)` (its
    message; a ValueError or LookupError it raises is a refusal). Returns how many it answered."""
    folder = control_dir(root)
    if not folder.is_dir():
        return 0
    answered = 0
    for request in sorted(folder.glob("*.request")):
        try:
            body = json.loads(request.read_text())
            answer = {"ok": True, "message": handle(str(body["node"]), str(body["action"]))}
        except (ValueError, LookupError, TypeError) as e:
            answer = {"ok": False, "message": str(e.args[0]) if e.args else type(e).__name__}
        except OSError:  # the sender gave up and removed it meanwhile
            continue
        tmp = request.with_suffix(".tmp-reply")
        tmp.write_text(json.dumps(answer))
        os.replace(tmp, request.with_suffix(".reply"))
        request.unlink(missing_ok=True)
        answered += 1
    return answered


__all__ = ["ACTIONS", "FAST_GRACE_SECONDS", "NODE_NAME", "Heartbeat", "NodeSpec", "heartbeat", "node_names",
           "node_specs", "parse_label", "parse_taint", "pod_ranges", "send", "serve"]
