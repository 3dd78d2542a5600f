"""A study run's flagfile trained on N Ray Train workers (MultiWorkerMirroredStrategy, the same global
batch) against the study's one-worker model of the same flagfile, on the same test images: two-worker
minus one-worker accuracy in points, its 95% interval and McNemar's p, and both training times.
Writes the N-worker run to artifacts_ray_train/<run>/ (the study's folder is left alone).

    .venv/bin/python benchmarks/ray_train.py mnist_mlp 2      (TFQ_DATA_ROOT set; after the study)
"""

import dataclasses
import sys

from tfq import data, models, pipeline, train
from tfq.core import artifacts, stats
from tfq.scale import executors


def main(run: str, workers: str = "2") -> None:
    dataset, model = run.rsplit("_", 1)
    one_dir = artifacts.run_dir("artifacts", dataset, model)
    one = artifacts.read_json(one_dir / artifacts.TRAIN_JSON)
    cfg = pipeline.train_config(pipeline.PipelineConfig(), dataset, model)
    if cfg.fingerprint() != one["fingerprint"]:
        sys.exit(f"error: {one_dir} was not trained from flags/{run}.cfg as it stands")
    many = executors.train_on_ray(train.train, dataclasses.replace(cfg, artifacts="artifacts_ray_train"), int(workers))
    images, labels = data.to_numpy(data.load(dataset).test)
    scaled = data.scale(images).numpy()
    correct = [
        models.load_trained(folder).predict(scaled, batch_size=1000, verbose=0).argmax(1) == labels
        for folder in (one_dir, artifacts.run_dir("artifacts_ray_train", dataset, model))
    ]
    t = stats.paired(*correct)
    print(
        f"{run}: 1 worker {correct[0].mean():.2%} in {one['wall_time_s']:.0f} s; {workers} Ray Train workers "
        f"{correct[1].mean():.2%} in {many['wall_time_s']:.0f} s (replicas {many['replicas']}); "
        f"{workers} minus 1: {t['delta_pts']:+.2f} points [{t['ci95_pts'][0]:+.2f}, {t['ci95_pts'][1]:+.2f}], "
        f"McNemar p = {t['p_value']:.3g} on {t['images']:,d} test images"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
