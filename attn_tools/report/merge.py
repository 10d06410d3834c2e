"""Loading runs (files, or folders of them) and merging comparable runs into one latest-per-cell view."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..runs import RunFileError, comparable, gpu_model, load_run, outcomes, recorded_date, run_settings
from .cells import cell_kind

SINGLE_RUN_LABEL = "this run"
COMPILE_SCOPE_WORDS = {"model": "whole model", "block": "per block"}


class IncomparableRuns(ValueError):
    """Runs that `runs.comparable` says must not share a report; the message names both and why."""


@dataclass(frozen=True)
class RunSource:
    """Where a run came from, for the legend: its label (e.g. `r1`), file, recorded identity, the
    rounds it timed, and `warnings`: what makes its times unlike a plain measurement (an injected
    slowdown, an incomplete run, several workers per GPU)."""

    label: str
    name: str
    datetime: str
    commit: str
    gpu: str
    profile: str
    matmul_peak_tflops: float | None = None
    compile_scope: str | None = None  # of its compiled training and inference cells, if it has any
    rounds: str | None = None  # '10 rounds after 2 warm-up'
    warnings: tuple[str, ...] = ()

    def legend(self) -> str:
        """'r1: FILE, DATE, commit ID, GPU, profile P[, compiled: SCOPE][, bf16 matmul peak N TFLOP/s][, ROUNDS]
        [, WARNINGS]'."""
        text = (f"{self.label}: {self.name}, {self.datetime}, commit {self.commit}, {self.gpu}, "
                f"profile {self.profile}")
        if self.compile_scope:
            text += f", compiled: {COMPILE_SCOPE_WORDS.get(self.compile_scope, self.compile_scope)}"
        if self.matmul_peak_tflops:
            text += f", bf16 matmul peak {self.matmul_peak_tflops:.0f} TFLOP/s"
        return "".join([text, *(f", {part}" for part in (self.rounds, *self.warnings) if part)])


@dataclass
class Merged:
    """The cells of one or more comparable runs, later runs winning: ran (benchmark dicts), skipped
    (reason) and failed (one line), each keyed by test id. A skip never hides a cell that ran in an
    earlier run: a run made in another environment skips the libraries it lacks, and that says
    nothing about the earlier measurement.

    `source` maps each test id to the label of the run it was taken from; `by_run` holds, per run
    label, every cell that run timed (speedups are computed within one run); `runs` are the runs'
    legend entries in the order given; `excluded` the (file, reasons) of runs left out as not
    comparable.
    """

    ran: dict
    skipped: dict
    failed: dict
    gpu: str
    source: dict = field(default_factory=dict)
    runs: list = field(default_factory=list)
    by_run: dict = field(default_factory=dict)
    excluded: list = field(default_factory=list)


def run_warnings(run: dict) -> tuple[str, ...]:
    """What makes a run's times unlike a plain measurement, in upper case for the legend: an injected
    slowdown, an incomplete run (`complete` False), workers sharing a GPU."""
    suite = run.get("attn_suite") or {}
    marks = []
    if suite.get("slowdown"):
        marks.append(f"INJECTED SLOWDOWN of {suite['slowdown']:.0%} a step (gate testing, not a measurement)")
    if suite.get("complete") is False:
        marks.append("INCOMPLETE (interrupted, stopped early or a worker crashed)")
    if (suite.get("workers_per_gpu") or 1) > 1:
        marks.append(f"SHARED GPUS ({suite['workers_per_gpu']} workers per GPU: proves sharding, not timing)")
    return tuple(marks)


def _rounds(suite: dict) -> str | None:
    if suite.get("rounds") is None:
        return None
    warmup = suite.get("warmup")
    return f"{suite['rounds']} rounds" + (f" after {warmup} warm-up" if warmup is not None else "")


def run_source(run: dict, label: str, name: str) -> RunSource:
    """The legend entry of `run`: datetime to the second, commit hash (10 chars, `dirty` marked)."""
    commit_info = run.get("commit_info") or {}
    commit = commit_info.get("id") or "unknown"
    if all(c in "0123456789abcdef" for c in commit):
        commit = commit[:10]  # a git hash; other values ("unversioned", "unknown") stay whole
    if commit_info.get("dirty"):
        commit += " (dirty)"
    suite = run.get("attn_suite") or {}
    return RunSource(label, name, _short_datetime(run.get("datetime")), commit, gpu_model(run),
                     str(suite.get("profile")), suite.get("matmul_peak_tflops"),
                     run_settings(run).get("compile_scope"), _rounds(suite), run_warnings(run))


