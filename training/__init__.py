"""Training and fine-tuning of keras_resnest models on tf.distribute (`keras-resnest train`).

Modules: `data` (readers and tf.data pipelines), `digits` (the embedded default dataset),
`augment` (crops, RandAugment, MixUp/CutMix), `recipe` (optimizer, schedule, weight-decay set,
EMA, last-gamma, sync BN), `finetune` (new head, freezing), `strategy` (tf.distribute from a
name / TF_CONFIG), `loop` (the distributed, resumable training loop), `evaluate` (top-k,
confusion matrix), `cli` (the `train` subcommand).

Nothing is imported here, so `keras-resnest --help` stays fast.
"""
