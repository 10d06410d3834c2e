"""Study-style tables and a speedup chart from this suite's pytest-benchmark JSON runs (no torch).

    python -m attn_tools.report RUN.json|FOLDER [...] [--markdown FILE] [--chart FILE.png] [--skip-incomparable]

The parts, one place each:

- `merge`: loading files and folders (every run under a folder, oldest first, copies and non-run
  JSON left out with a note), refusing runs that `runs.comparable()` says differ (GPU model,
  profile, rounds, an injected slowdown, ...) or, with --skip-incomparable, leaving them out and
  listing them, and merging the rest into the latest cell of each test id (`Merged`).
- `cells`: the test kinds (train step, inference step, attention kernel, packed images) and a
  cell's parameters from its id.
- `tables`: a table per (seq_len, mode[, direction]) of each kind: median, speedups over the
  native cell of the same variant *in the same run* (`n/a` when that run has none; never
  another run's), peak GiB, TFLOP/s, the kernel that ran and the optional columns runs recorded.
- `varlen`: packed variable-size images, speedups over the padded baseline of the same run,
  and FlexAttention's changing-lengths strategies.
- `comparisons`: the study's comparisons (STUDY_PAIRS) as sentences, attention's share of the
  training step, where the time went.
- `render`: the text and markdown reports: warnings about runs that are not plain measurements
  (injected slowdown, incomplete, workers sharing a GPU) first, the sections, skipped tests
  grouped by reason, failed tests one a line, the legend of runs (file, date, commit, GPU,
  profile, rounds).
- `chart`: the training-step speedup chart.
- `cli`: the command line (`main`).
"""
from .cells import ATTENTION, FLEX_LENGTHS, INFER, KINDS, TRAIN, VARLEN, VARLEN_KINDS, cell_kind, section_title
from .chart import CHART_XLABEL, write_chart
from .cli import main
from .comparisons import STUDY_PAIRS, Comparison, ShareRow, attention_shares, phase_totals, study_comparisons
from .merge import (
    SINGLE_RUN_LABEL,
    IncomparableRuns,
    Merged,
    RunSource,
    comparable_with_newest,
    load_paths,
    merge,
    run_source,
)
from .render import markdown_report, outcome_lines, sections, skip_groups, text_report
from .tables import BASELINE_IMPL, HOST_BOUND_SHARE, Column, Row, cache_label, columns, kinds, speedups, tables
from .varlen import VARLEN_BASELINES, VARLEN_SECTION, flex_lengths_rows, varlen_baseline, varlen_tables

__all__ = [
    "ATTENTION", "BASELINE_IMPL", "CHART_XLABEL", "FLEX_LENGTHS", "HOST_BOUND_SHARE", "INFER", "KINDS",
    "SINGLE_RUN_LABEL", "STUDY_PAIRS", "TRAIN", "VARLEN", "VARLEN_BASELINES", "VARLEN_KINDS", "VARLEN_SECTION",
    "Column", "Comparison", "IncomparableRuns", "Merged", "Row", "RunSource", "ShareRow", "attention_shares",
    "cache_label", "cell_kind", "columns", "comparable_with_newest", "flex_lengths_rows", "kinds", "load_paths",
    "main", "markdown_report", "merge", "outcome_lines", "phase_totals", "run_source", "section_title", "sections",
    "skip_groups", "speedups", "study_comparisons", "tables", "text_report", "varlen_baseline", "varlen_tables",
    "write_chart",
]
