"""A sensitivity result's drops (float32 minus the file) from its paired comparisons: the
sensitivity stage writes them so, and the report fills them again once it has restated the intervals."""

from __future__ import annotations


def drops(result: dict) -> dict:
    """Fill the drop fields (float32 minus the file, with intervals) from the paired comparisons
    the result holds: the stage writes them so, and the report calls it again on a result whose
    intervals it restated from the counts (`stats.restated`)."""
    for v in result["rungs"].values():
        t = v["val_vs_float32"]
        v.update(val_drop_pts=-t["delta_pts"], val_drop_ci95_pts=[-t["ci95_pts"][1], -t["ci95_pts"][0]])
    for layer in result["layers"]:
        for v in layer["schemes"].values():
            alone, spared = v["only_quantized_vs_float32"], v["only_float_vs_all_quantized"]
            v.update(
                only_quantized_drop_pts=-alone["delta_pts"],
                only_quantized_ci95_pts=[-alone["ci95_pts"][1], -alone["ci95_pts"][0]],
                only_float_recovery_pts=spared["delta_pts"],
                only_float_ci95_pts=list(spared["ci95_pts"]),
            )
    return result
