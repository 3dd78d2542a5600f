"""tfq.models.fitting: BatchNorm statistics re-estimated as a plain mean, the chief of a Ray Train run."""

from __future__ import annotations

import json

import pytest

from tfq.core.backend import keras
from tfq.models import fitting


def test_reestimated_statistics_are_the_plain_mean_over_the_batches():
    import numpy as np

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9, name="bn")(inputs))
    batches = [(np.full((4, 3), v, np.float32) + np.arange(4, dtype=np.float32)[:, None], None) for v in (1, 5, 9)]
    assert fitting.reestimate_batchnorm(model, batches) == 3
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), [6.5] * 3, rtol=1e-6)  # means 2.5, 6.5, 10.5
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.25] * 3, rtol=1e-5)  # each batch's variance
    assert bn.momentum == 0.9


@pytest.mark.parametrize("index, chief", [(0, True), (1, False)])
def test_with_ray_trains_tf_config_only_worker_0_is_chief(monkeypatch, index, chief):
    """Ray Train writes {"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}; only
    worker 0 may write the run folder."""
    import types

    from tfq.core.backend import tf

    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": index}}
        ),
    )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert fitting.is_chief(types.SimpleNamespace(cluster_resolver=resolver)) is chief
