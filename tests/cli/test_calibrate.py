"""``anomalib-fewshot calibrate``: a checkpoint's thresholds set again from good images, the old file untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_fewshot.calibrate import recalibrate
from anomalib_fewshot.cli import main
from anomalib_fewshot.components.lifecycle.quantization import CALIBRATION_KEY
from anomalib_fewshot.errors import InvalidArgumentError


def test_bad_checkpoints_are_clear_errors(tmp_path: Path, capsys):
    missing = tmp_path / "missing.ckpt"
    assert main(["calibrate", "--ckpt_path", str(missing)]) == 2
    assert f"--ckpt_path '{missing}' is not a file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidArgumentError, match="not a readable checkpoint"):
        recalibrate(garbage)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(InvalidArgumentError, match="not written by an anomalib-fewshot model"):
        recalibrate(foreign)
    with pytest.raises(InvalidArgumentError, match="is the checkpoint itself"):
        recalibrate(foreign, output=foreign)


@pytest.mark.slow
def test_recalibrating_a_fitted_checkpoint_writes_a_new_one_with_the_new_decision(tmp_path: Path, tiny_data_root):
    from anomalib_fewshot.models import Pcsnet
    from tests.helpers import fit_tiny

    model, engine = fit_tiny("Pcsnet", tiny_data_root, tmp_path / "run")
    ckpt = tmp_path / "model.ckpt"
    engine.trainer.save_checkpoint(ckpt)
    before = ckpt.read_bytes()
    fitted = model.last_calibration
    assert fitted.rule == "f1"

    assert main(["calibrate", "--ckpt_path", str(ckpt), "--rule", "fpr", "--target_fpr", "0"]) == 0
    assert ckpt.read_bytes() == before  # never overwritten
    new = Pcsnet.load_from_checkpoint(tmp_path / "model.calibrated.ckpt", map_location="cpu")
    assert new.hparams.calibration_rule == "fpr" and new.hparams.calibration_fpr == 0
    # rate 0: the threshold is the highest normal view's score (the same views the fit scored)
    assert float(new.post_processor.image_threshold) == pytest.approx(float(fitted.normal_scores.max()), rel=1e-5)
    assert float(new.post_processor.image_threshold) != pytest.approx(float(model.post_processor.image_threshold))
    for key, value in model.model.state_dict().items():  # the model itself is unchanged
        torch.testing.assert_close(new.model.state_dict()[key], value, rtol=0, atol=0)

    # good images the user collected since: used instead of the stored shots
    good = tiny_data_root / "tiny" / "test" / "good"
    summary = recalibrate(ckpt, tmp_path / "on_good.ckpt", source=str(good))
    assert summary["calibrated_on"] == f"good images in {good}"

    # a checkpoint without stored shots needs --source
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    del checkpoint[CALIBRATION_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.raises(InvalidArgumentError, match=r"stores no shots.*--source"):
        recalibrate(old)
