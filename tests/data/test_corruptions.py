"""tfq.data.corruptions: each shifted set is what it claims, the same every time, and cached."""

from __future__ import annotations

import numpy as np
import pytest

from tfq.core.artifacts import TfqError
from tfq.data import corruptions as C


def _bar(n: int = 4) -> np.ndarray:
    """A long vertical bar of ink on black, centred: easy to measure angles, shifts and sizes on."""
    x = np.zeros((n, 28, 28, 1), np.uint8)
    x[:, 4:24, 13:15] = 220
    return x


def _moments(image: np.ndarray):
    """Mass, centre (row, col), and the principal axis' angle from vertical (degrees) and spread."""
    m = image[..., 0].astype(np.float64)
    rows, cols = np.indices(m.shape)
    mass = m.sum()
    cy, cx = (rows * m).sum() / mass, (cols * m).sum() / mass
    dy, dx = rows - cy, cols - cx
    cov = np.array([[(dy * dy * m).sum(), (dy * dx * m).sum()], [(dy * dx * m).sum(), (dx * dx * m).sum()]]) / mass
    values, vectors = np.linalg.eigh(cov)
    vy, vx = vectors[:, -1]
    angle = np.degrees(np.arctan2(vx, vy))
    angle = (angle + 90) % 180 - 90  # an axis, not a direction
    return mass, (cy, cx), angle, np.sqrt(np.trace(cov))


def _level(name: str, level: int):
    return next(c for c in C.SMALL if c.name == name).severities[level - 1]


def test_every_dataset_gets_its_table_and_set_names():
    assert len(C.set_names("mnist")) == 1 + 8 * 3 and C.set_names("mnist")[0] == C.CLEAN
    assert len(C.set_names("cifar10")) == 1 + 15 * 3
    assert {c.family for c in C.table("cifar10")} == {"noise", "blur", "weather", "digital"}
    assert {c.family for c in C.table("fashion_mnist")} == {"noise", "blur", "geometric", "photometric", "elastic"}
    with pytest.raises(TfqError, match="unknown shifted set 'rotation/4'"):
        C.corrupt(_bar(), "mnist", "rotation/4")


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_noise():
    x = _bar()
    for name in ("gaussian_noise/2", "rotation/1", "elastic/3"):
        np.testing.assert_array_equal(C.corrupt(x, "mnist", name, seed=0), C.corrupt(x, "mnist", name, seed=0))
    for name in ("gaussian_noise/2", "elastic/3"):
        assert not np.array_equal(C.corrupt(x, "mnist", name, seed=0), C.corrupt(x, "mnist", name, seed=1))
    many = _bar(16)
    signs = [{np.sign(_moments(im)[2]) for im in C.corrupt(many, "mnist", "rotation/2", seed=s)} for s in (0, 1)]
    assert signs[0] == signs[1] == {-1.0, 1.0}
    assert not np.array_equal(
        C.corrupt(many, "mnist", "rotation/2", seed=0), C.corrupt(many, "mnist", "rotation/2", seed=1)
    )
    scene = _scene(2)
    for c in C.COLOUR:  # glass_blur and impulse_noise have generators of their own: seeded too
        name = f"{c.name}/2"
        np.testing.assert_array_equal(C.corrupt(scene, "cifar10", name), C.corrupt(scene, "cifar10", name), name)


def test_noise_has_the_claimed_standard_deviation():
    gray = np.full((8, 28, 28, 1), 128, np.uint8)
    for level in (1, 2, 3):
        residual = C.corrupt(gray, "mnist", f"gaussian_noise/{level}").astype(np.float64) - 128
        sigma = _level("gaussian_noise", level) * 255
        # what N(0, sigma) gives once the image clips it to 0..255 (the widest level clips a lot)
        want = np.clip(np.random.default_rng(0).normal(0, sigma, 200_000), -128, 127).std()
        assert abs(residual.mean()) < 3
        assert residual.std() == pytest.approx(want, rel=0.05), (level, residual.std(), want)


