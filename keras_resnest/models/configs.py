"""One table of ResNeSt configurations (official torch models, plus GluonCV/timm 14d and 26d).

Every model: deep stem, avg-down shortcut, avd. Sources: resnest/torch/{resnest,ablation}.py
and timm/models/resnest.py (see the spec, section 1.4).
"""
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
