"""A flag's value that is not one is a one-line usage error naming the flag and saying what it
takes, never argparse's name for the parsing function."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchclassify.commands.cli import build_parser, main


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "argument --retries: -1 is negative: give 0 or more"),
        ("x", "argument --retries: 'x' is not a whole number"),
        ("1.5", "argument --retries: '1.5' is not a whole number"),
    ],
)
def test_retries_takes_a_whole_number_of_zero_or_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", str(tmp_path), "-m", "colors/1", "-o", "o.jsonl", "--retries", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "invalid" not in err and "_int" not in err


def test_retries_0_means_no_retries() -> None:
    args = build_parser("run").parse_args(
        ["run", "p", "-m", "m/1", "-o", "o.jsonl", "--retries", "0"]
    )
    assert args.retries == 0
