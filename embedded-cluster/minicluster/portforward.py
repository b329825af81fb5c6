"""The kubelet's port-forward endpoint, `/portForward/<namespace>/<pod>`, as `kubectl port-forward
pod/NAME` and `svc/NAME` reach it through the API server's `pods/portforward` subresource.

What arrives (Kubernetes 1.34): whether kubectl speaks SPDY to the API server or tunnels SPDY
through a WebSocket (`SPDY/3.1+portforward.k8s.io`, the default since 1.31), the API server sends
the kubelet a `POST` with `Connection: Upgrade`, `Upgrade: SPDY/3.1` and `X-Stream-Protocol-Version:
portforward.k8s.io`, expects `101 Switching Protocols` echoing the chosen protocol, and from then
on copies bytes both ways: the SPDY session runs between kubectl and this endpoint. Per local
connection kubectl opens two streams carrying the headers `streamType` (`error`, then `data`),
`port` and `requestID`; each is answered with SYN_REPLY. The data stream's bytes go to the pod's
IP and port (the pod bridge makes pod IPs reachable from the host, as probes use them); the pod's
bytes come back as DATA frames. When the pod closes, the data and error streams are half-closed;
when the pod cannot be reached, the error stream carries the message (kubectl prints it and ends).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import spdy

log = logging.getLogger(__name__)
PROTOCOL = "portforward.k8s.io"


@dataclass
class Forward:
    """One forwarded connection: an error and a data stream sharing a request id, and the pod socket."""

    request: str
    port: int
    error_id: int = 0
    data_id: int = 0
    sock: socket.socket | None = None
    to_pod: bytearray = field(default_factory=bytearray)
    client_done: bool = False  # kubectl half-closed the data stream: shut the pod socket's write side


def stream_header_error(headers: Mapping[str, str]) -> str | None:
    """The kubelet's checks of a new stream's headers."""
    port = headers.get("port", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"invalid port header {port!r}"
    if headers.get("streamtype") not in ("error", "data"):
        return f"invalid stream type {headers.get('streamtype')!r}"
    return None


class PortForwardSession(spdy.Session):
    """Serves one upgraded connection until kubectl closes it (or `stop` is set)."""

    def __init__(self, conn: socket.socket, pod_ip: str, pod: str, stop: threading.Event) -> None:
        super().__init__(conn, stop)
        self.pod_ip = pod_ip
        self.pod = pod
        self.streams: dict[int, Forward] = {}
        self.forwards: dict[str, Forward] = {}

    def watched(self) -> dict[spdy.FileLike, tuple[int, object]]:
        out: dict[spdy.FileLike, tuple[int, object]] = {}
        for f in self.forwards.values():
            if f.sock is not None:
                out[f.sock] = ((0 if self.congested else selectors.EVENT_READ)
                               | (selectors.EVENT_WRITE if f.to_pod else 0), f)
        return out

    def paused(self) -> bool:
        return any(len(f.to_pod) > spdy.HIGH_WATER for f in self.forwards.values())

    def cleanup(self) -> None:
        for f in list(self.forwards.values()):
            self._drop(f)

    # ----- frames from kubectl -----
    def on_data(self, frame: spdy.Frame) -> None:
        f = self.streams.get(frame.stream)
        if f is not None and frame.stream == f.data_id and f.sock is not None:
            f.to_pod += frame.data
            f.client_done = f.client_done or frame.fin
            self._write_pod(f)

    def on_reset(self, stream: int) -> None:
        f = self.streams.get(stream)
        if f is not None:
            self._finish(f, reset=stream)

    def on_syn(self, frame: spdy.Frame) -> None:
        headers = frame.headers
        problem = stream_header_error(headers)
        if problem is not None:
            log.warning("port-forward to %s: stream %d refused: %s", self.pod, frame.stream, problem)
            self.reset(frame.stream)
            return
        kind = headers["streamtype"]
        # Clients older than request ids pair streams by id: error N, data N+2.
        request = headers.get("requestid") or str(frame.stream - (2 if kind == "data" else 0))
        f = self.forwards.setdefault(request, Forward(request, int(headers["port"])))
        if (f.error_id if kind == "error" else f.data_id) != 0:
            self.reset(frame.stream)
            return
        if kind == "error":
            f.error_id = frame.stream
        else:
            f.data_id = frame.stream
        self.streams[frame.stream] = f
        self.reply(frame.stream)
        if f.error_id and f.data_id:
            self._connect(f)

    # ----- the pod side -----
    def _connect(self, f: Forward) -> None:
        try:
            sock = socket.create_connection((self.pod_ip, f.port), timeout=5)
        except OSError as e:
            message = f"error forwarding port {f.port} to pod {self.pod}: {e.strerror or e}"
            log.info("port-forward: %s", message)
            self.send(f.error_id, message.encode(), fin=True)
            self.reset(f.data_id)
            self._drop(f)
            return
        sock.setblocking(False)
        f.sock = sock

    def on_ready(self, data: object, events: int) -> None:
        if not isinstance(data, Forward):
            return
        f = data
        if events & selectors.EVENT_WRITE:
            self._write_pod(f)
        if events & selectors.EVENT_READ and f.sock is not None:
            try:
                chunk = f.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if chunk:
                self.send(f.data_id, chunk)
            else:
                self._finish(f)

    def _write_pod(self, f: Forward) -> None:
        if f.sock is None:
            return
        try:
            while f.to_pod:
                del f.to_pod[:f.sock.send(f.to_pod)]
            if f.client_done:
                f.sock.shutdown(socket.SHUT_WR)
        except BlockingIOError:
            return
        except OSError:
            self._finish(f)

    def _finish(self, f: Forward, reset: int = 0) -> None:
        """The pod closed (or kubectl reset the data stream): half-close both streams, as the kubelet does."""
        for stream in (f.data_id, f.error_id):
            if stream != reset:
                self.send(stream, b"", fin=True)
        self._drop(f)

    def _drop(self, f: Forward) -> None:
        if f.sock is not None:
            self.unwatch(f.sock)
            f.sock.close()
            f.sock = None
        self.forwards.pop(f.request, None)
        self.streams.pop(f.error_id, None)
        self.streams.pop(f.data_id, None)
