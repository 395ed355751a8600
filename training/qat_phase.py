"""The quantization-aware training (QAT) phase of `train` (`TrainConfig.qat_epochs`, --qat-epochs).

Why a second run of the same loop: QAT fine-tunes a *trained* float model through int8 fake
quantization (`keras_resnest.export.quantize_aware`), so it starts where the float phase ended,
or from a trained classifier `.keras` (`epochs=0, weights=FILE.keras`). Running it through the
ordinary loop in its own directory, `RUN_DIR/qat/`, gives it everything float training has:
`strategy.run` steps under MirroredStrategy/MultiWorker, its own checkpoints, and
kill-and-resume: a restarted command finds the float phase finished (its checkpoint is at the
last epoch, so it only re-saves its outputs) and the QAT phase resumes from `RUN_DIR/qat/backup`
(the checkpoint holds the activation ranges too). The user's callbacks serve both phases; the
checkpoint numbers that `on_backup_saved` receives count within each phase.

The phase's recipe: a tenth of the float default peak learning rate (unless
`qat_learning_rate`), no warmup, cosine decay, no EMA of the weights, no frozen backbone.
Outputs in `RUN_DIR/qat/`: `model.keras` (QAT, loads with `keras_resnest.load_model`), best.keras,
history.csv, evaluation.json; `keras-resnest export --weights RUN_DIR/qat/model.keras --format
tflite --quantize int8` then needs no calibration images.
"""

import dataclasses
import os

import keras_resnest
from keras_resnest import classifier
from keras_resnest.training import finetune, recipe
from keras_resnest.training.config import QAT_DIR
from keras_resnest.training.run import train_phase

QAT_LR_FACTOR = 0.1


def qat_config(config, global_batch):
    """The `TrainConfig` of the QAT phase derived from the run's config."""
    learning_rate = config.qat_learning_rate or QAT_LR_FACTOR * recipe.scaled_learning_rate(
        config.optimizer, global_batch
    )
    return dataclasses.replace(
        config,
        epochs=config.qat_epochs,
        qat_epochs=0,
        learning_rate=learning_rate,
        warmup_epochs=0.0,
        ema_momentum=None,
        freeze_backbone=False,
        unfreeze_epoch=None,
        weights=None,
    )


def float_model(config, data, run_dir):
    """The trained float classifier QAT starts from (built outside any strategy scope)."""
    if config.epochs:
        # Every worker writes its final (EMA-applied) weights; only the chief writes model.keras.
        model = finetune.build_classifier(
            config.model_name,
            num_classes=data.num_classes,
            image_size=config.image_size,
            weights=None,
            last_gamma=False,
        )
        model.load_weights(os.path.join(run_dir, "model.weights.h5"))
        return model
    model = keras_resnest.load_model(config.weights, compile=False)
    classes = classifier.num_classes(model)
    if classes != data.num_classes:
        raise ValueError(
            f"{config.weights} classifies {classes} classes, the data has "
            f"{data.num_classes}: QAT fine-tunes a classifier of these classes."
        )
    size = classifier.fixed_image_size(model)
    if size not in (None, config.image_size):
        raise ValueError(
            f"{config.weights} was built for {size} px, the run uses "
            f"--image-size {config.image_size}."
        )
    return model


def train_qat(config, data, run_dir, strategy, chief, log, callbacks):
    """Runs the QAT phase through the same loop as the float phase (`run.train_phase`);
    returns its result."""
    # Imported here: the QAT layers are needed by this phase only.
    from keras_resnest.quantization import quantize_aware

    phase = qat_config(config, config.batch_size * strategy.num_replicas_in_sync)
    source = float_model(config, data, run_dir)
    out_dir = os.path.join(run_dir, QAT_DIR)
    os.makedirs(out_dir, exist_ok=True)
    log(
        f"quantization-aware training: {phase.epochs} epoch(s) at peak lr "
        f"{phase.learning_rate:g} -> {out_dir}"
    )
    return train_phase(
        phase,
        data,
        out_dir,
        strategy,
        chief,
        log,
        callbacks,
        build_model=lambda: quantize_aware(source),
    )
