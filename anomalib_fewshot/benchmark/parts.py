"""``anomalib-fewshot fit-parts PARTS.yaml``: one few-shot model per part (fit, check, export) and a catalogue.

    anomalib-fewshot fit-parts parts.yaml [--output OUT] [--ray [ADDRESS] | --local]

``parts.yaml``::

    output: parts_out                       # default: <the YAML's folder>/<its stem>_out
    defaults: {model: Pcsnet, k_shot: 1}    # per part overridable: model, profile, overrides, k_shot, seed, int8,
                                            # threads, memory_gb, timeout_s (profile: the model's lite profile)
    executor: {ray: {cpus_per_job: 2}}      # optional: parts as Ray tasks (as a benchmark grid's executor)
    parts:
      - {name: bracket, images: /data/bracket/good}
      - {name: gasket, images: /data/gasket/good, model: Fdsl, k_shot: 4, int8: true}
      - name: lid                           # test: optional labelled images (an anomalib Folder's folders,
        images: /data/lid/good              # relative to the YAML's folder or the test's root; masks optional)
        test: {abnormal_dir: /data/lid/defect, normal_test_dir: /data/lid/good_test, mask_dir: /data/lid/mask}

Each part is one job of the benchmark runner (:func:`.runner.run_job`, in its own process, locally or as a Ray
task): the part's good images are laid out as a one-category dataset (``OUT/parts/<name>/data``, hard links or
copies), its development split is built (synthetic defects on images that are never shots:
:mod:`anomalib_fewshot.data.dev_split`), the model is fitted on ``k_shot`` shots, checked on the development split
(image AUROC, pixel AUROC, AUPRO, and the OK/NG decision at the threshold the model ships: ``image_fpr`` = good
images rejected, ``image_tpr`` = synthetic defects caught) and exported to OpenVINO (``int8: true``: also anomalib's
``INT8_PTQ`` export, calibrated on the shots; our models only). A part with labelled images (``test:``; good test
images apart from ``images`` required, masks optional) is also scored on them: the ``test_*`` columns (image AUROC,
pixel AUROC and AUPRO with masks, and the decision at the shipped threshold on real defects), never used to fit or
calibrate anything. One row per part goes to ``OUT/parts.csv`` (:data:`CATALOGUE_FIELDS`), written by this process
alone.

Running the command again skips the parts whose row is ``ok`` with the same images (a SHA-256 of the files) and the
same settings, and fits again a part whose images or settings changed. A bad part (a missing or unreadable image
folder, too few images, an unknown model) is a ``failed`` row naming the problem; the other parts go on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from anomalib_fewshot.errors import AnomalibFewshotError, InvalidArgumentError, MissingFileError

#: Columns of ``parts.csv``, in order.
CATALOGUE_FIELDS = (
    "part", "status", "model", "profile", "k_shot", "seed", "int8", "images", "n_images", "shots", "image_auroc",
    "pixel_auroc", "aupro", "image_threshold", "image_fpr", "image_tpr", "image_f1", "fit_s", "openvino_ms",
    "test_n", "test_image_auroc", "test_pixel_auroc", "test_aupro", "test_image_fpr", "test_image_tpr",
    "test_image_f1", "export", "export_int8", "images_sha256", "settings", "ray_node", "finished_utc", "error",
)  # fmt: skip
#: What a part may set (and ``defaults`` may give every part).
PART_KEYS = ("model", "profile", "overrides", "k_shot", "seed", "int8", "threads", "memory_gb", "timeout_s", "test")
DEFAULTS: dict[str, Any] = {"model": "Pcsnet", "k_shot": 1, "seed": 0, "int8": False, "timeout_s": 3 * 3600}
#: The development split's size per part (synthetic defective images, and as many good ones at most).
DEV_CAP = 100
#: Good images a part needs beyond its shots (the development split's good images).
MIN_DEV_IMAGES = 20
CATEGORY = "part"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def load_parts(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read ``parts.yaml``: the file's settings and one entry per part (defaults applied, names checked).

    Raises:
        MissingFileError: No such file.
        InvalidArgumentError: Not a parts file, an unknown key, a bad or repeated part name.

    """
    from anomalib_fewshot.benchmark.grid import read_config

    config = read_config(path, "parts file", "parts")
    entries = config["parts"]
    if not isinstance(entries, list) or not entries:
        msg = f"{path}: not a parts file ('parts:' must be a non-empty list of {{name, images}})"
        raise InvalidArgumentError(msg)
    defaults = {**DEFAULTS, **(config.get("defaults") or {})}
    unknown = sorted(set(defaults) - set(PART_KEYS))
    if unknown:
        msg = f"{path}: defaults take {list(PART_KEYS)}, got {unknown}"
        raise InvalidArgumentError(msg)
    parts, names = [], set()
    for index, entry in enumerate(entries):
        name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
        if not _NAME.match(name) or name in names:
            problem = "repeated" if name in names else "missing or not a plain name (letters, digits, _ . -)"
            msg = f"{path}: part {index + 1}: its name {name!r} is {problem}"
            raise InvalidArgumentError(msg)
        names.add(name)
        unknown = sorted(set(entry) - {"name", "images", *PART_KEYS})
        if unknown or "images" not in entry:
            msg = f"part {name} in {path}: a part takes name, images and {list(PART_KEYS)}; got {sorted(entry)}"
            raise InvalidArgumentError(msg)
        images = Path(entry["images"])
        images = images if images.is_absolute() else (path.parent / images)
        parts.append({**defaults, **entry, "images": str(images.resolve()), "yaml_dir": str(path.parent.resolve())})
    return config, parts


