"""Study-style tables and a speedup chart from this suite's pytest-benchmark JSON runs.

    python -m attn_tools.report RUN.json [RUN2.json ...] [--markdown FILE] [--chart FILE.png]

A section per test kind (KINDS: train step, inference step, attention kernel), each with one
table per (seq_len, mode), and for attention kernels per (seq_len, mode, direction):
implementation, variant, the run the row came from, median ms (of a step, a forward, or an
attention call), speedup over the native cell of the *same variant* (and direction) at the
same sequence length (`native/<variant>` eager, and in compiled tables also
`native/<variant>` compiled), peak GiB, TFLOP/s and the kernel that ran; optional columns
when the runs recorded them: images/s (inference), effective TFLOP/s, share of the matmul
peak and deviation from do_bench (attention kernels), the deviation from the study's own
loop (`vs study`) and, in compiled tables, compile seconds with the compile cache state.
The attention-kernel section ends with attention's share of the training step per seq_len
(`attention_shares`: fwd_bwd kernel ms x depth / step ms, where both cells ran).
Then a section for packed variable-size images (VARLEN_KINDS): training-step tables per mode,
with cells whose image sizes change every step in tables of their own (implementation, layout,
run, median ms, tokens/s, images/s, speedup over the padded baseline of the same mode and
lengths (VARLEN_BASELINES), padding share, peak GiB, compile seconds, kernel), and the
FlexAttention changing-lengths strategies (recompiles, first and later step times). Then the
study's comparisons of training steps (STUDY_PAIRS) as sentences, the skipped and
failed cells, and a legend of the runs (file, date, commit, GPU, profile, the compile scope of
compiled cells, and the bf16 matmul peak where measured). The chart shows training-step speedups.

Several runs may be merged (e.g. the PyTorch matrix and a third-party run); a cell present
in more than one file is taken from the last file that has it. Runs of different GPU models
or profiles are refused.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path

from .runs import (
    CHANGING_ID_SUFFIX,
    REWRITTEN,
    RunFileError,
    gpu_model,
    load_run,
    outcomes,
    run_settings,
    short_kernel_name,
    short_name,
)

MODE_ORDER = ("eager", "compiled")
TRAIN, INFER, ATTENTION = "train step", "inference step", "attention kernel"
VARLEN, FLEX_LENGTHS = "packed images train step", "flex changing lengths"
# Report sections in order, by test function; attention-kernel ids end with a direction.
KINDS = {"test_train_step": TRAIN, "test_infer_step": INFER, "test_attention": ATTENTION}
# The packed variable-size-image workload, one section after KINDS' sections.
VARLEN_KINDS = {"test_varlen_train_step": VARLEN, "test_varlen_flex_lengths": FLEX_LENGTHS}
CELL_KEYS = ("impl", "variant", "seq_len", "mode")
ID_KEYS = {ATTENTION: CELL_KEYS + ("direction",), VARLEN: ("impl", "mode"), FLEX_LENGTHS: ("strategy",)}
# A kernel cell whose host time a call is at least this share of its median is bound by the host:
# at seq 196 on the H200 (session 7), 33 of 60 such cells were within 5 % of do_bench, 56 of 64 others.
HOST_BOUND_SHARE = 0.8
BASELINE_IMPL = "native"  # speedups are over native/<same variant> at the same seq_len
# The comparisons the study made: (implementation, variant, baseline implementation pattern
# (fnmatch), what is being compared). Each baseline matching the pattern that ran at the same
# seq_len, mode and variant gives one sentence.
STUDY_PAIRS = (
    ("flex", "softcap", "native", "soft-capping via score_mod vs hand-written"),
    ("flex", "neighborhood", "sdpa_*", "block_mask vs sdpa with a dense mask"),
    ("flex", "plain", "native", "FlexAttention vs hand-written attention"),
    ("flex", "plain", "sdpa_*", "FlexAttention vs an sdpa backend"),
)
SINGLE_RUN_LABEL = "this run"
VARLEN_SECTION = "Packed variable-size images"
# A packed-image table's speedups are over the first of these that ran in its mode and lengths.
VARLEN_BASELINES = ("padded_efficient", "padded_math")
CHANGING = "changing"  # the `lengths` of cells whose image sizes change every step


COMPILE_SCOPE_WORDS = {"model": "whole model", "block": "per block"}


@dataclass(frozen=True)
class RunSource:
    """Where a run came from, for the legend: its label (e.g. `r1`), file and recorded identity."""

    label: str
    name: str
    datetime: str
    commit: str
    gpu: str
    profile: str
    matmul_peak_tflops: float | None = None
    compile_scope: str | None = None  # of its compiled training and inference cells, if it has any

    def legend(self) -> str:
        """'r1: FILE, DATE, commit ID, GPU, profile P[, compiled: SCOPE][, bf16 matmul peak N TFLOP/s]'."""
        text = (f"{self.label}: {self.name}, {self.datetime}, commit {self.commit}, {self.gpu}, "
                f"profile {self.profile}")
        if self.compile_scope:
            text += f", compiled: {COMPILE_SCOPE_WORDS.get(self.compile_scope, self.compile_scope)}"
        if self.matmul_peak_tflops:
            text += f", bf16 matmul peak {self.matmul_peak_tflops:.0f} TFLOP/s"
        return text


@dataclass
class Merged:
    """The cells of one or more runs, later files winning: ran (benchmark dicts), skipped, failed.
    A skip never hides a cell that ran in an earlier file: a run made in another environment skips
    the libraries it lacks, and that says nothing about the earlier measurement.

    `source` maps each cell's test id to the label of the run it was taken from; `runs` are
    the runs' legend entries in the order given.
    """

    ran: dict
    skipped: dict
    failed: dict
    gpu: str
    source: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)


def run_source(run: dict, label: str, name: str) -> RunSource:
    """The legend entry of `run`: datetime to the second, commit hash (10 chars, `dirty` marked)."""
    commit_info = run.get("commit_info") or {}
    commit = commit_info.get("id") or "unknown"
    if all(c in "0123456789abcdef" for c in commit):
        commit = commit[:10]  # a git hash; other values ("unversioned", "unknown") stay whole
    if commit_info.get("dirty"):
        commit += " (dirty)"
    return RunSource(label, name, _short_datetime(run.get("datetime")), commit, gpu_model(run),
                     str(_profile(run)), (run.get("attn_suite") or {}).get("matmul_peak_tflops"),
                     run_settings(run).get("compile_scope"))


def cell_kind(fullname: str) -> tuple[str, dict] | None:
    """(kind, parameters) of a cell's test id, e.g. ('attention kernel', {impl, variant,
    seq_len, mode, direction}) or ('packed images train step', {impl, mode, lengths}); None for
    tests that are not cells (e.g. parity tests)."""
    function, _, rest = short_name(fullname).partition("[")
    kind = KINDS.get(function) or VARLEN_KINDS.get(function)
    if kind is None or not rest.endswith("]"):
        return None
    keys, body = ID_KEYS.get(kind, CELL_KEYS), rest[:-1]
    lengths = CHANGING if kind == VARLEN and body.endswith(CHANGING_ID_SUFFIX) else "fixed"
    if kind == VARLEN:
        body = body.removesuffix(CHANGING_ID_SUFFIX)
    parts = body.rsplit("-", len(keys) - 1)
    if len(parts) != len(keys) or ("seq_len" in keys and not parts[2].isdigit()):
        return None
    params = dict(zip(keys, parts), **({"lengths": lengths} if kind == VARLEN else {}))
    if "seq_len" in params:
        params["seq_len"] = int(params["seq_len"])
    return kind, params


def _short_datetime(value: str | None) -> str:
    if not value:
        return "date unknown"
    try:
        return datetime.fromisoformat(value).isoformat(timespec="seconds")
    except ValueError:
        return value


def _profile(run: dict) -> str | None:
    return (run.get("attn_suite") or {}).get("profile")


def merge(runs: list[dict], names: list[str] | None = None, labels: list[str] | None = None) -> Merged:
    """Merge runs into one set of cells; ValueError naming two files if GPU models or profiles differ.

    `names` (file paths) default to `run 1`, `run 2`, ...; `labels` (the short run column)
    default to `this run` for one run and `r1`, `r2`, ... for several.
    """
    if not runs:
        raise ValueError("no runs to report")
    names = [str(n) for n in names] if names else [f"run {i}" for i in range(1, len(runs) + 1)]
    if labels is None:
        labels = [SINGLE_RUN_LABEL] if len(runs) == 1 else [f"r{i}" for i in range(1, len(runs) + 1)]
    if not len(names) == len(labels) == len(runs):
        raise ValueError("merge needs one name and one label per run")
    for what, key in (("GPU models", gpu_model), ("profiles", _profile)):
        first = key(runs[0])
        for run, name in zip(runs[1:], names[1:]):
            if key(run) != first:
                raise ValueError(f"runs of different {what} cannot share a report: {names[0]} is "
                                 f"{first!r}, {name} is {key(run)!r}")
    merged = Merged({}, {}, {}, gpu_model(runs[0]))
    for run, name, label in zip(runs, names, labels):
        merged.runs.append(run_source(run, label, name))
        for state, cells in zip(("ran", "skipped", "failed"), outcomes(run)):
            for test, value in cells.items():
                if cell_kind(test) is None:
                    continue  # not a cell (e.g. a parity test's skip)
                if state == "skipped" and test in merged.ran:
                    continue
                for other in (merged.ran, merged.skipped, merged.failed):
                    other.pop(test, None)
                getattr(merged, state)[test] = value
                merged.source[test] = label
    return merged


@dataclass(frozen=True)
class Row:
    """One cell of a table.

    `speedup_eager` is over native/<variant> eager and `speedup_mode` over native/<variant> in
    the row's own mode, both at the same seq_len (and direction) and of the same kind (None if
    that cell did not run). The optional fields are None when the run did not record them.
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


