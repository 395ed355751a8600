"""The model registry: one table of ResNeSt configurations and the names that select them.

Canonical names are the official torch models plus GluonCV/timm 14d and 26d; `ALIASES` maps
timm's names of the same models to them. Every command and `create_model` resolves a name with
`resolve_model_name`, so a new variant is one entry here (plus its weights file, if any, in
`keras_resnest.weights.pretrained`).

Every model: deep stem, avg-down shortcut, avd. Sources: resnest/torch/{resnest,ablation}.py
of github.com/zhanghang1989/ResNeSt and timm/models/resnest.py of
github.com/huggingface/pytorch-image-models.

Example:
    >>> resolve_model_name("resnest50d"), resolve_model_name("resnest101e.in1k")
    ('resnest50', 'resnest101')
"""
import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class ResNeStConfig:
    blocks: tuple          # bottlenecks per stage (layer1..layer4)
    radix: int = 2
    cardinality: int = 1
    bottleneck_width: int = 64
    stem_width: int = 32
    avd_first: bool = False
    default_size: int = 224   # the official evaluation crop


MODEL_CONFIGS = {
    "resnest14d": ResNeStConfig((1, 1, 1, 1)),
    "resnest26d": ResNeStConfig((2, 2, 2, 2)),
    "resnest50": ResNeStConfig((3, 4, 6, 3)),
    "resnest101": ResNeStConfig((3, 4, 23, 3), stem_width=64, default_size=256),
    "resnest200": ResNeStConfig((3, 24, 36, 3), stem_width=64, default_size=320),
    "resnest269": ResNeStConfig((3, 30, 48, 8), stem_width=64, default_size=416),
    "resnest50_fast_1s1x64d": ResNeStConfig((3, 4, 6, 3), radix=1, avd_first=True),
    "resnest50_fast_2s1x64d": ResNeStConfig((3, 4, 6, 3), radix=2, avd_first=True),
    "resnest50_fast_4s1x64d": ResNeStConfig((3, 4, 6, 3), radix=4, avd_first=True),
    "resnest50_fast_1s2x40d": ResNeStConfig((3, 4, 6, 3), radix=1, cardinality=2,
                                            bottleneck_width=40, avd_first=True),
    "resnest50_fast_2s2x40d": ResNeStConfig((3, 4, 6, 3), radix=2, cardinality=2,
                                            bottleneck_width=40, avd_first=True),
    "resnest50_fast_4s2x40d": ResNeStConfig((3, 4, 6, 3), radix=4, cardinality=2,
                                            bottleneck_width=40, avd_first=True),
    "resnest50_fast_1s4x24d": ResNeStConfig((3, 4, 6, 3), radix=1, cardinality=4,
                                            bottleneck_width=24, avd_first=True),
}

# timm model names -> canonical names: same architecture and state-dict keys (timm's resnest.py).
ALIASES = {
    "resnest50d": "resnest50",
    "resnest101e": "resnest101",
    "resnest200e": "resnest200",
    "resnest269e": "resnest269",
    "resnest50d_4s2x40d": "resnest50_fast_4s2x40d",
    "resnest50d_1s4x24d": "resnest50_fast_1s4x24d",
}


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