def labelled_data(part: dict[str, Any]) -> dict[str, Any] | None:
    """The part's ``test:`` as a parsed anomalib ``Folder`` (:mod:`.datasets`), or ``None`` without one.

    Raises:
        InvalidArgumentError: Not a mapping, no ``normal_test_dir`` (the part's own good images are shots and
            development images, never test images), or a folder that holds no images.
        MissingFileError: A folder does not exist.

    """
    from anomalib_fewshot.benchmark.datasets import parse_dataset

    test = part.get("test")
    if test is None:
        return None
    where = f"part {part['name']}: test"
    if not isinstance(test, dict) or not test.get("normal_test_dir"):
        msg = (
            f"{where}: a mapping of an anomalib Folder's folders with abnormal_dir and normal_test_dir (good test "
            f"images apart from the part's images; optional mask_dir), got {test!r}"
        )
        raise InvalidArgumentError(msg)
    entry = {"root": part.get("yaml_dir", "."), **test, "name": part["name"], "normal_dir": part["images"]}
    return parse_dataset(entry, where)


def images_sha256(images: list[str]) -> str:
    """SHA-256 over the images' names and bytes, in name order (a changed, added or removed image changes it)."""
    digest = hashlib.sha256()
    for image in sorted(images):
        digest.update(Path(image).name.encode() + b"\0")
        with Path(image).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def settings_key(part: dict[str, Any]) -> str:
    """The part's settings that shape its model (a change fits it again)."""
    keys = ("model", "profile", "overrides", "k_shot", "seed", "int8", "test")
    return json.dumps({k: part.get(k) for k in keys}, sort_keys=True, separators=(",", ":"))


def check_images(part: dict[str, Any]) -> list[str]:
    """The part's images, each opened and verified; raise naming the folder or the first unreadable file.

    Raises:
        MissingFileError: The folder is missing.
        InvalidArgumentError: Too few images for ``k_shot`` and the development split, or an unreadable image.

    """
    from PIL import Image, UnidentifiedImageError

    from anomalib_fewshot.components.lifecycle.fewshot import list_images

    folder = Path(part["images"])
    if not folder.is_dir():
        msg = f"image folder '{folder}' not found"
        raise MissingFileError(msg)
    found = list_images(folder)
    needed = int(part["k_shot"]) + MIN_DEV_IMAGES
    if len(found) < needed:
        msg = (
            f"'{folder}' holds {len(found)} images: k_shot = {part['k_shot']} needs at least k_shot + "
            f"{MIN_DEV_IMAGES} = {needed} good images (the shots, and development images that are never shots)"
        )
        raise InvalidArgumentError(msg)
    for image in found:
        try:
            with Image.open(image) as handle:
                handle.verify()
        except (OSError, UnidentifiedImageError) as exc:
            msg = f"image '{image}' cannot be read ({type(exc).__name__}: {exc})"
            raise InvalidArgumentError(msg) from exc
    return found


