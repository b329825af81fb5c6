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
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

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
