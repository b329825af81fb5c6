"""A real HTTP server on loopback whose every reply comes from a function of the request path: the
stand-in for a rank-0 progress endpoint that a test scripts to behave well or badly."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = tuple[int, dict[str, str], bytes]  # status, headers, body


@contextmanager
def scripted_server(reply: Callable[[str], Reply]) -> Iterator[int]:
    """Serves `reply(path)` for every GET; yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            code, headers, body = reply(self.path)
            self.send_response(code)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
