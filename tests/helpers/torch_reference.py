"""The official PyTorch ResNeSt (`resnest==0.0.5`) as a numerical reference, for tests only.

Shared by the test modules: build the reference for a keras_resnest model name, give it random
but well-conditioned weights and BatchNorm statistics, and run it on 0..255 NHWC images (in
float32, or in float64 as the reference both float32 implementations are held to).

Everything a parity result depends on (the architecture of each reference, the input
normalisation, the error measure) is written out here rather than imported from keras_resnest:
a constant shared by the port and its reference would make every parity test agree with a
wrong value. Only the public bar, PARITY_TOLERANCE, comes from the package.
`keras_resnest.weights.reference` (the reference of `keras-resnest convert --check`) has its own
copy, which test_model_parity compares with this one.
"""
import copy

import numpy as np
import torch

from keras_resnest.weights.reference import PARITY_TOLERANCE  # noqa: F401

# The official evaluation transform (scripts/torch/verify.py): ToTensor, then
# Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]).
# The float64 reference (`to_torch_input64`) takes the same constants unrounded.
IMAGENET_MEAN64 = np.array([0.485, 0.456, 0.406])
IMAGENET_STD64 = np.array([0.229, 0.224, 0.225])
IMAGENET_MEAN = IMAGENET_MEAN64.astype("float32")
IMAGENET_STD = IMAGENET_STD64.astype("float32")

# resnest14d / resnest26d are not in the official package: they are GluonCV's resnest14/26 as
# timm defines them (the source of their weights):
#   ResNet(ResNestBottleneck, [1, 1, 1, 1] (26d: [2, 2, 2, 2]), stem_type='deep',
#          stem_width=32, avg_down=True, base_width=64, cardinality=1,
#          block_args=dict(radix=2, avd=True, avd_first=False))
# which is this call of the official builder (deep_stem=True: 3x3 convs 3->32->32->64).
SMALL_MODELS = {"resnest14d": [1, 1, 1, 1], "resnest26d": [2, 2, 2, 2]}
SMALL_MODEL_KWARGS = dict(radix=2, groups=1, bottleneck_width=64, deep_stem=True, stem_width=32,
                          avg_down=True, avd=True, avd_first=False)


def build_reference(name, **kwargs):
    """The official model for a keras_resnest name; kwargs e.g. dilation=2 or dilated=True."""
    import resnest.torch as official
    from resnest.torch.resnet import Bottleneck, ResNet

    if name in SMALL_MODELS:
        return ResNet(Bottleneck, SMALL_MODELS[name], **SMALL_MODEL_KWARGS, **kwargs)
    return getattr(official, name)(pretrained=False, **kwargs)


def to_torch_input(images):
    """0..255 NHWC images -> the official normalised NCHW tensor."""
    normalised = (np.asarray(images, "float32") / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def logits(model, images):
    """Logits of a torch model on 0..255 NHWC images."""
    with torch.no_grad():
        return model(to_torch_input(images)).numpy()


def relative_error(actual, expected):
    """max|actual - expected| / max|expected|: the project's parity measure."""
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != reference shape {expected.shape}")
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def build_randomized(name, seed=0, **kwargs):
    """The reference with the official random initialisation (seeded) and random BN state."""
    torch.manual_seed(seed)
    return randomize_batch_norm(build_reference(name, **kwargs), seed)


def randomize_batch_norm(model, seed=0):
    """Random BatchNorm gamma, beta, running mean and variance; eval mode.

    The last BN of each residual branch (bn3) gets a small gamma, as in trained ResNets: with
    O(1) gammas everywhere, a random 269-layer net amplifies its input exponentially with
    depth and becomes chaotic, so float32 rounding alone makes any two implementations differ.

    Measured against the official model in float64 (benchmarks/float64_report.py --stats
    tests): the activations stay O(1) (max |x| 3 to 8 at every stage of resnest101 at 256x256
    and of resnest200 at 45x67) and the float32 error stays a few ulps at every depth (3e-07 to
    7e-07 from layer1 to the logits), so the parity bars measure the port. Without the small
    bn3 gamma (`--stats independent`) the activations reach ~1e3 and two
    correct float32 runs differ up to 10x either way in their error (the official model with
    and without oneDNN convolutions: 8e-04 and 8e-03 at the logits). Statistics measured on the
    activations (`--stats consistent`: each BN's running mean and mean square taken from its
    actual input) keep the activations O(1) but are worse conditioned: every channel is scaled
    to unit size however weakly the signal drives it, which amplifies what is carried in from
    upstream, and the error grows ~4% per block (resnest200 at 45x67: 8e-07 after the stem,
    3e-04 at the logits; the parity figures become 2e-06 to 1e-03).
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


def float64_copy(model):
    """The model in float64 (a copy): the reference both float32 implementations are held to."""
    return copy.deepcopy(model).double()


def to_torch_input64(images):
    """0..255 NHWC images -> the official normalised NCHW tensor, computed in float64."""
    normalised = (np.asarray(images, "float64") / 255.0 - IMAGENET_MEAN64) / IMAGENET_STD64
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


def module_outputs(model, x, names):
    """{name: output} of the named modules ("layer3.5", "fc") on the NCHW tensor `x`, via
    forward hooks; feature maps in NHWC, as numpy arrays."""
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


def state_dict_numpy(model):
    return {key: value.detach().numpy() for key, value in model.state_dict().items()}


def features(model, images):
    """layer4 output in NHWC (the backbone feature map)."""
    x = to_torch_input(images)
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            x = stage(x)
    return x.numpy().transpose(0, 2, 3, 1)


def random_images(batch, height, width, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")
