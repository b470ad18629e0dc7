"""The benchmark's CSV store: rows of ``results.csv`` keyed by job, atomic rewrites, merges and archives.

A row is identified by its job key (``KEY_FIELDS``: model, variant, dataset, k_shot, seed, train_seed, split); rows
written before variants existed use their profile as the variant, rows written before the development split existed
are test-split rows, rows written before the training seed existed trained with their few-shot seed. A development
row and a test row of the same job are different rows (``--merge`` and ``--supersede`` never mix them). Every write
rewrites the whole file atomically (a crash never leaves a half-written CSV), with the union of the rows' columns as
the header.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from anomalib_fewshot.components.io.atomic import atomic_write_text
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError

#: ``seed`` picks the shots; ``train_seed`` the fit's randomness (the few-shot seed when not given).
KEY_FIELDS = ("model", "variant", "dataset", "k_shot", "seed", "train_seed", "split")
#: The split of rows written before ``split`` existed.
DEFAULT_SPLIT = "test"


def job_key(job: dict[str, Any]) -> tuple[str, ...]:
    """Identity of a job in results.csv.

    Rows without a variant use their profile; without a split, ``test``; without a training seed, their few-shot seed.
    """
    values = {
        **job,
        "variant": job.get("variant") or job.get("profile", ""),
        "train_seed": train_seed(job),
        "split": job.get("split") or DEFAULT_SPLIT,
    }
    return tuple(str(values[f]) for f in KEY_FIELDS)


def job_row(job: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The start of ``job``'s results.csv row: its key fields and profile, then ``fields`` (e.g. status, error)."""
    return {**{f: job.get(f) for f in KEY_FIELDS}, "train_seed": train_seed(job), "profile": job["profile"], **fields}


def train_seed(job: dict[str, Any]) -> Any:
    """The job's training seed: its ``train_seed``, else (a row written before it existed) its few-shot seed."""
    return job["seed"] if job.get("train_seed") in (None, "") else job["train_seed"]


def name_parts(job: dict[str, Any]) -> tuple[str, ...]:
    """The job key without what most jobs share: a test split, a training seed equal to the few-shot seed.

    Labels and job folders are built from it, so those of jobs recorded before either field existed keep their names.
    """
    key = dict(zip(KEY_FIELDS, job_key(job), strict=True))
    if key["split"] == DEFAULT_SPLIT:
        del key["split"]
    if key["train_seed"] == key["seed"]:
        del key["train_seed"]
    else:
        key["train_seed"] = f"t{key['train_seed']}"
    return tuple(key.values())


def job_label(job: dict[str, Any]) -> str:
    """The job key joined by ``/`` for reports and logs (:func:`name_parts`: ``.../seed/t<train seed>/split``)."""
    return "/".join(name_parts(job))


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """Rows of results.csv (empty when missing)."""
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def write_rows(csv_path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``rows`` (``None`` as empty cells; header: every column in order of first appearance) atomically."""
    rows = [{k: ("" if v is None else v) for k, v in row.items()} for row in rows]
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(csv_path, buffer.getvalue())


def upsert_row(csv_path: Path, row: dict[str, Any]) -> None:
    """Add ``row`` (replacing an earlier row of the same job) by rewriting the CSV atomically."""
    upsert_rows(csv_path, [row])


def upsert_rows(csv_path: Path, new_rows: list[dict[str, Any]], in_place: bool = False) -> None:
    """Add ``new_rows`` (each replacing an earlier row of the same job) in one atomic rewrite of the CSV.

    Args:
        csv_path: The CSV (created when missing).
        new_rows: Rows to write; a row replaces the row of the same job key.
        in_place: False (the runner's default) drops the replaced rows and appends ``new_rows`` at the end; True
            writes a replacing row where the row it replaces was (new jobs still go to the end), so a diff of the
            CSV shows only the replaced lines (``--supersede``).

    """
    by_key = {job_key(row): row for row in new_rows}
    old = read_rows(csv_path)
    if in_place:
        placed = [by_key.get(job_key(r), r) for r in old]
        present = {job_key(r) for r in old}
        rows = [*placed, *(row for key, row in by_key.items() if key not in present)]
    else:
        rows = [*(r for r in old if job_key(r) not in by_key), *new_rows]
    write_rows(csv_path, rows)


def append_rows(csv_path: Path, new_rows: list[dict[str, Any]]) -> None:
    """Append ``new_rows`` to the CSV (no key: every row is kept) in one atomic rewrite; new columns are added."""
    write_rows(csv_path, [*read_rows(csv_path), *new_rows])


def finished_keys(
    rows: list[dict[str, str]], jobs: list[dict[str, Any]], expected: dict[tuple[str, ...], str]
) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """Keys of ``jobs`` finished ok, and of those that failed as expected (both are not run again)."""
    status = {job_key(r): r.get("status") for r in rows}
    keys = {job_key(job) for job in jobs}
    ok = {key for key in keys if status.get(key) == "ok"}
    failed = {key for key in keys & set(expected) if status.get(key) not in (None, "ok")}
    return ok, failed


def merge_rows(csv_path: Path, sources: list[Path], jobs: list[dict[str, Any]]) -> int:
    """Import rows of other ``results.csv`` files that belong to ``jobs``; return how many were imported.

    A row belongs to a job when its key and profile are the job's. It is imported when this CSV has no row for
    the job, or has a failed one and the source's row is ok; rows already here are never replaced otherwise.
    """
    profiles = {job_key(job): str(job.get("profile", "")) for job in jobs}
    current = {job_key(r): r.get("status") for r in read_rows(csv_path)}
    imported: dict[tuple[str, ...], dict[str, str]] = {}
    for source in sources:
        if not Path(source).is_file():
            msg = f"--merge: results file '{source}' not found"
            raise MissingFileError(msg)
        try:
            rows = read_rows(Path(source))
            keyed = [(job_key(row), row) for row in rows]
        except (KeyError, csv.Error) as exc:
            msg = f"--merge: '{source}' is not a benchmark results.csv ({type(exc).__name__}: {exc})"
            raise InvalidArgumentError(msg) from exc
        for key, row in keyed:
            if profiles.get(key) != row.get("profile", ""):
                continue
            here = current.get(key)
            if here is None or (here != "ok" and row.get("status") == "ok"):
                imported[key] = row
                current[key] = row.get("status")
    if imported:
        upsert_rows(csv_path, list(imported.values()))  # one rewrite, not one per row
    return len(imported)