def _speedup(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.2f}x"


def cache_label(info: dict) -> str | None:
    """A compiled cell's cache state: Inductor's (`compile_cache`), and AOTAutograd's when it bypassed
    the graph (`aot_cache`), which then traces the forward and backward again in every process."""
    state = info.get("compile_cache")
    return f"{state}, AOT bypass" if state and info.get("aot_cache") == "bypass" else state


def _compile(row: Row | VarlenRow) -> str:
    if row.compile_s is None:
        return "n/a"
    return f"{row.compile_s:.1f} ({row.compile_cache or 'cache n/a'})"


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
        cols.append(Column("images/s", lambda r: _number(r.images_per_s, ".1f")))
    cols.append(Column("speedup vs native/<variant> eager", lambda r: _speedup(r.speedup_eager)))
    if mode != "eager":
        cols.append(Column(f"speedup vs native/<variant> {mode}", lambda r: _speedup(r.speedup_mode)))
    if any(r.study_ms for r in rows):
        cols.append(Column("vs study", lambda r: _number(r.vs_study_pct, "+.1f", "%")))
    if mode != "eager" and any(r.compile_cache for r in rows):
        cols.append(Column("compile s (cache)", _compile))
    cols += [Column("peak GiB", lambda r: _number(r.peak_gib, ".2f")),
             Column("TFLOP/s", lambda r: _number(r.tflops, ".3g"))]
    if any(r.tflops_effective for r in rows):
        cols.append(Column("effective TFLOP/s", lambda r: _number(r.tflops_effective, ".3g")))
    if any(r.pct_of_matmul_peak for r in rows):
        cols.append(Column("% of matmul peak", lambda r: _number(r.pct_of_matmul_peak, ".1f", "%")))
    if any(r.vs_do_bench_pct is not None for r in rows):
        cols.append(Column("vs do_bench", lambda r: _number(r.vs_do_bench_pct, "+.1f", "%")))
    if any(r.host_ms is not None for r in rows):
        cols.append(Column("host ms", lambda r: _number(r.host_ms, ".3f") + (" host-bound" if r.host_bound else "")))
    if any(r.device_ms is not None for r in rows):
        cols += [Column("device ms", lambda r: _number(r.device_ms, ".3f")),
                 Column("device TFLOP/s", lambda r: _number(r.tflops_device, ".3g"))]
    cols.append(Column("kernel", lambda r: r.kernel, False))
    return cols


