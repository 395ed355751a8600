"""Float32 error of keras_resnest and of the official model, both against an official float64 run.

The official PyTorch model (random initialisation, seeded) runs in float64 and in float32, and
keras_resnest (float32, the weights ported from the same model, as a graph: `predict`) on the
same images. For the last block of each stage, the middle block of layer3 and the logits it
prints the relative error max|x - x64| / max|x64| of the official float32 model and of
keras_resnest, their ratio, and max|x64| (how large the activations are there). Intermediate
outputs: torch forward hooks, `model.get_layer(...).output` on the Keras side.

BatchNorm statistics (`--stats`):
  independent gamma and running variance uniform in [0.5, 1.5], beta and running mean
              normal(0, 0.1): unrelated to the activations, so
              the random network amplifies its activations, and their rounding, with depth;
  tests       keras_resnest.weights.reference.randomize_batch_norm (uniform, small bn3
              gamma), as tests/helpers/torch_reference.py and the parity tests;
  consistent  `calibrate_batch_norm` below: running statistics measured on the input itself,
              gamma/beta mildly random.

`--local` adds, for every block, the error each float32 implementation makes in that block
alone: both are fed the float64 run's block input rounded to float32, so the error carried in
from earlier blocks is left out and only the block's own arithmetic is compared.

    python -m benchmarks.float64_report [--model resnest101] [--size 256] [--batch 1]
        [--stats independent|tests|consistent] [--seed 0] [--local]
"""
import argparse
import os

from benchmarks.common import port, random_images

STATS = ("independent", "tests", "consistent")


def randomize_independently(model, seed=0):
    """BatchNorm statistics unrelated to the activations (`--stats independent`); eval mode."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.running_mean.normal_(0.0, 0.1, generator=generator)
    return model.eval()


def calibrate_batch_norm(model, images, seed=0):
    """Statistics measured on the activations they normalise; eval mode.

    gamma uniform in [0.75, 1.25] (x 0.2 for bn3, as the tests' helper), beta uniform in
    [-0.2, 0.2]; then one forward pass on `images` in which each BatchNorm, just before it runs,
    takes the per-channel mean and mean square (variance + mean^2, so no channel is divided by a
    near-zero spread) of its actual input as running mean and variance, in float64. The
    activations stay O(1), but the network is chaotic: every channel is rescaled to unit size
    however weakly the signal drives it, which amplifies the perturbations carried in from
    upstream, so the float32 error grows a few percent per block (see the module docstring).
    """
    import torch

    from keras_resnest.weights import reference as ref

    generator = torch.Generator().manual_seed(seed + 1)
    model.eval()
    handles = []

    def calibrate(module, args):
        x = args[0].detach().double()
        dims = [0] + list(range(2, x.dim()))
        module.running_mean.copy_(x.mean(dims))
        module.running_var.copy_((x * x).mean(dims))

    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.75, 1.25, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                if name.endswith("bn3"):
                    module.weight.mul_(0.2)
                handles.append(module.register_forward_pre_hook(calibrate))
        try:
            model(ref.to_torch_input(images))
        finally:
            for handle in handles:
                handle.remove()
    return model


def official_model(name, stats, images, seed=0):
    import torch

    from keras_resnest.weights import reference as ref

    if stats == "consistent":
        torch.manual_seed(seed)
        return calibrate_batch_norm(ref.build_reference(name), images, seed)
    if stats == "tests":
        return ref.build_randomized(name, seed=seed)
    torch.manual_seed(seed)
    return randomize_independently(ref.build_reference(name), seed)


def stage_points(torch_model):
    """Official module names: last block of each stage, middle block of layer3, the head."""
    points = []
    for stage in range(1, 5):
        blocks = len(getattr(torch_model, f"layer{stage}"))
        if stage == 3 and blocks > 2:
            points.append(f"layer3.{blocks // 2}")
        points.append(f"layer{stage}.{blocks - 1}")
    return points + ["fc"]


def keras_outputs(model, images, names):
    """{official name: output} of the Keras layers of those names, in one graph-mode call."""
    import keras

    from keras_resnest.porting import keras_layer_name

    extractor = keras.Model(model.inputs,
                            [model.get_layer(keras_layer_name(n)).output for n in names])
    return dict(zip(names, extractor.predict(images, verbose=0)))


def stage_table(torch_model, model, images, names=None):
    """[(point, official f32 error, keras error, max|x64|)] against the official float64 run."""
    import numpy as np

    from keras_resnest.weights import reference as ref

    names = names or stage_points(torch_model)
    reference = ref.module_outputs(ref.float64_copy(torch_model), ref.to_torch_input64(images),
                                   names)
    official = ref.module_outputs(torch_model, ref.to_torch_input(images), names)
    ours = keras_outputs(model, images, names)
    return [(n, ref.relative_error(official[n], reference[n]),
             ref.relative_error(ours[n], reference[n]), float(np.abs(reference[n]).max()))
            for n in names]


def local_table(torch_model, model, images):
    """Per block: each float32 implementation's error on the float64 run's block input."""
    import numpy as np
    import tensorflow as tf
    import torch

    from keras_resnest.porting import keras_layer_name
    from keras_resnest.weights import reference as ref

    tf.get_logger().setLevel("ERROR")  # one tf.function per block: no retracing warnings
    names = [f"layer{s}.{i}" for s in range(1, 5)
             for i in range(len(getattr(torch_model, f"layer{s}")))]
    modules64 = dict(ref.float64_copy(torch_model).named_modules())
    records = {}
    handles = [modules64[n].register_forward_hook(
        lambda module, args, output, n=n: records.__setitem__(n, (args[0].numpy(), output.numpy())))
        for n in names]
    with torch.no_grad():
        modules64[""](ref.to_torch_input64(images))
    for handle in handles:
        handle.remove()
    modules = dict(torch_model.named_modules())
    rows = []
    for name in names:
        x64, y64 = records[name]
        x32 = x64.astype("float32")
        with torch.no_grad():
            official = modules[name](torch.from_numpy(x32)).numpy()
        layer = model.get_layer(keras_layer_name(name))
        block = tf.function(lambda x, layer=layer: layer(x, training=False))
        ours = np.asarray(block(tf.constant(x32.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
        rows.append((name, ref.relative_error(official, y64), ref.relative_error(ours, y64),
                     float(np.abs(y64).max())))
    return rows


def print_table(rows):
    print(f"{'point':10s} {'official f32':>13s} {'keras f32':>10s} {'ratio':>6s} "
          f"{'max|x64|':>9s}")
    for name, official, ours, scale in rows:
        print(f"{name:10s} {official:>13.2e} {ours:>10.2e} {ours / official:>6.2f} "
              f"{scale:>9.3g}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest101")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--stats", choices=STATS, default="independent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local", action="store_true", help="also each block's own error")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    images = random_images(args.batch, args.size, args.size, seed=args.seed)
    torch_model = official_model(args.model, args.stats, images, args.seed)
    model = port(args.model, torch_model, input_shape=(args.size, args.size, 3))
    print(f"{args.model}, {args.batch} image(s) of {args.size}x{args.size}, {args.stats} "
          f"BatchNorm statistics, seed {args.seed}: max|x - x64| / max|x64| against the "
          "official model in float64")
    print_table(stage_table(torch_model, model, images))
    if args.local:
        print("\neach block on its own (fed the float64 run's block input)")
        print_table(local_table(torch_model, model, images))


if __name__ == "__main__":
    main()
