"""DFD — Dual-path Frequency Discriminators for few-shot anomaly detection.

Paper: Y. Bai et al., "Dual-path Frequency Discriminators for Few-shot Anomaly Detection",
arXiv 2403.04151. Reference code: https://github.com/yuhbai/DFD.

DFD trains a feature adaptor and two discriminators per category on the k normal shots only: every shot
is augmented 80 times with rotations and DRAEM-style Perlin pseudo-anomalies, each image is split into a
low- and a high-frequency image (Gaussian pyramid), and both pass through a frozen backbone. A Gaussian
discriminator separates adapted features from Gaussian-noised ones; a Perlin discriminator (one ViT block)
segments the image-level pseudo-anomalies. Their smoothed maps are normalised and averaged.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib.data import MVTecAD
    >>> from anomalib_fewshot.models import Dfd
    >>> model = Dfd(backbone="tf_efficientnet_lite0", layers=("blocks.2", "blocks.4"),
    ...             pretrain_embed_dim=128, target_embed_dim=128, gaussian_hidden_dim=128,
    ...             perlin_num_heads=4, k_shot=1)
    >>> Engine().train(model, datamodule=MVTecAD(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP

"""

from anomalib_fewshot.components.lifecycle.spec import DemoAccuracy, ModelSpec
from anomalib_fewshot.models.dfd import diagnostics
from anomalib_fewshot.models.dfd.lightning_model import Dfd
from anomalib_fewshot.models.dfd.torch_model import DfdModel

#: DFD's surface for the rest of the package (see :class:`~anomalib_fewshot.components.lifecycle.spec.ModelSpec`).
DFD_SPEC = ModelSpec(
    name="Dfd",
    model_class=Dfd,
    diagnostics=diagnostics,
    # a shorter pool and schedule: the full 80 x 80 is a benchmark, not a test
    demo_accuracy=DemoAccuracy(0.9, None, {"samples_per_shot": 40, "epochs": 20}),
    short_schedule={"epochs": 1, "samples_per_shot": 4},
)

__all__ = ["DFD_SPEC", "Dfd", "DfdModel"]