def test_blur_widens_the_stroke_by_the_claimed_sigma():
    x = _bar(1)
    before = x[0, 12, :, 0].astype(np.float64)
    cols = np.arange(28)

    def variance(profile):
        return ((cols - (cols * profile).sum() / profile.sum()) ** 2 * profile).sum() / profile.sum()

    for level in (1, 2, 3):
        after = C.corrupt(x, "mnist", f"gaussian_blur/{level}")[0, 12, :, 0].astype(np.float64)
        sigma = _level("gaussian_blur", level)
        # a Gaussian blur adds sigma^2 to the stroke's variance (rounding to uint8 aside)
        assert variance(after) - variance(before) == pytest.approx(sigma**2, rel=0.25), level
        assert abs(after.sum() - before.sum()) / before.sum() < 0.05


@pytest.mark.parametrize("name", ["rotation", "shear"])
def test_rotation_and_shear_tilt_the_bar_by_the_claimed_angle(name):
    x = _bar(6)
    for level in (1, 2, 3):
        want = _level(name, level)
        for image in C.corrupt(x, "mnist", f"{name}/{level}"):
            _, centre, angle, _ = _moments(image)
            assert abs(abs(angle) - want) < 3, (name, level, angle)
            assert abs(centre[0] - 13.5) < 1 and abs(centre[1] - 13.5) < 1
    signs = {np.sign(_moments(im)[2]) for im in C.corrupt(_bar(16), "mnist", f"{name}/2")}
    assert signs == {-1.0, 1.0}  # either way


def test_translation_moves_the_centre_by_the_claimed_pixels_along_one_axis():
    x = np.zeros((12, 28, 28, 1), np.uint8)
    x[:, 11:17, 11:17] = 200  # a square well inside the frame: no ink leaves it at 6 pixels
    _, (y0, x0), _, _ = _moments(x[0])
    for level in (1, 2, 3):
        t = _level("translation", level)
        for image in C.corrupt(x, "mnist", f"translation/{level}"):
            _, (y1, x1), _, _ = _moments(image)
            moves = sorted([abs(y1 - y0), abs(x1 - x0)])
            assert moves[0] < 0.05 and abs(moves[1] - t) < 0.05, (level, y1 - y0, x1 - x0)


def test_scale_shrinks_the_digit_about_the_centre_by_the_claimed_factor():
    x = _bar(2)
    _, _, _, spread0 = _moments(x[0])
    for level in (1, 2, 3):
        for image in C.corrupt(x, "mnist", f"scale/{level}"):
            _, centre, _, spread = _moments(image)
            assert spread / spread0 == pytest.approx(_level("scale", level), rel=0.06)
            assert abs(centre[0] - 13.5) < 0.5 and abs(centre[1] - 13.5) < 0.5


def test_brightness_contrast_sets_the_claimed_levels():
    x = _bar(2)
    for level in (1, 2, 3):
        b, k = _level("brightness_contrast", level)
        y = C.corrupt(x, "mnist", f"brightness_contrast/{level}").astype(np.float64)
        assert abs(y[0, 0, 0, 0] - 255 * b) <= 1  # background
        assert abs(y[0, 12, 13, 0] - (220 * (1 + k) + 255 * b)) <= 1  # ink


def test_elastic_distortion_moves_pixels_locally_not_as_one_shift():
    x = np.zeros((4, 28, 28, 1), np.uint8)
    x[:, 4:24, 10:17] = 220
    for level in (1, 2, 3):
        y = C.corrupt(x, "mnist", f"elastic/{level}")
        for before, after in zip(x, y):
            _, (cy0, cx0), _, _ = _moments(before)
            _, (cy1, cx1), _, _ = _moments(after)
            assert abs(cy1 - cy0) < 2 and abs(cx1 - cx0) < 2  # the shape stays where it was
            assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.5
            best_shift = min(
                np.abs(np.roll(before, (dy, dx), axis=(0, 1)).astype(int) - after).mean()
                for dy in range(-3, 4)
                for dx in range(-3, 4)
            )
            assert best_shift > 1.0, level  # no whole-image shift explains it


def _scene(n: int = 3) -> np.ndarray:
    """A 32x32 colour test card: a smooth gradient, a bright square and fine stripes."""
    rows, cols = np.indices((32, 32))
    base = np.stack([rows * 4, cols * 4, (rows + cols) * 2], axis=-1).astype(np.float64) + 30
    base[8:16, 8:16] = 220
    base[20:28, :] += 60 * (cols[20:28, :] % 2)[..., None]
    return np.repeat(np.clip(base, 0, 255).astype(np.uint8)[None], n, axis=0)


