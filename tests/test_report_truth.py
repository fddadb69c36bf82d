"""``report --truth`` (issue 22): every metric equals scikit-learn's on the same rows.

Jobs run through the real CLI against the local server (colors/1 and colors-multilabel/1
classify by colour). Images mix two colours, so the model is unsure and lists several
classes; some are filed in the wrong folder (a truth the model disagrees with). The expected
figures come from scikit-learn, fed from the output's rows and the truth as the test itself
reads it (the folder a file was put in, the manifest's column, the one-hot file).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    hamming_loss,
    precision_score,
    top_k_accuracy_score,
)
from sklearn.preprocessing import MultiLabelBinarizer

from batchclassify.server import BackgroundServer

from .conftest import COLORS, Cli, read_rows, run_args

NO_CLASS = "(no class)"

# (folder it is filed in, main colour, second colour, share of the second colour)
SINGLE = [
    *((c, c, d, 0.3) for c, d in [("red", "yellow"), ("green", "yellow"), ("blue", "green")]),
    *((c, c, d, 0.3) for c, d in [("white", "yellow"), ("black", "red"), ("black", "blue")]),
    ("red", "red", "black", 0.5),  # red 0.57, black 0.40
    ("yellow", "red", "yellow", 0.5),  # yellow 0.52, red 0.43
    ("yellow", "yellow", "white", 0.5),  # white 0.53: a mistake
    ("black", "black", "blue", 0.5),  # black and blue tie at 0.4706
    ("blue", "blue", "black", 0.5),
    ("green", "green", "blue", 0.5),  # green 0.42, blue 0.38
    ("blue", "blue", "green", 0.5),  # a mistake, the model nearly right
    ("red", "red", "gray", 0.0),
    ("green", "green", "gray", 0.0),
    ("white", "white", "gray", 0.0),
    ("yellow", "red", "yellow", 0.3),  # filed in the wrong folder: red 0.96, yellow listed
    ("green", "blue", "green", 0.3),  # filed wrong: blue 0.96, green listed
    ("yellow", "red", "white", 0.3),  # filed wrong: red 0.65, yellow 0.09
]


def blend(path: Path, main: str, second: str, share: float) -> Path:
    """An image of ``main`` with a band of ``second`` over ``share`` of its width."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (40, 30), COLORS.get(main, (128, 128, 128)))
    band = round(40 * share)
    if band:
        image.paste(Image.new("RGB", (band, 30), COLORS.get(second, (128, 128, 128))), (0, 0))
    # A pixel of the file's own, so no two files are identical (one answer per image).
    image.putpixel((39, 29), (len(str(path)) % 256, 7, 7))
    image.save(path)
    return path


def labelled_folder(root: Path) -> Path:
    for n, (folder, main, second, share) in enumerate(SINGLE):
        blend(root / "train" / folder / f"{n:02d}-{main}.png", main, second, share)
    return root


def run_job(
    cli: Cli, server: BackgroundServer, output: Path, source: Path, model: str, *extra: str
) -> list[dict[str, Any]]:
    result = cli(*run_args(server, output, source, model=model), "-q", *extra)
    assert result.code in (0, 1), result.err
    return read_rows(output)


def report_json(cli: Cli, output: Path, *args: str | Path) -> dict[str, Any]:
    result = cli("report", output, "--json", *args)
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


def expected_single(y_true: list[str], y_pred: list[str]) -> dict[str, Any]:
    labels = sorted((set(y_true) | set(y_pred)) - {NO_CLASS})
    report = classification_report(
        y_true, y_pred, labels=labels, output_dict=True, zero_division=0.0
    )
    return {"labels": labels, "report": report}


def assert_class_figures(
    figures: dict[str, Any], report: dict[str, Any], labels: list[str]
) -> None:
    assert list(figures["classes"]) == labels
    for name in labels:
        got, want = figures["classes"][name], report[name]
        for key in ("precision", "recall"):
            assert got[key] == pytest.approx(want[key], abs=1e-12), (name, key)
        assert got["f1"] == pytest.approx(want["f1-score"], abs=1e-12), name
        assert got["support"] == want["support"], name
    for kind in ("macro", "weighted"):
        want = report[f"{kind} avg"]
        got = figures["averages"][kind]
        assert got["precision"] == pytest.approx(want["precision"], abs=1e-12)
        assert got["recall"] == pytest.approx(want["recall"], abs=1e-12)
        assert got["f1"] == pytest.approx(want["f1-score"], abs=1e-12)


