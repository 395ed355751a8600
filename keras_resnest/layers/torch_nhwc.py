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
and transposing every kernel on every call cost as much as the activation copies. So on this
backend the kernel variables themselves are stored in the memory order torch reads
(`lay_out_kernels`: same shape, same values, other strides), and `torch_kernel` hands torch a
view of the variables, never a copy that could fall behind their values.

The arithmetic is torch's own kernels in both cases, so parity with the official model is
unchanged; only layout copies go away.
"""
import torch
import torch.nn.functional as F


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


def lay_out_kernels(variables):
    """Stores Keras (kh, kw, in, out) kernel variables in the memory order of torch's
    channels-last (out, in, kh, kw) kernel, the kernels of `variables` one after another, so
    that `torch_kernel` is a view of them. Shapes and values stay; only strides change.

    Args:
        variables: list of keras.Variable. The kernels of the groups, in group order (one
            variable for an ungrouped convolution), all of one shape.
    """
    params = [variable.value for variable in variables]
    # Not yet made (deferred initialisation, or a symbolic stub): `torch_kernel` copies.
    if not all(isinstance(p, torch.nn.Parameter) and p.device.type != "meta" for p in params):
        return
    with torch.no_grad():
        memory = torch.cat([p.detach().permute(3, 0, 1, 2) for p in params])  # (out, kh, kw, in)
    start = 0
    for p in params:
        p.data = memory[start:start + p.shape[-1]].permute(1, 2, 3, 0)
        start += p.shape[-1]


def _adjacent_groups(kernels):
    # All group kernels as one (out, in, kh, kw) view when they lie one after another in one
    # storage in `lay_out_kernels` order; None otherwise (another layout, or a copy of them).
    first = kernels[0]
    kh, kw, cin, cout = first.shape
    strides = (kw * cin, cin, 1, kh * kw * cin)
    try:
        storage = first.untyped_storage().data_ptr()
        for g, kernel in enumerate(kernels):
            if (kernel.shape != first.shape or kernel.dtype != first.dtype
                    or kernel.device != first.device or kernel.stride() != strides
                    or kernel.untyped_storage().data_ptr() != storage
                    or kernel.storage_offset() != first.storage_offset() + g * first.numel()):
                return None
    except (NotImplementedError, RuntimeError):  # no storage (torch.func's wrapped tensors)
        return None
    return first.as_strided((cout * len(kernels), cin, kh, kw), (kh * kw * cin, 1, kw * cin, cin))


def torch_kernel(kernels):
    """The (out, in, kh, kw) kernel of Keras (kh, kw, in, out) `kernels` concatenated along
    their output axis, read from the kernels' current values: a view of them where they can
    be viewed that way, a copy made now otherwise.

    Args:
        kernels: list of torch.Tensor. The kernels of the groups, in group order.
    """
    # Why no kept (cached) kernel: a kept copy needs a key that changes whenever the values do,
    # and torch has none. `p.data.mul_()` counts in the version counter of a throwaway alias,
    # not of `p`; writes through `p.detach().numpy()` count nowhere and keep the storage;
    # `nn.Module._apply` gives `p` new data under the same tensor object; inference tensors
    # have no version counter at all. Only reading every value could tell, which costs what
    # the copy costs. A view of the variables cannot fall behind, and with `lay_out_kernels`
    # it is the channels-last kernel torch's convolution takes as it is.
    if len(kernels) == 1:
        # A view; torch's convolution copies it only if it is not channels-last.
        return kernels[0].permute(3, 2, 0, 1)
    # The grouped view reads every group's memory but is a view of the first kernel only:
    # no gradient would reach the other groups, and a traced graph has no storage to compare.
    if not (torch.is_grad_enabled() and any(k.requires_grad for k in kernels)) and not (
            torch.compiler.is_compiling()):
        kernel = _adjacent_groups(kernels)
        if kernel is not None:
            return kernel
    return torch.cat(kernels, dim=-1).permute(3, 2, 0, 1)


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