def kernel_label(info: dict) -> str:
    """The kernel column: the recorded label, with a fused kernel's name shortened for tables."""
    label = info.get("kernel") or "n/a"
    names = info.get("kernel_names") or []
    if names and not label.startswith(("rewritten", "matmul")):
        return short_kernel_name(names)
    return label


def _medians(merged: Merged) -> dict[tuple, float]:
    """Median seconds per (kind, impl, variant, seq_len, mode, direction or '') of every KINDS cell that ran."""
    out = {}
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        if kind not in KINDS.values():
            continue
        out[(kind, p["impl"], p["variant"], p["seq_len"], p["mode"], p.get("direction", ""))] = \
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
    compiled, then direction."""
    medians = _medians(merged)
    groups: dict[tuple, list[Row]] = {}
    for test, bench in merged.ran.items():
        found, p = cell_kind(test)
        if found != kind:
            continue
        median = bench["stats"]["median"]
        info = bench.get("extra_info") or {}
        direction = p.get("direction", "")
        ref_eager, ref_mode = (medians.get((kind, BASELINE_IMPL, p["variant"], p["seq_len"], mode, direction))
                               for mode in ("eager", p["mode"]))
        groups.setdefault(table_key(kind, p), []).append(Row(
            p["impl"], p["variant"], merged.source.get(test, ""), median * 1e3,
            ref_eager / median if ref_eager else None, ref_mode / median if ref_mode else None,
            info.get("peak_gib"), info.get("tflops"), kernel_label(info),
            info.get("study_median_ms"), info.get("compile_s"), cache_label(info),
            info.get("images_per_s"), info.get("tflops_effective"), info.get("pct_of_matmul_peak"),
            info.get("vs_do_bench_pct"), info.get("host_ms"), info.get("device_ms"), info.get("tflops_device")))
    return {key: sorted(groups[key], key=lambda r: r.median_ms)
            for key in sorted(groups, key=lambda k: (k[0], _mode_rank(k[1]), *k[2:]))}


@dataclass(frozen=True)
class VarlenRow:
    """One packed variable-size-image training-step cell.

    `speedup_padded` is over the padded baseline of its table (`varlen_baseline`), None if
    none ran; `layout` is its packing and grid ('packed 8x4096'). The optional fields are
    None when the run did not record them.
    """

    impl: str
    layout: str
    run: str
    median_ms: float
    speedup_padded: float | None
    tokens_per_s: float | None
    images_per_s: float | None
    padding_pct: float | None
    peak_gib: float | None
    kernel: str
    compile_s: float | None = None
    compile_cache: str | None = None


@dataclass(frozen=True)
class LengthsRow:
    """One FlexAttention changing-lengths strategy; the optional fields are None when the run did not record them."""

    strategy: str
    run: str
    recompiles: int | None
    first_step_ms: float | None
    later_steps_median_ms: float | None
    distinct_lengths: int | None
    means: str


def varlen_baseline(impls) -> str | None:
    """The first of VARLEN_BASELINES among `impls` (a table's implementations), None if none is."""
    impls = set(impls)
    return next((b for b in VARLEN_BASELINES if b in impls), None)


def varlen_tables(merged: Merged) -> dict[tuple[str, str], list[VarlenRow]]:
    """Rows of packed variable-size-image training steps per (mode, lengths), fastest first; eager
    before compiled, fixed lengths before changing ones, so that the two never share a table.
    Speedups are over the table's padded baseline (`varlen_baseline`)."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        if kind == VARLEN:
            lengths = (bench.get("extra_info") or {}).get("lengths", p["lengths"])
            groups.setdefault((p["mode"], lengths), {})[p["impl"]] = test
    out = {}
    for key in sorted(groups, key=lambda k: (_mode_rank(k[0]), k[0], k[1] == CHANGING, k[1])):
        cells = groups[key]
        baseline = varlen_baseline(cells)
        ref = merged.ran[cells[baseline]]["stats"]["median"] if baseline else None
        rows = []
        for impl, test in cells.items():
            bench = merged.ran[test]
            median = bench["stats"]["median"]
            info = bench.get("extra_info") or {}
            layout = (f"{info['packing']} {info['rows']}x{info['row_len']}"
                      if all(info.get(k) is not None for k in ("packing", "rows", "row_len")) else "n/a")
            padding = info.get("padding_fraction")
            rows.append(VarlenRow(
                impl, layout, merged.source.get(test, ""), median * 1e3, ref / median if ref else None,
                info.get("tokens_per_s"), info.get("images_per_s"), None if padding is None else padding * 100,
                info.get("peak_gib"), kernel_label(info), info.get("compile_s"), cache_label(info)))
        out[key] = sorted(rows, key=lambda r: r.median_ms)
    return out


def varlen_table_title(key: tuple[str, str], gpu: str) -> str:
    """'eager, fixed lengths (GPU)'; 'compiled, lengths change every step (GPU)' for changing lengths."""
    mode, lengths = key
    return f"{mode}, {'lengths change every step' if lengths == CHANGING else f'{lengths} lengths'} ({gpu})"


def varlen_columns(mode: str, rows: list[VarlenRow]) -> list[Column]:
    """The columns of a packed-image table in `mode` holding `rows`: the speedup header names the
    table's padded baseline (`-` in every row when none ran); compile seconds in non-eager tables."""
    baseline = varlen_baseline(r.impl for r in rows) or "padded (none ran)"
    cols = [Column("implementation", lambda r: r.impl, False),
            Column("layout", lambda r: r.layout, False),
            Column("run", lambda r: r.run, False),
            Column("median ms", lambda r: f"{r.median_ms:.2f}"),
            Column("tokens/s", lambda r: _number(r.tokens_per_s, ".0f")),
            Column("images/s", lambda r: _number(r.images_per_s, ".1f")),
            Column(f"speedup vs {baseline}", lambda r: _speedup(r.speedup_padded, "-")),
            Column("padding", lambda r: _number(r.padding_pct, ".1f", "%")),
            Column("peak GiB", lambda r: _number(r.peak_gib, ".2f"))]
    if mode != "eager":
        cols.append(Column("compile s (cache)", _compile))
    cols.append(Column("kernel", lambda r: r.kernel, False))
    return cols


def flex_lengths_rows(merged: Merged) -> list[LengthsRow]:
    """The FlexAttention changing-lengths strategies that ran, fastest later steps first."""
    rows = []
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        if kind == FLEX_LENGTHS:
            info = bench.get("extra_info") or {}
            rows.append(LengthsRow(p["strategy"], merged.source.get(test, ""), info.get("recompiles"),
                                   info.get("first_step_ms"), info.get("later_steps_median_ms"),
                                   info.get("distinct_lengths"), info.get("strategy_means") or "n/a"))
    return sorted(rows, key=lambda r: (r.later_steps_median_ms is None, r.later_steps_median_ms or 0.0))


FLEX_LENGTHS_COLUMNS = (
    Column("strategy", lambda r: r.strategy, False),
    Column("run", lambda r: r.run, False),
    Column("recompiles", lambda r: _number(r.recompiles, "d")),
    Column("first step ms", lambda r: _number(r.first_step_ms, ".2f")),
    Column("later steps median ms", lambda r: _number(r.later_steps_median_ms, ".2f")),
    Column("distinct lengths", lambda r: _number(r.distinct_lengths, "d")),
    Column("what the strategy does", lambda r: r.means, False),
)


@dataclass(frozen=True)
class Comparison:
    """One of the study's comparisons at one (seq_len, mode): `cell` vs `baseline` ('impl/variant')."""

    seq_len: int
    mode: str
    cell: str
    baseline: str
    ratio: float  # baseline median / cell median: > 1 means `cell` is faster
    what: str

    def sentence(self) -> str:
        """'flex/softcap is 1.23x faster than native/softcap (what)'; 'slower' with the inverse ratio."""
        if f"{self.ratio:.2f}" == "1.00" or f"{1 / self.ratio:.2f}" == "1.00":
            return f"{self.cell} is as fast as {self.baseline} (within 0.5 %) ({self.what})"
        if self.ratio > 1:
            return f"{self.cell} is {self.ratio:.2f}x faster than {self.baseline} ({self.what})"
        return f"{self.cell} is {1 / self.ratio:.2f}x slower than {self.baseline} ({self.what})"


def study_comparisons(merged: Merged, pairs=STUDY_PAIRS) -> dict[tuple[int, str], list[Comparison]]:
    """The `pairs` whose two cells both ran, per (seq_len, mode) in table order."""
    medians = _medians(merged)
    impls = sorted({impl for kind, impl, *_ in medians if kind == TRAIN})
    out: dict[tuple[int, str], list[Comparison]] = {}
    for key in tables(merged):
        seq_len, mode = key
        for impl, variant, pattern, what in pairs:
            mine = medians.get((TRAIN, impl, variant, seq_len, mode, ""))
            if mine is None:
                continue
            for base in impls:
                theirs = medians.get((TRAIN, base, variant, seq_len, mode, ""))
                if base != impl and fnmatchcase(base, pattern) and theirs is not None:
                    out.setdefault(key, []).append(Comparison(
                        seq_len, mode, f"{impl}/{variant}", f"{base}/{variant}", theirs / mine, what))
    return out


def speedups(merged: Merged) -> dict[tuple[int, str], list[tuple[str, float]]]:
    """('impl/variant', speedup vs native/<variant> eager) per (seq_len, mode) of training steps, for the chart."""
    result = {}
    for key, rows in tables(merged).items():
        bars = [(f"{r.impl}/{r.variant}", r.speedup_eager) for r in rows if r.speedup_eager is not None]
        if bars:
            result[key] = bars
    return result


def _mode_rank(mode: str) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def _number(value, fmt: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, fmt) + suffix


def section_title(kind: str) -> str:
    """'Train steps', 'Inference steps', 'Attention kernels'."""
    return f"{kind.capitalize()}s"


@dataclass(frozen=True)
class ShareRow:
    """What attention takes of a training step: `fwd_bwd_ms` (the attention-kernel cell, fwd_bwd)
    x `depth` / `step_ms` (the training-step cell of the same impl, variant, seq_len and mode).
    None when the compiler rewrote the attention in one cell and not the same way in the other
    (Inductor rewrote a compiled `native` call alone into cuDNN SDPA on the H200, not inside the
    model): then the kernel cell does not measure the step's attention. Otherwise both cells passed
    the kernel check of the same implementation (Inductor's own kernel names may differ by fusion).
    """

    impl: str
    variant: str
    mode: str
    fwd_bwd_ms: float
    depth: int
    step_ms: float
    runs: str
    same_kernel: bool = True

    @property
    def share_pct(self) -> float | None:
        return self.fwd_bwd_ms * self.depth / self.step_ms * 100 if self.same_kernel else None


def attention_shares(merged: Merged) -> dict[int, list[ShareRow]]:
    """Per seq_len, attention's share of the training step for every (impl, variant, mode) that has
    both a fwd_bwd attention-kernel cell and a training-step cell; largest share first."""
    steps = {}
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        if kind == TRAIN and (bench.get("extra_info") or {}).get("depth"):
            steps[(p["impl"], p["variant"], p["seq_len"], p["mode"])] = test
    out: dict[int, list[ShareRow]] = {}
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        step_test = steps.get((p["impl"], p["variant"], p["seq_len"], p["mode"])) if kind == ATTENTION else None
        if step_test is None or p["direction"] != "fwd_bwd":
            continue
        step = merged.ran[step_test]
        runs = "/".join(dict.fromkeys(merged.source.get(t, "") for t in (test, step_test)))
        same_kernel = _rewrite(bench) == _rewrite(step)
        out.setdefault(p["seq_len"], []).append(ShareRow(
            p["impl"], p["variant"], p["mode"], bench["stats"]["median"] * 1e3, step["extra_info"]["depth"],
            step["stats"]["median"] * 1e3, runs, same_kernel))
    return {seq: sorted(rows, key=lambda r: (_mode_rank(r.mode), r.share_pct is None, -(r.share_pct or 0.0)))
            for seq, rows in sorted(out.items())}


def _rewrite(bench: dict) -> str:
    """The kernel label of a cell whose attention the compiler rewrote (`kernels.REWRITTEN`), else ''."""
    label = (bench.get("extra_info") or {}).get("kernel") or ""
    return label if label.startswith(REWRITTEN) else ""


SHARE_COLUMNS = (
    Column("implementation", lambda r: r.impl, False),
    Column("variant", lambda r: r.variant, False),
    Column("mode", lambda r: r.mode, False),
    Column("runs", lambda r: r.runs, False),
    Column("attention fwd_bwd ms", lambda r: f"{r.fwd_bwd_ms:.3f}"),
    Column("depth", lambda r: str(r.depth)),
    Column("step ms", lambda r: f"{r.step_ms:.2f}"),
    Column("attention share", lambda r: "n/a (other kernel)" if r.share_pct is None else f"{r.share_pct:.0f}%"),
)


def sections(merged: Merged) -> list[tuple[str, list[tuple[str, list[Column], list]]]]:
    """The report's sections of tables in order, those with a cell that ran: a section per test kind,
    then packed variable-size images; each as (title, [(table title, columns, rows)])."""
    out = []
    for kind in kinds(merged):
        found = [(table_title(key, merged.gpu), columns(key[1], rows, kind), rows)
                 for key, rows in tables(merged, kind).items()]
        if kind == ATTENTION:
            found += [(f"seq_len {seq}: attention's share of the training step = fwd_bwd ms x depth / step ms "
                       f"({merged.gpu})", list(SHARE_COLUMNS), rows) for seq, rows in attention_shares(merged).items()]
        out.append((section_title(kind), found))
    varlen = [(varlen_table_title(key, merged.gpu), varlen_columns(key[0], rows), rows)
              for key, rows in varlen_tables(merged).items()]
    lengths = flex_lengths_rows(merged)
    if lengths:
        varlen.append((f"FlexAttention with changing lengths ({merged.gpu})", list(FLEX_LENGTHS_COLUMNS), lengths))
    if varlen:
        out.append((VARLEN_SECTION, varlen))
    return out


def text_report(merged: Merged) -> str:
    """Fixed-width tables per section, the study's comparisons, skipped and failed cells and the run legend."""
    out = []
    for section, found in sections(merged):
        out += [f"== {section} ==", ""]
        for title, cols, rows in found:
            out.append(title)
            cells = [[c.format(row) for c in cols] for row in rows]
            widths = [max(len(c.header), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
            for row in ([c.header for c in cols], *cells):
                out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            out.append("")
    out += _comparison_lines(merged, bullet="  ")
    out += _host_bound_lines(merged)
    out += _phase_lines(merged)
    out += _outcome_lines(merged, bullet="  ")
    out += _legend_lines(merged, bullet="  ")
    return "\n".join(out).rstrip() + "\n"


def markdown_report(merged: Merged) -> str:
    """The same report as markdown: a section per test kind and one for packed images with their tables,
    then the other sections."""
    out = []
    for section, found in sections(merged):
        out += [f"## {section}", ""]
        for title, cols, rows in found:
            out += [f"### {title}", "",
                    "| " + " | ".join(c.header for c in cols) + " |",
                    "| " + " | ".join("---:" if c.numeric else "---" for c in cols) + " |"]
            out += ["| " + " | ".join(c.format(row) for c in cols) + " |" for row in rows]
            out.append("")
    out += _comparison_lines(merged, bullet="- ", heading="### ")
    out += _host_bound_lines(merged)
    out += _phase_lines(merged)
    out += _outcome_lines(merged, bullet="- ", code=True)
    out += _legend_lines(merged, bullet="- ", code=True)
    return "\n".join(out).rstrip() + "\n"


def _comparison_lines(merged: Merged, bullet: str, heading: str = "") -> list[str]:
    found = study_comparisons(merged)
    if not found:
        return []
    out = [f"{heading}The study's comparisons (median step time, same seq_len and mode)", ""]
    for (seq_len, mode), comparisons in found.items():
        out.append(f"seq_len {seq_len}, {mode}:")
        out += [f"{bullet}{c.sentence()}" for c in comparisons]
        out.append("")
    return out


def phase_totals(merged: Merged) -> tuple[int, dict[str, float]]:
    """(cells, seconds per phase) summed over the cells that ran and recorded `phase_s` (the harness's
    PhaseClock), largest first with `total` last: where the runs' time went."""
    totals: dict[str, float] = {}
    cells = 0
    for bench in merged.ran.values():
        phases = (bench.get("extra_info") or {}).get("phase_s")
        if phases:
            cells += 1
            for phase, seconds in phases.items():
                totals[phase] = totals.get(phase, 0.0) + seconds
    total = totals.pop("total", 0.0)
    ordered = dict(sorted(totals.items(), key=lambda item: -item[1]))
    return cells, {**ordered, "total": total} if cells else {}


def _host_bound_lines(merged: Merged) -> list[str]:
    rows = [row for found in tables(merged, ATTENTION).values() for row in found if row.host_ms is not None]
    bound = [row for row in rows if row.host_bound]
    if not bound:
        return []
    return [f"Host-bound kernel cells: {len(bound)} of {len(rows)} with a host time (host ms at least "
            f"{HOST_BOUND_SHARE:.0%} of the median). Their median measures the Python call and its launches "
            "more than the kernel, which a model's step overlaps with other layers' work, so their TFLOP/s "
            "understate the kernel, and their `vs do_bench` moves with the host's speed between the two "
            "measurements.", ""]


def _phase_lines(merged: Merged) -> list[str]:
    cells, totals = phase_totals(merged)
    if not cells:
        return []
    total = totals["total"] or 1.0
    parts = ", ".join(f"{phase} {seconds:.0f} s ({seconds / total:.0%})"
                      for phase, seconds in totals.items() if phase != "total")
    return [f"Where the time went ({cells} cells, {totals['total']:.0f} s in cells): {parts}", ""]


def _outcome_lines(merged: Merged, bullet: str, code: bool = False) -> list[str]:
    several = len(merged.runs) > 1

    def name(test):
        text = f"`{short_name(test)}`" if code else short_name(test)
        return f"{text} ({merged.source[test]})" if several and test in merged.source else text
    out = []
    if merged.skipped:
        out.append(f"Skipped cells ({len(merged.skipped)}):")
        out += [f"{bullet}{name(t)}: {reason}" for t, reason in sorted(merged.skipped.items())]
        out.append("")
    if merged.failed:
        out.append(f"Failed cells ({len(merged.failed)}):")
        out += [f"{bullet}{name(t)}: {message}" for t, message in sorted(merged.failed.items())]
        out.append("")
    return out


def _legend_lines(merged: Merged, bullet: str, code: bool = False) -> list[str]:
    if not merged.runs:
        return []
    out = ["Runs (the `run` column):" if code else "Runs (the run column):"]
    for source in merged.runs:
        out.append(f"{bullet}{source.legend()}")
    out.append("")
    return out


def write_chart(merged: Merged, path: str | Path) -> None:
    """A PNG with one bar panel per (seq_len, mode) of training steps: speedup over native/<same variant> eager."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = speedups(merged)
    if not data:
        raise ValueError("no training-step cell has a speedup to chart (no native eager cell of its variant "
                         "in the runs)")
    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 0.45 * max(map(len, data.values())) + 1.8),
                             squeeze=False)
    for ax, ((seq_len, mode), bars) in zip(axes[0], data.items()):
        labels = [label for label, _ in bars][::-1]
        values = [value for _, value in bars][::-1]
        ax.barh(labels, values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlim(0, max(*values, 1.0) * 1.2)  # room for the value labels
        ax.set_title(f"seq_len {seq_len}, {mode}")
        ax.set_xlabel(CHART_XLABEL)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}x", va="center", fontsize=8)
    fig.suptitle(f"Training-step speedups ({merged.gpu})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


CHART_XLABEL = "speedup vs native/<same variant> eager"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on bad input)."""
    p = argparse.ArgumentParser(prog="python -m attn_tools.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="pytest-benchmark JSON files (later files win, but a skip never hides a cell that ran)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown")
    p.add_argument("--chart", metavar="FILE", help="also write a PNG chart of the speedups")
    args = p.parse_args(argv)
    try:
        labels = [f"r{i}" for i in range(1, len(args.runs) + 1)]
        merged = merge([load_run(path) for path in args.runs], names=args.runs, labels=labels)
        print(text_report(merged), end="")
        if args.markdown:
            Path(args.markdown).write_text(markdown_report(merged), encoding="utf-8")
        if args.chart:
            write_chart(merged, args.chart)
    except (RunFileError, ValueError) as e:
        print(f"report error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
