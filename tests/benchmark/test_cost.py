"""The cost tool measures every registered model's workload (tiny configurations here; the real ones are minutes)."""

from __future__ import annotations

import pytest
import torch

from anomalib_fewshot.benchmark import cost
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models import REGISTRY
from tests.helpers import TINY_CONFIGS


@pytest.mark.parametrize("name", list(REGISTRY))
def test_cost_workload_measures_a_step_and_an_image(name: str):
    row = cost.measure(REGISTRY[name], TINY_CONFIGS[name], repeats=1)
    assert row["params_M"] > 0 and row["step_ms"] > 0 and row["infer_ms"] > 0


def test_cost_profiles_come_from_the_registry():
    expected = {spec.name.lower(): spec.cost_profiles for spec in REGISTRY.values() if spec.cost_profiles}
    assert cost.PROFILES == expected
    assert {"pcsnet", "ed", "fdsl"} <= set(cost.PROFILES)
    for profiles in cost.PROFILES.values():
        assert all(config.get("pre_trained") is False for config in profiles.values())  # cost needs no weights


def test_cost_command_prints_a_row(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    spec = REGISTRY["Ed"]
    monkeypatch.setitem(spec.cost_profiles, "tiny", TINY_CONFIGS["Ed"])
    cost.main(["ed", "--profiles", "tiny", "--repeats", "1"])
    out = capsys.readouterr().out
    assert out.startswith("# ed cost profiles")
    assert any(line.startswith("| tiny | 0.09 |") for line in out.splitlines()), out


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(InvalidArgumentError, match="registered"):
        cost.model_spec("nope")
    assert cost.model_spec("PCSNET") is REGISTRY["Pcsnet"]


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(cost.PROFILES))
def test_shipped_cost_profiles_build_the_workloads_they_name(model: str):
    """Every lite candidate builds and prepares; its settings reach the model; no two candidates measure the same.

    (The paper profiles are skipped: their backbones are large, and their geometry is the paper's.)
    """
    spec = cost.model_spec(model)
    signatures = {}
    for name, config in spec.cost_profiles.items():
        if name.startswith("paper"):
            continue
        torch.manual_seed(0)
        work = cost.workload(spec, config)  # e.g. FDSL's window geometry is valid for every lite candidate
        hparams = dict(work.module.hparams)
        assert {key: hparams[key] for key in config} == dict(config), name
        work.module.model.eval()
        with torch.no_grad():
            size = int(hparams["image_size"])
            output = work.module.model(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)))
        assert torch.isfinite(output.anomaly_map).all(), name
        signatures[name] = (sum(p.numel() for p in work.params), float(output.anomaly_map.double().sum()))
    assert len(set(signatures.values())) == len(signatures), signatures  # a dropped setting would repeat one
