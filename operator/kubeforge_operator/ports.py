"""Loopback ports for servers started later (a local run's rendezvous, test and benchmark servers)."""

from __future__ import annotations

import random
import socket

LISTEN_PORTS = range(20000, 32768)  # below Linux's ephemeral range (32768-60999), which outgoing connections take


def free_port() -> int:
    """A loopback port free now. Drawn below the ephemeral range: a port the kernel has just handed out is soon
    handed out again to some outgoing connection, and on a busy machine that race made a rendezvous fail."""
    while True:
        port = random.choice(LISTEN_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
