"""Exact clean-ups of the ONNX graph tf2onnx writes, for onnxruntime's and OpenVINO's fusions.

Why our own: onnxruntime's load-time optimizer folds BatchNorm into a convolution only when it
follows the convolution directly and never merges a zero Pad into MaxPool (not exact in
general), and tf2onnx leaves three patterns of our graph in place. Profiled in onnxruntime
(ResNeSt-50, 224 px, 1 thread), they are time per image the official file does not spend, and
its convolutions take the same time as ours:

* the ImageNet normalisation's multiply by 1/std on the image, before the first convolution:
  folded into that convolution's kernel (exact: zero padding stays zero when scaled);
* the stem's explicit zero Pad before MaxPool, with an NCHWc reorder pair around it on the
  largest feature map: merged into MaxPool's pads (exact because the Pad's input comes from a
  ReLU, so no value is below the zeros MaxPool no longer sees);
* the split-attention `fc1` BatchNorm, which sits behind a no-op Reshape of the [N, C, 1, 1]
  convolution output and so stays a separate node (with its ReLU unfused): folded into the
  convolution.

Each rewrite checks its whole pattern (constant operands, single consumers, shapes) and leaves
anything else untouched. The parity tests of the export compare every rewritten graph with Keras.
"""
import numpy as np

IMAGE_LAYOUT_TRANSPOSE = [0, 3, 1, 2]  # NHWC image -> NCHW convolution input


