"""The torch.export archive guard's pure checks: a shape expression passes only as arithmetic on
symbols, integers and sympy's functions (sympy evaluates it as Python), and an archive that is not a
torch.export program is refused before anything in it is read."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from kubeforge_trainer.formats import FormatError
from kubeforge_trainer.formats.program_archive import check_expression, checked_archive

HERE = Path("model")
SAFE = [
    "Symbol('s17', positive=True, integer=True)",
    "2*Symbol('s1', integer=True) + 1",
    "FloorDiv(s0, 2)",
    "Max(s0, 3) - Min(s1, -4)",
    "Eq(Mod(s0, 8), 0)",
    "s0**2 / 3.5",
]
UNSAFE = [
    "__import__('os').system('true')",
    "s0.__class__",
    "open('/etc/passwd')",
    "(lambda: 1)()",
    "[s0][0]",
    "exec('1')",
    "Symbol('s0' + 'x')",
    "Symbol('__x__')",
    "getattr(s0, 'y')",
    "Max(eval, 1)",
    "s0 if 1 else 2",
    "f'{s0}'",
    "s0; s1",
    "x" * 20_000,
]


@pytest.mark.parametrize("text", SAFE)
def test_arithmetic_on_symbols_passes(text: str) -> None:
    check_expression(HERE, text)


@pytest.mark.parametrize("text", UNSAFE)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(FormatError, match="shape expression"):
        check_expression(HERE, text)


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, content in entries.items():
            z.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize(("content", "says"), [
    (b"\x80\x04K\x01.", "not a zip file"),
    (_zip({"archive/data.pkl": b"\x80\x04K\x01.", "archive/version": b"3"}), "holds no torch.export program"),
    (_zip({"a/models/model.json": b"{}", "b/archive_format": b"pt2"}), "not in one folder"),
    (_zip({"m/models/model.json": b"{}", "m/archive_format": b"zip"}), "archive_format"),
    (_zip({"m/models/model.json": b"{}", "m/archive_format": b"pt2", "m/data/weights/model.pt": b"\x80"}),
     "data/weights/model.pt"),
])
def test_what_is_not_a_program_is_refused(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "model.pt2").write_bytes(content)
    with pytest.raises(FormatError, match=says) as refused:
        checked_archive(tmp_path, tmp_path / "model.pt2")
    assert "\n" not in str(refused.value)
