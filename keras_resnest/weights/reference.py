"""The official PyTorch models as a numerical reference (`keras-resnest convert --check`).

This is the only module of the package that imports torch, and only when called: it needs
`torch` and the official `resnest` package (`pip install "keras-resnest[reference]"`).
Nothing else in keras_resnest imports it.
"""
import numpy as np

# max|keras - torch| / max|torch| in float32: the project's parity bar.
PARITY_TOLERANCE = 1e-4
# The Normalize of the official evaluation transform (scripts/torch/verify.py), written out
# here on purpose: the models carry their own copy (keras_resnest.models.resnest), and a
# reference taking its constants from there would agree with any wrong value.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")
# GluonCV's resnest14/26 (timm resnest14d/26d) expressed with the official builder. The tests
# pin their own copy (tests/torch_reference.py) and check that this one computes the same.
SMALL_MODELS = {"resnest14d": [1, 1, 1, 1], "resnest26d": [2, 2, 2, 2]}


def torch_available():
    try:
        import resnest.torch  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def build_reference(name, **kwargs):
    """The official model for a keras_resnest name; kwargs e.g. dilation=2 or dilated=True."""
    import resnest.torch as official
    from resnest.torch.resnet import Bottleneck, ResNet

    if name in SMALL_MODELS:
        return ResNet(Bottleneck, SMALL_MODELS[name], radix=2, groups=1, bottleneck_width=64,
                      deep_stem=True, stem_width=32, avg_down=True, avd=True, avd_first=False,
                      **kwargs)
    return getattr(official, name)(pretrained=False, **kwargs)


def to_torch_input(images):
    """0..255 NHWC images -> the official normalised NCHW tensor."""
    import torch

    normalised = (np.asarray(images, "float32") / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def reference_logits(name, state_dict, images):
    """Logits of the official `name` with `state_dict` (numpy arrays) on 0..255 NHWC images."""
    import torch

    model = build_reference(name).eval()
    tensors = {key: torch.from_numpy(np.array(value)) for key, value in state_dict.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not fit the official {name}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")
    return logits(model, images)


def logits(model, images):
    """Logits of a torch model on 0..255 NHWC images."""
    import torch

    with torch.no_grad():
        return model(to_torch_input(images)).numpy()


def relative_error(actual, expected):
    """max|actual - expected| / max|expected|: the project's parity measure."""
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != reference shape {expected.shape}")
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
