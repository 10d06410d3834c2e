"""The plan: each cell's cost in seconds (from earlier runs, else the cost model) and the balance of
cells over the workers, longest processing time first, keeping the cells that share parity checks
together.

The cost model, from the H200 runs of 2026-11-30 (26 cells of seq 196 took 597 s, 26 of seq 3136
took 310 s; compiled cells' first steps take 2-21 s against 0.2 s eager, so compiled is taken as
twice eager):

| cell | seconds |
| --- | ---: |
| seq 196, eager / compiled | 15 / 30 |
| seq 3136, eager / compiled | 8 / 16 |
| library unavailable or variant unsupported (will skip) | 0.5 |
| not a train-step cell | 10 |
"""
from __future__ import annotations

from ..runs import cell_params

# The cost model (seconds per cell; see the module docstring for where the numbers come from).
CELL_S = {196: 15.0, 3136: 8.0}
COMPILED_FACTOR = 2.0
SKIP_CELL_S = 0.5
OTHER_TEST_S = 10.0


def model_cost(test: str, availability: dict | None = None) -> float:
    """The cost model's seconds for `test` (module docstring); a cell that will skip costs SKIP_CELL_S."""
    p = cell_params(test)
    if p is None:
        return OTHER_TEST_S
    impl = (availability or {}).get(p["impl"])
    if impl and (impl.get("status") != "available" or p["variant"] not in impl.get("variants", [])):
        return SKIP_CELL_S
    base = CELL_S.get(p["seq_len"], max(CELL_S.values()))
    return base * (1.0 if p["mode"] == "eager" else COMPILED_FACTOR)


def measured_cost(test: str, run: dict) -> float | None:
    """Seconds `test` took in `run`: its recorded wall time, else first step + warm-up and timed
    steps; SKIP_CELL_S if it skipped; None if the run has no measurement of it."""
    suite = run.get("attn_suite") or {}
    wall = (suite.get("cell_wall_s") or {}).get(test)
    if wall is not None:
        return float(wall)
    if any(s.get("test") == test for s in suite.get("skipped", [])):
        return SKIP_CELL_S
    if any(f.get("test") == test for f in suite.get("failed", [])):
        return None
    bench = next((b for b in run.get("benchmarks", []) if b.get("fullname") == test), None)
    if bench is None:
        return None
    stats, info = bench["stats"], bench.get("extra_info") or {}
    steps = stats.get("iterations", 1) * (stats.get("rounds", 0) + suite.get("warmup", 0))
    first_steps = float(info.get("parity_first_step_s") or 0.0) + float(info.get("first_step_s") or 0.0)
    return first_steps + steps * stats["median"]


def estimate_costs(tests: list[str], availability: dict | None = None,
                   previous: list[dict] = ()) -> tuple[dict[str, float], int]:
    """(seconds per test, how many were measured) for `tests`.

    `previous` runs are searched newest first; a test none of them measured gets the cost
    model, scaled by measured / modelled over the tests that have both (that ran, not skipped).
    """
    measured: dict[str, float] = {}
    for run in previous:
        for test in tests:
            if test not in measured:
                cost = measured_cost(test, run)
                if cost is not None:
                    measured[test] = cost
    model = {test: model_cost(test, availability) for test in tests}
    timed = [t for t in measured if measured[t] != SKIP_CELL_S and model[t] != SKIP_CELL_S]
    scale = 1.0
    if timed and sum(model[t] for t in timed) > 0 and sum(measured[t] for t in timed) > 0:
        scale = sum(measured[t] for t in timed) / sum(model[t] for t in timed)
    costs = {t: measured[t] if t in measured else model[t] * (scale if model[t] != SKIP_CELL_S else 1.0)
             for t in tests}
    return costs, len(measured)


def parity_group(test: str) -> tuple:
    """The key of the cells that share one worker's memoized parity checks: the same impl, variant,
    seq_len and mode (harness.Suite.attention_parity and model_parity_once). Any other test is a
    group of its own."""
    p = cell_params(test)
    return (p["impl"], p["variant"], p["seq_len"], p["mode"]) if p else (test,)


def balance(costs: dict[str, float], workers: int, group=parity_group) -> list[list[str]]:
    """Longest processing time first over groups of tests: `workers` lists of tests (some possibly empty).

    The tests of one `group` (by default the cells that share parity checks) go to one worker, so
    that no two workers compute the same check. Groups in decreasing total cost (ties: collection
    order of their first test), each to the least-loaded worker (ties: the lowest index); each list
    keeps the order of `costs` (collection order).
    """
    if workers < 1:
        raise ValueError(f"need at least one worker, got {workers}")
    order = {test: i for i, test in enumerate(costs)}
    groups: dict[tuple, list[str]] = {}
    for test in costs:
        groups.setdefault(group(test), []).append(test)
    loads = [0.0] * workers
    shards: list[list[str]] = [[] for _ in range(workers)]
    for tests in sorted(groups.values(), key=lambda g: (-sum(costs[t] for t in g), order[g[0]])):
        i = min(range(workers), key=lambda w: (loads[w], w))
        shards[i] += tests
        loads[i] += sum(costs[t] for t in tests)
    return [sorted(shard, key=order.__getitem__) for shard in shards]

