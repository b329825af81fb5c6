"""SPDY/3.1 framing, the server's half: what a kubelet needs to accept the streams of `kubectl
port-forward` (client-go's `httpstream/spdy` over moby/spdystream).

Kubernetes still carries port-forward (and exec) between the client and the kubelet in SPDY/3.1:
kubectl 1.31+ tunnels the SPDY bytes through a WebSocket to the API server, which upgrades to
SPDY toward the kubelet and then only copies bytes. No maintained Python package speaks SPDY (the
one on PyPI had a single release in 2021), so the few frames used are written here:

- a control frame is `1 | version(15) | type(16) | flags(8) | length(24) | payload`, a data frame
  `0 | stream id(31) | flags(8) | length(24) | data`; FIN (0x01) half-closes a stream;
- SYN_STREAM and SYN_REPLY carry a header block (`count`, then `len name len value`, 32-bit
  lengths, values joined by NUL) compressed with zlib and the SPDY/3 dictionary, one compression
  context per direction for the whole connection (each block ends with a sync flush);
- RST_STREAM resets a stream, PING is echoed, GOAWAY ends the session; SETTINGS and
  WINDOW_UPDATE are read and ignored (spdystream has no flow control).

`negotiate` and `switching` answer the HTTP upgrade; `Session` serves the upgraded connection;
`portforward` and `remotecommand` handle its streams.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import struct
import threading
import zlib
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, RST_CANCEL = 1, 3, 5
MAX_DATA = 32 * 1024  # bytes per DATA frame we write

_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
    "keep-alive", "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# The zlib dictionary of SPDY/3 header blocks (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1).
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


def switching(protocol: str) -> bytes:
    """The kubelet's answer to an upgrade it accepts."""
    return (f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            f"X-Stream-Protocol-Version: {protocol}\r\n\r\n").encode()


def negotiate(connection: str, upgrade: str, protocols: list[str], accepted: list[str]) -> tuple[int, str]:
    """The protocol to speak (200, name) for an upgrade request with these `Connection` and `Upgrade`
    headers and `X-Stream-Protocol-Version` values (the header may repeat), the first of the client's
    that the server accepts; else why not (status, message), as client-go's `httpstream.Handshake` says."""
    if "upgrade" not in connection.lower() or "spdy/3.1" not in upgrade.lower():
        return 400, "unable to upgrade: missing upgrade headers in request (Connection: Upgrade, Upgrade: SPDY/3.1)"
    offered = [p.strip() for v in protocols for p in v.split(",") if p.strip()]
    chosen = next((p for p in offered if p in accepted), None)
    if chosen is None:
        return 403, f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server accepts " \
                    f"{accepted}"
    return 200, chosen


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1; the session ends."""


@dataclass(frozen=True)
class Frame:
    """One frame: `kind` is a control type, or 0 for DATA (then `stream` and `data` are set)."""

    kind: int
    flags: int
    stream: int = 0
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    value: int = 0  # RST_STREAM's status, PING's id, GOAWAY's last good stream

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class Codec:
    """Frames to and from bytes for one connection (the two header compression contexts live here)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY,
                                         DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    # ----- reading -----
    def parse(self, buf: bytearray) -> list[Frame]:
        """Take every complete frame off the front of `buf`."""
        frames = []
        while len(buf) >= 8:
            length = int.from_bytes(buf[5:8], "big")
            if len(buf) < 8 + length:
                break
            head, payload = bytes(buf[:8]), bytes(buf[8:8 + length])
            del buf[:8 + length]
            frame = self._frame(head, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _frame(self, head: bytes, payload: bytes) -> Frame | None:
        word, flags = struct.unpack(">I", head[:4])[0], head[4]
        if not word & 0x80000000:
            return Frame(0, flags, word & 0x7FFFFFFF, payload)
        version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version}, want {VERSION}")
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            stream = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            return Frame(kind, flags, stream, headers=self._headers(payload[10:]))
        if kind in (SYN_REPLY, HEADERS):
            self._headers(payload[4:])  # keep the decompression context in step
            return None
        if kind in (RST_STREAM, GOAWAY) and len(payload) >= 8:
            first, second = struct.unpack(">II", payload[:8])
            if kind == RST_STREAM:
                return Frame(kind, flags, first & 0x7FFFFFFF, value=second)
            return Frame(kind, flags, value=first & 0x7FFFFFFF)
        if kind == PING and len(payload) >= 4:
            return Frame(kind, flags, value=struct.unpack(">I", payload[:4])[0])
        return None  # SETTINGS, WINDOW_UPDATE and anything newer: nothing to do

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as e:
            raise ProtocolError(f"header block: {e}") from None
        try:
            (count,), pos, out = struct.unpack(">I", raw[:4]), 4, {}
            for _ in range(count):
                (n,) = struct.unpack(">I", raw[pos:pos + 4])
                name = raw[pos + 4:pos + 4 + n].decode()
                pos += 4 + n
                (n,) = struct.unpack(">I", raw[pos:pos + 4])
                out[name.lower()] = raw[pos + 4:pos + 4 + n].decode()
                pos += 4 + n
        except (struct.error, UnicodeDecodeError) as e:
            raise ProtocolError(f"header block: {e}") from None
        return out

    # ----- writing -----
    def syn_reply(self, stream: int, headers: dict[str, str] | None = None, fin: bool = False) -> bytes:
        payload = struct.pack(">I", stream) + self.header_block(headers or {})
        return control(SYN_REPLY, FLAG_FIN if fin else 0, payload)

    def header_block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            n, v = name.lower().encode(), value.encode()
            raw += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


