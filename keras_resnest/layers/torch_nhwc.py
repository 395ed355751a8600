"""Convolution and inference BatchNorm on the PyTorch backend, on NHWC tensors without copies.

Why: Keras' torch backend computes a channels_last convolution by permuting the NHWC input to
NCHW and making it contiguous (a copy), then converting it to channels-last memory (a second
copy), and does the same to the kernel, on every call. In torch.profiler's table of ResNeSt-50's
forward pass those copies (`aten::copy_`) came second only to the convolutions themselves
(`python -m benchmarks.inference --keras-backends` measures the result). An NHWC tensor permuted
to NCHW already *is* a channels-last NCHW tensor, which torch's oneDNN convolution takes as it
is, and its channels-last output permuted back is a contiguous NHWC tensor again. Keras computes
inference BatchNorm as separate subtract, multiply and add passes over the tensor; torch's
`batch_norm` is one pass.

The kernel is the other copy: torch wants (out, in, kh, kw) where Keras keeps (kh, kw, in, out),
and transposing every kernel on every call cost as much as the activation copies. Where no
gradient is needed (`predict`, `torch.no_grad()`), the transposed kernel is kept per variable and
made again only when the variable's value changes (torch's version counter of the tensor counts
every in-place write, which is how Keras assigns); that holds a second copy of the convolution
weights while the model predicts. Under autograd the transpose stays in the graph.

The arithmetic is torch's own kernels in both cases, so parity with the official model is
unchanged; only layout copies go away.
"""
import torch
import torch.nn.functional as F

# Attribute of the first kernel tensor holding (ids and versions of all kernels, torch kernel),
# so that the kept kernel lives exactly as long as the variable's tensor.
_KEPT = "_keras_resnest_torch_kernel"


def symmetric_padding(padding, kernel_size, strides, dilation_rate):
    """Pixels of zero padding on each side for a Keras `padding`, or None where torch cannot
    express it as one symmetric amount per dimension ('same' with a stride, or an even kernel).

    Args:
        padding: str. Keras padding, "valid" or "same".
        kernel_size: tuple of int. Kernel height and width.
        strides: tuple of int.
        dilation_rate: tuple of int.
    """
    if padding == "valid":
        return (0, 0)
    pads = []
    for k, s, d in zip(kernel_size, strides, dilation_rate):
        total = d * (k - 1)
        if s != 1 or total % 2:
            return None
        pads.append(total // 2)
    return tuple(pads)


def _nchw_view(inputs):
    # NHWC -> NCHW by strides only: the result is in torch's channels-last memory format.
    return inputs.permute(0, 3, 1, 2)


def _nhwc_view(outputs):
    return outputs.permute(0, 2, 3, 1)


def torch_kernel(kernels):
    """The (out, in, kh, kw) channels-last kernel of Keras (kh, kw, in, out) `kernels`
    concatenated along their output axis, kept while their values do not change and no
    gradient is needed.

    Args:
        kernels: list of torch.Tensor. The kernels of the groups, in group order.
    """
    def convert(tensors):
        kernel = tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=-1)
        return kernel.permute(3, 2, 0, 1)

    if torch.is_grad_enabled() and any(k.requires_grad for k in kernels):
        return convert(kernels)
    key = tuple((id(k), k._version) for k in kernels)
    kept = getattr(kernels[0], _KEPT, None)
    if kept is not None and kept[0] == key:
        return kept[1]
    with torch.no_grad():
        kernel = convert(kernels).contiguous(memory_format=torch.channels_last)
    setattr(kernels[0], _KEPT, (key, kernel))
    return kernel


def conv2d(inputs, kernels, strides, padding, dilation_rate, groups=1):
    """2D convolution of NHWC `inputs` with Keras (H, W, in/groups, out/groups) kernels.

    Args:
        inputs: torch.Tensor. (batch, height, width, channels).
        kernels: list of torch.Tensor. One (kh, kw, channels / groups, filters / groups)
            kernel per group, or one (kh, kw, channels / groups, filters) kernel.
        strides: tuple of int.
        padding: tuple of int. Zeros on each side per spatial dimension
            (`symmetric_padding`).
        dilation_rate: tuple of int.
        groups: int. Channel groups (torch's `groups`). Defaults to 1.
    """
    outputs = F.conv2d(_nchw_view(inputs), torch_kernel(kernels), stride=tuple(strides),
                       padding=tuple(padding), dilation=tuple(dilation_rate), groups=groups)
    return _nhwc_view(outputs)


def batch_norm_inference(inputs, gamma, beta, moving_mean, moving_variance, epsilon):
    """Inference BatchNorm of NHWC `inputs` over the last axis, in one torch kernel.

    Args:
        inputs: torch.Tensor. (batch, height, width, channels).
        gamma, beta, moving_mean, moving_variance: torch.Tensor. (channels,).
        epsilon: float.
    """
    outputs = F.batch_norm(_nchw_view(inputs), moving_mean, moving_variance, weight=gamma,
                           bias=beta, training=False, eps=epsilon)
    return _nhwc_view(outputs)
