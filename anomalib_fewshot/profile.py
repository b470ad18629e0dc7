"""``anomalib-fewshot profile``: where an exported OpenVINO graph spends its time, per op type and per node.

    anomalib-fewshot profile exported/weights/openvino/model.xml [--precision f32|bf16] [--threads N]
            [--runs 20] [--top 15] [--onnx model.onnx] [--size H W] [--output profile.md]        (one line)

The graph is compiled on the CPU with OpenVINO's per-node counters on (``PERF_COUNT``), one stream, the requested
inference precision and thread count, and run on seeded random images in ``[0, 1]`` of its input shape (the models
take images, not features: the time does not depend on their content), batch 1 where the batch is dynamic;
anomalib's exports take any image size (they resize inside the graph), so ``--size`` names the one to time. After
a warm-up, every run's counters are collected; a node's time is its median over the runs. Printed (and written
with ``--output``):

- the machine, OpenVINO's version, the precision OpenVINO actually used (a CPU without bf16 runs f32 whatever is
  asked), threads, the graph's median wall time per inference;
- time per **op type** (``Convolution``, ``TopK``, ...): share of the summed node time, milliseconds, nodes, and
  OpenVINO's kernels for it (``ref`` kernels are its slow generic fall-backs);
- the **top nodes**: name, type, kernel, milliseconds, share and, where it can be told, the **module** of the
  torch model that emitted it (from the ONNX file beside the graph: the exporter's name scopes per node).

Shares are of the summed node times, which on a loaded machine stay meaningful when absolute times do not.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.quiet import add_verbose_flag

PRECISIONS = ("f32", "bf16")
#: Untimed runs before the counted ones.
WARMUP = 3


@dataclass
class NodeTime:
    """One executed node of the compiled graph: its median time over the runs and where it came from."""

    name: str
    node_type: str
    exec_type: str
    ms: float
    module: str = ""


@dataclass
class Profile:
    """A profiled graph: its nodes' times and how it was run."""

    graph: str
    precision: str
    threads: int
    runs: int
    input_shape: tuple[int, ...]
    wall_ms: float
    nodes: list[NodeTime] = field(default_factory=list)

    @property
    def node_ms(self) -> float:
        """The summed node times of one inference (the shares' denominator)."""
        return sum(node.ms for node in self.nodes) or 1e-12

    def by_type(self) -> list[dict[str, Any]]:
        """Per op type: ms, share, node count and kernels, slowest first."""
        groups: dict[str, list[NodeTime]] = defaultdict(list)
        for node in self.nodes:
            groups[node.node_type].append(node)
        rows = [
            {
                "op_type": op_type,
                "ms": sum(n.ms for n in members),
                "share": sum(n.ms for n in members) / self.node_ms,
                "nodes": len(members),
                "kernels": ", ".join(sorted({n.exec_type for n in members})),
            }
            for op_type, members in groups.items()
        ]
        return sorted(rows, key=lambda row: -row["ms"])

    def top(self, count: int) -> list[NodeTime]:
        """The ``count`` slowest nodes."""
        return sorted(self.nodes, key=lambda node: -node.ms)[:count]


def module_scopes(onnx_path: Path) -> dict[str, str]:
    """ONNX node name -> ``"module.path: Class (file.py:line)"`` from the torch exporter's node metadata.

    The module is the innermost one the node was traced in (``pkg.torch.onnx.name_scopes`` without the op itself),
    the source line the innermost frame of its stack trace outside torch. Nodes without metadata are left out.
    """
    import ast

    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    found = {}
    for node in model.graph.node:
        props = {prop.key: prop.value for prop in node.metadata_props}
        try:
            scopes = [s for s in ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]")) if s][:-1]
            classes = ast.literal_eval(props.get("pkg.torch.onnx.class_hierarchy", "[]"))[:-1]
        except (ValueError, SyntaxError):
            continue
        if not classes:
            continue
        where = f"{scopes[-1] if scopes else '(top)'}: {classes[-1].rsplit('.', 1)[-1]}"
        frames = re.findall(r'File "([^"]+)", line (\d+)', props.get("pkg.torch.onnx.stack_trace", ""))
        ours = [(path, line) for path, line in frames if f"{os.sep}torch{os.sep}" not in path]
        if ours:
            where += f" ({Path(ours[-1][0]).name}:{ours[-1][1]})"
        found[node.name] = where
    return found


