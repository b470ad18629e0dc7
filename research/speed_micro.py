"""Micro-benchmarks behind issue 48's exact rewrites: one op pattern at a time as an OpenVINO f32 graph, one thread.

    python -m research.speed_micro [pcsnet_topk | ed_median | ed_kl ...]

- ``pcsnet_topk``: PCSNet's nearest-prototype selection at the lite geometry (2304 positions x 2304 prototypes,
  k = 112): on the innermost axis (OpenVINO's heap-sort kernel, what the model does) against the outer axis (its
  bitonic kernel), and the distance GEMM alone.
- ``ed_median``: ED's FFN lower median over the tokens, sorted top-k and its last value against the unsorted top-k
  and its maximum, at both lite levels (1024 tokens x 256 channels, 256 x 512); checks equality with
  ``torch.median``.
- ``ed_kl``: the symmetric KL of two attention maps (2 heads, 1024 x 1024) with two logarithms and with one.

Each line: the median of 15 runs after 3 warm-up runs, and the largest difference to the first variant (or to
``torch.median``). Exported with the same exporter as the models (``torch.onnx.export``, dynamo, opset 18). One
machine, one run: compare the variants of one line group only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

RUNS, WARMUP = 15, 3


class Pattern(torch.nn.Module):
    """A module computing ``fn(*inputs)`` (buffers given as constants)."""

    def __init__(self, fn: Callable[..., torch.Tensor], **buffers: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for name, value in buffers.items():
            self.register_buffer(name, value)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``fn(self, *inputs)``."""
        return self.fn(self, *inputs)


def time_graph(module: Pattern, inputs: tuple[torch.Tensor, ...], folder: Path) -> tuple[float, np.ndarray]:
    """Median ms of the OpenVINO f32 graph of ``module`` (one thread, one stream) and its output."""
    import openvino as ov

    path = folder / f"{module.fn.__name__}_{'x'.join(map(str, inputs[0].shape))}.onnx"
    torch.onnx.export(module.eval(), inputs, str(path), opset_version=18, dynamo=True, verbose=False)
    config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    arrays = [tensor.numpy() for tensor in inputs]
    output = np.asarray(request.infer(arrays)[0])
    for _ in range(WARMUP):
        request.infer(arrays)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        request.infer(arrays)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), output


def pcsnet_topk(folder: Path) -> None:
    """Nearest-prototype selection: innermost axis (heap sort) vs outer axis (bitonic), and the GEMM alone."""
    positions, dim, k = 48 * 48, 176, 112
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(positions, dim, generator=generator)
    buffers = {"p": prototypes, "sq": prototypes.pow(2).sum(-1)}
    tokens = torch.randn(1, positions, dim, generator=generator)

    def inner(m: Pattern, t: torch.Tensor) -> torch.Tensor:
        squared = t.pow(2).sum(-1, keepdim=True) + m.sq - 2.0 * t @ m.p.t()
        return torch.topk(squared, k, dim=-1, largest=False).values.clamp_min(1e-12).sqrt().transpose(1, 2)

    def outer(m: Pattern, t: torch.Tensor) -> torch.Tensor:
        squared = m.sq[:, None] + t.pow(2).sum(-1)[:, None, :] - 2.0 * m.p @ t.transpose(1, 2)
        return torch.topk(squared, k, dim=1, largest=False).values.clamp_min(1e-12).sqrt()

    def gemm(m: Pattern, t: torch.Tensor) -> torch.Tensor:
        return m.sq[:, None] + t.pow(2).sum(-1)[:, None, :] - 2.0 * m.p @ t.transpose(1, 2)

    reference = None
    for name, fn in (("innermost axis (heap sort)", inner), ("outer axis (bitonic)", outer), ("GEMM only", gemm)):
        ms, out = time_graph(Pattern(fn, **buffers), (tokens,), folder)
        same = "–" if reference is None or out.shape != reference.shape else f"{np.abs(out - reference).max():.1e}"
        reference = out if reference is None else reference
        print(f"pcsnet_topk  {name:28s} {ms:8.1f} ms   max |diff| to the first {same}", flush=True)


def ed_median(folder: Path) -> None:
    """The lower median over tokens: sorted top-k's last value vs unsorted top-k's maximum."""

    def sorted_last(m: Pattern, x: torch.Tensor) -> torch.Tensor:
        k = (x.shape[1] - 1) // 2 + 1
        return torch.topk(x, k, dim=1, largest=False, sorted=True).values.select(1, k - 1)

    def unsorted_max(m: Pattern, x: torch.Tensor) -> torch.Tensor:
        k = (x.shape[1] - 1) // 2 + 1
        return torch.topk(x, k, dim=1, largest=False, sorted=False).values.amax(1)

    for tokens, channels in ((1024, 256), (256, 512)):
        x = torch.randn(1, tokens, channels, generator=torch.Generator().manual_seed(0))
        expected = torch.median(x, dim=1).values.numpy()
        for name, fn in (("sorted, last value", sorted_last), ("unsorted, maximum", unsorted_max)):
            ms, out = time_graph(Pattern(fn), (x,), folder)
            print(f"ed_median    {tokens}x{channels} {name:20s} {ms:8.2f} ms   equals torch.median: "
                  f"{np.array_equal(out, expected)}", flush=True)  # fmt: skip


def ed_kl(folder: Path) -> None:
    """Symmetric KL of two attention maps with two logarithms vs one."""
    eps = 1e-4

    def two_logs(m: Pattern, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        log_p, log_q = torch.log(p + eps), torch.log(q + eps)
        return (p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)

    def one_log(m: Pattern, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return ((p - q) * torch.log((p + eps) / (q + eps))).sum(-1)

    generator = torch.Generator().manual_seed(0)
    p, q = (torch.softmax(3 * torch.randn(1, 2, 1024, 1024, generator=generator), -1) for _ in range(2))
    reference = None
    for name, fn in (("two logarithms", two_logs), ("one logarithm", one_log)):
        ms, out = time_graph(Pattern(fn), (p, q), folder)
        reference = out if reference is None else reference
        relative = np.abs(out - reference).max() / np.abs(reference).max()
        print(f"ed_kl        {name:20s} {ms:8.2f} ms   max relative diff to the first {relative:.1e}", flush=True)


BENCHES = {"pcsnet_topk": pcsnet_topk, "ed_median": ed_median, "ed_kl": ed_kl}


def main(argv: list[str] | None = None) -> int:
    """``python -m research.speed_micro [NAME ...]``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[*BENCHES, []], default=list(BENCHES))
    args = parser.parse_args(argv)
    from anomalib_fewshot.benchmark.machine import machine_description

    print(machine_description(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names or BENCHES:
            BENCHES[name](Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
