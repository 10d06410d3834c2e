"""The tables of the matrix's test kinds (train step, inference step, attention kernel): a row per
cell, its columns, and speedups over the native cell of the same variant *in the same run*."""
from __future__ import annotations

from dataclasses import dataclass

from ..energy import cell_energy, energy_saved_vs_native
from ..runs import BASELINE_IMPL, short_kernel_name
from .cells import ATTENTION, INFER, KINDS, TRAIN, cell_kind, mode_rank
from .merge import Merged

# A kernel cell whose host time a call is at least this share of its median is bound by the host:
# at seq 196 on the H200, 33 of 60 such cells were within 5 % of do_bench, 56 of 64 others.
HOST_BOUND_SHARE = 0.8


@dataclass(frozen=True)
class Row:
    """One cell of a table.

    `speedup_eager` is over native/<variant> eager and `speedup_mode` over native/<variant> in
    the row's own mode, both at the same seq_len (and direction), of the same kind and from the
    same run (None if that run has no such cell). The optional fields are None when the run did not record them.
    """

    impl: str
    variant: str
    run: str
    median_ms: float
    speedup_eager: float | None
    speedup_mode: float | None
    peak_gib: float | None
    tflops: float | None
    kernel: str
    study_ms: float | None = None
    compile_s: float | None = None
    compile_cache: str | None = None
    images_per_s: float | None = None
    tflops_effective: float | None = None
    pct_of_matmul_peak: float | None = None
    vs_do_bench_pct: float | None = None
    host_ms: float | None = None
    device_ms: float | None = None
    tflops_device: float | None = None
    j_per_image: float | None = None
    mean_w: float | None = None
    usd_per_million_images: float | None = None
    energy_saved_pct: float | None = None
    throttled: bool | None = None

    @property
    def host_bound(self) -> bool:
        """Whether the host took at least HOST_BOUND_SHARE of the cell's time a call: then the median
        is set by the Python call and its launches, not by the kernel."""
        return self.host_ms is not None and self.host_ms >= HOST_BOUND_SHARE * self.median_ms

    @property
    def vs_study_pct(self) -> float | None:
        """Signed deviation of this cell's median from the study loop's median, in percent."""
        if not self.study_ms:
            return None
        return (self.median_ms - self.study_ms) / self.study_ms * 100


@dataclass(frozen=True)
class Column:
    """A table column: its header, how a row is written in it, and whether it is right-aligned."""

    header: str
    format: object  # Row -> str
    numeric: bool = True


def speedup_text(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.2f}x"


def cache_label(info: dict) -> str | None:
    """A compiled cell's cache state: Inductor's (`compile_cache`), and AOTAutograd's when it bypassed
    the graph (`aot_cache`), which then traces the forward and backward again in every process."""
    state = info.get("compile_cache")
    return f"{state}, AOT bypass" if state and info.get("aot_cache") == "bypass" else state




def compile_text(row) -> str:
    """A compiled cell's compile seconds and cache state, 'n/a' if unrecorded."""
    if row.compile_s is None:
        return "n/a"
    return f"{row.compile_s:.1f} ({row.compile_cache or 'cache n/a'})"


def number(value, fmt: str, suffix: str = "") -> str:
    """`value` formatted, 'n/a' for None."""
    return "n/a" if value is None else format(value, fmt) + suffix


def columns(mode: str, rows: list[Row], kind: str = TRAIN) -> list[Column]:
    """The columns of a table of `kind` in `mode` holding `rows`.

    Eager tables have one speedup column; other modes also have the one against native in
    their own mode. Inference tables show images/s. The optional columns appear when a row
    has their value: `vs study` (the study's median), `compile s` (non-eager tables, a
    compile cache state), effective TFLOP/s, % of the matmul peak, `vs do_bench` and `host ms`
    (host time a call, marked `host-bound` per Row.host_bound; see kernel_bench.host_ms_per_call),
    `device ms` and `device TFLOP/s` (the kernels' busy time a call, kernel_bench.device_ms_per_call).
    """
    cols = [Column("implementation", lambda r: r.impl, False),
            Column("variant", lambda r: r.variant, False),
            Column("run", lambda r: r.run, False),
            Column("median ms", lambda r: f"{r.median_ms:.2f}")]
    if kind == INFER:
        cols.append(Column("images/s", lambda r: number(r.images_per_s, ".1f")))
    cols.append(Column("speedup vs native/<variant> eager", lambda r: speedup_text(r.speedup_eager)))
    if mode != "eager":
        cols.append(Column(f"speedup vs native/<variant> {mode}", lambda r: speedup_text(r.speedup_mode)))
    if any(r.study_ms for r in rows):
        cols.append(Column("vs study", lambda r: number(r.vs_study_pct, "+.1f", "%")))
    if mode != "eager" and any(r.compile_cache for r in rows):
        cols.append(Column("compile s (cache)", compile_text))
    cols += [Column("peak GiB", lambda r: number(r.peak_gib, ".2f")),
             Column("TFLOP/s", lambda r: number(r.tflops, ".3g"))]
    if any(r.tflops_effective for r in rows):
        cols.append(Column("effective TFLOP/s", lambda r: number(r.tflops_effective, ".3g")))
    if any(r.pct_of_matmul_peak for r in rows):
        cols.append(Column("% of matmul peak", lambda r: number(r.pct_of_matmul_peak, ".1f", "%")))
    if any(r.vs_do_bench_pct is not None for r in rows):
        cols.append(Column("vs do_bench", lambda r: number(r.vs_do_bench_pct, "+.1f", "%")))
    if any(r.host_ms is not None for r in rows):
        cols.append(Column("host ms", lambda r: number(r.host_ms, ".3f") + (" host-bound" if r.host_bound else "")))
    if any(r.device_ms is not None for r in rows):
        cols += [Column("device ms", lambda r: number(r.device_ms, ".3f")),
                 Column("device TFLOP/s", lambda r: number(r.tflops_device, ".3g"))]
    if any(r.j_per_image is not None for r in rows):
        cols += [Column("J/image", lambda r: number(r.j_per_image, ".3g") + (" throttled" if r.throttled else "")),
                 Column("mean W", lambda r: number(r.mean_w, ".0f"))]
    if any(r.energy_saved_pct is not None for r in rows):
        cols.append(Column("energy saved vs native", lambda r: number(r.energy_saved_pct, "+.1f", "%")))
    if any(r.usd_per_million_images is not None for r in rows):
        cols.append(Column("$/M images", lambda r: number(r.usd_per_million_images, ".2f")))
    cols.append(Column("kernel", lambda r: r.kernel, False))
    return cols