def _original_names(runtime_op: Any) -> list[str]:
    """The graph's own node names a compiled (possibly fused) node came from."""
    info = runtime_op.get_rt_info()
    for key in ("originalLayersNames", "fused_names_0"):
        if key in info:
            value = info[key]
            text = value.astype(str) if hasattr(value, "astype") else str(value)
            return [name for name in text.split(",") if name]
    return [runtime_op.get_friendly_name()]


def profile_graph(
    xml: Path,
    precision: str = "f32",
    threads: int | None = None,
    runs: int = 20,
    onnx_path: Path | None = None,
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> Profile:
    """Compile ``xml`` with per-node counters and run it ``runs`` times (after :data:`WARMUP`); return the profile.

    ``onnx_path``: the ONNX export of the same model, whose node metadata names the modules (default: an ``.onnx``
    beside the graph, if any; anomalib's OpenVINO export deletes its intermediate ONNX file, and
    ``anomalib export --export_type onnx`` of the same checkpoint gives the same node names).
    ``size``: the image ``(H, W)`` fed to a graph whose image size is dynamic (anomalib's exports resize inside
    the graph and take any size: give the model's ``image_size``); a static graph is run at its own size.
    """
    import numpy as np
    import openvino as ov

    if precision not in PRECISIONS:
        msg = f"--precision must be one of {PRECISIONS}, got {precision!r}"
        raise InvalidArgumentError(msg)
    if runs < 1 or (threads is not None and threads < 1):
        msg = f"--runs and --threads must be >= 1, got {runs} and {threads}"
        raise InvalidArgumentError(msg)
    xml = Path(xml)
    if xml.suffix != ".xml" or not xml.is_file() or not xml.with_suffix(".bin").is_file():
        msg = f"'{xml}' is not an OpenVINO graph: give the .xml of an export (its .bin beside it)"
        raise InvalidArgumentError(msg)
    core = ov.Core()
    try:
        model = core.read_model(str(xml))
    except RuntimeError as exc:
        msg = f"OpenVINO cannot read '{xml}': {str(exc).splitlines()[0]}"
        raise InvalidArgumentError(msg) from exc
    if len(model.inputs) != 1:
        msg = f"'{xml}' has {len(model.inputs)} inputs; the profiler runs graphs of one image input"
        raise InvalidArgumentError(msg)
    partial = model.inputs[0].get_partial_shape()
    if partial.rank.is_dynamic or partial.rank.get_length() != 4 or partial[1].is_dynamic:
        msg = f"'{xml}': input shape {partial} is not (batch, channels, height, width)"
        raise InvalidArgumentError(msg)
    if size is not None and (len(size) != 2 or min(size) < 1):
        msg = f"--size must be two positive integers (height width), got {list(size)}"
        raise InvalidArgumentError(msg)
    spatial = [None if partial[i].is_dynamic else partial[i].get_length() for i in (2, 3)]
    if None in spatial and size is None:
        msg = (
            f"'{xml}': its image size is dynamic ({partial}); give the size to profile at with --size H W "
            "(the model's image_size, e.g. --size 256 256)"
        )
        raise InvalidArgumentError(msg)
    if size is not None and None not in spatial and tuple(spatial) != tuple(size):
        msg = f"'{xml}' takes {spatial[0]}x{spatial[1]} images only, got --size {size[0]} {size[1]}"
        raise InvalidArgumentError(msg)
    height, width = size if size is not None else spatial
    shape = (1 if partial[0].is_dynamic else partial[0].get_length(), partial[1].get_length(), height, width)
    if partial.is_dynamic:
        model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
    config: dict[str, Any] = {"PERF_COUNT": "YES", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": precision}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    compiled = core.compile_model(model, "CPU", config)
    used_precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    used_threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    request = compiled.create_infer_request()
    images = np.random.default_rng(seed).random(shape, dtype=np.float32)
    for _ in range(WARMUP):
        request.infer({0: images})
    walls, per_node = [], defaultdict(list)
    kinds: dict[str, tuple[str, str]] = {}
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: images})
        walls.append((time.perf_counter() - start) * 1000)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            per_node[info.node_name].append(info.real_time.total_seconds() * 1000)
            kinds[info.node_name] = (info.node_type, info.exec_type)
    onnx_path = Path(onnx_path) if onnx_path is not None else xml.with_suffix(".onnx")
    if onnx_path != xml.with_suffix(".onnx") and not onnx_path.is_file():
        msg = f"--onnx '{onnx_path}' is not a file"
        raise InvalidArgumentError(msg)
    scopes = module_scopes(onnx_path) if onnx_path.is_file() else {}
    origins = {op.get_friendly_name(): _original_names(op) for op in compiled.get_runtime_model().get_ops()}
    nodes = []
    for name, times in per_node.items():
        modules = [scopes[o] for o in origins.get(name, [name]) if scopes.get(o)]
        nodes.append(NodeTime(name, *kinds[name], statistics.median(times), modules[-1] if modules else ""))
    return Profile(str(xml), used_precision, used_threads, runs, shape, statistics.median(walls), nodes)


