"""Client-side downscaling (``--max-size``): fewer bytes on the wire, the same answers, and
rows that describe the user's original image."""

from __future__ import annotations

import io
from pathlib import Path

import pybase64
from PIL import Image

from batchclassify.inputs.encoding import read_and_encode
from batchclassify.server import BackgroundServer

from .conftest import COLORS, Cli, read_rows, run_args


def photo(path: Path, color: str, size: tuple[int, int], orientation: int = 1) -> Path:
    """A noisy JPEG (so it compresses like a photo) of mostly one colour."""
    base = Image.new("RGB", size, COLORS[color])
    noise = Image.merge("RGB", [Image.effect_noise(size, 60)] * 3)
    image = Image.blend(base, noise, 0.2)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=92, exif=exif)
    return path


def test_encoder_shrinks_large_images_upright_and_keeps_small_ones_as_they_are(
    tmp_path: Path,
) -> None:
    big = photo(tmp_path / "big.jpg", "red", (1600, 1200))
    turned = photo(tmp_path / "turned.jpg", "yellow", (1200, 600), orientation=6)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 80), COLORS["blue"]).save(small)

    encoded = read_and_encode(str(big), max_upload_bytes=20 << 20, max_size=256)
    with Image.open(io.BytesIO(pybase64.b64decode(encoded.body))) as sent:
        assert sent.format == "JPEG" and sent.size == (256, 192)
    assert encoded.original_size == (1600, 1200)
    assert len(encoded.body) * 10 < len(pybase64.b64encode(big.read_bytes()))

    encoded = read_and_encode(str(turned), max_upload_bytes=20 << 20, max_size=256)
    with Image.open(io.BytesIO(pybase64.b64decode(encoded.body))) as sent:
        assert sent.size == (128, 256)  # EXIF orientation 6 applied: now portrait
    assert encoded.original_size == (600, 1200)

    encoded = read_and_encode(str(small), max_upload_bytes=20 << 20, max_size=256)
    assert encoded.body == pybase64.b64encode(small.read_bytes())
    assert encoded.original_size is None


def test_max_size_uploads_less_and_rows_keep_the_original_size(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    folder = tmp_path / "photos"
    photo(folder / "big.jpg", "red", (1600, 1200))
    photo(folder / "turned.jpg", "yellow", (1200, 600), orientation=6)
    Image.new("RGB", (100, 80), COLORS["blue"]).save(folder / "small.png")
    originals = sum(len(pybase64.b64encode(p.read_bytes())) for p in folder.iterdir())
    output = tmp_path / "out.jsonl"

    result = cli(
        "run", folder, "--model", "colors/1", "--api-url", server.url, "--output", output,
        "--max-size", "256", "-q",
    )  # fmt: skip

    assert result.code == 0, result.err
    rows = {Path(row["path"]).name: row for row in read_rows(output)}
    assert {name: row["top"] for name, row in rows.items()} == {
        "big.jpg": "red",
        "turned.jpg": "yellow",
        "small.png": "blue",
    }
    sizes = {name: (row["image_width"], row["image_height"]) for name, row in rows.items()}
    assert sizes == {"big.jpg": (1600, 1200), "turned.jpg": (600, 1200), "small.png": (100, 80)}
    assert server.stats.bytes_received * 5 < originals


def test_max_size_decode_errors_say_what_is_wrong_with_the_file(
    tmp_path: Path, server: BackgroundServer, cli: Cli
) -> None:
    """Pillow's own message names its in-memory buffer (``<_io.BytesIO object at 0x…>``);
    the row says what the file is instead, and no request is sent for it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.jpg").write_bytes(b"shopping list: eggs, milk\n")
    (folder / "phone.jpg").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    good = photo(folder / "good.jpg", "red", (64, 48)).read_bytes()
    (folder / "cut.jpg").write_bytes(good[:40])
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, folder), "--max-size", "256", "-q")

    assert result.code == 1, result.err
    errors = {Path(row["path"]).name: row["error"] for row in read_rows(output) if row["error"]}
    assert set(errors) == {"notes.jpg", "phone.jpg", "cut.jpg"}
    assert not any("BytesIO" in message or "0x" in message for message in errors.values())
    assert "not in an image format Pillow recognises" in errors["notes.jpg"]
    assert "HEIC" in errors["phone.jpg"] and "convert it to JPEG" in errors["phone.jpg"]
    assert "the file is cut short" in errors["cut.jpg"]
    assert server.stats.requests == 1  # only good.jpg was sent
