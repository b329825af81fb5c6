"""What the server refuses to load, as a real process: weights whose digest is not the one the
operator resolved (files swapped on the claim), a crafted card whose shapes imply gigabytes (refused
from the safetensors header before anything of that size is allocated), and a load that hangs
(ended by the load timeout). Each ends the process with EXIT_MODEL_LOAD_FAILED and one line naming
the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, ServerEnv
from kubeforge_trainer import artifacts
from servehelp import DIGITS_MLP, Server, request, write_artifact

EXIT_DEADLINE = 120.0  # seconds a refusing server may take to exit on a busy machine
# A card for the digits MLP's 13 KB of weights that says 2 GiB: 16384 x 32768 floats in its first layer.
GIGABYTE_MLP = {**DIGITS_MLP, "inputDim": 32768, "hidden": 16384}
MAX_RSS_KIB = 2048 * 1024  # the refusing server stays far below the 3 GiB of weights the card implies


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("mlp") / "artifact", DIGITS_MLP)


def refusal(model_dir: Path, tmp_path: Path, env: dict[str, str]) -> tuple[int, str, int]:
    """(exit code, termination log, peak RSS in KiB) of a server that should refuse `model_dir`."""
    log = tmp_path / "termination-log"
    s = Server(model_dir, env={ServerEnv.TERMINATION_LOG: str(log), **env}).start(wait_ready=False)
    assert s.proc is not None
    code, rss = _wait(s.proc, EXIT_DEADLINE)
    return code, log.read_text(), rss


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int]:
    """Exit code and peak RSS (KiB) of `proc`, from the kernel's accounting of that one child."""
    with ThreadPoolExecutor(1) as pool:
        reaped = pool.submit(os.wait4, proc.pid, 0)
        try:
            _, status, usage = reaped.result(timeout)
        except TimeoutError:
            proc.kill()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss


def test_the_expected_digest_is_enforced(mlp_dir: Path, tmp_path: Path) -> None:
    digest = json.loads((mlp_dir / artifacts.CARD).read_text())["weights"]["digest"]
    other = "sha256:" + "0" * 64
    code, why, _ = refusal(mlp_dir, tmp_path, {ServerEnv.MODEL_DIGEST: other})
    assert code == EXIT_MODEL_LOAD_FAILED
    assert f"expected {other}, found {digest}" in why and "\n" not in why.strip()
    s = Server(mlp_dir, env={ServerEnv.MODEL_DIGEST: digest}).start()
    try:
        assert request(s.port, "GET", "/v2/models/digits").json()["parameters"]["digest"] == digest
    finally:
        assert s.stop() == 0


def test_swapped_files_on_the_claim_are_refused(mlp_dir: Path, tmp_path: Path) -> None:
    """Another model, consistent in itself (card and weights agree), put where the resolved one was."""
    digest = json.loads((mlp_dir / artifacts.CARD).read_text())["weights"]["digest"]
    swapped = write_artifact(tmp_path / "swapped", DIGITS_MLP, seed=1)
    code, why, _ = refusal(swapped, tmp_path, {ServerEnv.MODEL_DIGEST: digest})
    assert code == EXIT_MODEL_LOAD_FAILED and f"expected {digest}" in why


def test_a_card_implying_gigabytes_is_refused_before_allocating(mlp_dir: Path, tmp_path: Path) -> None:
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / artifacts.WEIGHTS).write_bytes((mlp_dir / artifacts.WEIGHTS).read_bytes())
    card = json.loads((mlp_dir / artifacts.CARD).read_text())
    card["architecture"] = GIGABYTE_MLP
    (crafted / artifacts.CARD).write_text(json.dumps(card))
    code, why, rss = refusal(crafted, tmp_path, {})
    assert code == EXIT_MODEL_LOAD_FAILED
    assert "do not fit" in why and "the card implies [16384]" in why, why
    assert rss < MAX_RSS_KIB, f"the refusing server reached {rss // 1024} MiB"


def test_a_hanging_load_ends_at_the_load_timeout(mlp_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    hang = "import sys, threading; from kubeforge_server.__main__ import main; " \
           "sys.exit(main(lambda directory: threading.Event().wait()))"
    env = {**os.environ, ServerEnv.MODEL_DIR: str(mlp_dir), ServerEnv.HOST: "127.0.0.1", ServerEnv.PORT: "0",
           ServerEnv.LOAD_TIMEOUT_SECONDS: "1", ServerEnv.TERMINATION_LOG: str(log)}
    proc = subprocess.run([sys.executable, "-c", hang], env=env, capture_output=True, timeout=EXIT_DEADLINE)
    assert proc.returncode == EXIT_MODEL_LOAD_FAILED, proc.stderr[-2000:]
    assert "loadTimeoutSeconds" in log.read_text()
