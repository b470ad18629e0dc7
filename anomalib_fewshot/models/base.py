"""The base class of every plugin model: :class:`ShotModel`.

It lives beside the models, not in :mod:`anomalib_fewshot.components`, because it subclasses anomalib's
``AnomalibModule``: importing ``anomalib.models`` fires the start-up hook, which imports this package; a base in
``components`` imported first would be half-initialised when the hook's model imports ask for it. Importing this
module always runs :mod:`anomalib_fewshot.models` first, so the cycle cannot occur. The lifecycle itself is
:class:`~anomalib_fewshot.components.lightning.ShotModelMixin`.
"""

from __future__ import annotations

from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.visualization import Visualizer
from torch import nn

from anomalib_fewshot.components.lightning import ShotModelMixin


class ShotModel(ShotModelMixin, AnomalibModule):
    """The base of every plugin model: anomalib's ``AnomalibModule`` with the shot lifecycle of :class:`ShotModelMixin`.

    It owns the arguments every model shares after its own and the constructor prologue: anomalib's pipeline
    components, the default resize-only pre-processor, the checks of every ``Literal`` argument of the subclass's
    constructor and of its :attr:`positive_arguments`, and the k-shot arguments. A model declares its own typed
    arguments and forwards the rest, ``def __init__(self, <own arguments>, **kwargs: Any)`` with
    ``super().__init__(**kwargs)`` as its first statement; anomalib's CLI (jsonargparse) and Lightning's
    ``hparams`` see this constructor's arguments as the model's own (``--model.evaluator false`` works as before).

    The subclass's constructor must take ``k_shot`` and ``image_size`` (their defaults are the method's own); the
    prologue reads every argument from ``hparams``.

    Args:
        pre_trained: load the backbone's pretrained weights when fitting starts, never at construction (timm's or
            open_clip's download unless the weights come with an installed package or ``weights_path``).
        weights_path: local backbone weights file for air-gapped installations: a state dict of the classifier or
            of the feature extractor (``.pth`` or ``.safetensors``; FDSL's CLIP also takes OpenAI's ``.pt`` file).
        few_shot_seed: seed of the shot selection and of the fit's randomness (pool, augmentations,
            pseudo-anomalies, loader order).
        few_shot_source: folder or list of images to take the shots from instead of the datamodule.
        pre_processor: anomalib's pre-processor; ``True``: resize (and centre-crop where the model has a
            ``resize_size``) only, since every model normalises its backbone's input internally.
        post_processor: anomalib's post-processor (``True``: its default).
        evaluator: anomalib's evaluator (``True``: its default metrics).
        visualizer: anomalib's visualizer (``True``: its default).

    """

    #: Integer constructor arguments that must be positive (checked at construction).
    positive_arguments: tuple[str, ...] = ()

    def __init__(
        self,
        pre_trained: bool = True,
        weights_path: str | None = None,
        few_shot_seed: int = 0,
        few_shot_source: str | list[str] | None = None,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        super().__init__(
            pre_processor=pre_processor, post_processor=post_processor, evaluator=evaluator, visualizer=visualizer
        )
        del pre_trained, weights_path, few_shot_seed, few_shot_source  # read from hparams, as the subclass's are
        self.init_shot_model(pre_processor, positive=self.positive_arguments)
