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

One thread runs a session with non-blocking sockets and a selector: the TLS socket is never read
and written from two threads at once (OpenSSL forbids it).
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import spdy

log = logging.getLogger(__name__)
PROTOCOL = "portforward.k8s.io"
SWITCHING = (f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
             f"X-Stream-Protocol-Version: {PROTOCOL}\r\n\r\n").encode()
HIGH_WATER = 4 << 20  # bytes buffered toward one side before the other side is read no more
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def refusal(connection: str, upgrade: str, protocols: list[str]) -> tuple[int, str] | None:
    """Why an upgrade request with these `Connection` and `Upgrade` headers and these
    `X-Stream-Protocol-Version` values (the header may repeat) cannot be served: (status, message)."""
    if "upgrade" not in connection.lower() or "spdy/3.1" not in upgrade.lower():
        return 400, "unable to upgrade: port-forward needs Connection: Upgrade and Upgrade: SPDY/3.1"
    offered = [p.strip() for v in protocols for p in v.split(",") if p.strip()]
    if PROTOCOL not in offered:
        return 403, f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server accepts " \
                    f"[{PROTOCOL}]"
    return None


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


class PortForwardSession:
    """Serves one upgraded connection until kubectl closes it (or `stop` is set)."""

    def __init__(self, conn: socket.socket, pod_ip: str, pod: str, stop: threading.Event) -> None:
        self.conn = conn
        self.pod_ip = pod_ip
        self.pod = pod
        self.stop = stop
        self.codec = spdy.Codec()
        self.inbuf = bytearray()
        self.out = bytearray()
        self.streams: dict[int, Forward] = {}
        self.forwards: dict[str, Forward] = {}
        self.selector = selectors.DefaultSelector()
        self.closed = False

    def run(self) -> None:
        self.conn.setblocking(False)
        try:
            while not self.closed and not self.stop.is_set():
                self._sync_selector()
                for key, events in self.selector.select(timeout=1.0):
                    if key.fileobj is self.conn:
                        self._on_conn(events)
                    elif isinstance(key.data, Forward):
                        self._on_pod(key.data, events)
        except (OSError, spdy.ProtocolError) as e:
            log.info("port-forward to %s ended: %s", self.pod, e)
        finally:
            for f in list(self.forwards.values()):
                self._drop(f)
            self.selector.close()
            with contextlib.suppress(OSError):
                self.conn.settimeout(5)

    # ----- the selector -----
    def _sync_selector(self) -> None:
        backlog = any(len(f.to_pod) > HIGH_WATER for f in self.forwards.values())
        wanted: dict[socket.socket, tuple[int, object]] = {
            self.conn: ((0 if backlog else selectors.EVENT_READ) | (selectors.EVENT_WRITE if self.out else 0), None)}
        for f in self.forwards.values():
            if f.sock is not None:
                events = (selectors.EVENT_READ if len(self.out) < HIGH_WATER else 0) | (
                    selectors.EVENT_WRITE if f.to_pod else 0)
                wanted[f.sock] = (events, f)
        for sock, (events, data) in wanted.items():
            registered = self.selector.get_map().get(sock)
            if registered is None and events:
                self.selector.register(sock, events, data)
            elif registered is not None and not events:
                self.selector.unregister(sock)
            elif registered is not None and registered.events != events:
                self.selector.modify(sock, events, data)

    def _on_conn(self, events: int) -> None:
        if events & selectors.EVENT_READ:
            while True:
                try:
                    chunk = self.conn.recv(65536)
                except _WOULD_BLOCK:
                    break
                if not chunk:
                    self.closed = True
                    break
                self.inbuf += chunk
            for frame in self.codec.parse(self.inbuf):
                self._on_frame(frame)
        if events & selectors.EVENT_WRITE:
            self._write_conn()

    def _write_conn(self) -> None:
        while self.out:
            try:
                sent = self.conn.send(self.out[:16384])
            except _WOULD_BLOCK:
                return
            del self.out[:sent]

    # ----- frames from kubectl -----
    def _on_frame(self, frame: spdy.Frame) -> None:
        if frame.kind == spdy.SYN_STREAM:
            self._on_syn(frame)
        elif frame.kind == 0:
            f = self.streams.get(frame.stream)
            if f is not None and frame.stream == f.data_id and f.sock is not None:
                f.to_pod += frame.data
                f.client_done = f.client_done or frame.fin
                self._write_pod(f)
        elif frame.kind == spdy.RST_STREAM:
            f = self.streams.get(frame.stream)
            if f is not None:
                self._finish(f, reset=frame.stream)
        elif frame.kind == spdy.PING:
            self.out += spdy.ping(frame.value)
        elif frame.kind == spdy.GOAWAY:
            self.closed = True

    def _on_syn(self, frame: spdy.Frame) -> None:
        headers = frame.headers
        problem = stream_header_error(headers)
        if problem is not None:
            log.warning("port-forward to %s: stream %d refused: %s", self.pod, frame.stream, problem)
            self.out += spdy.rst_stream(frame.stream, spdy.RST_CANCEL)
            return
        kind = headers["streamtype"]
        # Clients older than request ids pair streams by id: error N, data N+2.
        request = headers.get("requestid") or str(frame.stream - (2 if kind == "data" else 0))
        f = self.forwards.setdefault(request, Forward(request, int(headers["port"])))
        if (f.error_id if kind == "error" else f.data_id) != 0:
            self.out += spdy.rst_stream(frame.stream, spdy.RST_CANCEL)
            return
        if kind == "error":
            f.error_id = frame.stream
        else:
            f.data_id = frame.stream
        self.streams[frame.stream] = f
        self.out += self.codec.syn_reply(frame.stream)
        if f.error_id and f.data_id:
            self._connect(f)

    # ----- the pod side -----
    def _connect(self, f: Forward) -> None:
        try:
            sock = socket.create_connection((self.pod_ip, f.port), timeout=5)
        except OSError as e:
            message = f"error forwarding port {f.port} to pod {self.pod}: {e.strerror or e}"
            log.info("port-forward: %s", message)
            self.out += spdy.data(f.error_id, message.encode(), fin=True) + spdy.rst_stream(f.data_id)
            self._drop(f)
            return
        sock.setblocking(False)
        f.sock = sock

    def _on_pod(self, f: Forward, events: int) -> None:
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
                self.out += spdy.data(f.data_id, chunk)
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
            if stream and stream != reset:
                self.out += spdy.data(stream, b"", fin=True)
        self._drop(f)

    def _drop(self, f: Forward) -> None:
        if f.sock is not None:
            if f.sock in self.selector.get_map():
                self.selector.unregister(f.sock)
            f.sock.close()
            f.sock = None
        self.forwards.pop(f.request, None)
        self.streams.pop(f.error_id, None)
        self.streams.pop(f.data_id, None)
