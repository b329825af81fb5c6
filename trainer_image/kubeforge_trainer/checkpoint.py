"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON. A checkpoint
is a directory `step-<N>` written under a temporary name and renamed into place only when complete
(with a `manifest.json` holding the digest of every file), so a crash mid-write leaves nothing a
restart could mistake for a checkpoint. Loading verifies the manifest and refuses anything else.

Fencing: the attempt number (`KUBEFORGE_ATTEMPT`) is the token. A checkpoint is stamped with the
attempt that wrote it (in its name, `step-<N>-a<attempt>` after attempt 0, and in its manifest).
`fence.json` records the job (its uid) and the newest attempt that started, and the checkpoint it
resumed from (its base); an attempt records itself there before it loads anything. Only the fenced
attempt's own checkpoints and its base are accepted; a writer that finds a newer attempt (or another
job) recorded stops (`Fenced`) before it commits, a writer that finds it right after committing (it
raced the check) removes what it committed and stops, and whatever a stale writer commits anyway is
never loaded and is pruned. A job created again under the same name and storage takes over the fence.
An old attempt's processes stop, and a new attempt waits for them, in fencewatch.py."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kubeforge_api.constants import Env
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import fencewatch

MANIFEST = "manifest.json"
FORMAT = "kubeforge-checkpoint/v1"
FENCE = "fence.json"


class CheckpointError(Exception):
    """A checkpoint is corrupt, incomplete or not ours."""


class Fenced(CheckpointError):
    """A newer attempt has started: this process belongs to an old one and must write nothing."""


def my_attempt() -> int:
    """This process's attempt (the fencing token), from the pod's environment; 0 outside a pod."""
    try:
        return max(int(os.environ.get(Env.ATTEMPT, "0")), 0)
    except ValueError:
        return 0


def my_job() -> str:
    return os.environ.get(Env.JOB_UID, "")


def name(step: int, attempt: int) -> str:
    return f"step-{step:09d}" + (f"-a{attempt}" if attempt else "")


@dataclass(frozen=True)
class Fence:
    """What `fence.json` records: the job, the newest attempt started, the checkpoint it resumed from."""

    job: str
    attempt: int
    base: str | None


def read_fence(root: Path) -> Fence | None:
    """The recorded fence, or None before any attempt recorded one (or when it is unreadable)."""
    try:
        doc = json.loads((root / FENCE).read_text())
        job, attempt, base = str(doc.get("job", "")), int(doc["attempt"]), doc.get("base")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Fence(job, attempt, base if isinstance(base, str) and base.startswith("step-") and "/" not in base
                 else None)


def check_fence(root: Path, attempt: int) -> None:
    """Raise `Fenced` when a newer attempt than `attempt`, or another job, is recorded under `root`."""
    fence = read_fence(root)
    if fence is not None and (fence.attempt > attempt if fence.job == my_job() else True):
        raise Fenced(f"attempt {fence.attempt} of job {fence.job or '-'} has started; "
                     f"attempt {attempt} writes nothing more")


def fenced_out(root: Path, attempt: int | None = None) -> str | None:
    """Why `attempt` (this process's by default) may write nothing more under the fence of `root`, or
    None while it may (the check other writers, such as the metrics history, make before each write)."""
    try:
        check_fence(root, my_attempt() if attempt is None else attempt)
    except Fenced as e:
        return str(e)
    return None


