"""Energy and cost per image of stored cells, for the report (JSON only, no torch).

A cell's record (`extra_info`, written by attn_bench/energy.py and the harness) holds either
`energy` (joules over the timed rounds, J per step and per image, mean W, SM clock, throttle
reasons) or `energy_unavailable` (the reason), and, when the run was given
`--attn-price-per-gpu-hour`, `usd_per_million_images`. This module turns those into:

- `cell_energy`: the values of one cell's energy and cost columns;
- `energy_saved_vs_native`: J per image saved against native/<same variant> at the same
  seq_len and mode, in the same run and the same test kind;
- `throttle_note`: one line for a cell timed while the GPU throttled;
- `write_energy_chart`: step time against J per image, one point per implementation and mode.

The cost formula is `usd_per_million_images`: what the GPU-hours of a million images cost at the
cell's median step time.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .runs import BASELINE_IMPL, cell_params, median_ms, short_name

# The energy counter is updated by the driver at intervals, not continuously: over a window
# only a few intervals long, J per step is only as good as the window is long. Below this
# many seconds the note says so.
SHORT_WINDOW_S = 1.0
MODE_MARKERS = {"eager": "o", "compiled": "^"}


def usd_per_million_images(price_per_gpu_hour: float, step_s: float, images_per_step: int) -> float:
    """US$ per million images: the GPU time of 1e6 images at `step_s` seconds per step of
    `images_per_step` images, at `price_per_gpu_hour` $ per GPU-hour.

    ValueError for a price, step time or image count that is not positive.
    """
    for name, value in (("price per GPU-hour", price_per_gpu_hour), ("step time", step_s),
                        ("images per step", images_per_step)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    return price_per_gpu_hour / 3600.0 * step_s / images_per_step * 1e6


@dataclass(frozen=True)
class CellEnergy:
    """A cell's energy and cost values; None where the run did not record them.

    `unavailable` is the recorded reason when there is no energy (e.g. "no CUDA device (cpu
    run)"); `throttled` is None then too. `usd_per_million_images` is the recorded cost, or the
    cost at the price given to `cell_energy`.
    """

    j_per_step: float | None = None
    j_per_image: float | None = None
    mean_w: float | None = None
    window_s: float | None = None
    sm_clock_min_mhz: float | None = None
    sm_clock_median_mhz: float | None = None
    throttled: bool | None = None
    throttle_reasons: tuple[str, ...] = ()
    throttled_rounds: int | None = None
    rounds: int | None = None
    usd_per_million_images: float | None = None
    unavailable: str | None = None


def cell_energy(bench: dict, price_per_gpu_hour: float | None = None) -> CellEnergy:
    """The energy and cost values of one benchmark entry of a run.

    The cost is the recorded `usd_per_million_images`; without one, and with
    `price_per_gpu_hour`, it is computed from the cell's median step time and batch.
    """
    info = bench.get("extra_info") or {}
    usd = info.get("usd_per_million_images")
    if usd is None and price_per_gpu_hour is not None and info.get("batch"):
        usd = usd_per_million_images(price_per_gpu_hour, bench["stats"]["median"], info["batch"])
    energy = info.get("energy")
    if not energy:
        reason = info.get("energy_unavailable") or "not recorded (run made before energy was measured)"
        return CellEnergy(usd_per_million_images=usd, unavailable=reason)
    clock = energy.get("sm_clock_mhz") or {}
    return CellEnergy(
        j_per_step=energy["j_per_step"],
        j_per_image=energy["j_per_image"],
        mean_w=energy["mean_w"],
        window_s=energy.get("window_s"),
        sm_clock_min_mhz=clock.get("min"),
        sm_clock_median_mhz=clock.get("median"),
        throttled=bool(energy["throttled"]),
        throttle_reasons=tuple(energy.get("throttle_reasons") or ()),
        throttled_rounds=energy.get("throttled_rounds"),
        rounds=energy.get("rounds"),
        usd_per_million_images=usd,
    )


def comparison_key(fullname: str) -> tuple | None:
    """What a cell shares with its native baseline: (test function, variant, seq_len, mode,
    direction); None for tests that are not matrix cells."""
    params = cell_params(fullname)
    if params is None:
        return None
    function = short_name(fullname).partition("[")[0]
    return function, params["variant"], params["seq_len"], params["mode"], params.get("direction", "")


def energy_saved_vs_native(benches: Iterable[dict]) -> dict[str, float]:
    """Per cell (full test id), the % of J per image it saves against the native cell of the same
    test kind, variant, seq_len, mode (and direction): (1 - J/image ÷ native's J/image) × 100;
    negative when it uses more. `benches` are the benchmark entries of ONE run (energy of
    different runs, GPUs or hours is not compared). Cells without energy, without such a native
    cell, and the native cells themselves are absent.
    """
    values, keys = {}, {}
    for bench in benches:
        key, j = comparison_key(bench["fullname"]), cell_energy(bench).j_per_image
        if key is not None and j is not None:
            values[bench["fullname"]], keys[bench["fullname"]] = j, key
    native = {keys[name]: j for name, j in values.items() if cell_params(name)["impl"] == BASELINE_IMPL}
    return {name: (1.0 - j / native[keys[name]]) * 100.0 for name, j in values.items()
            if cell_params(name)["impl"] != BASELINE_IMPL and keys[name] in native}


def throttle_note(bench: dict) -> str | None:
    """One line for a cell whose timed rounds ran while the GPU throttled, or whose energy window
    was short (SHORT_WINDOW_S); None otherwise. E.g. 'throttled (sw_power_cap) in 4 of 10 rounds,
    SM clock 1560-1860 MHz (median 1830)'."""
    energy = cell_energy(bench)
    notes = []
    if energy.throttled:
        rounds = (f" in {energy.throttled_rounds} of {energy.rounds} rounds"
                  if energy.throttled_rounds is not None and energy.rounds else "")
        note = f"throttled ({', '.join(energy.throttle_reasons)}){rounds}"
        if energy.sm_clock_min_mhz is not None:
            note += f", SM clock from {energy.sm_clock_min_mhz:.0f} MHz (median {energy.sm_clock_median_mhz:.0f})"
        notes.append(note)
    if energy.window_s is not None and energy.window_s < SHORT_WINDOW_S:
        notes.append(f"energy over only {energy.window_s:.2f} s of timed rounds (counter resolution)")
    return "; ".join(notes) or None


def chart_points(benches: Iterable[dict], function: str = "test_train_step") -> dict[tuple[int, str], list[dict]]:
    """The points of `write_energy_chart`: per (seq_len, variant) panel, one point per cell of the
    test `function` with energy: {impl, mode, step_ms, j_per_image, throttled}."""
    panels: dict[tuple[int, str], list[dict]] = {}
    for bench in benches:
        params = cell_params(bench["fullname"])
        if params is None or short_name(bench["fullname"]).partition("[")[0] != function:
            continue
        energy = cell_energy(bench)
        if energy.j_per_image is None:
            continue
        panels.setdefault((params["seq_len"], params["variant"]), []).append({
            "impl": params["impl"], "mode": params["mode"], "step_ms": median_ms(bench),
            "j_per_image": energy.j_per_image, "throttled": energy.throttled})
    return dict(sorted(panels.items()))


def write_energy_chart(benches: Iterable[dict], path: str | Path, title: str = "",
                       function: str = "test_train_step") -> None:
    """A PNG of step time (ms) against J per image: one panel per (seq_len, variant), one point per
    implementation and mode (marker by mode), throttled cells drawn hollow in red. Down and left is
    better on both axes. ValueError if no cell of `function` has energy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = chart_points(benches, function)
    if not panels:
        raise ValueError(f"no {function} cell has energy to chart (runs without NVML record why in "
                         "extra_info.energy_unavailable)")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, ((seq_len, variant), points) in zip(axes[0], panels.items()):
        for mode, marker in MODE_MARKERS.items():
            for p in (p for p in points if p["mode"] == mode):
                color = "tab:red" if p["throttled"] else "tab:blue"
                ax.scatter(p["step_ms"], p["j_per_image"], marker=marker, s=40, edgecolors=color,
                           facecolors="none" if p["throttled"] else color, label=mode)
                ax.annotate(p["impl"], (p["step_ms"], p["j_per_image"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
        ax.set_title(f"seq_len {seq_len}, {variant}")
        ax.set_xlabel("median step time (ms)")
        ax.set_ylabel("J per image")
    fig.suptitle(title or "Step time vs energy per image (hollow red: throttled)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["CellEnergy", "cell_energy", "chart_points", "comparison_key", "energy_saved_vs_native",
           "throttle_note", "usd_per_million_images", "write_energy_chart"]
