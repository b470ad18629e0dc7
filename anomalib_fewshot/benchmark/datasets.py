"""Dataset entries of benchmark grids and ``recommend --dataset``: one parser, one datamodule builder.

A dataset entry is one of two forms::

    {name: bottle, root: ../data/mvtec_ad, category: bottle}           # an anomalib datamodule read with root and
                                                                        # category (datamodule: MVTecAD, the default;
                                                                        # Visa, ...)
    {name: bracket, root: /data/bracket, normal_dir: good,              # anomalib's Folder: a user's own labelled
     abnormal_dir: defect, mask_dir: mask, normal_test_dir: good_test}  # images (mask_dir, normal_test_dir optional)

A ``Folder`` entry's folders are relative to its ``root``; relative roots (and a left-out root) to the working
directory, as every grid's roots. It is read with a fixed seed, and its *whole* test folder is evaluated: validation
is the test set itself (anomalib's ``Folder`` would otherwise keep half of it for validation; our thresholds never
come from validation). Without ``normal_test_dir``, anomalib holds :data:`HELD_OUT_RATIO` of the normal images out
for test (seed :data:`FOLDER_SEED`); those are never shots, and a development split is built from the rest. Without
``mask_dir`` the job computes image-level metrics only: its pixel columns stay empty (never 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib_fewshot.data.dev_split import IMAGE_SUFFIXES, normal_training_images
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError

#: The folders of a ``Folder`` entry (the first two required).
FOLDER_KEYS = ("normal_dir", "abnormal_dir", "mask_dir", "normal_test_dir")
#: anomalib's share of the normal images held out for test when a ``Folder`` has no ``normal_test_dir``.
HELD_OUT_RATIO = 0.2
#: The seed of that hold-out (fixed: the same images are test images in every job and every run).
FOLDER_SEED = 0


def is_folder(entry: dict[str, Any]) -> bool:
    """Whether ``entry`` is an anomalib ``Folder`` dataset (it names a ``normal_dir``, or ``datamodule: Folder``)."""
    return "normal_dir" in entry or entry.get("datamodule") == "Folder"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def parse_dataset(entry: Any, where: str, base: Path | None = None) -> dict[str, Any]:
    """Check a dataset entry and return it with absolute paths (``folder``: the Folder's folders, else ``None``).

    Args:
        entry: The YAML mapping.
        where: Names the entry in errors (e.g. ``"grid.yaml: dataset 2"``).
        base: Relative roots are taken from here (default: the working directory).

    Raises:
        InvalidArgumentError: A key is missing, or a folder holds no images (or masks that do not match).
        MissingFileError: A folder does not exist.

    """
    if not isinstance(entry, dict) or not entry.get("name"):
        msg = f"{where}: a dataset is a mapping with a name, got {entry!r}"
        raise InvalidArgumentError(msg)
    base = Path.cwd() if base is None else Path(base)
    name = str(entry["name"])
    if not is_folder(entry):
        missing = [key for key in ("root", "category") if not entry.get(key)]
        if missing:
            msg = (
                f"{where}: dataset {name} needs {missing} (or normal_dir and abnormal_dir: an anomalib Folder dataset)"
            )
            raise InvalidArgumentError(msg)
        return {**entry, "root": str((base / entry["root"]).resolve()), "folder": None}
    unknown = sorted(set(entry) - {"name", "root", "datamodule", "category", "dev_foreign", *FOLDER_KEYS})
    missing = [key for key in FOLDER_KEYS[:2] if not entry.get(key)]
    if unknown or missing:
        msg = (
            f"{where}: Folder dataset {name} takes name, root and {list(FOLDER_KEYS)} (normal_dir and abnormal_dir "
            f"required); {f'missing {missing}' if missing else f'unknown {unknown}'}"
        )
        raise InvalidArgumentError(msg)
    root = (base / entry.get("root", ".")).resolve()
    folders: dict[str, str | None] = {}
    for key in FOLDER_KEYS:
        if not entry.get(key):
            folders[key] = None
            continue
        folder = (root / entry[key]).resolve()
        if not folder.is_dir():
            msg = f"{where}: dataset {name}: {key} '{folder}' is not a folder"
            raise MissingFileError(msg)
        if not _images(folder):
            msg = f"{where}: dataset {name}: {key} '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)})"
            raise InvalidArgumentError(msg)
        folders[key] = str(folder)
    if folders["mask_dir"]:
        _check_masks(where, name, Path(folders["abnormal_dir"]), Path(folders["mask_dir"]))
    return {
        "name": name,
        "root": str(root),
        "category": str(entry.get("category") or name),
        "datamodule": "Folder",
        "folder": folders,
        **({"dev_foreign": entry["dev_foreign"]} if "dev_foreign" in entry else {}),
    }


def as_entry(dataset: dict[str, Any]) -> dict[str, Any]:
    """A parsed dataset back as a YAML entry (absolute paths) that :func:`parse_dataset` reads to the same."""
    folder = dataset.get("folder")
    entry = {k: v for k, v in dataset.items() if k != "folder" and (k != "datamodule" or not folder)}
    return {**entry, **{k: v for k, v in (folder or {}).items() if v}}


def _check_masks(where: str, name: str, abnormal: Path, masks: Path) -> None:
    """Check the masks as anomalib pairs them: sorted, one per defective image, each named after its image."""
    images, found = _images(abnormal), _images(masks)
    unmatched = [image.name for image, mask in zip(images, found, strict=False) if image.stem not in mask.stem]
    if len(images) != len(found) or unmatched:
        detail = f"{len(images)} images, {len(found)} masks"
        detail += f", first unmatched: {unmatched[0]}" if unmatched else ""
        msg = (
            f"{where}: dataset {name}: mask_dir '{masks}' must hold one mask per image of '{abnormal}', named after "
            f"it (image 003.png, mask 003.png or 003_mask.png); {detail}"
        )
        raise InvalidArgumentError(msg)


def has_masks(spec: dict[str, Any]) -> bool:
    """Whether the job's test images come with pixel masks (every dataset but a ``Folder`` without ``mask_dir``)."""
    folder = spec.get("folder")
    return not folder or bool(folder.get("mask_dir"))


def build_datamodule(spec: dict[str, Any], **kwargs: Any) -> Any:
    """The anomalib datamodule of a parsed dataset entry or a job spec (``kwargs``: batch sizes, workers, ...)."""
    import anomalib.data as anomalib_data

    folder = spec.get("folder")
    if folder:
        return anomalib_data.Folder(
            name=str(spec.get("dataset") or spec["name"]),
            normal_dir=folder["normal_dir"],
            abnormal_dir=folder["abnormal_dir"],
            mask_dir=folder.get("mask_dir"),
            normal_test_dir=folder.get("normal_test_dir"),
            test_split_mode="from_dir",
            test_split_ratio=HELD_OUT_RATIO,
            val_split_mode="same_as_test",
            seed=FOLDER_SEED,
            **kwargs,
        )
    return getattr(anomalib_data, spec.get("datamodule") or "MVTecAD")(
        root=spec["root"], category=spec["category"], **kwargs
    )


def training_images(spec: dict[str, Any]) -> list[str]:
    """The dataset's normal training images (sorted): the images shots are drawn from.

    MVTec layout: ``root/category/train/good``. ``Folder``: its normal images less those held out for test.

    Raises:
        InvalidArgumentError: Two training images share a file name (a development split keeps names).

    """
    if not spec.get("folder"):
        return normal_training_images(Path(spec["root"]), spec["category"])
    module = build_datamodule(spec, num_workers=0)
    module.setup()
    samples = module.train_data.samples
    images = sorted(samples.loc[samples["label_index"] == 0, "image_path"].astype(str))
    names = [Path(p).name for p in images]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        msg = f"dataset {spec.get('name')}: normal images share file names {repeated[:3]}; rename them"
        raise InvalidArgumentError(msg)
    return images