def _short_datetime(value: str | None) -> str:
    if not value:
        return "date unknown"
    try:
        return datetime.fromisoformat(value).isoformat(timespec="seconds")
    except ValueError:
        return value


def load_paths(paths) -> tuple[list[tuple[str, dict]], list[str]]:
    """([(name, run)], notes) for the command line's paths, in the order given.

    A file is one run (RunFileError if it is not one). A folder (a storage folder, a results
    folder) gives every pytest-benchmark run under it, recursively, oldest first by recorded date,
    so that the newest measurement of a cell wins; its other JSON files (gate verdicts, empty or
    broken files) and copies of a run already found are left out, each with a note.
    """
    out, notes, seen = [], [], {}
    for path in map(Path, paths):
        if not path.is_dir():
            out.append((str(path), load_run(path)))
            continue
        found = []
        for file in sorted(path.rglob("*.json")):
            try:
                run = load_run(file)
                found.append((recorded_date(run, file), str(file), run))
            except RunFileError as e:
                notes.append(f"left out {e}")
        if not found:
            raise RunFileError(f"{path}: no pytest-benchmark run in this folder" + (f" ({len(notes)} other JSON files)"
                                                                                  if notes else ""))
        for _, name, run in sorted(found, key=lambda item: item[:2]):
            key = (run.get("datetime"), tuple((b["fullname"], b["stats"]["median"]) for b in run["benchmarks"]))
            if key in seen:
                notes.append(f"left out {name}: the same run as {seen[key]}")
                continue
            seen[key] = name
            out.append((name, run))
    return out, notes


def check_comparable(runs: list[dict], names: list[str]) -> None:
    """IncomparableRuns naming the first two runs that `runs.comparable` says differ, and why."""
    for j in range(1, len(runs)):
        for i in range(j):
            reasons = comparable(runs[i], runs[j], labels=(names[i], names[j]), compare_cells=False)
            if reasons:
                raise IncomparableRuns(f"runs that are not comparable cannot share a report: {names[i]} and "
                                       f"{names[j]} differ in " + "; ".join(reasons))


def comparable_with_newest(runs: list[dict], names: list[str]) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """(indices of the runs kept, [(name, reasons)] of those left out): the last run is kept, then,
    from the newest back, each run comparable with every run kept so far."""
    kept, excluded = [len(runs) - 1], []
    for i in range(len(runs) - 2, -1, -1):
        reasons = next((r for k in kept if (r := comparable(runs[i], runs[k], labels=(names[i], names[k]),
                                                             compare_cells=False))), [])
        if reasons:
            excluded.append((names[i], reasons))
        else:
            kept.append(i)
    return sorted(kept), excluded[::-1]


def merge(runs: list[dict], names: list[str] | None = None, labels: list[str] | None = None,
          excluded=()) -> Merged:
    """Merge comparable runs into one set of cells, later runs winning; IncomparableRuns (a ValueError
    naming two files and the settings that differ) if `runs.comparable` refuses a pair.

    `names` (file paths) default to `run 1`, `run 2`, ...; `labels` (the short run column)
    default to `this run` for one run and `r1`, `r2`, ... for several. `excluded` are the
    (name, reasons) of runs left out before, for the report to list.
    """
    if not runs:
        raise ValueError("no runs to report")
    names = [str(n) for n in names] if names else [f"run {i}" for i in range(1, len(runs) + 1)]
    if labels is None:
        labels = [SINGLE_RUN_LABEL] if len(runs) == 1 else [f"r{i}" for i in range(1, len(runs) + 1)]
    if not len(names) == len(labels) == len(runs):
        raise ValueError("merge needs one name and one label per run")
    check_comparable(runs, names)
    merged = Merged({}, {}, {}, gpu_model(runs[0]), excluded=list(excluded))
    for run, name, label in zip(runs, names, labels):
        merged.runs.append(run_source(run, label, name))
        ran, skipped, failed = outcomes(run)
        merged.by_run[label] = {test: bench for test, bench in ran.items() if cell_kind(test)}
        for state, cells in (("ran", merged.by_run[label]), ("skipped", skipped), ("failed", failed)):
            for test, value in cells.items():
                if state == "skipped" and test in merged.ran:
                    continue
                for other in (merged.ran, merged.skipped, merged.failed):
                    other.pop(test, None)
                getattr(merged, state)[test] = value
                merged.source[test] = label
    return merged
