"""The kubelet's exec endpoint, `/exec/<namespace>/<pod>/<container>?command=...&input=1&output=1&
error=1&tty=1` (stdin, stdout, stderr, terminal), as `kubectl exec` reaches it through the API
server's `pods/exec` subresource.

What arrives (Kubernetes 1.34): kubectl speaks WebSocket (`v5.channel.k8s.io`) to the API server,
which translates to SPDY/3.1 toward the kubelet (client-go's SPDY executor, offering v5 to v2 of
`X-Stream-Protocol-Version`; the kubelet chooses `v4.channel.k8s.io`); a SPDY client's bytes are
proxied as they are, as for port-forward. The client opens one stream per `streamType` header:
`error`, then `stdin`, `stdout`, `stderr` as asked, and `resize` with a terminal (JSON
`{"Width": W, "Height": H}` objects). The command starts once all of them are open; stdin's FIN
closes its input; when its output ends, `stdout` and `stderr` are half-closed and the `error`
stream carries a `metav1.Status` as JSON: `Success`, or `Failure` with reason `NonZeroExitCode`
and the exit code as the `ExitCode` cause (kubectl exits with that code); then the connection
closes.

The command runs in the container's network, mount and UTS namespaces (`nsenter` on the
container's main process), in its working directory with its environment; with `tty=1` on a
pseudo-terminal of its own (without job control: it is no session leader's controlling terminal).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import selectors
import socket
import struct
import subprocess
import termios
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from . import spdy

log = logging.getLogger(__name__)
PROTOCOL = "v4.channel.k8s.io"


@dataclass(frozen=True)
class ExecRequest:
    """What to run and which streams the client opens, from the request's query."""

    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def parse(cls, query: str) -> ExecRequest | str:
        """The request, or why it is refused (the kubelet's words)."""
        q = urllib.parse.parse_qs(query)
        params = {"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"}
        flag = {k: q.get(param, [""])[0] in ("1", "true") for k, param in params.items()}
        if not q.get("command"):
            return "missing required command parameter"
        if not (flag["stdin"] or flag["stdout"] or flag["stderr"]):
            return "you must specify at least 1 of stdin, stdout, stderr"
        # With a terminal, stderr is the terminal too.
        return cls(q["command"], flag["stdin"], flag["stdout"], flag["stderr"] and not flag["tty"], flag["tty"])

    @property
    def streams(self) -> int:
        return 1 + self.stdin + self.stdout + self.stderr + self.tty


def status(code: int, command: list[str]) -> bytes:
    """The `metav1.Status` the error stream carries at the end (v4)."""
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": f"command terminated with non-zero exit code: error executing command {command}, exit code {code}",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()


def container_env(pid: int) -> dict[str, str]:
    """The environment the container's main process started with."""
    raw = open(f"/proc/{pid}/environ", "rb").read()  # noqa: SIM115 - one read, closed by the GC at once
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


@dataclass
class Output:
    """A file the command writes to, and the stream it goes out on."""

    fd: int
    stream: int


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    outputs: list[Output]
    stdin_fd: int | None
    master: int | None  # the terminal, with tty
    to_stdin: bytearray = field(default_factory=bytearray)
    stdin_done: bool = False


