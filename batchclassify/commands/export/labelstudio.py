"""``label-studio``: tasks.json with the model's predictions, and the matching labeling config.

Each task's ``data.image`` is the image's URL, or for a local image
``/data/local-files/?d=<path relative to the document root>``: the URL Label Studio's local
files serving answers when started with LOCAL_FILES_SERVING_ENABLED=true and
LOCAL_FILES_DOCUMENT_ROOT=<root> (root: --document-root, default DEST). Local images are
linked into DEST/images/. Each prediction carries ``score`` = the model's confidence, so the
Data Manager can sort tasks by it; ``data.needs_review`` flags those below --min-confidence.
"""

from __future__ import annotations

import os
import re
from typing import IO, Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import orjson

from ...errors import OutputError, UsageError
from .files import safe_part
from .options import ExportOptions
from .records import Record, Survey

TASKS = "tasks.json"
CONFIG = "labeling-config.xml"
IMAGES = "images"
FROM_NAME, TO_NAME = "class", "image"
_OUR_KEYS = frozenset({"image", "batchclassify_id", "source", "split", "needs_review"})
#: What XML 1.0 cannot hold (its ``Char`` production): C0 controls but tab and line breaks,
#: surrogates, U+FFFE and U+FFFF.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class LabelStudioFormat:
    """Label Studio tasks with pre-annotations (predictions)."""

    names_unique_across_folders = False

    def __init__(self, options: ExportOptions) -> None:
        self._options = options
        self._dest = options.dest.absolute()
        self._root = (options.document_root or options.dest).absolute()
        self._rename: dict[str, str] = {}
        self._model = "batchclassify"
        self._handle: IO[bytes] | None = None
        self._count = 0
        self._reviews = 0
        if os.path.relpath(self._dest, self._root).startswith(".."):
            raise UsageError(
                f"--document-root {self._root}: DEST ({self._dest}) must be inside it, or Label "
                "Studio cannot serve the images"
            )

    def rename_class(self, name: str) -> str:
        # The config is XML 1.0, which cannot hold NUL and most other control characters,
        # not even as character references: they become "_" (in the tasks' choices too).
        return _XML_INVALID.sub("_", name)

    def placement(self, record: Record) -> tuple[str, str] | None:
        if record.path is None:
            return None
        return IMAGES, safe_part(record.path.replace("\\", "/").rsplit("/", 1)[-1])

    def own_files(self, survey: Survey) -> list[str]:
        return [TASKS, CONFIG]

    def begin(self, survey: Survey, classes: dict[str, str]) -> None:
        self._rename = classes
        self._model = survey.model or "batchclassify"
        config = labeling_config(sorted(set(classes.values())), multilabel=survey.multilabel)
        (self._options.dest / CONFIG).write_text(config, encoding="utf-8")
        tasks = self._options.dest / TASKS
        try:
            self._handle = open(tasks, "wb")  # noqa: SIM115
        except OSError as exc:
            raise OutputError(f"cannot write {tasks}: {exc.strerror}") from None
        self._handle.write(b"[")

    def add(self, record: Record, exported: str | None) -> None:
        assert self._handle is not None
        task = self.task(record, exported)
        separator = b"\n" if self._count == 0 else b",\n"
        self._handle.write(separator + orjson.dumps(task, default=str))
        self._count += 1
        self._reviews += record.review

    def task(self, record: Record, exported: str | None) -> dict[str, Any]:
        """One task in Label Studio's import format, with the model's answer as a prediction."""
        if exported is not None:
            relative = os.path.relpath(self._dest / exported, self._root).replace(os.sep, "/")
            image = "/data/local-files/?d=" + quote(relative)
        else:
            image = record.url or ""
        data: dict[str, Any] = {
            "image": image,
            "batchclassify_id": record.id,
            "source": record.source,
            "split": record.split,
            "needs_review": record.review,
        }
        for key, value in record.metadata.items():
            data[f"meta_{key}" if key in _OUR_KEYS else key] = value
        choices = [self._rename.get(name, name) for name in record.classes]
        result = [
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": choices},
            }
        ]
        prediction: dict[str, Any] = {
            "model_version": self._model,
            "result": result if choices else [],
        }
        if record.confidence is not None:  # no class passed the threshold: no score to sort by
            prediction["score"] = record.confidence
        return {"data": data, "predictions": [prediction]}

    def end(self) -> list[str]:
        if self._handle is not None:
            self._handle.write(b"\n]\n")
            self._handle.close()
            self._handle = None
        root = self._root
        return [
            f"  {TASKS}: {self._count:,} tasks ({self._reviews:,} with needs_review), "
            f"{CONFIG}, {IMAGES}/",
            "  to serve the local images, start Label Studio with",
            f"    LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}",
            f"  and add a Local files source storage with the path {self._dest / IMAGES} "
            "(no sync needed); then import tasks.json",
        ]


def labeling_config(classes: list[str], *, multilabel: bool) -> str:
    """The labeling config matching the tasks: an image and one Choices control."""
    choice = "multiple" if multilabel else "single"
    lines = [
        "<View>",
        f'  <Image name="{TO_NAME}" value="$image"/>',
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="{choice}" showInline="true">',
        *(f"    <Choice value={quoteattr(name)}/>" for name in classes),
        "  </Choices>",
        "</View>",
        "",
    ]
    return "\n".join(lines)
