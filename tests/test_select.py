"""``batchclassify select``: the N least sure by the stated measure (checked against a
brute-force computation written apart from the code), per-class floors, byte-identical copies
collapsed, and a manifest that ``run`` and ``push --only`` read."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import Cli, MakeServer, make_images, read_rows, run_args

CLASSES = ["cat", "dog", "fox", "owl"]


def single_row(path: Path, scores: list[float] | None) -> dict[str, Any]:
    """An ok row of a single-label model with these class scores (None: no class)."""
    predictions = (
        [
            {"class": c, "confidence": float(p)}
            for c, p in sorted(zip(CLASSES, scores, strict=True), key=lambda cp: -cp[1])
        ]
        if scores is not None
        else []
    )
    top = predictions[0]["class"] if predictions else None
    return {
        "id": str(path),
        "path": str(path),
        "url": None,
        "status": "ok",
        "top": top,
        "confidence": predictions[0]["confidence"] if predictions else None,
        "predicted_classes": [top] if top else [],
        "predictions": predictions,
        "multilabel": False,
    }


def write_output(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    output = tmp_path / "out.jsonl"
    output.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return output


def make_files(tmp_path: Path, count: int) -> list[Path]:
    folder = tmp_path / "files"
    folder.mkdir(exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"{n:03d}.png"
        path.write_bytes(f"image {n}".encode())
        paths.append(path)
    return paths


def chosen_ids(manifest: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in manifest.read_bytes().splitlines()]


def dirichlet(rng: random.Random, alphas: list[float]) -> list[float]:
    draws = [rng.gammavariate(alpha, 1.0) for alpha in alphas]
    return [d / sum(draws) for d in draws]


def brute_uncertainty(scores: list[float] | None, by: str) -> float:
    """The measures as docs/push.md states them, written apart from the code under test."""
    if scores is None:
        return math.inf
    p = sorted(scores, reverse=True)
    if by == "least-confidence":
        return float(1 - p[0])
    if by == "margin":
        return float(1 - (p[0] - p[1]))
    return -math.fsum(q * math.log(q) for q in p if q > 0)


@pytest.mark.parametrize("by", ["margin", "entropy", "least-confidence"])
def test_the_n_chosen_are_the_n_least_sure(cli: Cli, tmp_path: Path, by: str) -> None:
    rng = random.Random(7)
    paths = make_files(tmp_path, 60)
    vectors: list[list[float] | None] = [dirichlet(rng, [0.6] * len(CLASSES)) for _ in paths]
    vectors[5] = vectors[40] = None  # no class at all: the least sure of all
    output = write_output(tmp_path, [single_row(p, v) for p, v in zip(paths, vectors, strict=True)])
    manifest = tmp_path / "next.jsonl"
    result = cli("select", output, "-n", "12", "--by", by, "-o", manifest)
    assert result.code == 0, result.err
    ranked = sorted(zip(paths, vectors, strict=True), key=lambda pv: -brute_uncertainty(pv[1], by))
    expected = [str(p) for p, _ in ranked[:12]]
    assert chosen_ids(manifest)[:2] == sorted(expected[:2])  # the two with no class, by id
    assert chosen_ids(manifest)[2:] == expected[2:]
    assert "note:" not in result.err  # full vectors: nothing to warn about


def test_multilabel_margin_is_the_call_nearest_the_threshold(cli: Cli, tmp_path: Path) -> None:
    rng = random.Random(3)
    paths = make_files(tmp_path, 30)
    rows, distance = [], {}
    for path in paths:
        scores = [rng.uniform(0, 1) for _ in CLASSES]
        predictions = [
            {"class": c, "confidence": p}
            for c, p in sorted(zip(CLASSES, scores, strict=True), key=lambda cp: -cp[1])
        ]
        chosen = [c for c, p in zip(CLASSES, scores, strict=True) if p >= 0.4]
        rows.append(
            {
                "id": str(path),
                "path": str(path),
                "status": "ok",
                "multilabel": True,
                "top": CLASSES[scores.index(max(scores))],
                "confidence": max(scores),
                "predicted_classes": chosen,
                "predictions": predictions,
            }
        )
        distance[str(path)] = math.inf if not chosen else min(abs(q - 0.4) for q in scores)
    output = write_output(tmp_path, rows)
    manifest = tmp_path / "next.jsonl"
    assert cli("select", output, "-n", "8", "--by", "margin", "-o", manifest).code == 0
    expected = sorted(
        distance, key=lambda i: (-math.inf if distance[i] == math.inf else distance[i], i)
    )
    assert chosen_ids(manifest) == expected[:8]


def test_per_class_floors_hold_and_the_rest_is_the_least_sure(cli: Cli, tmp_path: Path) -> None:
    rng = random.Random(5)
    paths = make_files(tmp_path, 14)
    # cat: 9 unsure rows; dog: 3; fox: 2 sure ones; owl: none.
    tops = ["cat"] * 9 + ["dog"] * 3 + ["fox"] * 2
    vectors = []
    for top in tops:
        first = rng.uniform(0.9, 0.97) if top == "fox" else rng.uniform(0.55, 0.65)
        rest = [(1 - first) * q for q in dirichlet(rng, [1, 1, 1])]
        others = [c for c in CLASSES if c != top]
        by_class = {top: first, **dict(zip(others, rest, strict=True))}
        vectors.append([by_class[c] for c in CLASSES])
    output = write_output(tmp_path, [single_row(p, v) for p, v in zip(paths, vectors, strict=True)])
    manifest = tmp_path / "next.jsonl"
    result = cli(
        "select", output, "-n", "6", "--by", "margin", "--per-class-min", "2", "-o", manifest
    )
    assert result.code == 0, result.err
    got = set(chosen_ids(manifest))
    # Brute force: of all 6-sets holding 2 of each class present, the least sure in sum.
    score = {str(p): brute_uncertainty(v, "margin") for p, v in zip(paths, vectors, strict=True)}
    top_of = {str(p): t for p, t in zip(paths, tops, strict=True)}
    feasible = (
        set(combo)
        for combo in itertools.combinations(score, 6)
        if all(sum(top_of[i] == c for i in combo) >= 2 for c in ("cat", "dog", "fox"))
    )
    best = max(feasible, key=lambda combo: sum(score[i] for i in combo))
    assert got == best
    assert sum(top_of[i] == "fox" for i in got) == 2  # sure, but floored in
    too_many = cli("select", output, "-n", "5", "--per-class-min", "2", "-o", tmp_path / "x.jsonl")
    assert too_many.code == 2 and "--per-class-min 2 for 3 classes" in too_many.err


def test_byte_identical_images_are_chosen_once(cli: Cli, tmp_path: Path) -> None:
    paths = make_files(tmp_path, 10)
    for copy in paths[1:4]:  # 0..3: one picture under four names
        copy.write_bytes(paths[0].read_bytes())
    vectors = [[0.3, 0.28, 0.22, 0.2]] * 4 + [
        [0.9 - 0.05 * n, 0.1 + 0.05 * n, 0.0, 0.0] for n in range(6)
    ]
    output = write_output(tmp_path, [single_row(p, v) for p, v in zip(paths, vectors, strict=True)])
    manifest = tmp_path / "next.jsonl"
    result = cli("select", output, "-n", "4", "-o", manifest)
    assert result.code == 0, result.err
    got = chosen_ids(manifest)
    assert len(got) == 4 and len([i for i in got if i in map(str, paths[:4])]) == 1
    assert got[0] == str(paths[0]) and "3 byte-identical copies passed over" in result.err


def test_truncated_vectors_are_said_with_the_way_to_get_all(cli: Cli, tmp_path: Path) -> None:
    paths = make_files(tmp_path, 4)
    rows = [single_row(p, [0.5, 0.2, 0.0, 0.0]) for p in paths]
    for row in rows:
        row["predictions"] = [e for e in row["predictions"] if e["confidence"] >= 0.4]
    output = write_output(tmp_path, rows)
    said = cli("select", output, "-n", "2", "--by", "entropy", "-o", tmp_path / "a.jsonl")
    assert said.code == 0 and "4 rows hold only the classes above" in said.err
    assert "--confidence 0" in said.err
    quiet = cli("select", output, "-n", "2", "--by", "least-confidence", "-o", tmp_path / "b.jsonl")
    assert quiet.code == 0 and "note:" not in quiet.err


def test_an_existing_file_is_never_replaced_unless_select_wrote_it(
    cli: Cli, tmp_path: Path
) -> None:
    paths = make_files(tmp_path, 3)
    output = write_output(tmp_path, [single_row(p, [0.4, 0.3, 0.2, 0.1]) for p in paths])
    mine = tmp_path / "notes.csv"
    mine.write_text("my,own,data\n")
    refused = cli("select", output, "-n", "1", "-o", mine, "--overwrite")
    assert refused.code == 2 and mine.read_text() == "my,own,data\n"
    manifest = tmp_path / "next.csv"
    assert cli("select", output, "-n", "1", "-o", manifest).code == 0
    assert cli("select", output, "-n", "1", "-o", manifest).code == 2
    assert cli("select", output, "-n", "2", "-o", manifest, "--overwrite").code == 0


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_run_export_and_push_read_the_manifest(
    cli: Cli, make_server: MakeServer, tmp_path: Path, suffix: str
) -> None:
    make_images(tmp_path / "images", 18)
    server = make_server()
    output = tmp_path / "out.jsonl"
    assert cli(*run_args(server, output, tmp_path / "images"), "--confidence", "0").code == 0
    manifest = tmp_path / f"next{suffix}"
    assert cli("select", output, "-n", "5", "--by", "entropy", "-o", manifest).code == 0
    if suffix == ".jsonl":
        wanted = set(chosen_ids(manifest))
    else:
        import csv

        with open(manifest, newline="") as handle:
            wanted = {row["id"] for row in csv.DictReader(handle)}
    assert len(wanted) == 5
    # run, the manifest's real consumer: the same images, under the same ids.
    again = tmp_path / "again.jsonl"
    assert cli(*run_args(server, again, manifest)).code == 0
    assert {row["id"] for row in read_rows(again)} == wanted
    # export --only: exactly those (read back by the csv module).
    exported = tmp_path / "chosen.csv"
    assert cli("export", output, "--to", "csv", exported, "--only", manifest).code == 0
    import csv as csv_module

    with open(exported, newline="") as handle:
        assert {row["id"] for row in csv_module.DictReader(handle)} == wanted
    # push --only: exactly those.
    pushed = cli("push", output, "--project", "next", "--api-url", server.url, "--only", manifest)
    assert pushed.code == 0, pushed.err
    stored = server.stats.dataset.stored("next")
    assert {record.metadata["batchclassify_id"] for record in stored if record.metadata} == wanted
