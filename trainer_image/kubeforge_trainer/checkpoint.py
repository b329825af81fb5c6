"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON. A checkpoint
is a directory `step-<N>` written under a temporary name and renamed into place only when complete
(with a `manifest.json` holding the digest of every file), so a crash mid-write leaves nothing a
restart could mistake for a checkpoint. Loading verifies the manifest and refuses anything else."""

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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
FORMAT = "kubeforge-checkpoint/v1"


class CheckpointError(Exception):
    """A checkpoint is corrupt, incomplete or not ours."""


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
    tmp = root / f".tmp-step-{step:09d}"
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
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "files": files}))
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    final = root / f"step-{step:09d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in sorted(root.glob("step-*"))[:-keep]:
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


def latest(root: Path) -> Loaded | None:
    """The newest complete checkpoint; a corrupt newest one is an error, never silently skipped."""
    done = complete(root)
    return load(done[-1]) if done else None
