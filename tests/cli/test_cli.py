"""The stock ``anomalib`` command (installed script, subprocess) sees and runs our models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_CONFIGS, cli_model_args

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(args)}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    )
    return result


def _data_args(root: Path) -> list[str]:
    return [
        "--data",
        "MVTecAD",
        "--data.root",
        str(root),
        "--data.category",
        "tiny",
        "--data.num_workers",
        "0",
        "--data.eval_batch_size",
        "4",
    ]


def test_registry_in_fresh_interpreter(tmp_path: Path):
    init = json.dumps(TINY_CONFIGS["Dfd"])
    code = (
        "import json, sys; import anomalib.models as m; "
        "assert 'Dfd' in m.list_models(case='pascal'), m.list_models(case='pascal'); "
        f"init = json.loads({init!r}); "
        "assert type(m.get_model('dfd', **init)).__name__ == 'Dfd'; "
        "assert type(m.get_model({'class_path': 'Dfd', 'init_args': init})).__name__ == 'Dfd'"
    )
    _run([sys.executable, "-c", code], tmp_path)


def test_hook_does_not_import_torch(tmp_path: Path):
    code = "import sys; import anomalib_fewshot; assert 'torch' not in sys.modules and 'anomalib' not in sys.modules"
    _run([sys.executable, "-c", code], tmp_path)
    # the .pth hook itself is installed in site-packages
    _run([sys.executable, "-c", "import sys; assert 'anomalib_fewshot._autoload' in sys.modules"], tmp_path)


def test_deploy_loads_none_of_our_lightning_modules(tmp_path: Path):
    """The edge runtime (``anomalib_fewshot.deploy``) needs no model or Lightning module of ours."""
    code = (
        "import sys; import anomalib_fewshot.deploy; "
        "bad = [m for m in sys.modules if m.startswith(('anomalib_fewshot.models', "
        "'anomalib_fewshot.components.lifecycle.lightning'))]; "
        "assert not bad, bad"
    )
    _run([sys.executable, "-c", code], tmp_path)


def _stock_export(ckpt: Path, export_root: Path, cwd: Path, *extra: str) -> None:
    """``anomalib export`` of a Dfd checkpoint to OpenVINO (opset 18), with ``extra`` arguments."""
    command = [str(BIN / "anomalib"), "export", "--model", "Dfd", "--export_type", "openvino", "--ckpt_path", str(ckpt)]
    _run([*command, *extra, "--export_root", str(export_root), "--onnx_kwargs", '{"opset_version": 18}'], cwd)


def test_stock_cli_train_export_predict(tmp_path: Path, tiny_data_root: Path):
    """anomalib train --model Dfd (short name) → export openvino from the ckpt → OpenVINOInferencer."""
    results = tmp_path / "results"
    _run(
        [
            str(BIN / "anomalib"),
            "train",
            "--model",
            "Dfd",
            *cli_model_args("Dfd"),
            *_data_args(tiny_data_root),
            "--default_root_dir",
            str(results),
            "--trainer.logger",
            "false",
        ],
        tmp_path,
    )
    ckpts = sorted(results.rglob("model.ckpt"))
    assert ckpts, "no checkpoint written"
    ckpt = ckpts[-1]
    assert (ckpt.parents[2] / "few_shot_selection.json").is_file()
    export_root = tmp_path / "export"
    _stock_export(ckpt, export_root, tmp_path)
    xml = next(export_root.rglob("model.xml"))
    code = (
        "from anomalib.deploy import OpenVINOInferencer; import numpy as np, sys; "
        f"r = OpenVINOInferencer(r'{xml}', device='CPU', config={{'INFERENCE_PRECISION_HINT': 'f32'}})"
        f".predict(r'{next((tiny_data_root / 'tiny' / 'test' / 'scratch').glob('*.png'))}'); "
        "assert np.isfinite(r.pred_score).all() and r.anomaly_map.std() > 0"
    )
    _run([sys.executable, "-c", code], tmp_path)
    # the stock INT8 export of the same checkpoint: calibrated on the stored shots, no --data needed
    int8_root = tmp_path / "int8"
    _stock_export(ckpt, int8_root, tmp_path, "--compression_type", "INT8_PTQ")
    code = (
        "import openvino as ov; "
        f"ops = [o.get_type_name() for o in ov.Core().read_model(r'{next(int8_root.rglob('model.xml'))}').get_ops()]; "
        "assert 'FakeQuantize' in ops"
    )
    _run([sys.executable, "-c", code], tmp_path)


def test_stock_cli_dotted_path_and_yaml_config(tmp_path: Path, tiny_data_root: Path):
    """--model anomalib_fewshot.models.Dfd, and a YAML config with the short class_path, both fit."""
    _run(
        [
            str(BIN / "anomalib"),
            "fit",
            "--model",
            "anomalib_fewshot.models.Dfd",
            *cli_model_args("Dfd"),
            *_data_args(tiny_data_root),
            "--default_root_dir",
            str(tmp_path / "dotted"),
            "--trainer.logger",
            "false",
        ],
        tmp_path,
    )
    config = tmp_path / "dfd.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "Dfd", "init_args": TINY_CONFIGS["Dfd"]}}))
    _run(
        [
            str(BIN / "anomalib"),
            "fit",
            "--config",
            str(config),
            *_data_args(tiny_data_root),
            "--default_root_dir",
            str(tmp_path / "yaml"),
            "--trainer.logger",
            "false",
        ],
        tmp_path,
    )
    assert list((tmp_path / "yaml").rglob("model.ckpt"))


def test_shipped_configs_parse(tmp_path: Path):
    """configs/model/*.yaml are valid for the stock CLI (print_config does not fit anything)."""
    import anomalib_fewshot.models as plugin_models
    from anomalib_fewshot.config import config_dir, model_config_path

    names = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
    assert {"dfd", "dfd_lite", "pcsnet", "pcsnet_lite"} <= set(names)
    for name in names:
        result = _run(
            [
                str(BIN / "anomalib"),
                "fit",
                "--config",
                str(model_config_path(name)),
                "--data",
                "MVTecAD",
                "--print_config",
            ],
            tmp_path,
        )
        class_path = yaml.safe_load(model_config_path(name).read_text())["model"]["class_path"]
        assert class_path in result.stdout
        assert hasattr(plugin_models, class_path.rsplit(".", 1)[1])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["benchmark", "-c", "{tmp}/missing.yaml"], "missing.yaml' not found"),
        (["benchmark", "-c", "{tmp}/bad.yaml"], "not a benchmark config"),
        (["train", "--model", "Dfd", "--model.epochs", "0"], "epochs must be >= 1, got 0"),  # wrapped by jsonargparse
        (["train", "--model", "Dfd", "--model.k_shot", "50"], "k_shot=50 is larger than"),  # raised inside fit
        (["demo", "--model", "Nope", "--output", "{tmp}/d"], "--model 'Nope': choose one of Dfd"),
        (["demo", "--set", "epochs", "--output", "{tmp}/d"], "--set 'epochs': expected KEY=VALUE"),
        (["demo", "--set", "no_such=1", "--output", "{tmp}/d"], "does not take these arguments"),
    ],
    ids=["missing-config", "bad-config", "constructor-argument", "fit-time", "demo-model", "demo-set", "demo-arg"],
)
def test_our_cli_prints_our_errors_without_traceback(
    argv: list[str], expected: str, tmp_path: Path, tiny_data_root: Path, capsys: pytest.CaptureFixture[str]
):
    """``anomalib-fewshot`` turns our errors into one line naming the argument, status 2, no traceback."""
    from anomalib_fewshot.cli import main

    (tmp_path / "bad.yaml").write_text("x: [\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] == "train":
        argv += ["--model.pre_trained", "false", *_data_args(tiny_data_root), "--default_root_dir", str(tmp_path)]
        argv += ["--trainer.max_epochs", "1", "--trainer.logger", "false"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "anomalib-fewshot: error: " in err
    assert expected in err
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("*.ckpt"))