def _sharpness(x: np.ndarray) -> float:
    g = x.astype(np.float64).mean(-1)
    return float(np.abs(np.diff(g, axis=-1)).mean() + np.abs(np.diff(g, axis=-2)).mean())


def test_cifar_noise_family_adds_more_noise_at_higher_severity():
    x = _scene()
    for name in ("gaussian_noise", "shot_noise", "impulse_noise"):
        errors = [np.abs(C.corrupt(x, "cifar10", f"{name}/{lv}").astype(int) - x).mean() for lv in (1, 2, 3)]
        assert 2 < errors[0] < errors[1] < errors[2], (name, errors)
    impulse = C.corrupt(x, "cifar10", "impulse_noise/3")
    assert ((impulse == 0) | (impulse == 255)).mean() > ((x == 0) | (x == 255)).mean() + 0.05  # salt and pepper


def test_cifar_blur_family_removes_detail_more_at_higher_severity():
    x = _scene()
    for name in ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"):
        sharp = [_sharpness(C.corrupt(x, "cifar10", f"{name}/{lv}")) for lv in (1, 3)]
        assert sharp[1] < sharp[0] < _sharpness(x), (name, sharp, _sharpness(x))


def test_cifar_weather_family_brightens_and_veils_the_scene():
    dark = (_scene() * 0.4).astype(np.uint8)
    for name in ("snow", "frost", "brightness"):
        y = C.corrupt(dark, "cifar10", f"{name}/3")
        assert y.mean() > dark.mean() + 10, (name, y.mean(), dark.mean())
    x = _scene().astype(np.float64)
    for level in (1, 2, 3):  # a veil: the scene shows through at under half its contrast, under the fog's own
        fog = C.corrupt(_scene(), "cifar10", f"fog/{level}").astype(np.float64)
        assert np.cov(x.ravel(), fog.ravel())[0, 1] / x.var() < 0.5


def test_cifar_digital_family_does_what_each_name_says():
    x = _scene()
    contrast = [C.corrupt(x, "cifar10", f"contrast/{lv}").std() for lv in (1, 2, 3)]
    assert x.std() > contrast[0] > contrast[1] > contrast[2]
    pix = C.corrupt(x, "cifar10", "pixelate/3").astype(int)
    assert (np.diff(pix, axis=2) == 0).mean() > (np.diff(x.astype(int), axis=2) == 0).mean() + 0.3  # blocks
    jpeg = [np.abs(C.corrupt(x, "cifar10", f"jpeg_compression/{lv}").astype(int) - x).mean() for lv in (1, 3)]
    assert 0 < jpeg[0] < jpeg[1]
    elastic = C.corrupt(x, "cifar10", "elastic_transform/3")
    assert np.abs(elastic.astype(int) - x).mean() > 2 and abs(elastic.mean() - x.mean()) < 0.1 * x.mean()


def test_shifted_sets_come_from_the_cache_the_second_time(tmp_path, monkeypatch):
    x = _bar(3)
    first = C.shifted_sets("mnist", x, seed=0, cache=tmp_path)
    assert list(first) == C.set_names("mnist") and len(list((tmp_path / "shifted").glob("*.npz"))) == 1
    monkeypatch.setattr(C, "corrupt", lambda *a, **k: pytest.fail("rebuilt instead of read from the cache"))
    again = C.shifted_sets("mnist", x, seed=0, cache=tmp_path)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    # another seed, other images, another dataset's table or other code: another file
    other = x.copy()
    other[0, 0, 0] = 1
    keys = {
        C.cache_key("mnist", x, 0),
        C.cache_key("mnist", x, 1),
        C.cache_key("mnist", other, 0),
        C.cache_key("fashion_mnist", x, 0),
    }
    assert len(keys) == 3  # mnist and fashion_mnist share the 28x28 table: the same images make the same sets
    monkeypatch.setattr(C.Path, "read_text", lambda self, *a, **k: "changed code")
    assert C.cache_key("mnist", x, 0) not in keys


def test_the_subset_is_seeded_sorted_and_whole_when_asked():
    a, b = C.subset(10_000, 250, 0), C.subset(10_000, 250, 0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 250 and np.all(np.diff(a) > 0) and not np.array_equal(a, C.subset(10_000, 250, 1))
    np.testing.assert_array_equal(C.subset(100, 0, 0), np.arange(100))
    np.testing.assert_array_equal(C.subset(100, 500, 0), np.arange(100))
