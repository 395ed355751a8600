"""Prints max|keras - torch| / max|torch| of every model against the official PyTorch ResNeSt.

Random weights with random BatchNorm statistics (keras_resnest.weights.reference, drawn as
tests/helpers/torch_reference.py draws them), float32, on the inputs the parity tests use
(tests/test_model_parity.py, tests/test_layers.py): every model at
an odd 45x67, resnest14d and resnest50 at 224x224, the output stride 16/8 feature maps, and
each SplitAttention configuration against the official SplAtConv2d. The tests' bars are set a
little above these figures; docs/faithfulness.md quotes them.

    python -m benchmarks.parity_report [--sections models native dilated layers]
        [--models resnest50 ...] [--height 45 --width 67]
"""
import argparse
import itertools
import os

from benchmarks.common import ported_reference, random_images

SECTIONS = ("models", "native", "dilated", "layers")


def report_models(names, height, width):
    from keras_resnest.weights import reference as ref

    print(f"\nlogits, 2 images of {height}x{width} (test_logits_match_official_model_at_odd_size)")
    print(f"{'model':26s} {'params':>12s} {'rel. error':>11s}")
    for name in names:
        torch_model, model = ported_reference(name)
        images = random_images(2, height, width, seed=1)
        error = ref.relative_error(model.predict(images, verbose=0),
                                   ref.logits(torch_model, images))
        params = sum(p.numel() for p in torch_model.parameters())
        print(f"{name:26s} {params:>12,d} {error:>11.2e}", flush=True)


def report_native():
    from keras_resnest.weights import reference as ref

    print("\nlogits, 2 images of 224x224 (test_logits_match_official_model_at_native_resolution)")
    for name in ("resnest14d", "resnest50"):
        torch_model, model = ported_reference(name, input_shape=(224, 224, 3))
        images = random_images(2, 224, 224, seed=2)
        error = ref.relative_error(model.predict(images, verbose=0),
                                   ref.logits(torch_model, images))
        print(f"{name:26s} {error:>11.2e}", flush=True)


def report_dilated():
    from keras_resnest.weights import reference as ref

    print("\nlayer4 features, 1 image of 49x65 (test_dilated_feature_maps_match_official)")
    for name in ("resnest50", "resnest50_fast_4s2x40d"):
        for stride, kwargs in ((16, {"dilation": 2}), (8, {"dilated": True})):
            torch_model, model = ported_reference(name, torch_kwargs=kwargs, include_top=False,
                                                  output_stride=stride)
            images = random_images(1, 49, 65, seed=3)
            error = ref.relative_error(model.predict(images, verbose=0),
                                       ref.features(torch_model, images))
            print(f"{name:26s} output stride {stride:2d} {error:>11.2e}", flush=True)


def report_layers():
    import keras
    import numpy as np
    import torch
    from resnest.torch.splat import SplAtConv2d

    import keras_resnest
    from keras_resnest.layers import SplitAttention
    from keras_resnest.weights import reference as ref

    def splat_pair(radix, cardinality, strides, channels, seed, train):
        torch.manual_seed(seed)
        official = SplAtConv2d(channels, channels, 3, stride=strides, padding=1,
                               groups=cardinality, bias=False, radix=radix,
                               norm_layer=torch.nn.BatchNorm2d)
        official = official.train() if train else ref.randomize_batch_norm(
            official, seed=radix + cardinality)
        layer = SplitAttention(channels, 3, strides=strides, radix=radix,
                               cardinality=cardinality, name="splat")
        return official, layer

    def error(official, layer, x, train):
        inputs = keras.Input(x.shape[1:])
        model = keras.Model(inputs, layer(inputs))
        keras_resnest.load_torch_state_dict(
            model, {f"splat.{k}": v.detach().numpy() for k, v in official.state_dict().items()})
        with torch.no_grad():
            expected = official(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        actual = model(x, training=True) if train else layer(x, training=False)
        return ref.relative_error(np.asarray(actual), expected.transpose(0, 2, 3, 1))

    print(
        "\nSplitAttention vs SplAtConv2d, inference (test_split_attention_matches_official_splat)"
    )
    x = np.random.RandomState(0).normal(size=(2, 9, 11, 64)).astype("float32")
    worst = 0.0
    for radix, cardinality, strides in itertools.product((1, 2, 4), (1, 2, 4), (1, 2)):
        official, layer = splat_pair(
            radix, cardinality, strides, 64, radix * 10 + cardinality, train=False
        )
        value = error(official, layer, x, train=False)
        worst = max(worst, value)
        print(
            f"radix {radix} cardinality {cardinality} stride {strides} {value:>11.2e}", flush=True
        )
    print(f"worst {worst:.2e}")

    print("\nSplitAttention vs SplAtConv2d, training mode (test_split_attention_training_mode_...)")
    x = np.random.RandomState(1).normal(size=(4, 6, 7, 32)).astype("float32")
    for radix, cardinality in ((2, 1), (4, 2)):
        official, layer = splat_pair(radix, cardinality, 1, 32, 7, train=True)
        print(
            f"radix {radix} cardinality {cardinality} "
            f"{error(official, layer, x, train=True):>11.2e}",
            flush=True,
        )

    print(
        "\nGroupedConv2D vs torch Conv2d(groups=3) (test_grouped_conv_matches_torch_grouped_conv)"
    )
    print(f"groups 3 stride 2 {grouped_conv_error():>11.2e}")


def grouped_conv_error():
    """GroupedConv2D vs torch Conv2d(groups=3) with the same weights: the case of
    tests/test_layers.py's test_grouped_conv_matches_torch_grouped_conv, written here again
    (the tests keep their own copy)."""
    import numpy as np
    import torch

    from keras_resnest.layers import GroupedConv2D
    from keras_resnest.weights.reference import relative_error

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--height", type=int, default=45)
    parser.add_argument("--width", type=int, default=67)
    parser.add_argument("--models", nargs="*")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_resnest

    if "models" in args.sections:
        report_models(args.models or keras_resnest.list_models(), args.height, args.width)
    if "native" in args.sections:
        report_native()
    if "dilated" in args.sections:
        report_dilated()
    if "layers" in args.sections:
        report_layers()


if __name__ == "__main__":
    main()
