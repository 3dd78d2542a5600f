"""tfq.train: the real CLI on a small slice, reruns, resume, mirrored strategy, bad input."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import error_lines
from tfq import data, models, train
from tfq.core import artifacts
from tfq.core.artifacts import TfqError
from tfq.core.backend import keras
from tfq.models import fitting

SMALL = ("--max_train_examples=1500", "--max_eval_examples=300", "--epochs=2", "--batch_size=64")


def test_cli_trains_saves_a_reloadable_model_and_train_json(run_cli, tmp_path):
    proc = run_cli("train", "--dataset=mnist", "--model=cnn", *SMALL, f"--artifacts={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "mnist_cnn"
    assert sorted(p.name for p in run.iterdir()) == ["model.keras", "train.json"]
    # not a terminal: one progress line per epoch, no carriage-return progress bar
    assert proc.stdout.count("Epoch 2/2") == 1 and "\r" not in proc.stdout
    info = json.loads((run / "train.json").read_text())
    assert info["test_accuracy"] > 0.5  # chance is 0.1
    assert info["train_examples"] == 1500 and info["test_examples"] == 300 and info["epochs"] == 2
    assert info["data_source"]["kind"] == "tfds" and info["versions"]["tf_keras"].startswith("2.")
    assert info["model_sha256"] == artifacts.sha256(run / "model.keras")
    assert {"wall_time_s", "params", "macs", "seed", "config", "history"} <= info.keys()
    model = keras.models.load_model(run / "model.keras")
    assert model.count_params() == info["params"]
    assert "Epoch 2/2" in proc.stdout  # Keras progress is shown


def _config(tmp_path, **kw) -> train.TrainConfig:
    base = dict(
        dataset="mnist",
        model="mlp",
        epochs=2,
        batch_size=64,
        max_train_examples=1000,
        max_eval_examples=200,
        artifacts=str(tmp_path),
    )
    return train.TrainConfig(**{**base, **kw})


def test_same_seed_gives_the_same_accuracy(data_root, cache, tmp_path):
    cfg = _config(tmp_path / "a", data_root=str(data_root), cache_dir=str(cache), seed=7)
    first = train.train(cfg)
    again = train.train(dataclasses.replace(cfg, artifacts=str(tmp_path / "b")))
    assert first["test_accuracy"] == again["test_accuracy"]
    assert first["history"] == again["history"]


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


class _InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "dataset, model, stop",
    [("fashion_mnist", "mlp", 2), ("fashion_mnist", "mlp", 1), ("cifar10", "cnn", 2), ("cifar10", "cnn", "end")],
)
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    data_root, cache, tmp_path, monkeypatch, dataset, model, stop
):
    """Interrupted before epoch 3 (or 2) of 3, or killed after the last checkpoint but before the
    model was saved, then resumed: shuffles, augmentation (flips; crops on CIFAR-10), dropout
    masks, optimizer and learning-rate state, BatchNorm re-estimation and history must all match."""
    import numpy as np

    kw = dict(
        dataset=dataset,
        model=model,
        data_root=str(data_root),
        cache_dir=str(cache),
        epochs=3,
        max_train_examples=384,
        max_eval_examples=200,  # the history's validation scores still compared, on fewer images
        cnn_widths=(4, 8, 8),
        mlp_hidden=(32,),
        seed=3,
    )
    whole = train.train(_config(tmp_path / "whole", **kw))
    if stop == "end":
        real = fitting.reestimate_batchnorm

        def killed(*a, **k):
            monkeypatch.setattr(fitting, "reestimate_batchnorm", real)
            raise KeyboardInterrupt

        monkeypatch.setattr(fitting, "reestimate_batchnorm", killed)
        with pytest.raises(KeyboardInterrupt):
            train.train(_config(tmp_path / "resumed", **kw))
    else:
        with pytest.raises(KeyboardInterrupt):
            train.train(_config(tmp_path / "resumed", **kw), callbacks=[_InterruptAt(stop)])
    resumed = train.train(_config(tmp_path / "resumed", **kw))
    assert resumed["resumed_from_epoch"] == (3 if stop == "end" else stop)
    assert resumed["epochs_fitted_in_this_run"] == 3 - resumed["resumed_from_epoch"]
    a = models.load_trained(tmp_path / "whole" / f"{dataset}_{model}").get_weights()
    b = models.load_trained(tmp_path / "resumed" / f"{dataset}_{model}").get_weights()
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["history"] == whole["history"]
    assert resumed["batchnorm_reestimated"] == whole["batchnorm_reestimated"]


def test_an_interrupted_run_resumes_from_its_last_finished_epoch(data_root, cache, tmp_path):
    cfg = _config(tmp_path, data_root=str(data_root), cache_dir=str(cache), epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, callbacks=[_Interrupt()])
    run = tmp_path / "mnist_mlp"
    assert not (run / "model.keras").exists() and not (run / "train.json").exists()
    assert list(run.glob(".backup-*"))
    result = train.train(cfg)
    assert result["resumed_from_epoch"] == 1 and result["epochs_fitted_in_this_run"] == 2
    assert len(result["history"]["loss"]) == 3  # epoch 1's from the backup, then 2 and 3
    assert not list(run.glob(".backup-*"))


def test_mirrored_strategy_trains_on_two_logical_cpus(run_cli, tmp_path):
    proc = run_cli("train", "--model=mlp", *SMALL, "--strategy=mirrored", "--cpu_devices=2", f"--artifacts={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / "mnist_mlp" / "train.json").read_text())
    assert info["replicas"] == 2 and info["strategy"] == "mirrored"
    assert info["test_accuracy"] > 0.5


@pytest.mark.parametrize(
    "args, message",
    [
        (("--dataset=imagenet",), "unknown dataset 'imagenet'"),
        (("--model=resnet",), "unknown model 'resnet'"),
        (("--dataset=emnist_digits",), "needs a machine with internet"),
        (("--epochs=0",), "--epochs=0: must be at least 1"),
        (("--cnn_widths=a",), "--cnn_widths=a: expected a comma-separated list of int values"),
        (("--cnn_widths=32,0",), "--cnn_widths=32,0: needs one or more widths of at least 1"),
        (("--dropout=1",), "--dropout=1.0: must be in [0, 1)"),
        (("--learning_rate=0",), "--learning_rate=0.0: must be above 0"),
        (("--artifacts=/proc/nope",), "cannot write to /proc/nope/mnist_cnn"),
        (("--data_root=/nonexistent", "--artifacts=/proc/nope"), "cannot write to /proc/nope/mnist_cnn"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(with_flags, tmp_path, args, message):
    """Flags are checked, and the output folder proven writable, before any data is read."""
    with pytest.raises(TfqError, match=re.escape(message)):
        with_flags(train.TrainConfig, train.train, f"--artifacts={tmp_path}", *args, define=train.define_flags)
    assert not list(tmp_path.rglob("*.keras")) and not list(tmp_path.rglob("*.json"))


def test_the_command_line_reports_bad_input_in_one_line_with_exit_status_1(run_cli, tmp_path):
    proc = run_cli("train", f"--artifacts={tmp_path}", "--epochs=0", timeout=120)
    assert proc.returncode == 1 and error_lines(proc.stderr) == ["error: --epochs=0: must be at least 1"]
    assert "Traceback" not in proc.stderr and not list(tmp_path.rglob("*.*"))


def test_missing_model_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(TfqError, match="python -m tfq.train --dataset=fashion_mnist --model=cnn"):
        models.load_trained(tmp_path / "fashion_mnist_cnn")


def test_a_foreign_model_file_is_a_clear_error(tmp_path):
    run = tmp_path / "mnist_cnn"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not a zip archive")
    with pytest.raises(TfqError, match="is not a tf_keras model file"):
        models.load_trained(run)


def test_a_short_cnn_run_reestimates_batchnorm_and_learns(run_cli, tmp_path):
    """24 optimizer steps leave BatchNorm's moving statistics behind the weights (11% before the fix)."""
    proc = run_cli(
        "train",
        "--model=cnn",
        "--epochs=1",
        "--max_train_examples=3000",
        "--max_eval_examples=1000",
        f"--artifacts={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / "mnist_cnn" / "train.json").read_text())
    bn = info["batchnorm_reestimated"]
    assert bn["batches"] == 24 and bn["val_accuracy_after"] == info["val_accuracy"]
    assert bn["val_accuracy_after"] > bn["val_accuracy_before"] and info["test_accuracy"] > 0.7
    assert "BatchNorm statistics re-estimated over 24 training batches" in proc.stdout


def test_long_runs_keep_their_statistics(data_root, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(fitting, "BN_REESTIMATE_BELOW_STEPS", 1)
    result = train.train(
        _config(
            tmp_path,
            data_root=str(data_root),
            cache_dir=str(cache),
            model="cnn",
            epochs=1,
            max_train_examples=256,
            cnn_widths=(4, 8, 8),
        )
    )
    assert result["batchnorm_reestimated"] is None


# Overfits within a few epochs: 300 images, no dropout or weight decay, a high learning rate.
_OVERFIT = dict(
    epochs=20,
    max_train_examples=300,
    learning_rate=0.01,
    dropout=0.0,
    weight_decay=0.0,
    mlp_hidden=(64,),
    early_stopping_patience=2,
)


def _val_loss(run, data_root, cache) -> float:
    from tfq import data

    splits = data.load("mnist", root=data_root, cache=cache, max_train=300, max_eval=200)
    model = models.load_trained(run)
    return float(model.evaluate(data.batches(splits.val, 64), verbose=0)[0])


def test_early_stopping_stops_after_patience_and_keeps_the_best_validation_epoch(data_root, cache, tmp_path):
    result = train.train(_config(tmp_path, data_root=str(data_root), cache_dir=str(cache), **_OVERFIT))
    early, losses = result["early_stopping"], result["history"]["val_loss"]
    best = losses.index(min(losses))
    assert early["stopped_early"] and early["epochs_run"] == len(losses) < 20
    assert early["best_epoch"] == best + 1 and early["epochs_run"] - early["best_epoch"] == 2
    assert early["restored_best"] and result["val_accuracy"] == result["history"]["val_accuracy"][best]
    # the saved model is the best epoch's, not the last one's
    assert _val_loss(tmp_path / "mnist_mlp", data_root, cache) == pytest.approx(losses[best], abs=1e-5)
    assert losses[-1] > losses[best] + 1e-3
    assert not list((tmp_path / "mnist_mlp").glob(".backup-*"))


def test_an_early_stopped_run_resumed_stops_and_restores_as_an_uninterrupted_one(data_root, cache, tmp_path):
    kw = dict(data_root=str(data_root), cache_dir=str(cache), **_OVERFIT)
    whole = train.train(_config(tmp_path / "whole", **kw))
    stop_at = whole["early_stopping"]["epochs_run"] - 1  # interrupted after the best epoch, before the stop
    with pytest.raises(KeyboardInterrupt):
        train.train(_config(tmp_path / "resumed", **kw), callbacks=[_InterruptAt(stop_at)])
    resumed = train.train(_config(tmp_path / "resumed", **kw))
    assert resumed["resumed_from_epoch"] == stop_at
    assert resumed["early_stopping"] == whole["early_stopping"] and resumed["history"] == whole["history"]
    a = models.load_trained(tmp_path / "whole" / "mnist_mlp").get_weights()
    b = models.load_trained(tmp_path / "resumed" / "mnist_mlp").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_early_stopping_off_keeps_the_training_key_and_the_last_epoch(data_root, cache, tmp_path):
    base = _config(tmp_path)
    assert (
        dataclasses.replace(base, early_stopping_monitor="val_accuracy", tensorboard=True).fingerprint()
        == base.fingerprint()
    )  # off: runs trained before the option existed stay current
    assert dataclasses.replace(base, early_stopping_patience=3).fingerprint() != base.fingerprint()
    assert dataclasses.replace(base, max_eval_examples=500).fingerprint() == base.fingerprint()  # only scored on
    watched = dataclasses.replace(base, early_stopping_patience=3)  # early stopping picks its epoch on them
    assert dataclasses.replace(watched, max_eval_examples=500).fingerprint() != watched.fingerprint()
    result = train.train(dataclasses.replace(base, data_root=str(data_root), cache_dir=str(cache)))
    assert result["early_stopping"] is None and result["val_accuracy"] == result["history"]["val_accuracy"][-1]


def test_tensorboard_logs_every_epochs_loss_and_accuracy(run_cli, tmp_path):
    import tensorflow as tf

    logs = tmp_path / "mnist_mlp" / "tensorboard"
    for epochs in (3, 2):  # a new run replaces the old run's logs instead of mixing with them
        proc = run_cli(
            "train",
            "--dataset=mnist",
            "--model=mlp",
            "--max_train_examples=300",
            "--max_eval_examples=100",
            f"--epochs={epochs}",
            "--tensorboard",
            f"--artifacts={tmp_path}",
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        for part in ("train", "validation"):
            steps: dict[str, set] = {}
            for events in (logs / part).glob("events.out.tfevents.*"):
                for record in tf.data.TFRecordDataset(str(events)):
                    event = tf.compat.v1.Event.FromString(record.numpy())
                    for value in event.summary.value:
                        steps.setdefault(value.tag, set()).add(event.step)
            assert steps["epoch_loss"] == steps["epoch_accuracy"] == set(range(epochs)), (part, steps)


def test_ray_settings_leave_other_runs_fingerprints_alone():
    base = train.TrainConfig()
    assert dataclasses.replace(base, ray_workers=4, ray_address="h:1").fingerprint() == base.fingerprint()
    ray2, ray4 = (dataclasses.replace(base, strategy="ray", ray_workers=n) for n in (2, 4))
    assert len({base.fingerprint(), ray2.fingerprint(), ray4.fingerprint()}) == 3
    with pytest.raises(TfqError, match="--ray_address=h:1 needs --strategy=ray"):
        dataclasses.replace(base, ray_address="h:1").validate()


def test_a_models_shape_settings_key_only_its_own_runs():
    """ResNet-8's and MobileNet's settings leave the CNN's and MLP's keys as they were before they
    existed (the digests below are the ones tfq recorded then), so no finished run retrains."""
    cnn, mlp = (train.TrainConfig(dataset="mnist", model=m) for m in ("cnn", "mlp"))
    assert (cnn.fingerprint(), mlp.fingerprint()) == ("ade490c396cb", "e299c0fb8729")
    for cfg in (cnn, mlp):
        assert (
            dataclasses.replace(cfg, resnet_widths=(8, 16, 32), mobilenet_alpha=1.0).fingerprint() == cfg.fingerprint()
        )
    resnet, mobile = (train.TrainConfig(dataset="mnist", model=m) for m in ("resnet8", "mobilenet"))
    assert dataclasses.replace(resnet, resnet_widths=(8, 16, 32)).fingerprint() != resnet.fingerprint()
    assert dataclasses.replace(resnet, mobilenet_alpha=1.0).fingerprint() == resnet.fingerprint()
    assert dataclasses.replace(mobile, mobilenet_alpha=1.0).fingerprint() != mobile.fingerprint()
    assert resnet.model_kwargs()["resnet_widths"] == (16, 32, 64) and mobile.model_kwargs()["alpha"] == 0.5
    with pytest.raises(TfqError, match="--mobilenet_alpha=0.0: must be above 0"):
        dataclasses.replace(mobile, mobilenet_alpha=0.0).validate()
    with pytest.raises(TfqError, match="--resnet_widths=16,0,8: needs one or more widths of at least 1"):
        dataclasses.replace(resnet, resnet_widths=(16, 0, 8)).validate()
    with pytest.raises(TfqError, match="--resnet_widths=16,32: ResNet-8 has 3 residual stacks"):
        dataclasses.replace(resnet, resnet_widths=(16, 32)).validate()


FLAGFILES = sorted((Path(__file__).parents[1] / "flags").glob("*_*.cfg"))


def test_a_training_flagfile_ships_for_every_studied_dataset_and_the_new_models():
    studied = ("mnist", "fashion_mnist", "emnist_digits", "cifar10")  # USPS is only scored on, never trained
    expected = {f"{d}_{m}" for d in studied for m in ("mlp", "cnn")} | {"cifar10_resnet8", "cifar10_mobilenet"}
    assert expected <= {p.stem for p in FLAGFILES}


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: p.stem)
def test_every_shipped_training_flagfile_reads_as_the_run_its_name_says(path):
    dataset, _, model = path.stem.rpartition("_")
    cfg = train.from_flagfile(path, dataset, model)
    cfg.validate()
    assert (cfg.dataset, cfg.model) == (dataset, model)
    for line in path.read_text().splitlines():  # every value the file sets is the config's
        if line.startswith("--"):
            name, value = line[2:].split("=", 1)
            got = getattr(cfg, name)
            want = tuple(type(got[0])(v) for v in value.split(",")) if isinstance(got, tuple) else type(got)(value)
            assert got == want, (name, got, value)
    assert models.build(cfg.model, data.get(dataset).shape, 10, **cfg.model_kwargs()).output_shape == (None, 10)