def part_job(part: dict[str, Any], output: Path, found: list[str]) -> dict[str, Any]:
    """Lay the part's images out, build its development split and return its job (as a grid's, on that split)."""
    import yaml

    from anomalib_fewshot.benchmark.dev import ensure_dev_splits, on_dev_split
    from anomalib_fewshot.benchmark.grid import load_grid
    from anomalib_fewshot.benchmark.recommend import BASELINE, _place
    from anomalib_fewshot.models import REGISTRY

    model = part["model"]
    if model != BASELINE and model not in REGISTRY:
        msg = f"model {model!r}: choose among {[*REGISTRY, BASELINE]}"
        raise InvalidArgumentError(msg)
    if part.get("int8") and model == BASELINE:
        msg = f"int8: {BASELINE}'s INT8 step calibrates on validation images; fit-parts quantises our models only"
        raise InvalidArgumentError(msg)
    folder = output / "parts" / part["name"]
    shutil.rmtree(folder, ignore_errors=True)  # images or settings changed: a new layout and development split
    _place(found, folder / "data" / CATEGORY / "train" / "good")
    entry: dict[str, Any] = {"model": model}
    if model != BASELINE:
        entry["profile"] = part.get("profile") or REGISTRY[model].lite_profile
        entry["overrides"] = part.get("overrides") or {}
        if entry["overrides"]:  # the grid would name the variant by the whole overrides: too long for a folder
            digest = hashlib.sha256(json.dumps(entry["overrides"], sort_keys=True).encode()).hexdigest()[:8]
            entry["variant"] = f"{entry['profile']}+{digest}"
    entry.update({k: part[k] for k in ("threads", "memory_gb", "timeout_s") if part.get(k)})
    seed, k_shot = int(part["seed"]), int(part["k_shot"])
    config = {
        "output": str(folder / "results"),
        "jobs_dir": str(output / "jobs"),
        "evaluate_on": "dev",
        "dev_cache": str(folder / "dev"),
        "dev_split": {"cap": DEV_CAP, "seed": seed, "exclude_seeds": [seed], "exclude_max_k": k_shot},
        "speed": True,
        "grid": {
            "models": [entry],
            "datasets": [{"name": part["name"], "root": str(folder / "data"), "category": CATEGORY}],
            "k_shot": [k_shot],
            "seeds": [seed],
        },
    }
    grid_path = folder / "grid.yaml"
    grid_path.write_text(yaml.safe_dump(config, sort_keys=False))
    _, (job,) = load_grid(grid_path)
    labelled = labelled_data(part)
    roots = ensure_dev_splits(config, {part["name"]})
    return {**on_dev_split(job, roots), "deploy_int8": bool(part.get("int8")), "labelled": labelled}


def catalogue_row(part: dict[str, Any], job: dict[str, Any] | None, row: dict[str, Any], jobs_dir: Path) -> dict:
    """The part's ``parts.csv`` row from its job's row (exports found in the job's folder)."""
    from anomalib_fewshot.benchmark.grid import job_work_dir
    from anomalib_fewshot.benchmark.job import DEPLOY_INT8_DIR

    out = {field: row.get(field, "") for field in CATALOGUE_FIELDS}
    out.update({"part": part["name"], "model": part["model"], "profile": (job or {}).get("profile", ""),
                "k_shot": part["k_shot"], "seed": part["seed"], "int8": bool(part.get("int8")),
                "images": part["images"], "settings": settings_key(part)})  # fmt: skip
    out["status"] = row.get("status", "failed")
    if job is not None and out["status"] == "ok":
        work = job_work_dir(jobs_dir, job)
        exports = sorted((work / "export").rglob("*.xml"))
        out["export"] = str(exports[-1]) if exports else ""
        int8 = sorted((work / DEPLOY_INT8_DIR).rglob("*.xml")) if part.get("int8") else []
        out["export_int8"] = str(int8[-1]) if int8 else ""
    return out


