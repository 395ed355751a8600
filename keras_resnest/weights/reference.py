"""The official PyTorch models as a numerical reference (`keras-resnest convert --check`).

This is the only module of the package that imports torch, and only when called: it needs
`torch` and the official `resnest` package (`pip install "keras-resnest[reference]"`).
Nothing else in keras_resnest imports it. The benchmarks build their randomized official models
and float64 runs from here too (`build_randomized`, `to_torch_input64`), and the tests and
benchmarks hold `keras_resnest.preprocessing.eval_transform` to the official evaluation
transform written with PIL here (`official_eval_crop`).
"""
import numpy as np

# max|keras - torch| / max|torch| in float32: the project's parity bar.
PARITY_TOLERANCE = 1e-4
# The Normalize of the official evaluation transform (scripts/torch/verify.py), written out
# here on purpose: the models carry their own copy (keras_resnest.models.resnest), and a
# reference taking its constants from there would agree with any wrong value.
# The float64 reference (`to_torch_input64`) takes the same constants unrounded.
IMAGENET_MEAN64 = np.array([0.485, 0.456, 0.406])
IMAGENET_STD64 = np.array([0.229, 0.224, 0.225])
IMAGENET_MEAN = IMAGENET_MEAN64.astype("float32")
IMAGENET_STD = IMAGENET_STD64.astype("float32")
# GluonCV's resnest14/26 (timm resnest14d/26d) expressed with the official builder. The tests
# pin their own copy (tests/helpers/torch_reference.py) and check that this one computes the
# same.
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


def build_randomized(name, seed=0, **kwargs):
    """The official model with its random initialisation (seeded) and random BatchNorm state.

    Args:
        name: str. A keras_resnest model name.
        seed: int. Seeds torch's initialisation and the BatchNorm values. Defaults to 0.
        **kwargs: passed to the official builder, e.g. dilation=2 or dilated=True.
    """
    import torch

    torch.manual_seed(seed)
    return randomize_batch_norm(build_reference(name, **kwargs), seed)


def randomize_batch_norm(model, seed=0):
    """Random BatchNorm gamma, beta, running mean and variance; returns the model in eval mode.

    The last BatchNorm of each residual branch (bn3) gets a small gamma, as in trained ResNets:
    with gammas of order one everywhere, a deep random network amplifies its input with depth
    until float32 rounding alone makes two correct implementations disagree.

    Args:
        model: torch.nn.Module. Changed in place.
        seed: int. Seeds the values drawn. Defaults to 0.
    """
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                if name.endswith("bn3"):
                    module.weight.mul_(0.2)
    return model.eval()


def state_dict_numpy(model):
    """A torch model's state dict as numpy arrays (what `load_torch_state_dict` takes)."""
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def float64_copy(model):
    """The model in float64 (a copy): the reference both float32 implementations are held to."""
    import copy

    return copy.deepcopy(model).double()


def to_torch_input64(images):
    """0..255 NHWC images -> the official normalised NCHW tensor, computed in float64."""
    import torch

    normalised = (np.asarray(images, "float64") / 255.0 - IMAGENET_MEAN64) / IMAGENET_STD64
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def module_outputs(model, x, names):
    """{name: output} of the named modules ("layer3.5", "fc") on the NCHW tensor `x`, through
    forward hooks; feature maps in NHWC, as numpy arrays."""
    import torch

    modules = dict(model.named_modules())
    outputs, handles = {}, []
    for name in names:
        def hook(module, args, output, name=name):
            outputs[name] = output.detach().numpy().copy()
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {k: v.transpose(0, 2, 3, 1) if v.ndim == 4 else v for k, v in outputs.items()}


def features(model, images):
    """The layer4 output (the backbone feature map) of an official model, in NHWC."""
    import torch

    x = to_torch_input(images)
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            x = stage(x)
    return x.numpy().transpose(0, 2, 3, 1)


# The official evaluation crop (scripts/torch/verify.py, `ECenterCrop`) keeps `size / (size +
# CROP_MARGIN)` of the short side.
CROP_MARGIN = 32


def official_eval_crop(image, size):
    """The official evaluation transform as verify.py writes it with PIL, line for line.

    Args:
        image: PIL.Image.Image. Any mode; converted to RGB.
        size: int. Side of the output.

    Returns:
        float32 numpy array (size, size, 3), RGB 0..255: the centre crop of `size / (size + 32)`
        of the short side at `int(round(...))`, resized with `Image.BICUBIC`.
    """
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    crop = float(size) / (size + CROP_MARGIN) * min(width, height)
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    return np.asarray(image.resize((size, size), Image.BICUBIC), "float32")
