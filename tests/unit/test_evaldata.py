"""The user's evaluation data readers: JSONL rows with labels by name or index (a malformed line is one
`FILE:LINE: what` error), image directories (`.npy` always, image files through Pillow when it is
installed), safetensors `inputs`/`labels`, and plain text cut into token windows; each bounded by
maxSamples, and the format inferred from a path's name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kubeforge_trainer import evaldata
from kubeforge_trainer.evaldata import (
    EvalDataError,
    infer_format,
    read_images,
    read_jsonl,
    read_tensors,
    text_windows,
)
from safetensors.torch import save_file

LABELS = {"negative": 0, "positive": 1, "neutral": 2}


def jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_rows_take_labels_by_name_or_index_and_skip_blank_lines(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "eval.jsonl", [json.dumps({"text": "good", "label": "positive"}), "",
                                           json.dumps({"text": "meh", "label": 2, "extra": 1}),
                                           json.dumps({"text": "bad", "label": "negative"})])
    assert read_jsonl(path, 10, LABELS, 3) == (["good", "meh", "bad"], [1, 2, 0])


def test_jsonl_reads_only_the_first_max_samples_rows(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "eval.jsonl", [json.dumps({"text": "a", "label": 0}),
                                           json.dumps({"text": "b", "label": 1}), "not json at all"])
    assert read_jsonl(path, 2, LABELS, 3) == (["a", "b"], [0, 1])  # the broken third line is never read


@pytest.mark.parametrize(("line", "what"), [
    ("{not json", "not JSON (Expecting property name enclosed in double quotes at column 2)"),
    ("[1, 2]", 'expected an object with "text" and "label", got list'),
    ('{"label": 1}', '"text" is missing or not a string'),
    ('{"text": 5, "label": 1}', '"text" is missing or not a string'),
    ('{"text": "x"}', '"label" is missing'),
    ('{"text": "x", "label": "great"}', "label 'great' is not one of the model's labels (negative, positive, neutral)"),
    ('{"text": "x", "label": 3}', "label 3 is not a class index (0..2)"),
    ('{"text": "x", "label": -1}', "label -1 is not a class index (0..2)"),
    ('{"text": "x", "label": true}', "label True is neither a label name nor a class index"),
])
def test_a_malformed_jsonl_line_is_one_error_naming_file_and_line(tmp_path: Path, line: str, what: str) -> None:
    path = jsonl(tmp_path / "eval.jsonl", [json.dumps({"text": "ok", "label": 0}), "", line])
    with pytest.raises(EvalDataError) as e:
        read_jsonl(path, 100, LABELS, 3)
    assert str(e.value) == f"{path}:3: {what}"


def test_jsonl_that_holds_nothing_or_is_not_utf8_or_missing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EvalDataError, match=r"eval.jsonl: no examples$"):
        read_jsonl(jsonl(tmp_path / "eval.jsonl", ["", "  "]), 10, LABELS, 3)
    (tmp_path / "latin.jsonl").write_bytes(b'{"text": "caf\xe9", "label": 0}\n')
    with pytest.raises(EvalDataError, match=r"latin.jsonl:1: not UTF-8 text$"):
        read_jsonl(tmp_path / "latin.jsonl", 10, LABELS, 3)
    with pytest.raises(EvalDataError, match=r"absent.jsonl: cannot read \(No such file or directory\)$"):
        read_jsonl(tmp_path / "absent.jsonl", 10, LABELS, 3)


def image_dir(root: Path, counts: dict[str, int], shape: tuple[int, ...] = (6, 5, 3)) -> Path:
    rng = np.random.default_rng(0)
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            np.save(root / label / f"{i:03d}.npy", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def test_images_are_read_per_label_directory_and_a_bound_takes_every_label_in_turn(tmp_path: Path) -> None:
    root = image_dir(tmp_path / "images", {"negative": 5, "positive": 1, "2": 2})  # "2": a class index
    images, labels = read_images(root, 5, LABELS, 3)
    assert labels == [0, 1, 2, 0, 2] and all(i.shape == (6, 5, 3) and i.dtype == np.uint8 for i in images)
    assert np.array_equal(images[0], np.load(root / "negative" / "000.npy"))
    _, every = read_images(root, 100, LABELS, 3)
    assert sorted(every) == [0] * 5 + [1] + [2] * 2


def test_grey_images_become_rgb_and_bad_arrays_are_refused(tmp_path: Path) -> None:
    root = image_dir(tmp_path / "grey", {"positive": 1}, shape=(4, 4))
    [image], _ = read_images(root, 10, LABELS, 3)
    assert image.shape == (4, 4, 3) and np.array_equal(image[:, :, 0], image[:, :, 2])
    np.save(root / "positive" / "float.npy", np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(EvalDataError, match=r"float.npy: image must be uint8, got float32$"):
        read_images(root, 10, LABELS, 3)
    bad = image_dir(tmp_path / "unknown", {"cat": 1})
    with pytest.raises(EvalDataError, match=r"unknown/cat: label 'cat' is not one of the model's labels"):
        read_images(bad, 10, LABELS, 3)
    (tmp_path / "empty" / "positive").mkdir(parents=True)
    with pytest.raises(EvalDataError, match=r"empty: no LABEL/IMAGE files$"):
        read_images(tmp_path / "empty", 10, LABELS, 3)


def test_image_files_need_pillow_and_the_error_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "png"
    (root / "positive").mkdir(parents=True)
    (root / "positive" / "a.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setattr(evaldata, "pil_available", lambda: False)
    with pytest.raises(EvalDataError, match=r"a.png: unsupported image file \(supported: .npy \(HxWxC uint8\); "
                                            "other image files need Pillow, which is not installed\\)$"):
        read_images(root, 10, LABELS, 3)


def test_image_files_are_decoded_with_pillow_when_installed(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    root = tmp_path / "png"
    (root / "neutral").mkdir(parents=True)
    pixels = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    image_module.fromarray(pixels).save(root / "neutral" / "a.png")
    (root / "neutral" / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(EvalDataError, match=r"b.png: not a readable image"):
        read_images(root, 10, LABELS, 3)
    [image], labels = read_images(root, 1, LABELS, 3)
    assert labels == [2] and np.array_equal(image, pixels)


def test_tensors_give_the_first_rows_of_inputs_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "eval.safetensors"
    save_file({"inputs": torch.arange(20.0).reshape(10, 2), "labels": torch.arange(10) % 3}, str(path))
    x, y = read_tensors(path, 4)
    assert torch.equal(x, torch.arange(8.0).reshape(4, 2)) and y.tolist() == [0, 1, 2, 0] and y.dtype == torch.long


def test_tensors_files_missing_a_key_mismatched_or_not_safetensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "eval.safetensors"
    save_file({"inputs": torch.zeros(3, 2)}, str(path))
    with pytest.raises(EvalDataError, match=r"eval.safetensors: lacks 'labels' \(has \['inputs'\]\)$"):
        read_tensors(path, 10)
    save_file({"inputs": torch.zeros(3, 2), "labels": torch.zeros(2, dtype=torch.long)}, str(path))
    with pytest.raises(EvalDataError, match="must hold the same number of examples"):
        read_tensors(path, 10)
    save_file({"inputs": torch.zeros(3, 2), "labels": torch.zeros(3)}, str(path))
    with pytest.raises(EvalDataError, match=r"'labels' must be a 1-d integer tensor, got torch\.float32"):
        read_tensors(path, 10)
    torch.save({"inputs": torch.zeros(1)}, tmp_path / "pickled.safetensors")
    with pytest.raises(EvalDataError, match=r"pickled.safetensors: not a readable safetensors file"):
        read_tensors(tmp_path / "pickled.safetensors", 10)


def test_text_is_cut_into_whole_windows_of_tokens_bounded_by_max_samples(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("abcdefghij\n" * 3)  # 33 characters: one token each

    def encode(text: str) -> list[int]:
        return [ord(c) for c in text]

    windows = text_windows(path, encode, 8, 100)
    assert windows.shape == (4, 8) and windows.dtype == torch.long  # 33 tokens: 4 whole windows
    assert "".join(chr(int(c)) for c in windows[1]) == "ij\nabcde"
    assert text_windows(path, encode, 8, 2).shape == (2, 8)
    with pytest.raises(EvalDataError, match=r"corpus.txt: fewer than 64 tokens of text \(one evaluation window\)$"):
        text_windows(path, encode, 64, 10)


def test_the_format_follows_the_name(tmp_path: Path) -> None:
    assert [infer_format(tmp_path / n) for n in ("a.jsonl", "b.ndjson", "c.safetensors", "d.txt")] == [
        "jsonl", "jsonl", "tensors", "text"]
    assert infer_format(tmp_path) == "images"
    with pytest.raises(EvalDataError, match=r"data.csv: cannot tell the evaluation data's format from its name"):
        infer_format(tmp_path / "data.csv")
