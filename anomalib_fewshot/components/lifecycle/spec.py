"""What a model folder tells the rest of the package about its model: one :class:`ModelSpec` per model.

Each ``anomalib_fewshot/models/<name>/__init__.py`` exports one spec; :mod:`anomalib_fewshot.models` collects them
into ``REGISTRY``, and everything outside the model folders (the benchmark, the cost profiler, the branch
diagnosis, the lazy names, the tests) iterates over that registry instead of naming models or importing their
internals. This module imports no model (``components/`` never does) and no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``(lightning module, pre-processed images (N, 3, H, W)) -> {branch name: map (N, H, W)}``: every internal branch
#: of a fitted model on its own, for ``python -m research.branches``.
BranchMaps = Callable[[Any, Any], dict[str, Any]]
#: ``(lightning module, pre-processed training images) -> text`` printed under the branch table.
BranchNotes = Callable[[Any, Any], str]


@dataclass(frozen=True, eq=False)
class Prerequisite:
    """A step that must run once before some fits of a model and produces a file the model is given.

    FDSL's stage 1 is one: its class-agnostic head is trained on another dataset's annotated test split
    (``anomalib-fewshot fdsl-pretrain``) and the file is passed as ``Fdsl(head_weights=FILE)``.

    Attributes:
        name: what the step produces; also the key a benchmark grid uses for it (``heads:`` lists the runs,
            ``head: DATASET`` in a model entry uses one).
        verb: the ``anomalib-fewshot`` sub-command that runs the step.
        argument: the model constructor argument that receives the produced file.
        summary: one line for ``--help`` texts and logs.
        command: ``(settings, output) -> argv`` after ``anomalib-fewshot`` (starts with ``verb``) that writes the file
            ``output``. ``settings`` is a grid entry merged with its dataset (``profile``, ``root``, ``category``,
            ``datamodule`` and the step's own options).
        main: the sub-command itself, ``argv (after the verb) -> exit status``, so the CLI can dispatch ``verb``
            without knowing the model.

    """

    name: str
    verb: str
    argument: str
    summary: str
    command: Callable[[Mapping[str, Any], Path], list[str]]
    main: Callable[[Sequence[str] | None], int]


@dataclass(frozen=True, eq=False)
class DemoAccuracy:
    """What the lite profile must reach 1-shot on the generated demo data (``tests/unit/test_accuracy.py``).

    Attributes:
        image_auroc: image AUROC floor.
        pixel_auroc: pixel AUROC floor, or ``None`` (not checked).
        overrides: constructor arguments replacing the lite profile's (a shorter schedule; the architecture stays).

    """

    image_auroc: float
    pixel_auroc: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything outside a model's folder may know about the model.

    Attributes:
        name: the class name anomalib sees (``"Dfd"``: ``--model Dfd``, ``get_model("dfd")``).
        model_class: the :class:`~anomalib.models.components.AnomalibModule` subclass.
        diagnostics: the model's ``diagnostics`` module, where :attr:`branch_maps`, :attr:`branch_notes` and
            :attr:`cost_profiles` are read from (its ``branch_maps``, ``branch_notes`` and ``COST_PROFILES``, each
            optional) unless given explicitly.
        paper_profile: the paper-faithful config in ``configs/model`` (default: the lower-case name, ``"dfd"``).
        lite_profile: the offline edge config in ``configs/model`` (default ``"<name>_lite"``).
        tiny_profile: the tiny, offline config in ``configs/model`` (default ``"<name>_tiny"``): random backbone
            weights, small dims, short schedule; every registered model is tested with it (:attr:`tiny_config`).
        cost_profiles: candidate constructor arguments measured by ``python -m anomalib_fewshot.benchmark.cost``
            (random weights: ``pre_trained: False``); empty when the model has none.
        cost_shots: the number of random images the cost workload hands to ``prepare_fit`` (the k it measures).
        branch_maps: per-branch maps of a fitted model (see :data:`BranchMaps`), or ``None``.
        branch_notes: text printed under the branch table (see :data:`BranchNotes`), or ``None``.
        prerequisites: steps some fits need first (FDSL's head pre-training), see :class:`Prerequisite`.
        demo_accuracy: the lite profile's accuracy floor on the demo data (see :class:`DemoAccuracy`), or ``None``.
        short_schedule: constructor arguments that shorten the lite profile's training to a quick, unconverged fit
            (architecture and inference graph unchanged), for checks that only need a working model
            (``python -m research.long_run``).

    """

    name: str
    model_class: type
    diagnostics: Any = None
    paper_profile: str = ""
    lite_profile: str = ""
    tiny_profile: str = ""
    cost_profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    cost_shots: int = 1
    branch_maps: BranchMaps | None = None
    branch_notes: BranchNotes | None = None
    prerequisites: tuple[Prerequisite, ...] = ()
    demo_accuracy: DemoAccuracy | None = None
    short_schedule: dict[str, Any] = field(default_factory=lambda: {"epochs": 1})

    def __post_init__(self) -> None:
        if self.model_class.__name__ != self.name:
            msg = f"ModelSpec name {self.name!r} differs from its class {self.model_class.__name__!r}"
            raise ValueError(msg)
        if self.cost_shots < 1:
            msg = f"ModelSpec {self.name}: cost_shots must be >= 1, got {self.cost_shots}"
            raise ValueError(msg)
        stem = self.name.lower()
        derived = {
            "paper_profile": stem,
            "lite_profile": f"{stem}_lite",
            "tiny_profile": f"{stem}_tiny",
            "branch_maps": getattr(self.diagnostics, "branch_maps", None),
            "branch_notes": getattr(self.diagnostics, "branch_notes", None),
            "cost_profiles": getattr(self.diagnostics, "COST_PROFILES", {}),
        }
        for attribute, value in derived.items():
            if not getattr(self, attribute):
                object.__setattr__(self, attribute, value)  # frozen: set once, here

    @property
    def tiny_config(self) -> dict[str, Any]:
        """The constructor arguments of :attr:`tiny_profile` (a fresh dict on every call)."""
        from anomalib_fewshot.config import model_init_args

        return model_init_args(self.tiny_profile)


def build_registry(specs: Sequence[ModelSpec]) -> dict[str, ModelSpec]:
    """The registry ``{spec.name: spec}`` in the given order; a name or a prerequisite verb used twice is an error."""
    registry: dict[str, ModelSpec] = {}
    verbs: set[str] = set()
    for spec in specs:
        if spec.name in registry:
            msg = f"two model specs are named {spec.name!r}"
            raise ValueError(msg)
        for step in spec.prerequisites:
            if step.verb in verbs:
                msg = f"prerequisite verb {step.verb!r} of {spec.name} is already taken"
                raise ValueError(msg)
            verbs.add(step.verb)
        registry[spec.name] = spec
    return registry