def _job(path: Path) -> str:
    try:
        return str(json.loads((path / MANIFEST).read_text()).get("job", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def stamp(path: Path) -> tuple[int, int]:
    """(step, attempt) a complete checkpoint's manifest records (attempt 0 when it records none)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        return int(manifest["step"]), max(int(manifest.get("attempt", 0)), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return -1, -1


def accepted(root: Path, fence: Fence | None) -> list[Path]:
    """The complete checkpoints the fence accepts, oldest first: the fenced attempt's own and its base
    (every complete one before any fence was recorded)."""
    done = complete(root)
    if fence is not None:
        done = [p for p in done if (stamp(p)[1] == fence.attempt and _job(p) == fence.job) or p.name == fence.base]
    return sorted(done, key=stamp)


@dataclass(frozen=True)
class Loaded:
    step: int
    tensors: dict[str, dict[str, torch.Tensor]]  # file stem -> tensors
    meta: dict[str, Any]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    py = random.getstate()
    np_state: Any = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return {"torch_cpu": torch.get_rng_state()}, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    v, state, gauss = meta["python"]
    random.setstate((v, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def staging(root: Path, step: int, create: bool) -> Path:
    """The temporary directory checkpoint `step` is assembled in (by one rank, or by all for shards)."""
    tmp = root / f".tmp-{name(step, my_attempt())}"
    if create:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def write_tensors(tmp: Path, stem: str, tensors: dict[str, torch.Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / f"{stem}.safetensors"))


def commit(root: Path, tmp: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any],
           keep: int) -> Path:
    """Add `tensors` and `meta`, write the manifest over every file, rename into place, prune to `keep`."""
    for stem, group in tensors.items():
        write_tensors(tmp, stem, group)
    (tmp / "meta.json").write_text(json.dumps(meta))
    files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
    attempt = my_attempt()
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "attempt": attempt, "job": my_job(),
                                          "files": files}))
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    try:
        check_fence(root, attempt)
    except Fenced:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = root / name(step, attempt)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    try:  # a newer attempt recorded itself while this one committed (it raced the check): stop now, not a step later
        check_fence(root, attempt)
    except Fenced:
        fence = read_fence(root)
        if fence is None or fence.base != final.name:  # unless the newer attempt took it as its base: resumes from it
            shutil.rmtree(final, ignore_errors=True)  # never accepted anyway; gone at once
        raise
    kept = set(accepted(root, read_fence(root))[-keep:]) | {final}
    for old in root.glob("step-*"):
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save(root: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any],
         keep: int) -> Path:
    """Write checkpoint `step` atomically from one process and keep only the newest `keep`."""
    return commit(root, staging(root, step, create=True), step, tensors, meta, keep)


def complete(root: Path) -> list[Path]:
    """Checkpoint directories that finished writing, oldest first."""
    return sorted(p for p in root.glob("step-*") if (p / MANIFEST).is_file()) if root.is_dir() else []


def load(path: Path) -> Loaded:
    """Load and verify one checkpoint. Anything but our safetensors + JSON format is refused."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: no readable manifest ({e})") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a Kubeforge checkpoint (format {manifest.get('format')!r})")
    for name, digest in manifest["files"].items():
        f = path / name
        if not f.is_file() or sha256_file(f) != digest:
            raise CheckpointError(f"{path}: {name} is missing or corrupt (digest mismatch)")
    extra = {p.name for p in path.iterdir()} - set(manifest["files"]) - {MANIFEST}
    if extra:
        raise CheckpointError(f"{path}: unexpected files {sorted(extra)}; refusing to load (pickles are never read)")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for name in manifest["files"]:
        if name.endswith(".safetensors"):
            try:
                tensors[name.removesuffix(".safetensors")] = load_file(str(path / name))
            except SafetensorError as e:
                raise CheckpointError(f"{path}: {name}: {e}") from None
    return Loaded(int(manifest["step"]), tensors, json.loads((path / "meta.json").read_text()))


def resume_point(root: Path) -> Path | None:
    """The checkpoint this attempt resumes from, after recording the attempt in the fence (every rank
    may call it: they record the same), watching the fence from now on and outliving the older attempts'
    processes (fencewatch.py); `Fenced` when a newer attempt has started."""
    attempt = my_attempt()
    fence = read_fence(root)
    if fence is None or fence.job != my_job() or fence.attempt < attempt:  # this attempt takes over the fence
        done = accepted(root, fence)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{FENCE}.{os.getpid()}"
        tmp.write_text(json.dumps({"job": my_job(), "attempt": attempt, "base": done[-1].name if done else None}))
        os.replace(tmp, root / FENCE)
    else:
        check_fence(root, attempt)
    fencewatch.watch(root, attempt, lambda: fenced_out(root, attempt))
    fencewatch.outlive_older(root, root / FENCE, attempt)
    check_fence(root, attempt)  # again: a newer attempt may have started while this one waited
    done = accepted(root, read_fence(root))  # after the wait: a peer rank may have stepped on and pruned meanwhile
    return done[-1] if done else None


def latest(root: Path) -> Loaded | None:
    """The newest accepted checkpoint; a corrupt one is an error, never silently skipped."""
    path = resume_point(root)
    return load(path) if path is not None else None