class ExecSession(spdy.Session):
    """Runs one command for one upgraded connection, then ends it."""

    def __init__(self, conn: socket.socket, pid: int, request: ExecRequest, stop: threading.Event) -> None:
        super().__init__(conn, stop)
        self.pid = pid
        self.request = request
        self.ids: dict[str, int] = {}
        self.running: Running | None = None
        self.resize_buf = bytearray()
        self.start_by: float | None = None  # with a terminal: start at its first size, or by then

    # ----- streams -----
    def on_syn(self, frame: spdy.Frame) -> None:
        kind = frame.headers.get("streamtype", "")
        if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in self.ids:
            self.reset(frame.stream)
            return
        self.ids[kind] = frame.stream
        self.reply(frame.stream)
        if len(self.ids) == self.request.streams and self.running is None:
            if self.request.tty:  # the client sends the terminal's size next: start at that size
                self.start_by = time.monotonic() + 1.0
            else:
                self._start()

    def on_data(self, frame: spdy.Frame) -> None:
        r = self.running
        if r is None:
            if frame.stream == self.ids.get("resize") and self.start_by is not None:
                self.resize_buf += frame.data
                self._start()
            return
        if frame.stream == self.ids.get("stdin") and r.stdin_fd is not None:
            r.to_stdin += frame.data
            r.stdin_done = r.stdin_done or frame.fin
            self._write_stdin(r)
        elif frame.stream == self.ids.get("resize") and r.master is not None:
            self.resize_buf += frame.data
            self._resize(r.master)

    def on_reset(self, stream: int) -> None:
        if stream == self.ids.get("error"):
            self.closed = True

    # ----- the command -----
    def _start(self) -> None:
        argv = ["nsenter", f"--target={self.pid}", "--net", "--mount", "--uts", "--wd", "--", *self.request.command]
        env = container_env(self.pid)
        req, ids = self.request, self.ids
        if req.tty:
            master, slave = os.openpty()
            self._resize(master)
            proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
            os.close(slave)
            stdin = os.dup(master) if req.stdin else None
            self.running = Running(proc, [Output(os.dup(master), ids["stdout"])] if req.stdout else [], stdin, master)
        else:  # pipes of our own: plain descriptors, closed exactly once, here
            pipes = {name: os.pipe() for name in ("stdin", "stdout", "stderr") if getattr(req, name)}
            child = {name: pipes[name][0 if name == "stdin" else 1] if name in pipes else subprocess.DEVNULL
                     for name in ("stdin", "stdout", "stderr")}
            proc = subprocess.Popen(argv, env=env, stdin=child["stdin"], stdout=child["stdout"], stderr=child["stderr"],
                                    start_new_session=True)
            for name, (r, w) in pipes.items():
                os.close(r if name == "stdin" else w)
            outputs = [Output(pipes[n][0], ids[n]) for n in ("stdout", "stderr") if n in pipes]
            self.running = Running(proc, outputs, pipes["stdin"][1] if "stdin" in pipes else None, None)
        for fd in [o.fd for o in self.running.outputs] + [self.running.stdin_fd or -1]:
            if fd >= 0:
                os.set_blocking(fd, False)

    def watched(self) -> dict[spdy.FileLike, tuple[int, object]]:
        """The command's outputs and stdin; also where a terminal's start and the end are noticed."""
        if self.running is None and self.start_by is not None and time.monotonic() > self.start_by:
            self._start()
        r = self.running
        if r is None:
            return {}
        out: dict[spdy.FileLike, tuple[int, object]] = {
            o.fd: (0 if self.congested else selectors.EVENT_READ, o) for o in r.outputs}
        if r.stdin_fd is not None and r.to_stdin:
            out[r.stdin_fd] = (selectors.EVENT_WRITE, "stdin")
        if not r.outputs and r.proc.poll() is not None:
            self._finish(r)
        return out

    def on_ready(self, data: object, events: int) -> None:
        r = self.running
        if r is None:
            return
        if data == "stdin":
            self._write_stdin(r)
            return
        if isinstance(data, Output):
            try:
                chunk = os.read(data.fd, 65536)
            except BlockingIOError:
                return
            except OSError:  # EIO: the terminal's last writer is gone
                chunk = b""
            if chunk:
                self.send(data.stream, chunk)
                return
            self.unwatch(data.fd)
            os.close(data.fd)
            r.outputs.remove(data)
            self.send(data.stream, b"", fin=True)
            if not r.outputs:
                self._finish(r)

    def _write_stdin(self, r: Running) -> None:
        if r.stdin_fd is None:
            return
        try:
            while r.to_stdin:
                del r.to_stdin[:os.write(r.stdin_fd, r.to_stdin)]
        except BlockingIOError:
            return
        except OSError:
            r.to_stdin.clear()
            r.stdin_done = True
        if r.stdin_done and not r.to_stdin:
            self.unwatch(r.stdin_fd)
            os.close(r.stdin_fd)
            r.stdin_fd = None

    def _resize(self, master: int) -> None:
        decoder = json.JSONDecoder()
        text = self.resize_buf.decode(errors="replace")
        pos = 0
        with contextlib.suppress(ValueError):
            while pos < len(text):
                size, end = decoder.raw_decode(text, pos)
                pos = end
                fcntl.ioctl(master, termios.TIOCSWINSZ,
                            struct.pack("HHHH", int(size.get("Height", 0)), int(size.get("Width", 0)), 0, 0))
        del self.resize_buf[:len(text[:pos].encode())]

    def _finish(self, r: Running) -> None:
        """The command's output has ended: its exit status on the error stream, then the end."""
        code = r.proc.wait()
        code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell reports it
        self.send(self.ids["error"], status(code, self.request.command), fin=True)
        for stream in ("stdin", "resize"):
            self.send(self.ids.get(stream, 0), b"", fin=True)
        self.closed = True

    def cleanup(self) -> None:
        r = self.running
        if r is None:
            return
        for fd in [o.fd for o in r.outputs] + [x for x in (r.stdin_fd, r.master) if x is not None]:
            with contextlib.suppress(OSError):
                self.unwatch(fd)
                os.close(fd)
        if r.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, 9)
            r.proc.wait()
