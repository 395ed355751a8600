"""The official PyTorch ResNeSt (`resnest==0.0.5`) as a numerical reference, for tests only.

Shared by the test modules: build the reference for a keras_resnest model name, give it random
but well-conditioned weights and BatchNorm statistics, and run it on 0..255 NHWC images.
"""
import numpy as np
import torch
import resnest.torch as official
from resnest.torch.resnet import Bottleneck, ResNet

# max|keras - torch| / max|torch| in float32, for every model and size tested.
PARITY_TOLERANCE = 1e-4

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")

# GluonCV's resnest14/26 (timm resnest14d/26d) expressed with the official builder.
SMALL_MODELS = {"resnest14d": [1, 1, 1, 1], "resnest26d": [2, 2, 2, 2]}


def build_reference(name, **kwargs):
    """The official model for a keras_resnest name; kwargs e.g. dilation=2 or dilated=True."""
    if name in SMALL_MODELS:
        return ResNet(Bottleneck, SMALL_MODELS[name], radix=2, groups=1, bottleneck_width=64,
                      deep_stem=True, stem_width=32, avg_down=True, avd=True, avd_first=False,
                      **kwargs)
    return getattr(official, name)(pretrained=False, **kwargs)


def build_randomized(name, seed=0, **kwargs):
    """The reference with the official random initialisation (seeded) and random BN state."""
    torch.manual_seed(seed)
    return randomize_batch_norm(build_reference(name, **kwargs), seed)


def randomize_batch_norm(model, seed=0):
    """Random BatchNorm gamma, beta, running mean and variance; eval mode.

    The last BN of each residual branch (bn3) gets a small gamma, as in trained ResNets: with
    O(1) gammas everywhere, a random 269-layer net amplifies its input exponentially with
    depth and becomes chaotic, so float32 rounding alone makes any two implementations differ.
    """
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
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def to_torch_input(images):
    """0..255 NHWC images -> the official normalised NCHW tensor."""
    normalised = (np.asarray(images, "float32") / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def logits(model, images):
    with torch.no_grad():
        return model(to_torch_input(images)).numpy()


def features(model, images):
    """layer4 output in NHWC (the backbone feature map)."""
    x = to_torch_input(images)
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            x = stage(x)
    return x.numpy().transpose(0, 2, 3, 1)


def relative_error(actual, expected):
    """max|actual - expected| / max|expected|: the project's parity measure."""
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != reference shape {expected.shape}")
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def random_images(batch, height, width, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")
