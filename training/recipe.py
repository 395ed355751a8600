"""The ResNeSt training recipe in Keras 3: optimizer, learning-rate schedule, weight-decay set, EMA.

* SGD with momentum 0.9 and weight decay 1e-4; the peak learning rate scales with the global
  batch (0.1 per 256 images, the official `--lr 0.1` at batch 256; AdamW: 1e-3 per 256).
* Cosine decay to zero with a linear warmup (`keras.optimizers.schedules.CosineDecay` with
  `warmup_target`), stepped per optimizer step.
* No weight decay on BatchNorm gamma/beta and biases (the official `--no-wd`).
* SGD is `torch.optim.SGD`, as in the reference: weight decay is *coupled* L2 added to the
  gradient before momentum (Keras's own `weight_decay` is decoupled, `w -= lr*wd*w`, which
  decays ~10x less with momentum 0.9), and the momentum buffer holds gradients, not
  lr-scaled steps, so a changing learning rate acts as in torch. AdamW keeps Keras's decoupled
  decay, which is what AdamW means.
* Optional EMA of the weights (Keras's `use_ema`), evaluated and saved in place of the raw weights.
* `last gamma`: the gamma of every Bottleneck's last BatchNorm (`bn3`) starts at zero, so each
  residual block starts as the identity.

Example:
    >>> import keras
    >>> from keras_resnest.training import recipe
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...                           keras.layers.BatchNormalization(name="bn"),
    ...                           keras.layers.GlobalAveragePooling2D(),
    ...                           keras.layers.Dense(2, name="fc")],
    ...                          name="net")
    >>> sorted(v.path for v in recipe.no_weight_decay_variables(model))
    ['net/bn/beta', 'net/bn/gamma', 'net/conv/bias', 'net/fc/bias']
    >>> recipe.scaled_learning_rate("sgd", global_batch_size=512)
    0.2
"""

import keras
from keras import ops

from keras_resnest.layers.backend_paths import tensorflow_fused_training

BASE_LEARNING_RATE = {"sgd": 0.1, "adamw": 1e-3}  # per 256 images
DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 0.05}
REFERENCE_BATCH = 256


def scaled_learning_rate(optimizer, global_batch_size, base_learning_rate=None):
    """Peak learning rate for `global_batch_size`: base x batch / 256 (linear scaling rule)."""
    optimizer = _check_optimizer_name(optimizer)
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size!r}: expected a positive integer.")
    base = BASE_LEARNING_RATE[optimizer] if base_learning_rate is None else base_learning_rate
    return base * global_batch_size / REFERENCE_BATCH