def assert_calibration(calibration: dict[str, Any], y_right: list[bool], conf: list[float]) -> None:
    prob_true, prob_pred = calibration_curve(y_right, conf, n_bins=10, strategy="uniform")
    bins = calibration["bins"]
    assert [b["accuracy"] for b in bins] == pytest.approx(list(prob_true), abs=1e-12)
    assert [b["confidence"] for b in bins] == pytest.approx(list(prob_pred), abs=1e-12)
    edges = np.linspace(0.0, 1.0, 11)
    ids = np.searchsorted(edges[1:-1], conf)
    counts = np.bincount(ids, minlength=10)
    assert [b["count"] for b in bins] == [int(c) for c in counts if c]
    ece = sum(
        c / len(conf) * abs(t - p)
        for c, t, p in zip([c for c in counts if c], prob_true, prob_pred, strict=True)
    )
    assert calibration["ece"] == pytest.approx(ece, abs=1e-12)


def test_labelled_folder_metrics_equal_scikit_learns(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    server = make_server()
    source = labelled_folder(tmp_path / "dataset")
    output = tmp_path / "out.jsonl"
    rows = run_job(cli, server, output, source, "colors/1", "--confidence", "0.01")

    figures = report_json(cli, output, "--truth", "folder")["metrics"]

    y_true = [Path(row["path"]).parent.name for row in rows]
    y_pred = [row["top"] or NO_CLASS for row in rows]
    assert y_true != y_pred, "the test needs mistakes"
    expected = expected_single(y_true, y_pred)
    assert figures["kind"] == "single-label"
    assert figures["scored"] == len(SINGLE) and figures["without_truth"] == 0
    assert figures["accuracy"] == accuracy_score(y_true, y_pred)
    assert_class_figures(figures, expected["report"], expected["labels"])
    labels = expected["labels"]
    columns = figures["confusion"]["columns"]
    want = confusion_matrix(y_true, y_pred, labels=columns)
    assert figures["confusion"]["counts"] == want[: len(labels)].tolist()
    normalized = confusion_matrix(y_true, y_pred, labels=columns, normalize="true")
    assert np.allclose(figures["confusion"]["normalized"], normalized[: len(labels)])
    # Top-k: the full class vector, unlisted classes scoring 0 (below the 0.01 cut).
    classes = sorted({p["class"] for row in rows for p in row["predictions"]} | set(y_true))
    scores = np.array(
        [
            [{p["class"]: p["confidence"] for p in row["predictions"]}.get(c, 0.0) for c in classes]
            for row in rows
        ]
    )
    for k in ("1", "3", "5"):
        assert figures["top_k_accuracy"][k] == pytest.approx(
            top_k_accuracy_score(y_true, scores, k=int(k), labels=classes), abs=1e-12
        ), k
    assert figures["top_k_accuracy"]["3"] > figures["top_k_accuracy"]["1"]
    right = [t == p for t, p in zip(y_true, y_pred, strict=True) if p != NO_CLASS]
    confidences = [row["confidence"] for row in rows if row["top"]]
    assert_calibration(figures["calibration"], right, confidences)

    text = cli("report", output, "--truth", "folder")
    assert text.code == 0, text.err
    assert f"accuracy {100 * accuracy_score(y_true, y_pred):.1f}%" in text.out
    assert "confusion matrix" in text.out and "macro avg" in text.out


def test_manifest_label_column_rows_without_truth_counted_not_guessed(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    server = make_server()
    source = labelled_folder(tmp_path / "dataset")
    files = sorted(source.rglob("*.png"))
    lines = ["path,label"]
    for n, path in enumerate(files):
        lines.append(f"{path},{'' if n % 5 == 0 else path.parent.name}")
    lines.append(f"{source / 'gone.png'},red")  # a failed row with a truth: not scored
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.parquet"
    rows = run_job(cli, server, output, manifest, "colors/1")

    figures = report_json(cli, output, "--truth", "column:label")["metrics"]

    labelled = [row for row in rows if row["label"] and row["status"] == "ok"]
    assert figures["without_truth"] == sum(1 for row in rows if not row["label"]) == 4
    assert figures["failed_with_truth"] == 1
    assert figures["scored"] == len(labelled)
    y_true = [row["label"] for row in labelled]
    y_pred = [row["top"] or NO_CLASS for row in labelled]
    expected = expected_single(y_true, y_pred)
    assert figures["accuracy"] == accuracy_score(y_true, y_pred)
    assert_class_figures(figures, expected["report"], expected["labels"])

    bad = cli("report", output, "--truth", "column:lable")
    assert bad.code == 2
    assert "column:lable: the output has no such column" in bad.err and "label" in bad.err


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_truth_file_of_ids_or_paths(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli, kind: str
) -> None:
    server = make_server()
    source = labelled_folder(tmp_path / "dataset")
    output = tmp_path / "out.jsonl"
    rows = run_job(cli, server, output, source, "colors/1")
    truth = tmp_path / f"truth.{kind}"
    known = rows[: len(rows) - 3]  # three images without a line in the file
    if kind == "csv":
        truth.write_text(
            "id,label\n" + "".join(f"{r['id']},{Path(r['path']).parent.name}\n" for r in known)
        )
    else:
        truth.write_text(
            "".join(
                json.dumps({"path": r["path"], "label": Path(r["path"]).parent.name}) + "\n"
                for r in known
            )
        )

    figures = report_json(cli, output, "--truth", truth)["metrics"]

    assert figures["without_truth"] == 3
    y_true = [Path(row["path"]).parent.name for row in known]
    y_pred = [row["top"] or NO_CLASS for row in known]
    assert figures["accuracy"] == accuracy_score(y_true, y_pred)
    expected = expected_single(y_true, y_pred)
    assert_class_figures(figures, expected["report"], expected["labels"])


# (file name, colours, in equal bands)
MULTI = [
    ("a.png", ["red"]),
    ("b.png", ["red", "blue"]),
    ("c.png", ["blue", "white"]),
    ("d.png", ["green"]),
    ("e.png", ["green", "yellow", "black"]),
    ("f.png", ["white", "black"]),
    ("g.png", ["yellow"]),
    ("h.png", ["red", "yellow"]),
    ("i.png", ["black"]),
    ("j.png", ["blue", "green"]),
]
# The one-hot truth, with deliberate errors: b says red only, f says white+blue, i says none.
MULTI_TRUTH = {
    **{name: colors for name, colors in MULTI},
    "b.png": ["red"],
    "f.png": ["white", "blue"],
    "i.png": [],
}


def test_multilabel_metrics_from_a_classes_csv_equal_scikit_learns(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    server = make_server()
    folder = tmp_path / "train"
    for name, colors in MULTI:
        image = Image.new("RGB", (60, 30))
        width = 60 // len(colors)
        for n, color in enumerate(colors):
            image.paste(Image.new("RGB", (width, 30), COLORS[color]), (n * width, 0))
        folder.mkdir(exist_ok=True)
        image.save(folder / name)
    classes = ["red", "green", "blue", "yellow", "white", "black", "gray"]
    truth = folder / "_classes.csv"
    # Roboflow's layout, spaces after the commas included.
    lines = ["filename, " + ", ".join(classes)]
    lines += [
        f"{name}, " + ", ".join("1" if c in MULTI_TRUTH[name] else "0" for c in classes)
        for name, _ in MULTI
    ]
    truth.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.jsonl"
    rows = run_job(cli, server, output, folder, "colors-multilabel/1")

    figures = report_json(cli, output, "--truth", truth)["metrics"]

    assert figures["kind"] == "multi-label"
    assert figures["scored"] == len(MULTI)
    binarizer = MultiLabelBinarizer(classes=sorted(classes))
    y_true = binarizer.fit_transform([MULTI_TRUTH[Path(row["path"]).name] for row in rows])
    y_pred = binarizer.transform([row["predicted_classes"] for row in rows])
    assert figures["subset_accuracy"] == accuracy_score(y_true, y_pred)
    assert 0 < figures["subset_accuracy"] < 1
    assert figures["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred), abs=1e-12)
    report = classification_report(
        y_true, y_pred, target_names=sorted(classes), output_dict=True, zero_division=0.0
    )
    assert_class_figures(figures, report, sorted(classes))
    micro = figures["averages"]["micro"]
    assert micro["f1"] == pytest.approx(report["micro avg"]["f1-score"], abs=1e-12)
    assert micro["precision"] == pytest.approx(report["micro avg"]["precision"], abs=1e-12)
    scores = [
        ({p["class"]: p["confidence"] for p in row["predictions"]}[c], c in truth_of)
        for row in rows
        for truth_of in [MULTI_TRUTH[Path(row["path"]).name]]
        for c in classes
    ]
    assert_calibration(
        figures["calibration"], [right for _, right in scores], [s for s, _ in scores]
    )


def test_missing_truth_file_is_a_one_line_usage_error(tmp_path: Path, cli: Cli) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text("")
    result = cli("report", output, "--truth", tmp_path / "nope.csv")
    assert result.code == 2
    assert "--truth" in result.err and "nope.csv: no such file" in result.err


def test_thresholds_reach_the_target_precision_and_export_applies_them(
    tmp_path: Path, make_server: Callable[..., BackgroundServer], cli: Cli
) -> None:
    server = make_server()
    source = labelled_folder(tmp_path / "dataset")
    output = tmp_path / "out.jsonl"
    rows = run_job(cli, server, output, source, "colors/1")
    thresholds_file = tmp_path / "thresholds.json"

    result = cli(
        "report", output, "--truth", "folder", "--target-precision", "0.9",
        "--write-thresholds", thresholds_file,
    )  # fmt: skip

    assert result.code == 0, result.err
    written = json.loads(thresholds_file.read_text())
    assert written["target_precision"] == 0.9
    thresholds = written["thresholds"]
    answered = {row["top"] for row in rows if row["top"]}
    assert set(thresholds) == answered
    strict = 0
    for name, threshold in thresholds.items():
        mine = [row for row in rows if row["top"] == name]
        truth = [Path(row["path"]).parent.name == name for row in mine]
        if threshold is None:  # no cut reaches it: every cut at an answer's confidence fails
            for cut in {row["confidence"] for row in mine}:
                kept = [t for t, row in zip(truth, mine, strict=True) if row["confidence"] >= cut]
                assert precision_score(kept, [True] * len(kept), zero_division=0) < 0.9
            continue
        kept = [t for t, row in zip(truth, mine, strict=True) if row["confidence"] >= threshold]
        assert kept, name
        assert precision_score(kept, [True] * len(kept)) >= 0.9, name
        strict += len(kept) < len(mine)
    assert strict, "no class needed a threshold above its lowest answer: the test proves little"

    export = tmp_path / "export.csv"
    done = cli("export", output, "--to", "csv", export, "--thresholds", thresholds_file)
    assert done.code == 0, done.err
    with open(export, newline="") as handle:
        review = {line["id"]: line["needs_review"] == "1" for line in csv.DictReader(handle)}
    for row in rows:
        threshold = thresholds.get(row["top"], 0.0)
        expected = threshold is None or row["confidence"] < threshold
        assert review[row["id"]] == expected, row
    assert "below its class's threshold" in done.out


def test_export_refuses_a_thresholds_file_that_is_not_one(tmp_path: Path, cli: Cli) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text("")
    bad = tmp_path / "t.json"
    bad.write_text('{"thresholds": {"red": 7}}')
    result = cli("export", output, "--to", "csv", tmp_path / "x.csv", "--thresholds", bad)
    assert result.code == 2
    assert "--thresholds" in result.err and "'red': 7 is not a number in 0..1" in result.err
