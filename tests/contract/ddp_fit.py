"""Fit a tiny plugin model with CPU DDP (2 processes); each rank writes the shots it trained on.

Run as a script (Lightning's DDP launcher re-executes this file for rank 1):
    python tests/contract/ddp_fit.py MODEL_NAME DATA_ROOT OUTPUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from anomalib.data import MVTecAD
from anomalib.engine import Engine

import anomalib_fewshot.models as plugin_models
from tests.helpers import TINY_CONFIGS


def main() -> None:
    name, data_root, output = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    model = getattr(plugin_models, name)(**TINY_CONFIGS[name])
    datamodule = MVTecAD(root=data_root, category="tiny", num_workers=0, eval_batch_size=4)
    engine = Engine(
        default_root_dir=output,
        logger=False,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        enable_progress_bar=False,
    )
    engine.fit(model, datamodule=datamodule)
    rank = engine.trainer.global_rank
    record = {"rank": rank, "shots": model.few_shot_record["shots"], "steps": engine.trainer.global_step}
    (output / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