def clean_up(model_proto):
    """Applies every rewrite to `model_proto` in place; returns how many times each applied."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model_proto)
    graph = _Graph(model_proto.graph, inferred.graph)
    counts = {
        "input scale folded into the first convolution": _fold_input_scale(graph),
        "zero pads merged into max pooling": _merge_zero_pad_into_max_pool(graph),
        "batch norms folded into convolutions": _fold_batch_norms(graph),
    }
    graph.remove_unused_initializers()
    return counts


class _Graph:
    """Producers, consumers and constants of an ONNX graph, for pattern matching."""

    def __init__(self, graph, inferred_graph):
        self.graph = graph
        self.shapes = {value.name: [dim.dim_value or None for dim in
                                    value.type.tensor_type.shape.dim]
                       for value in inferred_graph.value_info}
        self.outputs = {value.name for value in graph.output}

    def nodes(self, op_type):
        """The nodes of `op_type`, as a list (the rewrites remove nodes while looping)."""
        return [node for node in self.graph.node if node.op_type == op_type]

    def producer(self, name):
        return next((node for node in self.graph.node if name in node.output), None)

    def consumers(self, name):
        return [node for node in self.graph.node if name in node.input]

    def only_consumer(self, name):
        consumers = self.consumers(name)
        if len(consumers) == 1 and name not in self.outputs:
            return consumers[0]
        return None

    def constant(self, name):
        from onnx import numpy_helper

        for initializer in self.graph.initializer:
            if initializer.name == name:
                return numpy_helper.to_array(initializer)
        return None

    def set_constant(self, node, index, value, suffix):
        """Points input `index` of `node` at a new initializer holding `value` (float32)."""
        from onnx import numpy_helper

        name = f"{node.name}/{suffix}"
        self.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = name

    def remove(self, node):
        self.graph.node.remove(node)

    def remove_unused_initializers(self):
        used = {name for node in self.graph.node for name in node.input}
        for initializer in list(self.graph.initializer):
            if initializer.name not in used:
                self.graph.initializer.remove(initializer)


def _attribute(node, name, default=None):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _set_ints_attribute(node, name, values):
    from onnx import helper

    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    node.attribute.append(helper.make_attribute(name, list(values)))


def _fold_input_scale(graph):
    """Mul(image', per-channel constant) -> Transpose to NCHW -> Conv: the scale into the kernel."""
    folded = 0
    for mul in graph.nodes("Mul"):
        scale = graph.constant(mul.input[1])
        transpose = graph.only_consumer(mul.output[0])
        if scale is None or transpose is None or transpose.op_type != "Transpose" \
                or list(_attribute(transpose, "perm", [])) != IMAGE_LAYOUT_TRANSPOSE:
            continue
        conv = graph.only_consumer(transpose.output[0])
        if conv is None or conv.op_type != "Conv" or conv.input[0] != transpose.output[0] \
                or _attribute(conv, "group", 1) != 1:
            continue
        kernel = graph.constant(conv.input[1])
        if kernel is None or scale.size not in (1, kernel.shape[1]):
            continue
        per_channel = np.broadcast_to(scale.reshape(-1), (kernel.shape[1],))
        graph.set_constant(conv, 1, kernel * per_channel[None, :, None, None], "scaled_kernel")
        transpose.input[0] = mul.input[0]
        graph.remove(mul)
        folded += 1
    return folded


def _merge_zero_pad_into_max_pool(graph):
    """Relu -> Pad(zeros, spatial only) -> MaxPool(no pads): the pads into MaxPool."""
    merged = 0
    for pad in graph.nodes("Pad"):
        source = graph.producer(pad.input[0])
        pool = graph.only_consumer(pad.output[0])
        pads = graph.constant(pad.input[1]) if len(pad.input) > 1 else None
        fill = graph.constant(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else None
        if source is None or source.op_type != "Relu" or pool is None \
                or pool.op_type != "MaxPool" or pads is None or pads.size != 8:
            continue
        if _attribute(pad, "mode", b"constant") not in (b"constant", "constant") \
                or (fill is not None and float(fill) != 0.0) or pads[:2].any() or pads[4:6].any():
            continue
        if any(_attribute(pool, "pads", [0]) or [0]) or \
                _attribute(pool, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        kernel = _attribute(pool, "kernel_shape")
        spatial = [int(pads[2]), int(pads[3]), int(pads[6]), int(pads[7])]  # h0, w0, h1, w1
        if max(spatial) >= min(kernel):  # every window must keep an input value
            continue
        _set_ints_attribute(pool, "pads", spatial)
        pool.input[0] = pad.input[0]
        graph.remove(pad)
        merged += 1
    return merged


def _fold_batch_norms(graph):
    """Conv [-> Reshape that keeps its N x C x 1 x 1 shape] -> BatchNormalization: BN into Conv."""
    folded = 0
    for norm in graph.nodes("BatchNormalization"):
        if len(norm.output) != 1:
            continue
        link = graph.producer(norm.input[0])
        conv = link
        if link is not None and link.op_type == "Reshape":
            conv = graph.producer(link.input[0])
            shape = graph.constant(link.input[1])
            conv_shape = graph.shapes.get(conv.output[0]) if conv is not None else None
            if shape is None or conv_shape is None or len(conv_shape) != 4 \
                    or conv_shape[2:] != [1, 1] or list(shape[1:]) != [conv_shape[1], 1, 1] \
                    or graph.only_consumer(link.output[0]) is not norm:
                continue
        if conv is None or conv.op_type != "Conv" or graph.only_consumer(conv.output[0]) is not \
                (link if link is not conv else norm):
            continue
        kernel = graph.constant(conv.input[1])
        bias = graph.constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else 0.0
        gamma, beta, mean, variance = (graph.constant(name) for name in norm.input[1:5])
        if kernel is None or bias is None or any(value is None for value in
                                                 (gamma, beta, mean, variance)):
            continue
        scale = gamma / np.sqrt(variance + _attribute(norm, "epsilon", 1e-5))
        graph.set_constant(conv, 1, kernel * scale[:, None, None, None], "folded_kernel")
        graph.set_constant(conv, 2, (bias - mean) * scale + beta, "folded_bias")
        for consumer in graph.consumers(norm.output[0]):
            consumer.input[:] = [norm.input[0] if name == norm.output[0] else name
                                 for name in consumer.input]
        graph.remove(norm)
        folded += 1
    return folded
