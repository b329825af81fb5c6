"""Cluster DNS for pods: answers A queries for `<svc>.<ns>.svc[.cluster.local]` and
`<hostname>.<subdomain>.<ns>.svc[.cluster.local]` from the live pods and Services, following
kube-dns rules (headless Services list ready pod IPs, or all of them with
`publishNotReadyAddresses`). Names outside the cluster get NXDOMAIN: there is no upstream."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

Obj = dict[str, Any]
CLUSTER_DOMAIN = "cluster.local"


def _ready(pod: Obj) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _selects(selector: dict[str, str], pod: Obj) -> bool:
    labels = pod.get("metadata", {}).get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _live(pod: Obj) -> bool:
    st = pod.get("status", {})
    return bool(st.get("podIP")) and st.get("phase") not in ("Succeeded", "Failed") \
        and not pod.get("metadata", {}).get("deletionTimestamp")


def resolve(name: str, pods: Iterable[Obj], services: Iterable[Obj]) -> list[str] | None:
    """IPs for `name`, `[]` when the name exists without addresses, None when it does not exist."""
    name = name.lower().rstrip(".")
    if name.endswith("." + CLUSTER_DOMAIN):
        name = name[: -len(CLUSTER_DOMAIN) - 1]
    if not name.endswith(".svc"):
        return None
    parts = name[: -len(".svc")].split(".")
    if len(parts) not in (2, 3):
        return None
    ns = parts[-1]
    svc_name = parts[-2]
    svc = next((s for s in services if s["metadata"]["namespace"] == ns and s["metadata"]["name"] == svc_name),
               None)
    if svc is None:
        return None
    spec = svc.get("spec", {})
    cluster_ip = spec.get("clusterIP")
    if len(parts) == 2 and cluster_ip and cluster_ip != "None":
        return [cluster_ip]
    publish_all = bool(spec.get("publishNotReadyAddresses"))
    members = [
        p for p in pods
        if p["metadata"]["namespace"] == ns and _live(p) and _selects(spec.get("selector") or {}, p)
        and (publish_all or _ready(p))
    ]
    if len(parts) == 3:
        host = parts[0]
        members = [p for p in members
                   if p["spec"].get("hostname") == host and p["spec"].get("subdomain") == svc_name]
        if not members:
            return None
    return sorted({p["status"]["podIP"] for p in members})


def _parse_question(data: bytes) -> tuple[int, str, int, int]:
    (qid,) = struct.unpack("!H", data[:2])
    labels, i = [], 12
    while data[i]:
        n = data[i]
        labels.append(data[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += n + 1
    qtype, _qclass = struct.unpack("!HH", data[i + 1 : i + 5])
    return qid, ".".join(labels), qtype, i + 5


def answer(data: bytes, lookup: Callable[[str], list[str] | None]) -> bytes:
    """A DNS response to the query `data` (A records only; other types get an empty answer)."""
    qid, name, qtype, qend = _parse_question(data)
    question = data[12:qend]
    ips = lookup(name)
    rcode = 3 if ips is None else 0
    records = [ip for ip in ips or [] if qtype == 1]
    flags = 0x8400 | (data[2] & 0x01) << 8 | rcode  # response, authoritative, copy RD
    out = struct.pack("!HHHHHH", qid, flags, 1, len(records), 0, 0) + question
    for ip in records:
        out += struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton(ip)
    return out


class DnsServer:
    """UDP DNS on `host:53`, answering from `lookup`."""

    def __init__(self, host: str, lookup: Callable[[str], list[str] | None], port: int = 53) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.lookup = lookup
        self.thread = threading.Thread(target=self._serve, name="dns", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self.sock.sendto(answer(data, self.lookup), addr)
            except (IndexError, struct.error, UnicodeError):
                continue  # malformed query: drop it, as a resolver would time out

    def close(self) -> None:
        self.sock.close()
