"""The operator's progress client against a hostile rank 0: a real HTTP server answering with
redirects to internal addresses, gzip bombs, endless bodies, deep nesting and out-of-range numbers.
The client never follows, never inflates, reads at most 64 KiB, never raises, and lets nothing
out of bounds through."""

from __future__ import annotations

import asyncio
import gzip
import json
import resource
from collections.abc import Callable, Iterator

import pytest
from kubeforge_operator.kube import Kube
from scripted_http import Reply, scripted_server

VALID = {"step": 5, "totalSteps": 10, "percent": 50.0, "loss": 0.5, "history": [{"kind": "train", "step": 5}]}


def answers(path: str) -> Reply:
    internal_hits.append(path) if path.startswith("/internal") else None
    routes: dict[str, Callable[[], Reply]] = {
        "/ok": lambda: (200, {}, json.dumps(VALID).encode()),
        "/redirect": lambda: (302, {"Location": "/internal/secret"}, b""),
        "/internal/secret": lambda: (200, {}, json.dumps({**VALID, "step": 999}).encode()),
        "/bomb": lambda: (200, {"Content-Encoding": "gzip"}, gzip.compress(b" " * 50_000_000)),
        "/huge": lambda: (200, {}, b'{"eval": {' + b",".join(b'"k%d": 1' % i for i in range(200_000)) + b"}}"),
        "/nested": lambda: (200, {}, b"[" * 100_000 + b"]" * 100_000),
        "/nested-small": lambda: (200, {}, b'{"eval": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
        "/nan": lambda: (200, {}, b'{"step": 1, "loss": NaN}'),
        "/types": lambda: (200, {}, b'{"step": "abc"}'),
        "/percent": lambda: (200, {}, json.dumps({**VALID, "percent": 300}).encode()),
        "/manykeys": lambda: (200, {}, json.dumps({**VALID, "eval": {f"m{i}": 1.0 for i in range(20_000)}}).encode()),
        "/notjson": lambda: (200, {}, b"<html>"),
        "/status500": lambda: (500, {}, b"{}"),
    }
    return routes.get(path.split("?")[0], lambda: (404, {}, b""))()


internal_hits: list[str] = []


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with scripted_server(lambda path: answers(path.replace("/progress", "", 1) or "/ok")) as port:
        yield port


async def ask(port: int, route: str) -> object:
    kube = Kube(lambda: None)
    try:
        return await kube.progress("127.0.0.1", port, -1, path=f"/progress{route}")
    finally:
        await kube.close()


@pytest.mark.parametrize("route", ["/redirect", "/bomb", "/huge", "/nested", "/nested-small", "/nan", "/types",
                                   "/percent", "/manykeys", "/notjson", "/status500"])
def test_a_hostile_progress_endpoint_gives_nothing(server: int, route: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert asyncio.run(ask(server, route)) is None
    assert not internal_hits, "the client followed a redirect"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing was inflated


def test_a_well_behaved_endpoint_is_read(server: int) -> None:
    doc = asyncio.run(ask(server, "/ok"))
    assert doc is not None and doc.step == 5 and doc.total_steps == 10  # type: ignore[attr-defined]


def test_a_body_that_arrives_in_pieces_is_read_whole_up_to_the_limit() -> None:
    from unittest import mock

    import aiohttp
    from kubeforge_operator.kube import read_at_most

    async def run(limit: int) -> bytes:
        stream = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
        stream.feed_data(b'{"step": ')

        def rest() -> None:  # the second piece arrives after the first read has returned
            stream.feed_data(b"5}")
            stream.feed_eof()

        asyncio.get_running_loop().call_later(0.05, rest)
        return await read_at_most(stream, limit)

    assert asyncio.run(run(100)) == b'{"step": 5}'
    assert asyncio.run(run(4)) == b'{"st'