def warmup_cosine_schedule(peak_learning_rate, total_steps, warmup_steps):
    """Linear warmup 0 -> peak over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if total_steps <= 0 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"total_steps={total_steps}, warmup_steps={warmup_steps}: expected 0 <= warmup < total."
        )
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak_learning_rate,
        decay_steps=total_steps - warmup_steps,  # CosineDecay's decay phase starts after warmup
        alpha=0.0,
        warmup_target=peak_learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def walk_layers(layer):
    """`layer` and every layer inside it, nested models included."""
    # Keras 3 has no public recursive layer walk; `_flatten_layers` is what Model.summary uses.
    return layer._flatten_layers(include_self=True, recursive=True)


def no_weight_decay_variables(model):
    """BatchNorm gamma/beta and every bias: the variables the recipe does not decay."""
    excluded, seen = [], set()
    for layer in walk_layers(model):
        candidates = []
        if isinstance(layer, keras.layers.BatchNormalization):
            candidates = [layer.gamma, layer.beta]
        elif isinstance(getattr(layer, "bias", None), keras.Variable):
            candidates = [layer.bias]
        for variable in candidates:
            if variable is not None and variable.trainable and id(variable) not in seen:
                seen.add(id(variable))
                excluded.append(variable)
    return excluded


@keras.saving.register_keras_serializable(package="keras_resnest")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """`torch.optim.SGD` step for step: weight decay is L2 added to the gradient before momentum.

    Keras's SGD and torch.optim.SGD differ in two ways: Keras' weight decay is decoupled
    (`w -= lr*wd*w`), and its velocity holds the learning rate (`v = m*v - lr*g; w += v`),
    which equals torch's `buf = m*buf + g; w -= lr*buf` only while the learning rate is
    constant; under the recipe's warmup and cosine decay it is not. Variables excluded with
    `exclude_from_weight_decay` are not decayed, exactly as in Keras.
    """

    def _apply_weight_decay(self, variables):
        # Keras would decay decoupled here (w -= lr*wd*w); the decay lives in update_step instead.
        return

    def update_step(self, gradient, variable, learning_rate):
        # torch.optim.SGD with dampening 0: g += wd*w; buf = m*buf + g (buf starts at 0, so the
        # first step gives buf = g, as torch's clone does); w -= lr*buf, or lr*(g + m*buf) for
        # Nesterov.
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.weight_decay and self._use_weight_decay(variable):
            gradient = ops.add(
                gradient, ops.multiply(ops.cast(self.weight_decay, variable.dtype), variable)
            )
        if not self.momentum:
            self.assign_sub(variable, ops.multiply(learning_rate, gradient))
            return
        # SGD.build made one momentum slot per variable; _get_variable_index is how Keras's own
        # optimizers find it.
        buffer = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.momentum, variable.dtype)
        if tensorflow_fused_training():
            # TensorFlow's momentum kernel is this very update (accum = m*accum + g; w -= lr*accum,
            # or lr*(g + m*accum) for Nesterov) in one pass over the variable, where the ops
            # below are four (`python -m benchmarks.train --profile`, "variable updates").
            import tensorflow as tf

            tf.raw_ops.ResourceApplyMomentum(
                var=variable.handle, accum=buffer.handle, lr=learning_rate, grad=gradient,
                momentum=momentum, use_nesterov=self.nesterov)
            return
        self.assign(buffer, ops.add(ops.multiply(momentum, buffer), gradient))
        direction = ops.add(gradient, ops.multiply(momentum, buffer)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(learning_rate, direction))


def build_optimizer(
    model,
    *,
    optimizer="sgd",
    learning_rate,
    weight_decay=None,
    momentum=0.9,
    ema_momentum=None,
    precision="float32",
):
    """The recipe's optimizer for `model`, built on all its trainable variables.

    `learning_rate` is a float or a schedule. BatchNorm and biases are excluded from weight
    decay. `ema_momentum` (e.g. 0.9999) keeps an EMA of the weights. With `mixed_float16` the
    optimizer is wrapped in a `LossScaleOptimizer`.
    """
    optimizer = _check_optimizer_name(optimizer)
    weight_decay = DEFAULT_WEIGHT_DECAY[optimizer] if weight_decay is None else weight_decay
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay!r}: expected >= 0.")
    if ema_momentum is not None and not 0.0 < ema_momentum < 1.0:
        raise ValueError(f"ema_momentum={ema_momentum!r}: expected a value in (0, 1), e.g. 0.9999.")
    ema = {"use_ema": ema_momentum is not None, "ema_momentum": ema_momentum or 0.99}
    if optimizer == "sgd":
        opt = CoupledWeightDecaySGD(
            learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay or None, **ema
        )
    else:
        opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay, **ema)
    opt.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    if precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    # Build on every trainable variable now, so a frozen backbone can be unfrozen later and a
    # checkpoint can restore the slots before the first step.
    opt.build(model.trainable_variables)
    return opt


def zero_init_last_gamma(model):
    """Sets the gamma of every Bottleneck's last BatchNorm (`bn3`) to zero; returns how many."""
    count = 0
    for layer in walk_layers(model):
        bn3 = getattr(layer, "bn3", None)
        if isinstance(bn3, keras.layers.BatchNormalization) and bn3.gamma is not None:
            # A shape, not the variable: jnp.zeros_like cannot read a Keras Variable on JAX.
            bn3.gamma.assign(ops.zeros(bn3.gamma.shape, dtype=bn3.gamma.dtype))
            count += 1
    return count


def synchronize_batch_norm(model, enabled=True):
    """Makes every BatchNormalization compute batch statistics across all replicas (TF backend).

    Keras reads `layer.synchronized` at call time, so this works on a built model; call it
    before the first traced training step. Returns the number of layers changed.
    """
    layers = [
        layer for layer in walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in layers:
        layer.synchronized = enabled
    return len(layers)


def _check_optimizer_name(name):
    name = str(name).lower()
    if name not in BASE_LEARNING_RATE:
        raise ValueError(f"optimizer={name!r}: expected one of {sorted(BASE_LEARNING_RATE)}.")
    return name
