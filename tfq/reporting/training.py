"""The training section: the recorded curves of each run, and what early stopping would have done to them."""

from __future__ import annotations

from tfq.reporting import fmt
from tfq.reporting.collect import Study

PATIENCE_SHOWN = 3  # the training table says what early stopping with this patience would have done


def early_stop(values: list[float], patience: int, better=min) -> tuple[int, int]:
    """(epochs run, best epoch), 1-based: Keras' early-stopping rule (strict improvement, restore
    the best) replayed on one recorded validation curve, as `tfq.models.fitting.EarlyStopping` applies it."""
    best = 0
    for i, v in enumerate(values):
        if v != values[best] and better(v, values[best]) == v:
            best = i
        if i - best >= patience:
            return i + 1, best + 1
    return len(values), best + 1


def section(study: Study) -> list[str]:
    found = {n: r["train"] for n, r in study.runs.items() if (r.get("train") or {}).get("history", {}).get("val_loss")}
    if not found:
        return []
    md = [
        "## Training curves: what the validation split says",
        "",
        "Per epoch, from train.json. The learning rate follows a warm-up then a cosine decay to zero over the run's "
        f"epochs. The last columns apply Keras' early-stopping rule (patience {PATIENCE_SHOWN}, restoring the best "
        "epoch) to the recorded validation loss: the epoch it would have stopped after, the one it would have "
        "restored, and that epoch's validation accuracy against the last epoch's. "
        "`python -m tfq.train --early_stopping_patience=N` applies it while training.",
        "",
        "| run | epochs | early stopping used | lowest val loss (epoch) | best val accuracy (epoch) | last epoch val "
        f"accuracy | patience {PATIENCE_SHOWN}: stops after / restores | its val accuracy minus the last's "
        "(descriptive: chosen on this split) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, t in found.items():
        h, early = t["history"], t.get("early_stopping")
        loss_best = h["val_loss"].index(min(h["val_loss"]))
        acc_best = h["val_accuracy"].index(max(h["val_accuracy"]))
        stops, restores = early_stop(h["val_loss"], PATIENCE_SHOWN)
        used = (
            f"patience {early['patience']} on {early['monitor']}: best epoch {early['best_epoch']} of "
            f"{early['epochs_run']}"
            if early
            else "no"
        )
        md.append(
            f"| {n} | {len(h['loss'])} | {used} | {h['val_loss'][loss_best]:.4f} ({loss_best + 1}) | "
            f"{fmt.value(h['val_accuracy'][acc_best], 'pct')} ({acc_best + 1}) | "
            f"{fmt.value(h['val_accuracy'][-1], 'pct')} | "
            f"{stops} / {restores} | {100 * (h['val_accuracy'][restores - 1] - h['val_accuracy'][-1]):+.2f} |"
        )
    md.append("")
    md += [f"![training curves, {n}](training_{n}.png)" for n in found] + [""]
    return md