def format_profile(profile: Profile, top: int = 15) -> str:
    """The Markdown report of a profile."""
    import openvino as ov

    from anomalib_fewshot.benchmark.machine import machine_description

    lines = [
        f"# OpenVINO profile: {profile.graph}",
        "",
        f"{machine_description()}; OpenVINO {ov.__version__}; precision {profile.precision}; {profile.threads} "
        f"threads; input {list(profile.input_shape)}; {profile.runs} runs after {WARMUP} warm-up.",
        f"Median wall time per inference: **{profile.wall_ms:.2f} ms** (summed node time {profile.node_ms:.2f} ms).",
        "",
        "## Time per op type",
        "",
        "| op type | share | ms | nodes | kernels |",
        "|---|---|---|---|---|",
    ]
    for row in profile.by_type():
        lines.append(f"| {row['op_type']} | {row['share']:.1%} | {row['ms']:.2f} | {row['nodes']} | {row['kernels']} |")
    lines += [
        "",
        f"## Top {top} nodes",
        "",
        "| node | op type | kernel | ms | share | module |",
        "|---|---|---|---|---|---|",
    ]
    for node in profile.top(top):
        lines.append(
            f"| {node.name} | {node.node_type} | {node.exec_type} | {node.ms:.2f} | {node.ms / profile.node_ms:.1%} "
            f"| {node.module or '–'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``anomalib-fewshot profile MODEL.xml [...]``."""
    parser = argparse.ArgumentParser(prog="anomalib-fewshot profile", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("graph", type=Path, help="an exported OpenVINO graph (.xml, its .bin beside it)")
    parser.add_argument("--precision", choices=PRECISIONS, default="f32", help="inference precision (default f32)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: OpenVINO's choice)")
    parser.add_argument("--runs", type=int, default=20, help="counted runs after the warm-up (default 20)")
    parser.add_argument("--top", type=int, default=15, help="slowest nodes to list (default 15)")
    parser.add_argument("--onnx", type=Path, default=None, help="the same model's ONNX export, to name modules")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="image size for a graph with a dynamic one (anomalib's exports; the model's image_size)",
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the report to this Markdown file")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    size = tuple(args.size) if args.size is not None else None
    profile = profile_graph(args.graph, args.precision, args.threads, args.runs, args.onnx, size=size)
    report = format_profile(profile, args.top)
    print(report)
    if args.output is not None:
        from anomalib_fewshot.components.io.atomic import atomic_write_text

        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