def control(kind: int, flags: int, payload: bytes) -> bytes:
    word = 0x80000000 | VERSION << 16 | kind
    return struct.pack(">II", word, flags << 24 | len(payload)) + payload


def data(stream: int, chunk: bytes, fin: bool = False) -> bytes:
    """DATA frames for `chunk` (split to `MAX_DATA`); an empty chunk with `fin` half-closes the stream."""
    out = []
    for i in range(0, max(len(chunk), 1), MAX_DATA):
        part = chunk[i:i + MAX_DATA]
        last = i + MAX_DATA >= len(chunk)
        out.append(struct.pack(">II", stream & 0x7FFFFFFF, (FLAG_FIN if fin and last else 0) << 24 | len(part)) + part)
    return b"".join(out)


def rst_stream(stream: int, status: int = RST_CANCEL) -> bytes:
    return control(RST_STREAM, 0, struct.pack(">II", stream, status))


def ping(ping_id: int) -> bytes:
    return control(PING, 0, struct.pack(">I", ping_id))


def goaway(last_stream: int) -> bytes:
    return control(GOAWAY, 0, struct.pack(">II", last_stream, 0))


HIGH_WATER = 4 << 20  # bytes buffered toward one side before the other side is read no more
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
FileLike = socket.socket | int


class Session:
    """One upgraded connection, served by one thread with non-blocking sockets and a selector (the
    TLS socket is never read and written from two threads at once: OpenSSL forbids it). Subclasses
    handle the streams the client opens (`on_syn`, `on_data`, `on_reset`) and name the other files
    to watch (`watched`, then `on_ready`); the session ends when the client closes, sends GOAWAY, or
    a subclass sets `closed`."""

    def __init__(self, conn: socket.socket, stop: threading.Event) -> None:
        self.conn = conn
        self.stop = stop
        self.codec = Codec()
        self.inbuf = bytearray()
        self.out = bytearray()
        self.selector = selectors.DefaultSelector()
        self.closed = False

    # ----- for subclasses -----
    def on_syn(self, frame: Frame) -> None: ...
    def on_data(self, frame: Frame) -> None: ...
    def on_reset(self, stream: int) -> None: ...
    def on_ready(self, data: object, events: int) -> None: ...

    def watched(self) -> dict[FileLike, tuple[int, object]]:
        """Files besides the connection: file -> (selector events, what `on_ready` gets)."""
        return {}

    def paused(self) -> bool:
        """Whether to stop reading the client (what it sends cannot be delivered yet)."""
        return False

    def cleanup(self) -> None: ...

    def unwatch(self, f: FileLike) -> None:
        """Call before closing a watched file."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(f)

    @property
    def congested(self) -> bool:
        """Whether enough is queued toward the client that its sources should wait."""
        return len(self.out) >= HIGH_WATER

    def reply(self, stream: int) -> None:
        self.out += self.codec.syn_reply(stream)

    def send(self, stream: int, chunk: bytes, fin: bool = False) -> None:
        if stream:
            self.out += data(stream, chunk, fin)

    def reset(self, stream: int) -> None:
        if stream:
            self.out += rst_stream(stream)

    # ----- the loop -----
    def run(self) -> None:
        self.conn.setblocking(False)
        try:
            while not self.closed and not self.stop.is_set():
                self._sync_selector()
                for key, events in self.selector.select(timeout=1.0):
                    if key.fileobj is self.conn:
                        self._on_conn(events)
                    else:
                        self.on_ready(key.data, events)
        except (OSError, ProtocolError) as e:
            log.info("stream session ended: %s", e)
        finally:
            self.cleanup()
            self.selector.close()
            with contextlib.suppress(OSError):  # what is still queued (a final status) goes out blocking
                self.conn.settimeout(5)
                if self.out:
                    self.conn.sendall(self.out)

    def _sync_selector(self) -> None:
        wanted = self.watched()
        wanted[self.conn] = ((0 if self.paused() else selectors.EVENT_READ)
                             | (selectors.EVENT_WRITE if self.out else 0), None)
        registered = self.selector.get_map()
        for f in [f for f in list(registered) if f not in wanted or not wanted[f][0]]:
            self.selector.unregister(f)
        for f, (events, payload) in wanted.items():
            key = registered.get(f)
            if key is None and events:
                self.selector.register(f, events, payload)
            elif key is not None and (key.events != events or key.data is not payload):
                self.selector.modify(f, events, payload)

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

    def _on_frame(self, frame: Frame) -> None:
        if frame.kind == SYN_STREAM:
            self.on_syn(frame)
        elif frame.kind == 0:
            self.on_data(frame)
        elif frame.kind == RST_STREAM:
            self.on_reset(frame.stream)
        elif frame.kind == PING:
            self.out += ping(frame.value)
        elif frame.kind == GOAWAY:
            self.closed = True
