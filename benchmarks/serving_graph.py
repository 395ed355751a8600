"""Candidate graphs for TensorFlow Serving, timed side by side.

The graph a SavedModel serves is `serving_default`: a `tf.function` of the classifier, variables
read at every call. Candidates measured against it in the same process, alternating rounds:

* `frozen`: the variables turned into constants (`convert_variables_to_constants_v2`), so
  grappler constant-folds around them and a kernel may cache reordered weights;
* `frozen_bn_folded`: frozen, then every convolution followed by an inference BatchNorm gets
  the BatchNorm multiplied into its kernel and a bias, as onnxruntime does to the ONNX file
  (`fold_batch_norms` below). Convolution + bias (+ ReLU) is the fused pattern every CPU
  kernel library has; convolution + BatchNorm is TensorFlow's own.

Each candidate runs under TensorFlow's Eigen CPU kernels (`eigen`: `TF_ENABLE_ONEDNN_OPTS=0`;
the default on AVX2-only CPUs, since TensorFlow turns oneDNN on by default only on CPUs with
AVX-512 VNNI / AMX and similar), with two inter-op threads (`eigen_inter_op_2`) and with oneDNN
(`onednn`: `TF_ENABLE_ONEDNN_OPTS=1`, the default on those newer CPUs). Two inter-op threads
can run the independent per-group convolutions of split attention at the same time. Each of
these settings is fixed when TensorFlow starts, so each is a process of its own.

    python -m benchmarks.serving_graph [--model resnest50] [--size 224] [--threads 2]
        [--batches 1 8] [--rounds 3] [--seconds 3] [--settings eigen eigen_inter_op_2 onednn]

Prints images/s (median of the rounds, with the range), the ratio to `serving_default`'s
graph in the same process, and each candidate's max relative logit difference to it. Measured
only; the figures and the decision are in docs/benchmarks.md.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

from benchmarks.common import ROOT, images_per_second

SETTINGS = {  # name -> (environment, inter-op threads)
    "eigen": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, 1),
    "eigen_inter_op_2": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, 2),
    "onednn": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, 1),
}
CANDIDATES = ("serving_default", "frozen", "frozen_bn_folded")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnest50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per block")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def classifier_function(name, size):
    """The serving graph's function (logits) of a model with random weights and BN statistics.

    Random BatchNorm statistics, so a wrong fold would show in the parity column.
    """
    import tensorflow as tf

    import keras_resnest
    from keras_resnest import classifier

    model = keras_resnest.create_model(name, weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    for variable in model.weights:
        if variable.path.endswith("moving_variance"):
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
        elif variable.path.endswith("moving_mean"):
            variable.assign(rng.normal(0.0, 0.1, variable.shape).astype("float32"))
    head = classifier.classifier_head(model)

    @tf.function
    def logits(image):
        return head(image, training=False)[0]

    return logits.get_concrete_function(tf.TensorSpec([None, size, size, 3], tf.float32))


def fold_batch_norms(graph_def):
    """Conv2D -> FusedBatchNorm pairs of a frozen graph become Conv2D (folded kernel) -> BiasAdd.

    Only where the convolution feeds nothing else and every BatchNorm input is a constant
    (the inputs are evaluated, since Keras slices BN parameters per group). Returns the count.
    """
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    consumers = {}
    for node in graph_def.node:
        for name in node.input:
            consumers.setdefault(name.lstrip("^").split(":")[0], []).append(node.name)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)

    def constant_value(name):
        source = nodes[name.split(":")[0]]
        if source.op == "Placeholder":
            return None
        try:  # a constant expression evaluates without feeds; anything else raises
            return session.run(graph.get_tensor_by_name(name if ":" in name else f"{name}:0"))
        except tf.errors.InvalidArgumentError:
            return None

    folded = 0
    for norm in list(graph_def.node):
        if not norm.op.startswith("FusedBatchNorm"):
            continue
        conv = nodes[norm.input[0].split(":")[0]]
        if conv.op != "Conv2D" or consumers.get(conv.name) != [norm.name]:
            continue
        kernel = constant_value(conv.input[1])
        gamma, beta, mean, variance = (constant_value(name) for name in norm.input[1:5])
        if any(value is None for value in (kernel, gamma, beta, mean, variance)):
            continue
        scale = gamma / np.sqrt(variance + norm.attr["epsilon"].f)
        conv.input[1] = _add_constant(graph_def, f"{conv.name}/folded_kernel", kernel * scale)
        bias = _add_constant(graph_def, f"{conv.name}/folded_bias", beta - mean * scale)
        data_input = norm.input[0]
        norm.op = "BiasAdd"  # same node name: its consumers read output 0 unchanged
        del norm.input[:]
        norm.input.extend([data_input, bias])
        for key in list(norm.attr):
            if key not in ("T", "data_format"):
                del norm.attr[key]
        folded += 1
    return folded


def _add_constant(graph_def, name, value):
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    node = graph_def.node.add(name=name, op="Const")
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value.astype(np.float32)))
    return name


def graph_function(graph_def, input_name, output_name):
    import tensorflow as tf

    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])
    return wrapped.prune(wrapped.graph.get_tensor_by_name(input_name),
                         wrapped.graph.get_tensor_by_name(output_name))


def worker(args, inter_op):
    """One setting: every candidate, alternating rounds; one JSON line with the figures."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    serving = classifier_function(args.model, args.size)
    frozen = convert_variables_to_constants_v2(serving)
    input_name, output_name = frozen.inputs[0].name, frozen.outputs[0].name
    frozen_def = frozen.graph.as_graph_def()
    folded_def = frozen.graph.as_graph_def()
    folded_count = fold_batch_norms(folded_def)
    functions = {
        "serving_default": serving,
        "frozen": graph_function(frozen_def, input_name, output_name),
        "frozen_bn_folded": graph_function(folded_def, input_name, output_name),
    }
    rng = np.random.default_rng(1)
    check = tf.constant(rng.uniform(0, 255, (2, args.size, args.size, 3)).astype("float32"))
    reference = serving(check).numpy()
    parity = {name: float(np.abs(function(check).numpy() - reference).max()
                          / np.abs(reference).max()) for name, function in functions.items()}
    speeds = {name: {batch: [] for batch in args.batches} for name in functions}
    order = list(functions)
    for _ in range(args.rounds):
        for batch in args.batches:
            images = tf.constant(
                rng.uniform(0, 255, (batch, args.size, args.size, 3)).astype("float32"))
            for name in order:
                speeds[name][batch].append(images_per_second(
                    lambda function=functions[name]: function(images), batch, args.seconds))
        order.reverse()
    print("RESULT " + json.dumps({"parity": parity, "speeds": speeds, "folded": folded_count}))


