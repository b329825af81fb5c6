"""`make dashboard` / `make dashboard-down`: run the dashboard in the background and stop it.

`up` decides the source once (the current kubeconfig's cluster when it answers, else the local
runs), starts `streamlit run dashboard/serve.py` (the app behind its HTTP edge) in its own session with its output in
`<dir>/dashboard.log` and its pid in `<dir>/pid`, waits for Streamlit's health endpoint and prints
the URL as the last line. `down` stops that process group."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .settings import DashboardSettings, SettingsEnv, SourceKind, make_source

APP = Path(__file__).resolve().parents[1] / "serve.py"
HEALTH = "/_stcore/health"


@dataclass(frozen=True)
class Running:
    pid: int
    url: str
    source: str


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            found: int = s.getsockname()[1]
            return found
    raise RuntimeError("no free port")


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + HEALTH, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the dashboard did not answer within {timeout:.0f}s; see {log}")


def start(directory: Path, env: dict[str, str] | None = None, port: int = 8501, address: str = "127.0.0.1",
          timeout: float = 90) -> Running:
    """Start the dashboard in the background (stopping one this directory already runs)."""
    stop(directory)
    directory.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, **(env or {})}
    settings = DashboardSettings.from_env(environ)
    kind = settings.source
    if kind == SourceKind.AUTO:  # decide once, so the app does not probe again
        kind = SourceKind.LOCAL if "local runs" in make_source(settings).description else SourceKind.KUBERNETES
    environ[SettingsEnv.SOURCE] = kind
    port = free_port(port)
    log = directory / "dashboard.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address",
             address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--client.toolbarMode", "viewer"],
            env=environ, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (directory / "pid").write_text(str(proc.pid))
    url = f"http://{address}:{port}"
    try:
        wait_healthy(url, proc, log, timeout)
    except RuntimeError:
        stop(directory)
        raise
    return Running(proc.pid, url, str(kind))


def stop(directory: Path, grace: float = 10) -> bool:
    """Stop the dashboard started from `directory`; False when none was running."""
    pid_file = directory / "pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kubeforge_dashboard.launch")
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--dir", type=Path, required=True, help="where the pid file and the log go")
    ap.add_argument("--port", type=int, default=int(os.environ.get("KUBEFORGE_DASHBOARD_PORT", "8501")))
    ap.add_argument("--address", default=os.environ.get("KUBEFORGE_DASHBOARD_ADDRESS", "127.0.0.1"))
    args = ap.parse_args(argv)
    if args.action == "down":
        print("dashboard stopped" if stop(args.dir) else "no dashboard was running")
        return 0
    try:
        running = start(args.dir, port=args.port, address=args.address)
    except RuntimeError as e:
        print(f"dashboard: {e}", file=sys.stderr)
        return 1
    print(f"dashboard running (pid {running.pid}, source: {running.source}); log {args.dir / 'dashboard.log'}; "
          "stop it with make dashboard-down")
    print(running.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
