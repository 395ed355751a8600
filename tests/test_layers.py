"""The ResNeSt layers on their own: SplitAttention against the official SplAtConv2d, the
regularizers' statistics, and config round trips."""
import keras
import numpy as np
import pytest
import torch
from resnest.torch.splat import SplAtConv2d

import keras_resnest
from keras_resnest.layers import (
    DropBlock2D,
    GroupedConv2D,
    ResNeStBottleneck,
    SplitAttention,
    StochasticDepth,
)
from keras_resnest.layers.split_attention import inter_channels
from keras_resnest.porting import SPLIT_ATTENTION_CHILDREN

from tests.helpers.torch_reference import randomize_batch_norm, relative_error

# What the layers achieve against torch (`python -m benchmarks.parity_report --sections layers`
# prints each figure: worst 6.6e-07), with a margin for other CPUs' summation order; far below
# the public 1e-4 of `convert --check`, which would let a small systematic slip through.
LAYER_BAR = 5e-6


@pytest.mark.parametrize("radix", [1, 2, 4])
@pytest.mark.parametrize("cardinality", [1, 2, 4])
@pytest.mark.parametrize("strides", [1, 2])
def test_split_attention_matches_official_splat(radix, cardinality, strides):
    channels = 64
    torch.manual_seed(radix * 10 + cardinality)
    official = SplAtConv2d(channels, channels, 3, stride=strides, padding=1, groups=cardinality,
                           bias=False, radix=radix, norm_layer=torch.nn.BatchNorm2d)
    randomize_batch_norm(official, seed=radix + cardinality)
    layer = SplitAttention(channels, 3, strides=strides, radix=radix, cardinality=cardinality,
                           name="splat")
    x = np.random.RandomState(0).normal(size=(2, 9, 11, channels)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    state = {f"splat.{k}": v.detach().numpy() for k, v in official.state_dict().items()}
    report = keras_resnest.load_torch_state_dict(model, state)
    assert report.tensors == 13  # conv, bn0 (4), fc1 (2), bn1 (4), fc2 (2)

    with torch.no_grad():
        expected = official(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    actual = np.asarray(layer(x, training=False))
    assert relative_error(actual, expected.transpose(0, 2, 3, 1)) <= LAYER_BAR


def test_inter_channels_follow_official_rule_with_32_floor():
    assert inter_channels(64, radix=2) == 32
    assert inter_channels(256, radix=2) == 128
    assert inter_channels(40, radix=1) == 32     # floor applies
    assert inter_channels(640, radix=4) == 640
    assert set(SPLIT_ATTENTION_CHILDREN) == {"conv", "bn0", "fc1", "bn1", "fc2"}


def grouped_conv_error():
    """GroupedConv2D vs torch Conv2d(groups=3) with the same weights (also printed by
    benchmarks/parity_report.py)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(12, 18, 3, stride=2, padding=1, groups=3, bias=True)
    layer = GroupedConv2D(18, 3, strides=2, padding=1, groups=3, use_bias=True)
    x = np.random.RandomState(1).normal(size=(2, 10, 7, 12)).astype("float32")
    layer(x)
    kernel = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    for variable, group_kernel in zip(layer.group_kernels, np.split(kernel, 3, axis=-1)):
        variable.assign(group_kernel)
    layer.bias.assign(conv.bias.detach().numpy())
    with torch.no_grad():
        expected = conv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    return relative_error(layer(x), expected)


def test_grouped_conv_matches_torch_grouped_conv():
    assert grouped_conv_error() <= LAYER_BAR


def test_grouped_conv_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupedConv2D(10, 3, groups=4)
    with pytest.raises(ValueError, match="divisible by groups=2"):
        GroupedConv2D(8, 3, groups=2)(np.zeros((1, 4, 4, 3), "float32"))


def test_dropblock_is_identity_at_inference_and_drops_blocks_in_training():
    x = np.ones((8, 16, 16, 4), "float32")
    layer = DropBlock2D(rate=0.2, block_size=3, seed=1)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    dropped = (y == 0).mean()
    assert 0.1 < dropped < 0.35, dropped
    # Kept activations are rescaled so the mean is preserved.
    np.testing.assert_allclose(y.mean(), 1.0, rtol=1e-4)
    # Drops come in blocks: a dropped pixel has dropped neighbours.
    zero = y[..., 0] == 0
    isolated = zero[:, 1:-1, 1:-1] & ~zero[:, :-2, 1:-1] & ~zero[:, 2:, 1:-1] \
        & ~zero[:, 1:-1, :-2] & ~zero[:, 1:-1, 2:]
    assert isolated.sum() == 0


def test_stochastic_depth_drops_whole_samples():
    x = np.ones((400, 2, 2, 3), "float32")
    layer = StochasticDepth(0.25, seed=0)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(400, -1)
    np.testing.assert_allclose(np.unique(per_sample), [0.0, 1 / 0.75], rtol=1e-6)
    assert (per_sample.max(axis=1) == per_sample.min(axis=1)).all()
    assert 0.15 < (per_sample[:, 0] == 0).mean() < 0.35


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_regularizer_rates_are_validated(rate):
    with pytest.raises(ValueError, match="rate must be in"):
        DropBlock2D(rate)
    with pytest.raises(ValueError, match="rate must be in"):
        StochasticDepth(rate)


@pytest.mark.parametrize("layer", [
    SplitAttention(32, radix=4, cardinality=2, dropblock_rate=0.1, name="sa"),
    ResNeStBottleneck(16, strides=2, radix=1, cardinality=2, bottleneck_width=40,
                      avd_first=True, is_first=True, dilation_rate=2, downsample=True,
                      dropblock_rate=0.1, drop_path_rate=0.1, zero_init_last_gamma=True),
    GroupedConv2D(8, 3, strides=2, padding=1, dilation_rate=1, groups=4, use_bias=True),
    DropBlock2D(0.1, 5, seed=3),
    StochasticDepth(0.2, seed=4),
])
def test_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["module"] is not None
    assert type(keras.saving.deserialize_keras_object(serialized)) is type(layer)


def test_bottleneck_zero_init_last_gamma():
    block = ResNeStBottleneck(8, downsample=True, zero_init_last_gamma=True)
    block(np.zeros((1, 8, 8, 16), "float32"))
    np.testing.assert_array_equal(block.bn3.gamma.numpy(), 0.0)


@pytest.mark.parametrize("radix,cardinality", [(2, 1), (4, 2)])
def test_split_attention_training_mode_matches_official_batch_statistics(radix, cardinality):
    # Inference takes a fused per-group path; training must still normalise with the
    # statistics of the whole batch over every channel, as the official layer does.
    torch.manual_seed(7)
    official = SplAtConv2d(32, 32, 3, padding=1, groups=cardinality, bias=False, radix=radix,
                           norm_layer=torch.nn.BatchNorm2d).train()
    layer = SplitAttention(32, 3, radix=radix, cardinality=cardinality, name="splat")
    x = np.random.RandomState(1).normal(size=(4, 6, 7, 32)).astype("float32")
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    keras_resnest.load_torch_state_dict(
        model, {f"splat.{k}": v.detach().numpy() for k, v in official.state_dict().items()})
    with torch.no_grad():
        expected = official(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    actual = np.asarray(model(x, training=True))
    assert relative_error(actual, expected.transpose(0, 2, 3, 1)) <= LAYER_BAR
    np.testing.assert_allclose(layer.bn0.moving_mean.numpy(),
                               official.bn0.running_mean.numpy(), rtol=1e-4, atol=1e-6)