def run_setting(args, environment, inter_op):
    command = [sys.executable, "-m", "benchmarks.serving_graph", "--worker", str(inter_op),
               "--model", args.model, "--size", str(args.size), "--threads", str(args.threads),
               "--rounds", str(args.rounds), "--seconds", str(args.seconds), "--batches",
               *map(str, args.batches)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **environment)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker failed:\n{done.stderr[-3000:]}")


def main():
    args = parse_args()
    if args.worker:
        return worker(args, int(args.worker))
    print(f"{args.model} {args.size}x{args.size}, {args.threads} intra-op threads, "
          f"{args.rounds} rounds of {args.seconds:g} s per candidate and batch")
    print(f"{'setting':<17} {'graph':<17} {'batch':>5} {'images/s':>9} {'range':>13} "
          f"{'vs serving':>10} {'parity':>9}")
    for setting in args.settings:
        environment, inter_op = SETTINGS[setting]
        result = run_setting(args, environment, inter_op)
        for batch in map(str, args.batches):
            base = statistics.median(result["speeds"]["serving_default"][batch])
            for name in CANDIDATES:
                speeds = result["speeds"][name][batch]
                median = statistics.median(speeds)
                print(f"{setting:<17} {name:<17} {batch:>5} {median:>9.2f} "
                      f"{min(speeds):>6.2f}-{max(speeds):<6.2f} {median / base:>9.2f}x "
                      f"{result['parity'][name]:>9.1e}")
        print(f"{'':<17} ({result['folded']} convolution + BatchNorm pairs folded)")


if __name__ == "__main__":
    main()
