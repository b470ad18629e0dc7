"""Deployment helpers that turn whatever a camera or file share delivers into a valid model input.

Anomalib's :class:`~anomalib.deploy.OpenVINOInferencer` reads files with ``Image.open(path).convert("RGB")``
(16-bit PNGs become almost white), passes a grayscale or RGBA array on to OpenVINO (a shape error from inside
the runtime), guesses the scale of arrays from their maximum and scores NaN pixels silently.
:class:`FewShotInferencer` is a thin wrapper that converts or rejects those inputs first, with an error that
names the file or argument; everything else is anomalib's inferencer, unchanged.

It also chooses how OpenVINO runs: ``precision`` (``f32``, the default, or ``bf16``; an INT8 model is its own
export, ``--compression_type INT8_PTQ``, whose floating-point layers follow ``precision``), ``mode`` (``latency``
for one image at a time, ``throughput`` for folders and streams through :meth:`FewShotInferencer.predict_stream`,
which keeps several inference requests in flight) and where OpenVINO caches compiled models (``cache_dir``;
anomalib's inferencer always writes ``./openvino_cache`` into the working directory).

Example:
    >>> from anomalib_fewshot.deploy import FewShotInferencer
    >>> inferencer = FewShotInferencer("weights/openvino/model.xml")  # doctest: +SKIP
    >>> inferencer.predict("part_16bit.png").pred_score  # doctest: +SKIP
    >>> stream = FewShotInferencer("weights/openvino/model.xml", mode="throughput")  # doctest: +SKIP
    >>> for path, result in stream.predict_stream(sorted(Path("incoming").glob("*.png"))):  # doctest: +SKIP
    ...     print(path, getattr(result, "pred_score", result))  # a result, or the ImageReadError naming the file

"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.data import NumpyImageBatch
from anomalib.deploy import OpenVINOInferencer
from PIL import Image

from anomalib_fewshot.components.io.images import ImageReadError, check_image, read_image, scan_images, to_rgb_tensor
from anomalib_fewshot.components.io.inputs import InputImageError, check_input_images
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError

__all__ = [
    "DEFAULT_MAX_SIDE",
    "MODES",
    "PRECISIONS",
    "FewShotInferencer",
    "ImageReadError",
    "InputImageError",
    "check_image",
    "default_cache_dir",
    "load_image_safely",
    "scan_images",
    "to_model_input",
]

#: Longer side above which :class:`FewShotInferencer` shrinks an image before inference (the exported graph
#: resizes to the model's input size anyway; a 5000x4000 float frame would cost ~240 MB per copy).
DEFAULT_MAX_SIDE = 1024

_MODEL_SUFFIXES = (".xml", ".bin", ".onnx")
#: Floating-point precisions OpenVINO may run in (this project's CPUs with AVX-512 bf16 default to bf16).
PRECISIONS = ("f32", "bf16")
#: OpenVINO performance hints: one image at a time, or several requests in flight for folders and streams.
MODES = ("latency", "throughput")
#: Environment variable that moves the compiled-model cache.
CACHE_ENV = "ANOMALIB_FEWSHOT_CACHE"


def default_cache_dir() -> Path:
    """Where compiled OpenVINO models are cached: ``$ANOMALIB_FEWSHOT_CACHE``, else the user's cache folder.

    The user's cache folder is ``$XDG_CACHE_HOME/anomalib_fewshot/openvino`` (``~/.cache/...`` when unset), or
    ``%LOCALAPPDATA%/anomalib_fewshot/openvino`` on Windows; never the working directory.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "anomalib_fewshot" / "openvino"


def load_image_safely(path: str | Path, max_side: int | None = DEFAULT_MAX_SIDE) -> torch.Tensor:
    """Read an image file as a ``(3, H, W)`` float tensor in ``[0, 1]`` (see :func:`read_image`)."""
    return read_image(path, max_side=max_side)


