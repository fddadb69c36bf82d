"""Resume: what an earlier run of the same job already recorded, and whether it is the same job.

The job's settings are stored beside the output (``<output>.job.json``, never the API key).
A rerun with the same settings skips what is recorded; one with different settings (another
model, say) is refused rather than mixing two models' answers in one file. One exception:
``--retry-failed`` may change ``--max-size`` (the advice for a ``too_large`` row), which only
changes how an image is sent; the settings file keeps the job's own value and lists the
others under ``RETRIED_MAX_SIZES``. ``run`` and ``plan`` judge an output with the same check
(``check_resumable``) and screen the walk's ids with the same ``Screen``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..config import JobConfig
from ..errors import OutputError
from ..models import Keep
from ..names import ID_SCHEME
from ..shards import Shard
from ..version import __version__
from .idindex import IdIndex
from .outputs import check_overwrite, check_settings_file_is_ours, is_empty
from .rowlog import ScanReport
from .sidecars import SETTINGS, WORKDIR, existing, settings_path
from .sinks import Sink

#: Tags in the job's IdIndex.
RECORDED_OK = 1
RECORDED_FAILED = 2
QUEUED = 3
"""Seen in this run's input: a second occurrence is a duplicate."""
QUEUED_AGAIN = 4
"""Recorded as failed, queued again by ``--retry-failed``: its new row supersedes the old."""

#: Settings that change what a row means; a rerun must match them to append to the output.
_COMPATIBILITY_KEYS = ("model", "confidence", "max_size", "format")
#: Of those, what a rerun with ``--retry-failed`` may change: how an image is sent, not what
#: its answer means (a ``too_large`` row is retried downscaled).
_RETRY_MAY_CHANGE = ("max_size",)
#: The settings file's list of the ``--max-size`` values (``null``: as-is) of reruns with
#: ``--retry-failed`` that differed from the job's: their retried (and new) rows used them.
RETRIED_MAX_SIZES = "retried_with_max_size"


@dataclass
class PriorState:
    """What the output already holds when the job starts."""

    index: IdIndex = field(default_factory=IdIndex)
    ok: int = 0
    failed: int = 0
    superseded: int = 0
    """Rows replaced by a later row of the same id, to be dropped by compaction."""
    scan: ScanReport = field(default_factory=ScanReport)
    """What the sink found reading the output back (unparsable lines, a repaired tail...)."""

    def needs_compaction(self) -> bool:
        """Superseded rows or lines that are not rows: the output is rewritten after the job."""
        return bool(self.superseded or self.scan.unparsable_lines)

    def expect(self, rows: int) -> None:
        """Room for ``rows`` ids in all: the output's rows before its scan, the sources'
        count once known (every id the walk keeps goes in the index), so a 10M-item job
        grows its index once, early, instead of doubling it with the old table held."""
        self.index.reserve(rows)

    def record(self, ids: list[str], ok: list[bool]) -> None:
        """Take rows read back from the output; a later row of an id supersedes earlier."""
        replaced = self.index.set_all(ids, map(_TAGS.__getitem__, ok))
        ok_rows = sum(ok)
        self.ok += ok_rows - replaced.get(RECORDED_OK, 0)
        self.failed += len(ok) - ok_rows - replaced.get(RECORDED_FAILED, 0)
        self.superseded += sum(replaced.values())


#: A row's tag by whether its status is ok (``False``, ``True``).
_TAGS = (RECORDED_FAILED, RECORDED_OK)


def job_settings(config: JobConfig) -> dict[str, Any]:
    return {
        "model": config.model,
        "confidence": config.confidence,
        "max_size": config.max_size,
        "format": config.format,
        # The first server (a str, as it always was, for readers of older files); several
        # servers (fleet.py) are listed in full in ``api_urls``.
        "api_url": config.http.servers[0],
        "shard": None if config.shard is None else str(config.shard),
        **({"api_urls": list(config.http.servers)} if len(config.http.servers) > 1 else {}),
        "id_scheme": ID_SCHEME,
        "batchclassify_version": __version__,
        # Where relative paths of rows start: those of versions that wrote a manifest's
        # relative paths as given (rows name their files absolutely now). Not a compatibility
        # key: a rerun from elsewhere resumes, and keeps the folder recorded first.
        WORKDIR: os.getcwd(),
    }


