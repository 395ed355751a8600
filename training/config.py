"""What a training run is asked to do: `TrainConfig`, `AugmentConfig` and the choices they take.

Free of TensorFlow and Keras, so that `keras-resnest train --help` (commands/train.py) offers the
same choices as the loop checks, from one definition, without importing either.

Example:
    >>> config = TrainConfig(model_name="resnest14d", image_size=32, precision="float64")
    >>> config.validate()
    Traceback (most recent call last):
    ...
    ValueError: precision='float64': expected one of ('float32', 'mixed_bfloat16', 'mixed_float16').
"""
import dataclasses
from dataclasses import dataclass, field

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adamw")
DATASETS = ("digits",)  # embedded datasets (`--dataset`): no download
MAX_SEED = 2**31 - 1  # the int32 range: a seed every seeded library here (NumPy, TF, Keras) accepts
# Official ERandomCrop bounds (resnest/torch/transforms/transforms.py): the smallest fraction of
# the image's area a training crop keeps.
MIN_AREA = 0.1
# The QAT phase's folder inside the run directory (training/qat_phase.py); run_record.py looks
# there for its checkpoint.
QAT_DIR = "qat"


@dataclass(frozen=True)
class AugmentConfig:
    """What the training pipeline does to each image and batch."""

    min_area: float = MIN_AREA  # random resized crop keeps at least this fraction of the area
    flip: bool = True
    randaugment: bool = False  # Keras 3 RandAugment(num_ops=2, factor=0.5): AutoAugment's stand-in
    mixup_alpha: float = 0.0  # 0 disables MixUp
    cutmix_alpha: float = 0.0  # 0 disables CutMix

    def __post_init__(self):
        if not 0.0 < self.min_area <= 1.0:
            raise ValueError(f"min_area={self.min_area!r}: expected a fraction in (0, 1].")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected >= 0 (0 disables it).")



@dataclass
class TrainConfig:
    """Everything a run needs besides the data; defaults follow the ResNeSt recipe."""

    model_name: str = "resnest50"
    weights: str = None  # None (from scratch), "imagenet" or a weights file for the backbone
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32  # per replica; the global batch is batch_size x replicas
    optimizer: str = "sgd"  # one of OPTIMIZERS
    learning_rate: float = None  # peak; None: 0.1 x global_batch / 256 (SGD), 1e-3 x ... (AdamW)
    warmup_epochs: float = 5.0  # capped to a fifth of the run for short runs
    weight_decay: float = None  # None: 1e-4 (SGD, coupled L2), 0.05 (AdamW, decoupled)
    momentum: float = 0.9
    label_smoothing: float = 0.1
    ema_momentum: float = None  # e.g. 0.9999: evaluate and save the EMA of the weights
    last_gamma: bool = None  # None: zero-init when training from scratch
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dropblock_rate: float = 0.0
    freeze_backbone: bool = False
    unfreeze_epoch: int = None  # None: half the epochs when freeze_backbone is set
    precision: str = "float32"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    deterministic: bool = False
    steps_per_epoch: int = None  # None: one pass over the training images
    checkpoint_every: int = 50  # steps
    val_batch_size: int = 64
    qat_epochs: int = 0  # quantization-aware epochs after the float ones (training/qat_phase.py)
    qat_learning_rate: float = None  # None: a tenth of the float phase's default peak
    jit_compile: bool = False  # XLA-compiles the train step (training/run.py's make_train_step)

    def resolved(self):
        """This configuration with the canonical `model_name` (a timm alias or tag resolved, as
        `resolve_model_name` does): what `train` and `keras-resnest train` both run, log and
        record. Raises ValueError naming the valid names for an unknown model."""
        from keras_resnest.models import resolve_model_name

        return dataclasses.replace(self, model_name=resolve_model_name(self.model_name))

    def validate(self):
        checks = [
            (
                self.epochs >= 1 or (self.epochs == 0 and self.qat_epochs >= 1),
                "epochs",
                "an integer >= 1 (0 only with qat_epochs >= 1)",
            ),
            (
                isinstance(self.qat_epochs, int) and self.qat_epochs >= 0,
                "qat_epochs",
                "an integer >= 0",
            ),
            (
                self.qat_epochs == 0 or self.precision == "float32",
                "precision",
                "float32 with qat_epochs (int8 QAT runs in float32)",
            ),
            (
                self.qat_learning_rate is None or self.qat_learning_rate > 0,
                "qat_learning_rate",
                "a value > 0",
            ),
            (
                self.epochs >= 1 or str(self.weights).endswith(".keras"),
                "weights",
                "a trained classifier .keras file when epochs is 0 (QAT starts from it)",
            ),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.image_size >= 32, "image_size", "an integer >= 32"),
            (self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}"),
            # TF has no deterministic XLA kernel for some gradients (MaxPoolGrad).
            (not (self.jit_compile and self.deterministic), "jit_compile",
             "False with deterministic (XLA has no deterministic max-pool gradient)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing", "a value in [0, 1)"),
            (self.warmup_epochs >= 0, "warmup_epochs", "a value >= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every", "an integer >= 1"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch", ">= 1"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate", "a value > 0"),
            (
                isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED,
                "seed",
                f"an integer in [0, {MAX_SEED}]",
            ),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected {expected}.")