def kernel_label(info: dict) -> str:
    """The kernel column: the recorded label, with a fused kernel's name shortened for tables."""
    label = info.get("kernel") or "n/a"
    names = info.get("kernel_names") or []
    if names and not label.startswith(("rewritten", "matmul")):
        return short_kernel_name(names)
    return label


def run_medians(merged: Merged) -> dict[tuple, float]:
    """Median seconds per (run label, kind, impl, variant, seq_len, mode, direction or '') of every KINDS
    cell each run timed, superseded or not: a cell's baseline comes from its own run."""
    out = {}
    for label, cells in merged.by_run.items():
        for test, bench in cells.items():
            kind, p = cell_kind(test)
            if kind in KINDS.values():
                out[(label, kind, p["impl"], p["variant"], p["seq_len"], p["mode"], p.get("direction", ""))] = \
                    bench["stats"]["median"]
    return out


def table_key(kind: str, params: dict) -> tuple:
    """A cell's table within its kind: (seq_len, mode), and for attention kernels (seq_len, mode, direction)."""
    key = (params["seq_len"], params["mode"])
    return key + (params["direction"],) if kind == ATTENTION else key


def table_title(key: tuple, gpu: str) -> str:
    """'seq_len 196, eager (GPU)', with the direction of attention-kernel tables."""
    return f"seq_len {', '.join(map(str, key))} ({gpu})"


def kinds(merged: Merged) -> list[str]:
    """The test kinds of KINDS that have a cell that ran, in report order."""
    found = {cell_kind(test)[0] for test in merged.ran}
    return [kind for kind in KINDS.values() if kind in found]


def tables(merged: Merged, kind: str = TRAIN) -> dict[tuple, list[Row]]:
    """Rows of `kind` per `table_key`, fastest first; keys ordered by seq_len, then eager before
    compiled, then direction. A row's speedups are over the native cells of the run it came from
    (None where that run has none), never over another run's."""
    medians = run_medians(merged)
    saved = {(label, test): pct for label, cells in merged.by_run.items()
             for test, pct in energy_saved_vs_native(cells.values()).items()}
    groups: dict[tuple, list[Row]] = {}
    for test, bench in merged.ran.items():
        found, p = cell_kind(test)
        if found != kind:
            continue
        median = bench["stats"]["median"]
        info = bench.get("extra_info") or {}
        direction, label = p.get("direction", ""), merged.source.get(test, "")
        energy = cell_energy(bench)
        ref_eager, ref_mode = (medians.get((label, kind, BASELINE_IMPL, p["variant"], p["seq_len"], mode, direction))
                               for mode in ("eager", p["mode"]))
        groups.setdefault(table_key(kind, p), []).append(Row(
            p["impl"], p["variant"], label, median * 1e3,
            ref_eager / median if ref_eager else None, ref_mode / median if ref_mode else None,
            info.get("peak_gib"), info.get("tflops"), kernel_label(info),
            info.get("study_median_ms"), info.get("compile_s"), cache_label(info),
            info.get("images_per_s"), info.get("tflops_effective"), info.get("pct_of_matmul_peak"),
            info.get("vs_do_bench_pct"), info.get("host_ms"), info.get("device_ms"), info.get("tflops_device"),
            energy.j_per_image, energy.mean_w, energy.usd_per_million_images, saved.get((label, test)),
            energy.throttled))
    return {key: sorted(groups[key], key=lambda r: r.median_ms)
            for key in sorted(groups, key=lambda k: (k[0], mode_rank(k[1]), *k[2:]))}


def speedups(merged: Merged) -> dict[tuple[int, str], list[tuple[str, float]]]:
    """('impl/variant', speedup vs native/<variant> eager) per (seq_len, mode) of training steps, for the chart."""
    result = {}
    for key, rows in tables(merged).items():
        bars = [(f"{r.impl}/{r.variant}", r.speedup_eager) for r in rows if r.speedup_eager is not None]
        if bars:
            result[key] = bars
    return result