def prepare_output(config: JobConfig, sink: Sink) -> PriorState:
    """Check the output belongs to this job, start over if asked, and load what is done.

    Call it holding the output's lock (``outputs.hold_output``): it may repair or remove files.
    Nothing batchclassify did not write is removed or replaced (see ``outputs``).
    """
    settings_file = settings_path(config.output)
    overwrite = config.existing == "overwrite"
    if overwrite:
        check_overwrite(config.output, sink.own_names())
        sink.remove()
        settings_file.unlink(missing_ok=True)
    wanted = job_settings(config) if overwrite else check_resumable(config)
    write_settings(settings_file, wanted)
    state = PriorState()
    state.scan = sink.scan(state)
    return state


def check_resumable(config: JobConfig) -> dict[str, Any]:
    """Refuse an output this job may not add rows to: one batchclassify did not write, or
    wrote with settings that change what a row means (model, confidence, max size, format),
    another shard, or another id scheme; return the settings to record for this run.
    ``run`` asks before it writes; ``plan``, which only reads, asks the same, so it never
    counts as done what a run would refuse."""
    output = config.output
    wanted = job_settings(config)
    if not os.path.lexists(output):
        check_settings_file_is_ours(output)
        return wanted
    # Read-only: an earlier version's name too (a run renames it first: adopt_legacy_files).
    settings_file = existing(output, SETTINGS)
    try:
        recorded = orjson.loads(settings_file.read_bytes())
    except FileNotFoundError:
        if is_empty(output):  # holds nothing to lose: adopt it
            return wanted
        raise OutputError(
            f"{output} exists but was not written by batchclassify (no {settings_file.name}); "
            "use --overwrite to replace it, or choose another --output"
        ) from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise OutputError(
            f"cannot read {settings_file}: {exc}; move it away (with {output}) to start over"
        ) from None
    if not isinstance(recorded, dict) or "batchclassify_version" not in recorded:
        raise OutputError(
            f"{settings_file} was not written by batchclassify; move it away or choose "
            "another --output"
        )
    _check_id_scheme(output, recorded)
    _check_shard(output, recorded.get("shard"), wanted["shard"])
    changed = dict(wanted)
    for key in _COMPATIBILITY_KEYS:
        if recorded.get(key) == wanted[key]:
            continue
        if config.existing == "retry_failed" and key in _RETRY_MAY_CHANGE:
            changed[key] = recorded.get(key)
            continue
        hint = " (or add --retry-failed to retry only the failed rows with it)"
        raise OutputError(
            f"{output} holds results of a job with {key}={recorded.get(key)!r}, not "
            f"{wanted[key]!r}{hint if key in _RETRY_MAY_CHANGE else ''}; use --overwrite to "
            "start over, or choose another --output"
        )
    # The older rows' relative paths start where the output's first run started (or, with
    # no folder recorded, beside the output): recording this run's folder instead would
    # take each of them for another file.
    if isinstance(recorded.get(WORKDIR), str):
        changed[WORKDIR] = recorded[WORKDIR]
    else:
        del changed[WORKDIR]
    retried = list(recorded.get(RETRIED_MAX_SIZES) or [])
    if changed["max_size"] != wanted["max_size"] and wanted["max_size"] not in retried:
        retried.append(wanted["max_size"])
    if retried:
        changed[RETRIED_MAX_SIZES] = retried
    return changed


def _check_shard(output: Path, recorded: str | None, wanted: str | None) -> None:
    """A shard's output holds only that shard's ids: another shard resuming it would add its
    own and leave the first shard's output a mix (and both would claim the same file)."""
    if recorded == wanted:
        return
    said = "no --shard" if recorded is None else f"--shard {recorded}"
    asked = "no --shard" if wanted is None else f"--shard {wanted}"
    raise OutputError(
        f"{output} holds the results of a job run with {said}, not {asked}; give each shard "
        "its own output (e.g. --output results/part-{shard}.parquet), or use --overwrite to "
        "start over"
    )


