"""How tfq fits a Keras model, for training and for QAT fine-tuning alike: the distribution strategy,
AdamW with warm-up then cosine decay, epochs whose batches follow from (seed, epoch) alone, early
stopping on a validation measure, per-epoch checkpoints that a resumed run continues from, and
BatchNorm statistics re-estimated after runs too short for them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tfq import data
from tfq.core import artifacts
from tfq.core.artifacts import TfqError
from tfq.core.backend import keras, tf

STRATEGIES = ("default", "mirrored", "multi_worker", "ray")


MONITORS = {"val_loss": min, "val_accuracy": max}  # what early stopping watches, and which way is better


# Below this many optimizer steps, BatchNorm's moving statistics (momentum 0.9) still trail the
# fast-changing weights when training stops: a 24-step CNN run tested at 11%. Such runs re-estimate
# them afterwards; the tuned flagfiles' runs (4,000+ steps) are untouched.
BN_REESTIMATE_BELOW_STEPS = 1000


BN_REESTIMATE_MAX_BATCHES = 100


def fit_verbosity() -> int:
    """Keras' live progress bar on a terminal; one line per epoch in a log file, where the bar's
    carriage-return redraws would pile up as megabytes of one line."""
    return 1 if sys.stdout.isatty() else 2


def make_strategy(name: str) -> tf.distribute.Strategy:
    """One device, all local devices (`mirrored`), or the workers named in TF_CONFIG (`multi_worker`,
    and `ray`, whose TF_CONFIG Ray Train writes)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "ray":  # inside a Ray Train worker, which wrote TF_CONFIG (tfq.scale.executors.train_on_ray)
        if "TF_CONFIG" not in os.environ:
            raise TfqError(
                "--strategy=ray trains through Ray Train: run `python -m tfq.train --strategy=ray` "
                "or tfq.scale.executors.train_on_ray, which start the workers"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TfqError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")


def schedule(cfg) -> dict:
    """What `fit_epochs` takes from a training or fine-tuning config: its batches, seed, epochs and pixel range."""
    return {"batch_size": cfg.batch_size, "seed": cfg.seed, "epochs": cfg.epochs, "input_range": cfg.input_range}


def fit_epochs(
    model: keras.Model,
    cached_train,
    spec,
    *,
    batch_size: int,
    seed: int,
    epochs: int,
    val_ds,
    start_epoch: int = 0,
    callbacks=(),
    after_epoch=None,
    stop=None,
    input_range=None,
) -> dict:
    """Fit one epoch at a time, each on `data.training_epoch(seed, epoch)`; returns the history.

    Each epoch's order and augmentation follow from its index, never from how many times a
    pipeline was iterated, so a resumed run and an uninterrupted one see the same batches.
    `after_epoch(epoch, history, seconds)` runs once an epoch is done (the checkpoint); then
    `stop(epoch)` true ends the fit (early stopping).
    """
    history: dict[str, list[float]] = {}
    started = time.time()
    for epoch in range(start_epoch, epochs):
        # epochs=<all of them> so Keras prints "Epoch 3/20"; OneEpoch stops the fit after this one
        h = model.fit(
            data.training_epoch(cached_train, spec, batch_size, seed=seed, epoch=epoch, input_range=input_range),
            validation_data=val_ds,
            initial_epoch=epoch,
            epochs=epochs,
            callbacks=[*callbacks, OneEpoch()],
            verbose=fit_verbosity(),
        )
        for k, vs in h.history.items():
            history.setdefault(k, []).extend(float(v) for v in vs)
        if after_epoch:
            after_epoch(epoch, history, time.time() - started)
        if stop and stop(epoch):
            break
    return history


class EarlyStopping:
    """tf_keras' EarlyStopping(restore_best_weights=True) rule, decided from the run's whole history
    (resumes included) so an interrupted run stops where an uninterrupted one does: stop once
    `patience` epochs pass without improving `monitor`, then restore the best epoch's weights (as
    tf_keras does at the end of training, stopped early or not). Every worker keeps the best weights
    in memory; the chief also saves them to `<backup>/best.npz`, which a resumed run reads."""

    def __init__(self, model: keras.Model, monitor: str, patience: int, folder: Path, chief: bool):
        self.model, self.monitor, self.patience = model, monitor, patience
        self.path, self.chief, self.better = folder / "best.npz", chief, MONITORS[monitor]
        self.best_weights = None

    def best_epoch(self, history: dict) -> int:
        values = history.get(self.monitor, [])
        if not values:
            raise TfqError(f"early stopping watches {self.monitor}, but training recorded no such value")
        return values.index(self.better(values))  # the first of equals, like Keras' strict improvement

    def after_epoch(self, epoch: int, history: dict) -> bool:
        """Save the weights if `epoch` is the best so far; true when training should stop."""
        best = self.best_epoch(history)
        if best == epoch:
            self.best_weights = self.model.get_weights()
            if self.chief:
                with artifacts.atomic_path(self.path) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, *self.best_weights)
        return epoch - best >= self.patience

    def restore(self, history: dict) -> dict:
        best, last = self.best_epoch(history), len(history[self.monitor]) - 1
        if best != last:
            if self.best_weights is None:  # the best epoch ran before a resume: its weights are in the backup
                if not self.path.is_file():
                    raise TfqError(
                        f"early stopping: the best epoch's weights ({self.path}) are gone; with "
                        "several workers the backup folder must be shared"
                    )
                with np.load(self.path) as z:
                    self.best_weights = [z[f"arr_{i}"] for i in range(len(z.files))]
            self.model.set_weights(self.best_weights)
        return {
            "monitor": self.monitor,
            "patience": self.patience,
            "best_epoch": best + 1,
            "epochs_run": last + 1,
            "stopped_early": None,
            "restored_best": best != last,
            f"best_{self.monitor}": history[self.monitor][best],
        }


class OneEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


class Backup:
    """The model (with its optimizer and dropout generators), the next epoch, the history so far
    and the fitting time, saved after every epoch under `.backup-<fingerprint>/`; a rerun with the
    same settings resumes from it. Under MultiWorkerMirroredStrategy every worker takes part in a
    save, but only the chief writes to the folder (the others to a scratch folder), and all restore
    from it."""

    def __init__(self, model: keras.Model, folder: Path, strategy: tf.distribute.Strategy):
        self.folder, self.epoch = folder, tf.Variable(0, dtype=tf.int64, trainable=False)
        # A layer's tf.random.Generator (dropout) is made on its first call and not tracked by the
        # model's checkpoint: make it now and save it by position (names vary with what else the
        # process built), or a resumed run draws other masks.
        generators = {}
        layers = [m for m in model.submodules if isinstance(m, keras.layers.Layer)]
        for i, layer in enumerate(layers):
            rng = getattr(layer, "_random_generator", None)
            if rng is not None and hasattr(rng, "_maybe_init"):
                rng._maybe_init()  # noqa: SLF001 - tf_keras builds the generator lazily
                if getattr(rng, "_generator", None) is not None:
                    generators[f"rng_layer{i}"] = rng._generator  # noqa: SLF001
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch, **generators)
        self.chief = is_chief(strategy)
        self.scratch = None if self.chief else Path(tempfile.mkdtemp(prefix="tfq-backup-"))
        self.writer = tf.train.CheckpointManager(self.checkpoint, str(self.scratch or folder), max_to_keep=1)
        self.history: dict[str, list[float]] = {}
        self.seconds = 0.0

    def restore(self) -> int:
        """The epoch to start from (0 without a backup); loads the history and time so far."""
        latest = tf.train.latest_checkpoint(str(self.folder))
        if latest:
            status = self.checkpoint.restore(latest)
            status.assert_existing_objects_matched()
            status.expect_partial()  # optimizer slots restore when first built; none if no epoch is left
            progress = artifacts.read_json(self.folder / "progress.json", default={})
            self.history, self.seconds = progress.get("history", {}), progress.get("seconds", 0.0)
        return int(self.epoch.numpy())

    def save(self, epoch: int, history: dict, seconds: float) -> None:
        self.epoch.assign(epoch + 1)
        self.writer.save()
        if self.chief:
            merged = {k: self.history.get(k, []) + v for k, v in history.items()}
            artifacts.write_json(self.folder / "progress.json", {"history": merged, "seconds": self.seconds + seconds})

    def close(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def sharded(ds, strategy: tf.distribute.Strategy):
    """Across workers, each takes its share of every global batch: the data is one file, so tf.data's
    default (a share of the files per worker) cannot split it. Options reach every dataset made from `ds`."""
    if getattr(strategy, "cluster_resolver", None) is None:
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def compile_for_training(model: keras.Model, cfg, steps_per_epoch: int) -> None:
    """AdamW with a linear warm-up into a cosine decay over the run, as every float run trains (`cfg`: a
    TrainConfig: learning rate, weight decay, warm-up and epochs)."""
    warmup = int(steps_per_epoch * cfg.warmup_epochs)
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate / 10,
        decay_steps=max(steps_per_epoch * cfg.epochs - warmup, 1),
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def reestimate_batchnorm(model: keras.Model, batches) -> int:
    """Set every BatchNorm layer's moving mean and variance to the plain average of its batch
    statistics over `batches` (un-augmented training images); returns how many batches it took."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
    n = 0
    try:
        for x, _ in batches:
            n += 1
            for layer in layers:  # moving = (1 - 1/n) moving + (1/n) batch: the running mean
                layer.momentum = 1.0 - 1.0 / n
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return n
