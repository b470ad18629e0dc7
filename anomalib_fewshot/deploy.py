"""Deployment helpers that turn whatever a camera or file share delivers into a valid model input.

Anomalib's :class:`~anomalib.deploy.OpenVINOInferencer` reads files with ``Image.open(path).convert("RGB")``
(16-bit PNGs become almost white), passes a grayscale or RGBA array on to OpenVINO (a shape error from inside
the runtime), guesses the scale of arrays from their maximum and scores NaN pixels silently.
:class:`FewShotInferencer` is a thin wrapper that converts or rejects those inputs first, with an error that
names the file or argument; everything else is anomalib's inferencer, unchanged.

Example:
    >>> from anomalib_fewshot.deploy import FewShotInferencer
    >>> inferencer = FewShotInferencer("weights/openvino/model.xml")  # doctest: +SKIP
    >>> inferencer.predict("part_16bit.png").pred_score  # doctest: +SKIP

"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.data import NumpyImageBatch
from anomalib.deploy import OpenVINOInferencer
from PIL import Image

from anomalib_fewshot.components.images import ImageReadError, check_image, read_image, scan_images, to_rgb_tensor
from anomalib_fewshot.components.inputs import InputImageError, check_input_images
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError

__all__ = [
    "DEFAULT_MAX_SIDE",
    "FewShotInferencer",
    "ImageReadError",
    "InputImageError",
    "check_image",
    "load_image_safely",
    "scan_images",
    "to_model_input",
]

#: Longer side above which :class:`FewShotInferencer` shrinks an image before inference (the exported graph
#: resizes to the model's input size anyway; a 5000x4000 float frame would cost ~240 MB per copy).
DEFAULT_MAX_SIDE = 1024

_MODEL_SUFFIXES = (".xml", ".bin", ".onnx")


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

    """

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        config: dict[str, Any] | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        input_size: int | tuple[int, int] | None = None,
    ) -> None:
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
            super().__init__(path, device=device, config=config or {"INFERENCE_PRECISION_HINT": "f32"})
        except RuntimeError as exc:
            msg = f"model '{path}' could not be loaded by OpenVINO ({exc}); re-export it"
            raise InvalidArgumentError(msg) from exc

    def predict(self, image: str | Path | Image.Image | np.ndarray | torch.Tensor) -> NumpyImageBatch:
        """Convert (or reject) ``image`` with :func:`to_model_input`, then run anomalib's inferencer on it."""
        array = to_model_input(image, max_side=self.max_side, size=self.input_size).numpy()
        # the array is already (B, 3, H, W) in [0, 1]: skip the base class's scale and layout guesses
        predictions = self.model({self.input_blob.any_name: array})
        return NumpyImageBatch(image=array, **self.post_process(predictions))