def _check_id_scheme(output: Path, recorded: dict[str, Any]) -> None:
    """Ids made another way would not match: every image would be classified again."""
    scheme = recorded.get("id_scheme", 1)  # written before the key existed: scheme 1
    if scheme != ID_SCHEME:
        raise OutputError(
            f"{output} was written by a batchclassify that named images differently (id scheme "
            f"{scheme}, this version uses {ID_SCHEME}): resuming would classify every image "
            "again and give it a second row; use --overwrite to start over (its rows are "
            "replaced), or choose another --output and keep the old file"
        )


def write_settings(settings_file: Path, settings: dict[str, Any]) -> None:
    """Replace the settings file whole (temporary file, then rename); the temporary file has
    a name no one else uses, so writing it clobbers nothing."""
    try:
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{settings_file.name}.", dir=settings_file.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {settings_file}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(settings, option=orjson.OPT_INDENT_2))
        os.chmod(tmp, 0o644)
        os.replace(tmp, settings_file)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {settings_file}: {exc.strerror}") from None


class Screen:
    """The producer's rule for each id the walk meets, asked before its item is made.

    Skipped: ids recorded before (ok; failed too, unless ``--retry-failed``), ids already
    met in this run (duplicates), other shards' ids (not even counted as found). Every other
    id is tagged as queued in the resume index, so a second occurrence is a duplicate, and
    kept. ``keep`` is the walk's ``Keep``; the producer moves the counts into the summary
    between batches. A finished job's rerun asks about a million ids that are all done:
    that path is one index look-up and one count.
    """

    def __init__(self, index: IdIndex, *, retry_failed: bool, shard: Shard | None) -> None:
        self._index = index
        self._get = index.get
        self._retry_failed = retry_failed
        self._shard = shard
        self.keep: Keep = self._keep if shard is None else self._keep_in_shard
        self.done = 0
        """Recorded ok before."""
        self.failed = 0
        """Recorded as failed before, not queued again."""
        self.duplicates = 0
        self.kept = 0
        self.requeued = 0
        """Recorded as failed before, queued again (``--retry-failed``); among ``kept``."""
        self.other_shards = 0

    @property
    def found(self) -> int:
        """Ids met in this job's shard (all, without ``--shard``)."""
        return self.done + self.failed + self.duplicates + self.kept

    @property
    def met(self) -> int:
        """Every id asked about, other shards' included."""
        return self.found + self.other_shards

    def _keep(self, item_id: str) -> bool:
        tag = self._get(item_id)
        if tag == RECORDED_OK:  # first: all a finished job's rerun meets
            self.done += 1
            return False
        return self._rare(item_id, tag)

    def _keep_in_shard(self, item_id: str) -> bool:
        if not self._shard.holds(item_id):  # type: ignore[union-attr]  # set with this method
            self.other_shards += 1
            return False
        return self._keep(item_id)

    def would_keep(self, item_id: str) -> bool:
        """Whether ``keep`` would keep the id, without counting it or tagging it
        (``run --watch`` looks at a file only if it would be sent)."""
        if self._shard is not None and not self._shard.holds(item_id):
            return False
        tag = self._get(item_id)
        return not tag or (tag == RECORDED_FAILED and self._retry_failed)

    def release(self, item_id: str) -> None:
        """Undo ``keep`` for an id kept but not sent after all (``run --watch``: a file
        still being written), so it is screened afresh once it is whole."""
        previous = self._index.set(item_id, 0)  # tag 0 reads as absent
        if previous == QUEUED_AGAIN:
            self._index.set(item_id, RECORDED_FAILED)
            self.requeued -= 1
        self.kept -= 1

    def _rare(self, item_id: str, tag: int) -> bool:
        if not tag:
            self._index.set(item_id, QUEUED)
            self.kept += 1
            return True
        if tag == RECORDED_FAILED:
            if not self._retry_failed:
                self.failed += 1
                return False
            self._index.set(item_id, QUEUED_AGAIN)
            self.requeued += 1
            self.kept += 1
            return True
        self.duplicates += 1  # QUEUED or QUEUED_AGAIN: met before in this run
        return False
