"""How the report writes its numbers (percentages, points with intervals, p-values, sizes, speeds), so that
every section writes the same quantity the same way."""

from __future__ import annotations

from collections import Counter


def value(v, kind: str) -> str:
    if v is None:
        return "-"
    return {
        "pct": f"{100 * v:.2f}%",
        "pts": f"{v:+.2f}",
        "kb": f"{v / 1024:,.1f} KB",
        "x": f"{v:.3f}x",
        "us": f"{v:,.0f} µs",
        "speed": f"{v:.2f}x",
        "count": f"{int(v):,d}",
    }[kind]


def ci(interval) -> str:
    return f" [{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else ""


def negated(drop_pts: float, drop_ci: list[float]) -> str:
    """A drop (reference minus file) shown as Δ, the file minus its reference, with its interval."""
    return f"{-drop_pts:+.2f}{ci([-drop_ci[1], -drop_ci[0]])}"


def delta(r: dict) -> str:
    if r["delta_pts"] is None:
        return "-" if r["mode"] == "float32" or r.get("comparable") is None else "not on the same images"
    return value(r["delta_pts"], "pts") + ci(r.get("delta_ci95_pts"))


def p(p_value: float | None) -> str:
    if p_value is None:
        return "-"
    return (f"{p_value:.3f}" if p_value >= 0.001 else "<0.001") + (" *" if p_value < 0.05 else "")


def plain_p(p_value: float | None) -> str:
    """A p-value without the significance mark (for unadjusted p beside an adjusted one)."""
    return "-" if p_value is None else f"{p_value:.3f}" if p_value >= 0.001 else "<0.001"


def speed(r: dict) -> str:
    spread = r.get("speedup_spread")
    return value(r["speedup"], "speed") + (f" [{spread[0]:.2f}-{spread[1]:.2f}]" if spread else "")


def assignment(layers: dict[str, str]) -> str:
    common = Counter(layers.values()).most_common(1)[0][0]
    others = [f"{name} {rung}" for name, rung in layers.items() if rung != common]
    return f"{common}" + (f" except {', '.join(others)}" if others else " everywhere")
