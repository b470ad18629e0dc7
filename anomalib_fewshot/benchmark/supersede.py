"""``--supersede``: re-run finished jobs, archive the rows they replace, resume after a kill.

The rules (``anomalib-fewshot benchmark -c GRID --only MODEL[:VARIANT] --supersede``):

- The selected jobs (``--only``, skip rules applied) are re-run even when they have an ``ok`` row; nothing else of
  the grid runs, and every other row of ``results.csv`` stays as it was (byte for byte when the columns agree).
- **State file.** ``<output>/supersede.json`` lists the keys still to re-run, the ``--only`` selectors and the
  archive file. It is written at the start when absent; a key leaves it when that job's new row is written to
  ``results.csv``; the file is deleted when no key is left. Running the same command again after a kill
  continues with the keys it still lists instead of starting over. A different ``--only`` selection while it
  exists is an error (finish that command, or delete the file to abandon it).
- **Archive.** A replaced row is appended, with ``superseded_utc`` (when it was replaced) and ``archived``
  (``replaced``) columns, to ``<archive_dir>/<output folder name>_<YYYY-MM-DD>.csv``; ``archive_dir`` is
  ``<output>/superseded`` (beside ``results.csv``) unless the grid YAML's ``archive_dir`` or
  ``run_grid(archive_dir=...)`` says otherwise, and the date is the day the supersede started (kept in the state
  file, so a resumed run appends to the same file). The old row is archived *before* the new one is written, so a
  kill never loses a row (at worst a job killed between the two writes is archived twice; an identical archived
  row is not appended again).
- **A failed or timed-out re-run never replaces an ok row.** The failed row is appended to the archive with
  ``archived`` = ``failed re-run, ok row kept``, the ok row stays in ``results.csv`` and the key stays in the
  state file, so the next run of the command retries it (delete ``supersede.json`` to keep the old row and stop).
  A re-run of a job whose row had already failed replaces that row either way.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomalib_fewshot.benchmark.store import KEY_FIELDS, append_rows, job_key, read_rows, upsert_rows
from anomalib_fewshot.components.io.atomic import atomic_write_json
from anomalib_fewshot.errors import InvalidArgumentError

STATE_NAME = "supersede.json"
#: The archive folder, relative to the grid's output folder, when neither the YAML nor the caller names one.
DEFAULT_ARCHIVE_NAME = "superseded"
REPLACED = "replaced"
FAILED_RERUN = "failed re-run, ok row kept"
ARCHIVE_FIELDS = ("superseded_utc", "archived")


def archive_path(archive_dir: Path, output: Path, day: str) -> Path:
    """``<archive_dir>/<output folder name>_<day>.csv`` (day as ``YYYY-MM-DD``)."""
    return Path(archive_dir) / f"{Path(output).resolve().name}_{day}.csv"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class SupersedeState:
    """The keys a ``--supersede`` run still has to re-run, kept in ``<output>/supersede.json``.

    Args:
        path: The state file.
        only: The ``--only`` selectors of the command that started it (sorted).
        keys: Job keys still to re-run, in grid order.
        archive: The archive CSV of this supersede.
        started_utc: When it started.

    """

    def __init__(self, path: Path, only: list[str], keys: list[tuple[str, ...]], archive: Path, started_utc: str):
        self.path, self.only, self.keys, self.archive, self.started_utc = path, only, keys, archive, started_utc

    @classmethod
    def start(
        cls, output: Path, only: list[str], keys: list[tuple[str, ...]], archive_dir: Path
    ) -> tuple[SupersedeState, bool]:
        """Resume the state in ``output`` or start one with ``keys``; return it and whether it was resumed.

        Raises:
            InvalidArgumentError: ``output`` holds the state of a supersede with other ``--only`` selectors.

        """
        path = Path(output) / STATE_NAME
        only = sorted(only)
        if path.is_file():
            data = json.loads(path.read_text())
            if sorted(data["only"]) != only:
                msg = (
                    f"{path}: an interrupted --supersede of --only {' '.join(data['only'])} still has "
                    f"{len(data['keys'])} job(s) to re-run; rerun that command to finish it, or delete the file "
                    "to abandon it (its archived rows stay archived)"
                )
                raise InvalidArgumentError(msg)
            wanted = set(keys)
            left = [key for key in map(_current_key, data["keys"]) if key in wanted]
            state = cls(path, only, left, Path(data["archive"]), data["started_utc"])
            state.save()
            return state, True
        started = _now()
        state = cls(path, only, list(keys), archive_path(archive_dir, output, started[:10]), started)
        state.save()
        return state, False

    def save(self) -> None:
        """Write the state file, or delete it when no key is left."""
        if not self.keys:
            self.path.unlink(missing_ok=True)
            return
        atomic_write_json(
            self.path,
            {
                "only": self.only,
                "keys": [list(k) for k in self.keys],
                "archive": str(self.archive),
                "started_utc": self.started_utc,
            },
        )

    def done(self, key: tuple[str, ...]) -> None:
        """``key`` has its new row: drop it (the file goes when the last key does)."""
        self.keys = [k for k in self.keys if k != key]
        self.save()


def archive_rows(archive: Path, rows: list[dict[str, Any]], reason: str) -> None:
    """Append ``rows`` to the archive CSV with ``superseded_utc`` and ``archived`` = ``reason``.

    A replaced row that is already archived unchanged (a resumed job killed between archiving and writing its
    new row) is not appended twice.
    """
    stamp = _now()
    if reason == REPLACED:
        seen = [_content(r) for r in read_rows(archive) if r.get("archived") == REPLACED]
        rows = [r for r in rows if _content(r) not in seen]
    if rows:
        append_rows(archive, [{"superseded_utc": stamp, "archived": reason, **row} for row in rows])


def _content(row: dict[str, Any]) -> dict[str, str]:
    """``row``'s non-empty cells as strings, without the archive's own columns (to compare rows read back)."""
    return {k: str(v) for k, v in row.items() if k not in ARCHIVE_FIELDS and v not in (None, "")}


def write_superseding_row(csv_path: Path, row: dict[str, Any], state: SupersedeState) -> bool:
    """Write a re-run's ``row`` into ``csv_path`` under the supersede rules; return whether it was written.

    The old row of the job (if any) is archived first, then replaced in place, then the key leaves the state. A
    failed re-run of a job whose row is ok is archived instead and written nowhere else (the key stays).
    """
    key = job_key(row)
    old = next((r for r in read_rows(csv_path) if job_key(r) == key), None)
    if row.get("status") != "ok" and old is not None and old.get("status") == "ok":
        archive_rows(state.archive, [row], FAILED_RERUN)
        print(
            f"--supersede: the re-run of {'/'.join(key)} ended {row.get('status')}; its ok row is kept "
            f"(the failed row is in {state.archive})"
        )
        return False
    if old is not None:
        archive_rows(state.archive, [old], REPLACED)
    upsert_rows(csv_path, [row], in_place=True)
    state.done(key)
    return True


def _current_key(saved: list[str]) -> tuple[str, ...]:
    """A key of a state file written before ``train_seed`` joined the key (it trained with its few-shot seed)."""
    if len(saved) == len(KEY_FIELDS) - 1:
        values = dict(zip([f for f in KEY_FIELDS if f != "train_seed"], saved, strict=True))
        return job_key(values)
    return tuple(saved)
