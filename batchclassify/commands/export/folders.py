"""``folders``: DEST/{split}/{class}/{file} — Roboflow's single-label folder structure.

Also what torchvision ``ImageFolder``, Keras ``image_dataset_from_directory`` and Hugging Face
``imagefolder`` read. Images below --min-confidence (or with no class) go to
DEST/_review/{top}/ instead, outside every split, for a person to sort.
"""

from __future__ import annotations

from collections import Counter

from ...errors import UsageError
from .files import safe_part
from .options import ExportOptions
from .records import Record, Survey

REVIEW = "_review"
NO_CLASS = "_no_class"


class FoldersFormat:
    """Single-label folder structure."""

    names_unique_across_folders = False

    def __init__(self, options: ExportOptions) -> None:
        self._options = options
        self._counts: Counter[str] = Counter()

    def rename_class(self, name: str) -> str:
        return safe_part(name)

    def placement(self, record: Record) -> tuple[str, str] | None:
        if record.path is None:
            return None
        name = safe_part(record.path.replace("\\", "/").rsplit("/", 1)[-1])
        if record.review:
            return f"{REVIEW}/{self.rename_class(record.top) if record.top else NO_CLASS}", name
        return f"{record.split}/{self.rename_class(record.top or '')}", name

    def own_files(self, survey: Survey) -> list[str]:
        return []

    def begin(self, survey: Survey, classes: dict[str, str]) -> None:
        if survey.multilabel:
            raise UsageError(
                f"{self._options.output} is a multi-label job; folders holds one class per image: "
                "use --to roboflow-multilabel (or label-studio, csv)"
            )

    def add(self, record: Record, exported: str | None) -> None:
        self._counts[exported.rsplit("/", 2)[0] if exported else "?"] += 1

    def end(self) -> list[str]:
        return [
            f"  {folder}/: {count:,} image{'s' if count != 1 else ''}"
            for folder, count in sorted(self._counts.items())
        ]
