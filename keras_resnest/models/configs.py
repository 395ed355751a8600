"""The model registry: one table of ResNeSt configurations and the names that select them.

Canonical names are the official torch models plus GluonCV/timm 14d and 26d. Each model is one
row of `MODEL_CONFIGS`, as timm keeps one `default_cfgs` entry per model: its architecture, its
evaluation size, its official ImageNet checkpoint (file name and hash), timm's repository of
the same weights on the Hugging Face Hub, and timm's names for it. The other tables are derived
from the rows: `ALIASES` here, `PRETRAINED_FILES` (`keras_resnest.weights.pretrained`) and
`HUB_REPOS` (`keras_resnest.weights.hf_hub`). Every command and `create_model` resolves a name
with `resolve_model_name`, so a new variant is one row here.

Every model: deep stem, avg-down shortcut, avd. Sources: resnest/torch/{resnest,ablation}.py
of github.com/zhanghang1989/ResNeSt and timm/models/resnest.py of
github.com/huggingface/pytorch-image-models.

Example:
    >>> resolve_model_name("resnest50d"), resolve_model_name("resnest101e.in1k")
    ('resnest50', 'resnest101')
"""
import difflib
from dataclasses import dataclass
from typing import Optional

OFFICIAL_URL = "https://github.com/zhanghang1989/ResNeSt/releases/download/weights_step1/"
# GluonCV's resnest14/26, ported to PyTorch by timm (its gluon_resnest14d/26d release files).
TIMM_GLUON_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"


@dataclass(frozen=True)
class ResNeStConfig:
    """One model: its architecture, evaluation size, weights and names.

    Args:
        blocks (tuple of int): Bottlenecks per stage (layer1..layer4).
        radix (int): Split-attention radix. Defaults to 2.
        cardinality (int): Groups per bottleneck. Defaults to 1.
        bottleneck_width (int): Channels per group at width 64. Defaults to 64.
        stem_width (int): Channels of the deep stem's first convolutions. Defaults to 32.
        avd_first (bool): Average-downsample before the split attention. Defaults to False.
        default_size (int): The official evaluation crop. Defaults to 224.
        weights_file (str or None): The official ImageNet checkpoint's file name; its SHA-256
            starts with the hex after the last "-", as torch.hub checks. Defaults to None.
        weights_url (str): Where `weights_file` is published. Defaults to `OFFICIAL_URL`.
        hub_repo (str or None): timm's repository of the same weights on the Hugging Face Hub
            (its `hf_hub_id`), or None where timm publishes none. Defaults to None.
        aliases (tuple of str): timm's names of the model (same architecture and state-dict
            keys; timm's resnest.py). Defaults to none.
    """

    blocks: tuple
    radix: int = 2
    cardinality: int = 1
    bottleneck_width: int = 64
    stem_width: int = 32
    avd_first: bool = False
    default_size: int = 224
    weights_file: Optional[str] = None
    weights_url: str = OFFICIAL_URL
    hub_repo: Optional[str] = None
    aliases: tuple = ()


FAST = dict(blocks=(3, 4, 6, 3), avd_first=True)  # the ResNeSt-50 "fast" ablation models

MODEL_CONFIGS = {
    "resnest14d": ResNeStConfig(
        (1, 1, 1, 1), weights_file="gluon_resnest14-9c8fe254.pth", weights_url=TIMM_GLUON_URL,
        hub_repo="timm/resnest14d.gluon_in1k"),
    "resnest26d": ResNeStConfig(
        (2, 2, 2, 2), weights_file="gluon_resnest26-50eb607c.pth", weights_url=TIMM_GLUON_URL,
        hub_repo="timm/resnest26d.gluon_in1k"),
    "resnest50": ResNeStConfig(
        (3, 4, 6, 3), weights_file="resnest50-528c19ca.pth", hub_repo="timm/resnest50d.in1k",
        aliases=("resnest50d",)),
    "resnest101": ResNeStConfig(
        (3, 4, 23, 3), stem_width=64, default_size=256, weights_file="resnest101-22405ba7.pth",
        hub_repo="timm/resnest101e.in1k", aliases=("resnest101e",)),
    "resnest200": ResNeStConfig(
        (3, 24, 36, 3), stem_width=64, default_size=320, weights_file="resnest200-75117900.pth",
        hub_repo="timm/resnest200e.in1k", aliases=("resnest200e",)),
    "resnest269": ResNeStConfig(
        (3, 30, 48, 8), stem_width=64, default_size=416, weights_file="resnest269-0cc87c48.pth",
        hub_repo="timm/resnest269e.in1k", aliases=("resnest269e",)),
    "resnest50_fast_1s1x64d": ResNeStConfig(
        **FAST, radix=1, weights_file="resnest50_fast_1s1x64d-d8fbf808.pth"),
    "resnest50_fast_2s1x64d": ResNeStConfig(
        **FAST, radix=2, weights_file="resnest50_fast_2s1x64d-44938639.pth"),
    "resnest50_fast_4s1x64d": ResNeStConfig(
        **FAST, radix=4, weights_file="resnest50_fast_4s1x64d-f74f3fc3.pth"),
    "resnest50_fast_1s2x40d": ResNeStConfig(
        **FAST, radix=1, cardinality=2, bottleneck_width=40,
        weights_file="resnest50_fast_1s2x40d-32830b84.pth"),
    "resnest50_fast_2s2x40d": ResNeStConfig(
        **FAST, radix=2, cardinality=2, bottleneck_width=40,
        weights_file="resnest50_fast_2s2x40d-9d126481.pth"),
    "resnest50_fast_4s2x40d": ResNeStConfig(
        **FAST, radix=4, cardinality=2, bottleneck_width=40,
        weights_file="resnest50_fast_4s2x40d-41d14ed0.pth",
        hub_repo="timm/resnest50d_4s2x40d.in1k", aliases=("resnest50d_4s2x40d",)),
    "resnest50_fast_1s4x24d": ResNeStConfig(
        **FAST, radix=1, cardinality=4, bottleneck_width=24,
        weights_file="resnest50_fast_1s4x24d-d4a4f76f.pth",
        hub_repo="timm/resnest50d_1s4x24d.in1k", aliases=("resnest50d_1s4x24d",)),
}

# timm model names -> canonical names, from the rows.
ALIASES = {alias: name for name, config in MODEL_CONFIGS.items() for alias in config.aliases}


def resolve_model_name(name):
    """The canonical name (a key of `MODEL_CONFIGS`) of a canonical name or an alias.

    timm's pretrained tags are accepted too (`resnest50d.in1k` -> `resnest50`). Raises
    ValueError naming the valid names (and the closest ones) for anything else.
    """
    base = str(name).split(".", 1)[0]
    canonical = ALIASES.get(base, base)
    if canonical in MODEL_CONFIGS:
        return canonical
    close = difflib.get_close_matches(base, [*MODEL_CONFIGS, *ALIASES], n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(
        f"unknown model {name!r}{hint}; expected one of {', '.join(sorted(MODEL_CONFIGS))} "
        f"or a timm alias: {', '.join(sorted(ALIASES))}"
    )
