"""The official PyTorch ResNeSt (`resnest==0.0.5`) as a numerical reference, for tests only.

Shared by the test modules: build the reference for a keras_resnest model name, give it random
but well-conditioned weights and BatchNorm statistics, and run it on 0..255 NHWC images.
"""
import numpy as np
import torch

# The builder, input conversion, parity measure and bar are the package's own
# (`keras-resnest convert --check` uses them too).
from keras_resnest.weights.reference import (IMAGENET_MEAN, IMAGENET_STD,  # noqa: F401
                                             PARITY_TOLERANCE, SMALL_MODELS, build_reference,
                                             logits, relative_error, to_torch_input)


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
