"""DFD training details: cache stages are equivalent, bad arguments fail early, zero-step fits are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_fewshot.components.lifecycle.fewshot import FewShotError
from anomalib_fewshot.components.lifecycle.pool import ZeroStepsError
from anomalib_fewshot.models import Dfd
from tests.helpers import TINY_CONFIGS

pytestmark = pytest.mark.slow


def _fit(root: Path, data_root: Path, **overrides) -> Dfd:
    torch.manual_seed(0)
    model = Dfd(**{**TINY_CONFIGS["Dfd"], **overrides})
    engine = Engine(default_root_dir=root, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=MVTecAD(root=data_root, category="tiny", num_workers=0, eval_batch_size=4))
    return model.eval()


def test_cache_stages_give_the_same_model(tmp_path: Path, tiny_data_root: Path):
    a = _fit(tmp_path / "a", tiny_data_root, cache_stage="backbone", epochs=1)
    b = _fit(tmp_path / "b", tiny_data_root, cache_stage="aggregated", epochs=1)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = a.model(images), b.model(images)
    torch.testing.assert_close(out_a.anomaly_map, out_b.anomaly_map, atol=1e-3, rtol=1e-3)


def test_same_seed_same_scores(tmp_path: Path, tiny_data_root: Path):
    a = _fit(tmp_path / "a", tiny_data_root, epochs=1)
    b = _fit(tmp_path / "b", tiny_data_root, epochs=1)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.model(images).pred_score, b.model(images).pred_score, atol=1e-6, rtol=0)
    assert a.few_shot_record["shots"] == b.few_shot_record["shots"]


def test_zero_optimizer_steps_is_an_error(tmp_path: Path, tiny_data_root: Path):
    model = Dfd(**TINY_CONFIGS["Dfd"])
    engine = Engine(default_root_dir=tmp_path, logger=False, limit_train_batches=0, enable_progress_bar=False)
    with pytest.raises(ZeroStepsError, match="without a single optimiser step"):
        engine.fit(model, datamodule=MVTecAD(root=tiny_data_root, category="tiny", num_workers=0))
    assert not list(tmp_path.rglob("*.ckpt")), "a checkpoint of an untrained model was written"


def test_k_shot_larger_than_dataset_is_a_clear_error(tmp_path: Path, tiny_data_root: Path):
    model = Dfd(**{**TINY_CONFIGS["Dfd"], "k_shot": 50})
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(FewShotError, match=r"k_shot=50 is larger than the number of normal training images \(4\)"):
        engine.fit(model, datamodule=MVTecAD(root=tiny_data_root, category="tiny", num_workers=0))


def test_few_shot_source_folder(tmp_path: Path, tiny_data_root: Path):
    source = tiny_data_root / "tiny" / "train" / "good"
    model = _fit(tmp_path, tiny_data_root, few_shot_source=str(source), k_shot=1, epochs=1)
    assert model.few_shot_record["source"] == "few_shot_source"
    assert Path(model.few_shot_record["shots"][0]).parent == source


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_shot": 0}, "k_shot"),
        ({"epochs": 0}, "epochs"),
        ({"samples_per_shot": 0}, "samples_per_shot"),
        ({"cache_dtype": "int8"}, "cache_dtype"),
        ({"cache_stage": "disk"}, "cache_stage"),
        ({"foreground": "left"}, "foreground"),
        ({"anomaly_prob": 2.0}, "probability"),
        ({"use_gaussian_discriminator": False, "use_perlin_discriminator": False}, "at least one"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Dfd(**{**TINY_CONFIGS["Dfd"], **kwargs})


def test_normalize_in_pre_processor_is_rejected(tmp_path: Path, tiny_data_root: Path):
    from anomalib.models.components import AnomalibModule

    model = Dfd(**TINY_CONFIGS["Dfd"], pre_processor=AnomalibModule.configure_pre_processor((64, 64)))
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="Normalize"):
        engine.fit(model, datamodule=MVTecAD(root=tiny_data_root, category="tiny", num_workers=0))


def test_paper_profile_cache_stays_under_4gb_at_k8():
    """The feature cache of the paper profile (WRN-50, 1536-d) at k = 8 must stay under 4 GB."""
    model = Dfd(pre_trained=False)  # paper defaults, random weights: only shapes matter
    size = model.estimate_cache_bytes(8)
    assert size < 4e9, f"{size / 1e9:.2f} GB"
    lite = Dfd(**{**TINY_CONFIGS["Dfd"], "image_size": 256, "pretrain_embed_dim": 128, "target_embed_dim": 128})
    assert lite.estimate_cache_bytes(8) < size


def test_pool_stores_anomalous_features_only_for_anomalous_samples(tmp_path: Path, tiny_data_root: Path):
    torch.manual_seed(0)
    model = Dfd(**{**TINY_CONFIGS["Dfd"], "epochs": 1, "anomaly_prob": 0.5})
    pools = []
    original = Dfd._build_pool

    def capture(self, images):
        pool = original(self, images)
        pools.append(pool)
        return pool

    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    Dfd._build_pool = capture
    try:
        engine.fit(model, datamodule=MVTecAD(root=tiny_data_root, category="tiny", num_workers=0))
    finally:
        Dfd._build_pool = original
    pool = pools[0]
    n_anomalous = int(pool.labels.sum())
    assert 0 < n_anomalous < len(pool)
    assert len(pool.anomalous[0]) == n_anomalous
    assert torch.equal((pool.anomalous_row >= 0).float(), pool.labels)


@pytest.mark.parametrize("scale", ["absolute", "rms"])
def test_feature_noise_std_follows_noise_scale(scale: str, tmp_path: Path, tiny_data_root: Path, monkeypatch):
    """``absolute`` adds N(0, noise_std²) whatever the tokens; ``rms`` scales it by the tokens' RMS."""
    import anomalib_fewshot.models.dfd.lightning_model as dfd_module

    seen: list[tuple[float, float]] = []
    original = dfd_module.gaussian_feature_noise

    def recording(tokens: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
        noisy = original(tokens, std)
        seen.append((float((noisy - tokens).detach().std()), float(tokens.detach().pow(2).mean().sqrt())))
        return noisy

    monkeypatch.setattr(dfd_module, "gaussian_feature_noise", recording)
    _fit(tmp_path, tiny_data_root, epochs=1, noise_std=0.05, noise_scale=scale)
    assert seen, "the Gaussian discriminator never saw feature noise"
    for noise, rms in seen:
        expected = 0.05 * rms if scale == "rms" else 0.05
        assert noise == pytest.approx(expected, rel=0.1), (noise, rms)
    # the tiny model's tokens are far from unit RMS, so the two modes are told apart
    assert all(abs(rms - 1.0) > 0.2 for _, rms in seen)


def test_unknown_noise_scale_is_rejected():
    with pytest.raises(ValueError, match="noise_scale"):
        Dfd(**{**TINY_CONFIGS["Dfd"], "noise_scale": "relative"})
