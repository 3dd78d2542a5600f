"""Train a float model: `python -m tfq.train --dataset=mnist --model=cnn`.

Writes `artifacts/<dataset>_<model>/model.keras` (reloadable by tf_keras, tfmot and the TFLite
converter) and `train.json` (test accuracy, history, wall time, flags, versions, data source).
AdamW with a warm-up then cosine learning rate; an interrupted run resumes from its last finished
epoch with the same weights an uninterrupted run has there (model, optimizer and dropout generator
state are checkpointed; each epoch's batches follow from its index); the same seed gives the same
accuracy on a rerun. `--early_stopping_patience=N` stops once the validation loss has not improved
for N epochs and restores the best validation epoch's weights (kept beside the checkpoint, so a
resumed run restores the same ones); `--tensorboard` writes TensorBoard logs to `<run>/tensorboard/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from absl import flags

from tfq import data, models
from tfq.core import artifacts, cli
from tfq.core.artifacts import TfqError
from tfq.core.backend import fresh_session, keras, tf, versions
from tfq.models import fitting, imported

TENSORBOARD_DIR = "tensorboard"


@dataclasses.dataclass
class TrainConfig(cli.Run):
    epochs: int = cli.setting(10, "Training epochs.")
    batch_size: int = cli.setting(128, "Global batch size.")
    learning_rate: float = cli.setting(3e-3, "Peak learning rate (after warm-up).")
    weight_decay: float = cli.setting(1e-4, "AdamW weight decay.")
    warmup_epochs: float = cli.setting(1.0, "Linear warm-up length, in epochs.")
    dropout: float = cli.setting(0.2, "Dropout before the classifier.")
    cnn_widths: tuple[int, ...] = cli.setting((32, 64, 128), "CNN channels per stage.")
    mlp_hidden: tuple[int, ...] = cli.setting((512, 256), "MLP hidden layer widths.")
    resnet_widths: tuple[int, ...] = cli.setting((16, 32, 64), "ResNet-8 filters per residual stack (MLPerf Tiny's).")
    mobilenet_alpha: float = cli.setting(0.5, "MobileNet width multiplier (1.0: MobileNetV1's widths).")
    seed: int = cli.setting(0, "Random seed (weights, shuffling, augmentation).")
    max_train_examples: int = cli.setting(0, "Use only this many training examples (0: all).")
    max_eval_examples: int = cli.setting(0, "Use only this many validation/test examples (0: all).")
    strategy: str = cli.setting(
        "default",
        "tf.distribute strategy; `ray`: MultiWorkerMirroredStrategy "
        "over --ray_workers Ray Train workers (pip install -e .[ray]).",
        choices=fitting.STRATEGIES,
    )
    ray_workers: int = cli.setting(2, "--strategy=ray: Ray Train workers (one CPU each).")
    ray_address: str | None = cli.setting(
        None, "--strategy=ray: HOST:PORT of a running Ray cluster (`ray start --head`); default: a local instance."
    )
    early_stopping_patience: int = cli.setting(
        0, "Stop after this many epochs without a better --early_stopping_monitor and restore the best epoch (0: off)."
    )
    early_stopping_monitor: str = cli.setting(
        "val_loss", "Validation measure early stopping watches.", choices=list(fitting.MONITORS)
    )
    tensorboard: bool = cli.setting(False, "Write TensorBoard logs to <run>/tensorboard/.")

    def validate(self) -> None:
        """Every flag, before any data is read or anything written."""
        data.get(self.dataset, self.image_size)
        models.check(self)
        if self.model_file and self.strategy != "default":
            raise TfqError(f"--model_file={self.model_file} is studied as it is: --strategy={self.strategy} trains")
        if self.strategy not in fitting.STRATEGIES:
            raise TfqError(f"unknown strategy {self.strategy!r}; choose one of: {', '.join(fitting.STRATEGIES)}")
        cli.check_at_least(self, 1, "epochs", "batch_size", "ray_workers")
        if self.ray_address and self.strategy != "ray":
            raise TfqError(f"--ray_address={self.ray_address} needs --strategy=ray")
        cli.check_at_least(
            self,
            0,
            "weight_decay",
            "warmup_epochs",
            "max_train_examples",
            "max_eval_examples",
            "early_stopping_patience",
        )
        if self.early_stopping_monitor not in fitting.MONITORS:
            raise TfqError(
                f"--early_stopping_monitor={self.early_stopping_monitor}: choose one of: {', '.join(fitting.MONITORS)}"
            )
        if not self.learning_rate > 0:
            raise TfqError(f"--learning_rate={self.learning_rate}: must be above 0")
        if not 0 <= self.dropout < 1:
            raise TfqError(f"--dropout={self.dropout}: must be in [0, 1)")
        if len(self.resnet_widths) != 3:
            raise TfqError(f"--resnet_widths={','.join(map(str, self.resnet_widths))}: ResNet-8 has 3 residual stacks")
        if not self.mobilenet_alpha > 0:
            raise TfqError(f"--mobilenet_alpha={self.mobilenet_alpha}: must be above 0")
        for name in ("cnn_widths", "mlp_hidden", "resnet_widths"):
            widths = getattr(self, name)
            if not widths or any(w < 1 for w in widths):
                raise TfqError(f"--{name}={','.join(map(str, widths))}: needs one or more widths of at least 1")

    def model_kwargs(self) -> dict:
        return {
            "widths": tuple(self.cnn_widths),
            "hidden": tuple(self.mlp_hidden),
            "resnet_widths": tuple(self.resnet_widths),
            "alpha": self.mobilenet_alpha,
            "dropout": self.dropout,
        }

    def fingerprint(self) -> str:
        """Identifies what a checkpoint belongs to: everything that changes what training sees or
        does, not where files go. The validation subset (`max_eval_examples`) counts when early
        stopping watches it: it picks the epoch whose weights are kept."""
        keyed = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("artifacts", "data_root", "cache_dir", "tensorboard", "ray_address")
        }  # not the weights
        # another model's shape settings do not change this one: cnn and mlp keep their keys from before
        for name, model in (("resnet_widths", "resnet8"), ("mobilenet_alpha", "mobilenet")):
            if self.model != model:
                keyed.pop(name)
        keyed.pop("model_file"), keyed.pop("float_tflite"), keyed.pop("run_name")  # a model file's digest counts
        if keyed["image_size"] is None:
            keyed.pop("image_size")
        if self.model_file:
            keyed["model_file_sha256"] = imported.source_digest(imported.check_path(self.model_file))
        if cli.pixel_range(keyed.pop("input_range")) != cli.UNIT_RANGE:  # [0, 1]: the key from before
            keyed["input_range"] = list(self.input_range)
        if self.strategy != "ray":  # the same key as before Ray Train existed
            keyed.pop("ray_workers")
        if not self.early_stopping_patience:  # off: the same key as before the option existed
            keyed.pop("early_stopping_patience"), keyed.pop("early_stopping_monitor")
            if not self.model_file:  # an import is tested on the slice: it counts
                keyed.pop("max_eval_examples")
        return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=list).encode()).hexdigest()[:12]


def train(cfg: TrainConfig, *, callbacks=()) -> dict:
    """Fit, test, save the model and train.json; returns train.json's content. With --model_file the
    user's model is imported instead (`tfq.models.imported`)."""
    cfg.validate()
    if cfg.model_file:
        return imported.import_model(cfg)
    pixels = cli.pixel_range(cfg.input_range)
    spec = data.get(cfg.dataset, cfg.image_size)  # a retrained model takes the size asked for now
    if spec.folder:  # every image decodes before the run folder exists
        data.check_available(cfg.dataset, cfg.data_root, cfg.cache_dir, spec.shape)
    out = artifacts.check_writable(artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model))

    strategy = fitting.make_strategy(cfg.strategy)  # first: a multi-worker strategy must exist before any TensorFlow op
    fresh_session(cfg.seed)
    source_key = data.source_key(cfg.dataset, cfg.data_root, cfg.cache_dir)  # before a first build changes it
    splits = data.load(
        cfg.dataset,
        root=cfg.data_root,
        cache=cfg.cache_dir,
        max_train=cfg.max_train_examples or None,
        max_eval=cfg.max_eval_examples or None,
        shape=spec.shape if data.resizable(cfg.dataset) else None,
    )

    cached_train = fitting.sharded(splits.train, strategy).cache()  # shared by every epoch
    val_ds = data.batches(fitting.sharded(splits.val, strategy), cfg.batch_size, pixels)
    test_ds = data.batches(fitting.sharded(splits.test, strategy), cfg.batch_size, pixels)
    steps = -(-int(splits.train.cardinality()) // cfg.batch_size)
    if steps < 1:
        raise TfqError(f"{cfg.dataset}: the training split is empty")

    with strategy.scope():
        model = models.build(cfg.model, spec.shape, spec.num_classes, **cfg.model_kwargs())
        fitting.compile_for_training(model, cfg, steps)

    backup = out / f".backup-{cfg.fingerprint()}"
    for stale in out.glob(".backup-*"):
        if stale != backup:
            shutil.rmtree(stale, ignore_errors=True)
    with strategy.scope():
        state = fitting.Backup(model, backup, strategy)
        start_epoch = state.restore()
    callbacks = list(callbacks)
    if cfg.tensorboard:
        logs = out / TENSORBOARD_DIR
        if start_epoch == 0 and state.chief:
            shutil.rmtree(logs, ignore_errors=True)  # a new run's curves, not appended to an old run's
        # only the chief writes the run's logs; other workers log to their scratch folder
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=str(logs if state.chief else state.scratch / TENSORBOARD_DIR))
        )
    stopper = (
        fitting.EarlyStopping(model, cfg.early_stopping_monitor, cfg.early_stopping_patience, backup, state.chief)
        if cfg.early_stopping_patience
        else None
    )
    so_far: dict[str, list[float]] = {}

    def after_epoch(epoch, history, seconds):
        state.save(epoch, history, seconds)
        so_far.clear()
        so_far.update({k: state.history.get(k, []) + history.get(k, []) for k in {*state.history, *history}})

    def stop(epoch) -> bool:
        return stopper is not None and stopper.after_epoch(epoch, so_far)

    done = stopper is not None and start_epoch > 0 and stopper.after_epoch(start_epoch - 1, state.history)
    started = time.time()
    fitted = (
        {}
        if done
        else fitting.fit_epochs(
            model,
            cached_train,
            spec,
            val_ds=val_ds,
            start_epoch=start_epoch,
            callbacks=callbacks,
            after_epoch=after_epoch,
            stop=stop,
            **fitting.schedule(cfg),
        )
    )
    wall = state.seconds + time.time() - started  # fitting time of every epoch, across resumes
    history = {k: state.history.get(k, []) + fitted.get(k, []) for k in {*state.history, *fitted}}
    state.close()
    early = None
    if stopper is not None:
        early = stopper.restore(history)
        early["stopped_early"] = early["epochs_run"] < cfg.epochs
    reestimated = None
    if steps * cfg.epochs < fitting.BN_REESTIMATE_BELOW_STEPS:  # decided by the run's length alone, resumed or not
        before = float(model.evaluate(val_ds, verbose=0)[1])
        with strategy.scope():
            n = fitting.reestimate_batchnorm(
                model, data.batches(splits.train, cfg.batch_size, pixels).take(fitting.BN_REESTIMATE_MAX_BATCHES)
            )
        if n:
            reestimated = {
                "why": f"{steps * cfg.epochs} optimizer steps (< {fitting.BN_REESTIMATE_BELOW_STEPS})",
                "batches": n,
                "val_accuracy_before": before,
                "val_accuracy_after": float(model.evaluate(val_ds, verbose=0)[1]),
            }
            print(
                f"BatchNorm statistics re-estimated over {n} training batches after a short run: "
                f"validation accuracy {before:.4f} -> {reestimated['val_accuracy_after']:.4f}",
                flush=True,
            )
    test_loss, test_acc = model.evaluate(test_ds, verbose=0)

    # every worker saves (saving may run collective ops), the chief into the run folder
    chief = fitting.is_chief(strategy)
    saved = out / artifacts.MODEL_FILE if chief else Path(tempfile.mkdtemp(prefix="tfq-worker-")) / artifacts.MODEL_FILE
    with artifacts.atomic_path(saved) as tmp:
        model.save(tmp)
    result = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "input_range": list(pixels),
        "val_accuracy": (
            reestimated["val_accuracy_after"]
            if reestimated
            else float(history["val_accuracy"][early["best_epoch"] - 1])
            if early
            else float(history["val_accuracy"][-1])
            if history
            else None
        ),
        "early_stopping": early,
        "batchnorm_reestimated": reestimated,
        "epochs": cfg.epochs,
        "resumed_from_epoch": start_epoch,
        "train_examples": int(splits.train.cardinality()),
        "test_examples": int(splits.test.cardinality()),
        "wall_time_s": round(wall, 1),
        "params": int(model.count_params()),
        "macs": models.macs(model),
        "seed": cfg.seed,
        "strategy": cfg.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "data_source": splits.source.to_json(),
        "data_source_key": source_key,
        **data.recorded(spec),
        "history": history,
        "epochs_fitted_in_this_run": len(fitted.get("loss", [])),
        "config": dataclasses.asdict(cfg),
        "fingerprint": cfg.fingerprint(),
        "versions": versions(),
        "code": artifacts.code_digest(),
        "model_sha256": artifacts.sha256(saved),
    }
    if not chief:
        shutil.rmtree(saved.parent, ignore_errors=True)
        return result
    artifacts.write_json(out / artifacts.TRAIN_JSON, result)
    shutil.rmtree(backup, ignore_errors=True)
    return result


FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """The training flags, on `fv`: the CLI's, and the pipeline's reader of flagfiles."""
    cli.define_flags(TrainConfig, fv)
    flags.DEFINE_integer(
        "cpu_devices", 1, "Split the CPU into this many logical devices (for mirrored).", flag_values=fv
    )


def from_flagfile(path: Path, dataset: str, model: str) -> TrainConfig:
    """A training flagfile (`flags/<dataset>_<model>.cfg`), read by absl exactly as `python -m tfq.train
    --flagfile=...` reads it; no file: the defaults for this dataset and model."""
    fv = flags.FlagValues()
    define_flags(fv)
    try:
        fv(
            [
                "tfq.train",
                f"--dataset={dataset}",
                f"--model={model}",
                *([f"--flagfile={path}"] if path.is_file() else []),
            ]
        )
    except flags.Error as e:
        raise TfqError(f"{path}: {str(e).splitlines()[0]}") from None
    tc = cli.config_from_flags(TrainConfig, fv)
    if (tc.dataset, tc.model) != (dataset, model):
        raise TfqError(f"{path} trains --dataset={tc.dataset} --model={tc.model}, not {dataset} {model}")
    return tc


def split_cpu(n: int) -> None:
    """Make `n` logical CPU devices; must run before TensorFlow touches a device."""
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def main(argv):
    del argv
    split_cpu(FLAGS.cpu_devices)
    cfg = cli.config_from_flags(TrainConfig)
    if cfg.strategy == "ray":
        from tfq.scale import executors  # the CLI dispatches; train itself never imports Ray

        result = executors.train_on_ray(train, cfg, cfg.ray_workers, cfg.ray_address)
    else:
        result = train(cfg)
    print(
        f"{result['dataset']} {result['model']}: test accuracy {result['test_accuracy']:.4f} "
        f"in {result['wall_time_s']:.0f} s -> {artifacts.run_dir(cfg.artifacts, cfg.dataset, cfg.model)}"
    )


if __name__ == "__main__":
    cli.run(main, define_flags)