def fit_parts(path: Path, output: Path | None = None, ray: bool | str | None = None) -> Path:
    """Fit, check and export every part of ``path`` not already in the catalogue; return ``parts.csv``.

    Args:
        path: The parts YAML.
        output: The output folder (default: the YAML's ``output``, relative to the YAML's folder, else
            ``<its folder>/<its stem>_out``).
        ray: As :func:`.runner.run_grid`'s: None follows the YAML's ``executor``, False runs here, True or an
            address runs the parts as Ray tasks.

    """
    from anomalib_fewshot.benchmark.ray_executor import executor_settings, run_on_ray
    from anomalib_fewshot.benchmark.runner import run_job
    from anomalib_fewshot.benchmark.store import job_key, read_rows, write_rows

    config, parts = load_parts(path)
    settings = executor_settings(path, config, ray)
    if output is None:  # the YAML's output is relative to the YAML's folder
        output = path.parent / (config.get("output") or f"{path.stem}_out")
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    catalogue = output / "parts.csv"
    jobs_dir = output / "jobs"
    rows = {row["part"]: row for row in read_rows(catalogue)}

    def record(part: dict[str, Any], job: dict[str, Any] | None, row: dict[str, Any]) -> None:
        rows[part["name"]] = catalogue_row(part, job, row, jobs_dir)
        ordered = [rows[p["name"]] for p in parts if p["name"] in rows]
        ordered += [r for name, r in rows.items() if name not in {p["name"] for p in parts}]
        write_rows(catalogue, ordered)
        print(f"part {part['name']}: {row.get('status')}{' - ' + row['error'] if row.get('error') else ''}")

    jobs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for part in parts:
        previous = rows.get(part["name"], {})
        try:
            found = check_images(part)
            digest = images_sha256(found)
            if (
                previous.get("status") == "ok"
                and previous.get("images_sha256") == digest
                and (previous.get("settings") == settings_key(part))
            ):
                print(f"part {part['name']}: finished (same images and settings), skipped")
                continue
            job = part_job(part, output, found)
        except AnomalibFewshotError as exc:
            record(part, None, {"status": "failed", "error": str(exc)})
            continue
        jobs.append(({**part, "n_images": len(found), "images_sha256": digest}, job))

    def finish(part: dict[str, Any], job: dict[str, Any], row: dict[str, Any]) -> None:
        row = {**row, "n_images": part["n_images"], "images_sha256": part["images_sha256"]}
        if row.get("status") != "ok":
            row["error"] = row.get("error") or row.get("status")
        record(part, job, row)

    if settings is not None:
        by_key = {job_key(job): (part, job) for part, job in jobs}
        run_on_ray(
            run_job, [job for _, job in jobs], jobs_dir, settings, lambda row: finish(*by_key[job_key(row)], row),
            total=len(parts), done=len(parts) - len(jobs),
        )  # fmt: skip
    else:
        for part, job in jobs:
            finish(part, job, run_job(job, jobs_dir, float(job["timeout_s"])))
    return catalogue


def main(argv: list[str] | None = None) -> int:
    """``anomalib-fewshot fit-parts PARTS.yaml [--output OUT] [--ray [ADDRESS] | --local]``."""
    from anomalib_fewshot.benchmark.ray_executor import add_executor_flags, executor_choice
    from anomalib_fewshot.quiet import add_verbose_flag

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="anomalib-fewshot fit-parts", description=__doc__.splitlines()[0])
    parser.add_argument("parts", type=Path, help="the parts YAML (see the module doc)")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default: the YAML's output)")
    add_executor_flags(parser, "the parts", "parts")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    catalogue = fit_parts(args.parts, args.output, ray=executor_choice(args))
    print(f"catalogue: {catalogue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