def _array_to_tensor(array: np.ndarray, where: str) -> torch.Tensor:
    """``(H, W)``, ``(H, W, C)``, ``(C, H, W)`` or batched arrays to float ``(B, C, H, W)`` in ``[0, 1]``."""
    if array.dtype == np.uint8:
        tensor = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif array.dtype == np.uint16:
        tensor = torch.from_numpy(array.astype(np.float32) / 65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    else:
        msg = f"{where}: unsupported array dtype {array.dtype}; pass uint8, uint16 or float images in [0, 1]"
        raise InputImageError(msg)
    if tensor.ndim == 2:  # grayscale H x W
        tensor = tensor[None]
    elif tensor.ndim == 3 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4):
        tensor = tensor.permute(2, 0, 1)  # H x W x C
    elif tensor.ndim == 4 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[1] not in (1, 3, 4):
        tensor = tensor.permute(0, 3, 1, 2)  # B x H x W x C
    return tensor


def to_model_input(
    image: str | Path | Image.Image | np.ndarray | torch.Tensor,
    max_side: int | None = DEFAULT_MAX_SIDE,
    where: str = "image",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Convert one image (or a batch) to the ``(B, 3, H, W)`` float ``[0, 1]`` tensor the models expect.

    Files and PIL images of any mode are converted to RGB (16-bit scaled by 65535, alpha dropped); ``uint8``
    and ``uint16`` arrays are scaled; one-channel inputs are repeated to RGB and a fourth (alpha) channel is
    dropped; images whose longer side exceeds ``max_side`` are shrunk (antialiased, aspect kept). With ``size``
    every image is resized (antialiased) to exactly that ``(H, W)``, as the model's eager pre-processor does.

    Raises:
        ImageReadError: an unreadable file (missing, empty, truncated, not an image).
        InputImageError: a wrong shape, dtype, NaN/inf or values outside ``[0, 1]``.

    """
    if isinstance(image, (str, Path)):
        tensor = read_image(image, max_side=max_side)[None]
        where = f"'{image}'"
    elif isinstance(image, Image.Image):
        tensor = to_rgb_tensor(image)[None]
    elif isinstance(image, np.ndarray):
        tensor = _array_to_tensor(image, where)
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        tensor = _array_to_tensor(tensor.numpy(), where) if not tensor.is_floating_point() else tensor.float()
    else:
        msg = f"{where}: expected a file path, PIL image, numpy array or tensor, got {type(image).__name__}"
        raise InputImageError(msg)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    elif tensor.ndim == 4 and tensor.shape[1] == 4:
        tensor = tensor[:, :3]
    check_input_images(tensor, where=where)
    if size is not None and tuple(tensor.shape[-2:]) != tuple(size):
        tensor = torch.nn.functional.interpolate(tensor, size=tuple(size), mode="bilinear", antialias=True)
    elif max_side is not None and max(tensor.shape[-2:]) > max_side:
        scale = max_side / max(tensor.shape[-2:])
        size = (max(1, round(tensor.shape[-2] * scale)), max(1, round(tensor.shape[-1] * scale)))
        tensor = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True)
    return tensor.clamp(0, 1).contiguous()


class FewShotInferencer(OpenVINOInferencer):
    """Anomalib's :class:`OpenVINOInferencer` with input conversion and clear errors (see module docstring).

    Args:
        path: the exported ``model.xml`` (with its ``model.bin``) or ``model.onnx``.
        device: OpenVINO device.
        config: OpenVINO compile config; default keeps f32 precision (some CPUs default to bf16).
        max_side: images with a longer side are shrunk before inference; ``None`` keeps every size.
        input_size: the model's input ``(H, W)`` (its ``image_size``): when given, every image is resized to it
            with antialiasing, exactly as in eager inference (the exported graph resizes without antialiasing,
            which aliases a large frame).
        precision: ``f32`` or ``bf16`` for the floating-point layers (:data:`PRECISIONS`).
        mode: ``latency`` or ``throughput`` (:data:`MODES`, OpenVINO's performance hint).
        cache_dir: compiled-model cache folder; ``None``: :func:`default_cache_dir`; ``False``: no cache.

    ``config`` entries override those set from ``precision`` and ``mode``.

    """

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        config: dict[str, Any] | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        input_size: int | tuple[int, int] | None = None,
        precision: str = "f32",
        mode: str = "latency",
        cache_dir: str | Path | bool | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            msg = f"precision {precision!r}: expected one of {', '.join(PRECISIONS)} (INT8 is its own exported model)"
            raise InvalidArgumentError(msg)
        if mode not in MODES:
            msg = f"mode {mode!r}: expected one of {', '.join(MODES)}"
            raise InvalidArgumentError(msg)
        self.mode = mode
        self.cache_dir = None if cache_dir is False else default_cache_dir() if cache_dir in (None, True) else cache_dir
        path = Path(path)
        if path.suffix not in _MODEL_SUFFIXES:
            msg = f"model '{path}': expected an exported .xml (OpenVINO) or .onnx file, got '{path.suffix}'"
            raise InvalidArgumentError(msg)
        needed = [path.with_suffix(".xml"), path.with_suffix(".bin")] if path.suffix != ".onnx" else [path]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            msg = f"model file(s) not found: {missing}; export one with `anomalib export --export_type openvino`"
            raise MissingFileError(msg)
        self.max_side = max_side
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        try:
            settings = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": mode.upper(), **(config or {})}
            super().__init__(path, device=device, config=settings)
        except RuntimeError as exc:
            msg = f"model '{path}' could not be loaded by OpenVINO ({exc}); re-export it"
            raise InvalidArgumentError(msg) from exc

    def load_model(self, path: str | Path | tuple[bytes, bytes]) -> tuple[Any, Any, Any]:
        """Anomalib's loader, with the compiled-model cache in ``cache_dir`` (never the working directory)."""
        import openvino as ov

        core = ov.Core()
        model = core.read_model(path[0], weights=path[1]) if isinstance(path, tuple) else core.read_model(path)
        if self.cache_dir is not None:
            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        compiled = core.compile_model(model=model, device_name=self.device, config=self.config)
        return compiled.input(0), compiled.output(0), compiled

    def _input(self, image: str | Path | Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
        """``(B, 3, H, W)`` float32 in ``[0, 1]`` (converted or rejected by :func:`to_model_input`)."""
        return to_model_input(image, max_side=self.max_side, size=self.input_size).numpy()

    def predict(self, image: str | Path | Image.Image | np.ndarray | torch.Tensor) -> NumpyImageBatch:
        """Convert (or reject) ``image`` with :func:`to_model_input`, then run anomalib's inferencer on it."""
        array = self._input(image)
        # the array is already (B, 3, H, W) in [0, 1]: skip the base class's scale and layout guesses
        predictions = self.model({self.input_blob.any_name: array})
        return NumpyImageBatch(image=array, **self.post_process(predictions))

    def predict_stream(
        self, images: Iterable[Any], requests: int = 0
    ) -> Iterator[tuple[Any, NumpyImageBatch | ImageReadError | InputImageError]]:
        """Score a folder's files or a camera's frames with several inference requests in flight.

        Images are read while earlier ones are inferred (OpenVINO's ``AsyncInferQueue``); results come back in
        input order, each with its input. An image that cannot be read or is not a valid image yields its error
        (naming the file) in place of a result, and the stream goes on. Use ``mode="throughput"`` so that OpenVINO
        sizes its streams for this.

        Args:
            images: file paths, PIL images, arrays or tensors (any iterable, consumed once).
            requests: inference requests in flight; ``0`` lets OpenVINO choose (its optimal number).

        Yields:
            ``(image, result)`` with ``result`` a :class:`NumpyImageBatch` or the input's error.

        """
        import openvino as ov

        queue = ov.AsyncInferQueue(self.model, requests)
        done: dict[int, dict[str, np.ndarray]] = {}

        def finished(request: Any, index: int) -> None:  # runs on OpenVINO's thread: copy before the reuse
            done[index] = {next(iter(port.get_names())): np.copy(value) for port, value in request.results.items()}

        queue.set_callback(finished)
        pending: list[tuple[int, Any, np.ndarray | Exception]] = []

        def ready(wait: bool) -> Iterator[tuple[Any, NumpyImageBatch | ImageReadError | InputImageError]]:
            while pending:
                index, item, array = pending[0]
                if isinstance(array, np.ndarray):
                    if index not in done:
                        if not wait:
                            return
                        queue.wait_all()
                    pending.pop(0)
                    yield item, NumpyImageBatch(image=array, **done.pop(index))
                else:
                    pending.pop(0)
                    yield item, array

        for index, item in enumerate(images):
            try:
                array: np.ndarray | Exception = self._input(item)
            except (ImageReadError, InputImageError) as exc:
                array = exc
            else:
                queue.start_async({self.input_blob.any_name: array}, userdata=index)
            pending.append((index, item, array))
            yield from ready(wait=False)
        yield from ready(wait=True)
