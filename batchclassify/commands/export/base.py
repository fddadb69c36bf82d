"""What every export format provides to the driver (``run.py``)."""

from __future__ import annotations

from typing import Protocol

from .options import ExportOptions
from .records import Record, Survey


class ExportFormat(Protocol):
    """One format. Tree formats place image files; ``placement`` is None for the others."""

    names_unique_across_folders: bool
    """Whether its consumer finds an image by file name alone, so names must be unique in the
    whole export, not only in their folder (``files.FileNames``)."""

    def __init__(self, options: ExportOptions) -> None: ...

    def rename_class(self, name: str) -> str:
        """The class name as this format can hold it (a pure function of the name)."""
        ...

    def placement(self, record: Record) -> tuple[str, str] | None:
        """(folder, file name) in DEST for the record's image, before collision renaming."""
        ...

    def own_files(self, survey: Survey) -> list[str]:
        """DEST-relative files the format writes besides images (listed in the marker)."""
        ...

    def begin(self, survey: Survey, classes: dict[str, str]) -> None: ...

    def add(self, record: Record, exported: str | None) -> None:
        """One exported record; ``exported`` is its image's DEST-relative path (tree formats)."""
        ...

    def end(self) -> list[str]:
        """Close what was written (also after a failure; again is harmless); lines describing
        it for the printout."""
        ...
