"""Every model's constructor is fully typed for anomalib's CLI: its own arguments and ShotModel's, through **kwargs.

Each model declares its own typed arguments and forwards the shared ones to
:class:`~anomalib_fewshot.components.lifecycle.lightning.ShotModel` with ``**kwargs``; jsonargparse (anomalib's
CLI parser) follows ``super().__init__(**kwargs)`` and Lightning's ``hparams`` expand it. These tests fail if a key
of ``hparams`` has no typed CLI argument, if a type differs from the constructor's annotation, if the stock CLI
form ``--model.<shared argument>`` stops reaching the base, or if anomalib stops listing a model.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest
from jsonargparse import ArgumentParser

from anomalib_fewshot.components.lifecycle.lightning import ShotModel
from anomalib_fewshot.models import REGISTRY
from tests.helpers import TINY_CONFIGS

MODEL_NAMES = list(REGISTRY)
#: ShotModel's arguments that anomalib's ``save_hyperparameters`` leaves out of ``hparams``.
PIPELINE = ("pre_processor", "post_processor", "evaluator", "visualizer")


def _declared_types(model_class: type) -> dict[str, Any]:
    """The annotation of every constructor argument, from the class that declares it (the model or ShotModel)."""
    hints = {}
    for cls in (ShotModel, model_class):
        parameters = inspect.signature(cls.__init__).parameters
        annotations = typing.get_type_hints(cls.__init__)
        hints |= {name: annotations[name] for name in parameters if name in annotations and name != "kwargs"}
    return hints


def _cli_types(model_class: type) -> dict[str, Any]:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(model_class, "model")
    return {
        action.dest.split(".", 1)[1]: action._typehint
        for action in parser._actions
        if action.dest.startswith("model.") and hasattr(action, "_typehint") and not action.dest.endswith(".help")
    }


def test_anomalib_lists_every_model_and_never_the_base():
    """anomalib's ``list_models``/``get_model`` see only direct ``AnomalibModule`` subclasses."""
    from anomalib.models import list_models
    from anomalib.models.components import AnomalibModule

    assert all(AnomalibModule in REGISTRY[name].model_class.__bases__ for name in MODEL_NAMES)
    assert set(MODEL_NAMES) <= list_models(case="pascal")
    assert not issubclass(ShotModel, AnomalibModule)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_model_forwards_only_shot_models_arguments(name: str):
    own = inspect.signature(REGISTRY[name].model_class.__init__).parameters
    shared = [p for p in inspect.signature(ShotModel.__init__).parameters if p != "self"]
    assert "kwargs" in own and own["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    assert not set(shared) & set(own), "a shared argument declared again in the model"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_hparams_key_is_a_typed_cli_argument(name: str):
    model_class = REGISTRY[name].model_class
    model = model_class(**TINY_CONFIGS[name])
    cli = _cli_types(model_class)
    declared = _declared_types(model_class)
    assert set(model.hparams) | set(PIPELINE) == set(cli) == set(declared)
    for key, typehint in cli.items():
        assert typehint is not Any and typehint == declared[key], key


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_stock_cli_overrides_reach_the_base_and_the_model(name: str, tmp_path):
    from anomalib.cli.cli import AnomalibCLI

    args = ["fit", "--model", name, "--model.pre_trained", "false", "--model.evaluator", "false"]
    args += ["--model.few_shot_source", str(tmp_path), "--model.few_shot_seed", "3", "--model.epochs", "2"]
    args += ["--model.train_seed", "4"]
    args += ["--data", "MVTecAD", "--data.root", str(tmp_path)]
    model = AnomalibCLI(args, run=False).model
    assert type(model) is REGISTRY[name].model_class
    assert model.evaluator is None
    assert (model.few_shot_seed, model.few_shot_source, model.hparams.epochs) == (3, str(tmp_path), 2)
    assert model.train_seed == 4  # the fit's randomness, apart from the shots
    assert model.hparams.pre_trained is False
