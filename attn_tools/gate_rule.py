"""The gate's statistics: a cell's change, its standard error with the process as the unit of
replication, the correction for the number of cells, the common shift, and the rule's error rates.

Model, per cell c and run j, on the log scale: y_cj = log(median step time) = mu_c + delta_j + e_cj.
- e_cj, variance v_c: a process's own deviation (a fresh process lands in another state of clocks,
  allocator and compiled code; the rounds of one process do not see it). It includes the within-run
  noise of the median.
- delta_j, variance tau^2: the shift that all cells of one run share (the machine, its state that
  hour, another GPU of the model).

v_c and tau^2 come from the history (`history_variances`): stored comparable runs of the same code,
grouped by commit. Each run's shift is the median over cells of its deviations from its group's
cell means; v_c is the variance of what is left, pooled over groups. A short history is shrunk
(`cell_variance`) towards a prior of `prior_dof` degrees of freedom: the larger of the cell's
within-run bootstrap variance of log(median) (the floor: a process cannot vary less than its own
rounds say) and the history's median cell variance (or `run_sd_pct`, 0.5 %, with no history).
tau^2 likewise towards `shift_sd_pct` (1 %: on the H200 a baseline process ran 0.5-2.4 % slower
than the next, and a run of another H200 -1.4 %). Why not a two-level bootstrap (runs, then rounds):
a confirmation has two runs a side, which a run-level bootstrap resamples into three distinct
means; the between-run level is better taken from the history, with the reruns' own spread added.

The test, per cell: d_c = y_current - y_baseline (the baseline's y is the median of its k runs'),
H0: d_c <= log(1 + t) with t the threshold, a practical effect size (default 2 %: a slowdown
smaller than that is not worth failing a change for, however sure). z = (d_c - log(1 + t)) / se_c.
- Against a stored baseline (stage 1): se_c^2 = (v_c + tau^2) (1 + f(k)), f(k) = var(median of k)
  / var(one) (1, 1/2, then pi / 2k). The baseline ran in another process, maybe on another machine.
  A cell slower than the threshold (the point estimate) is "unsure" and confirmed.
- Confirmation (stage 2), ABBA: the current code (A) and the baseline's (B) rerun interleaved
  A B B A on one machine: delta cancels (and a linear drift with it), se_c^2 = v_c (1/n_A + 1/n_B),
  v_c shrunk with the reruns' own spread (n_A - 1 + n_B - 1 more degrees of freedom).
The p-values (one-sided, Student's t with the variance's degrees of freedom) of all judged cells,
plus the common shift's, are one family:
Holm's step-down controls the family-wise error rate (the probability of any false REGRESSED in a
run) at alpha, under any dependence between cells (they share delta). It is the default because
the gate's verdict is one bit per run: one false flag fails the run, which is what FWER bounds.
Benjamini-Hochberg ("bh") bounds the expected share of false flags among the flags instead; it
holds under the positive dependence a shared shift makes, and flags more when many cells moved.

The common shift: D = the median over cells of d_c, se_D = 1.2533 sqrt(mean(noise var) / m), its
own hypothesis in the family. A whole-machine shift and a uniform slowdown of the code look the
same against a stored baseline; the ABBA confirmation tells them apart. The baseline's own rerun on
this machine moves against the stored baseline by the machine's shift, and A against B (same
machine, interleaved) by the code's: a D that exceeds the threshold against the stored baseline
but not in the ABBA comparison is the machine (information); one that does in the ABBA
comparison is the code (a regression of the whole run).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from .runs import outcomes, round_times_s

DEFAULT_THRESHOLD_PCT = 2.0
DEFAULT_ALPHA = 0.05
CORRECTIONS = ("holm", "bh")
DEFAULT_PRIOR_DOF = 4.0
DEFAULT_RUN_SD_PCT = 0.5
DEFAULT_SHIFT_SD_PCT = 1.0
DEFAULT_RESAMPLES = 400
DEFAULT_SEED = 0
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)  # se of a median of normal values / se of their mean
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Rule:
    """The decision rule's parameters (see the module docstring)."""

    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    alpha: float = DEFAULT_ALPHA
    correction: str = "holm"
    prior_dof: float = DEFAULT_PRIOR_DOF
    run_sd_pct: float = DEFAULT_RUN_SD_PCT
    shift_sd_pct: float = DEFAULT_SHIFT_SD_PCT
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED

    def __post_init__(self):
        if self.threshold_pct < 0:
            raise ValueError(f"threshold must be >= 0 percent, got {self.threshold_pct}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1 (e.g. 0.05), got {self.alpha}")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if self.prior_dof <= 0 or self.run_sd_pct <= 0 or self.shift_sd_pct < 0:
            raise ValueError("prior_dof and run_sd_pct must be > 0, shift_sd_pct >= 0")
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {self.resamples}")

    @property
    def limit(self) -> float:
        """The threshold on the log scale: log(1 + t)."""
        return math.log1p(self.threshold_pct / 100)

    def describe(self) -> str:
        """The rule in one phrase, for summaries."""
        name = {"holm": "Holm (family-wise)", "bh": "Benjamini-Hochberg (false discovery)"}[self.correction]
        return f"REGRESSED when slower than +{self.threshold_pct:g}% at alpha {self.alpha:g} per run, {name}"


DEFAULT_RULE = Rule()


def log_median(rounds) -> float:
    """log of the median of a run's per-round times."""
    return math.log(float(np.median(rounds)))


def within_run_var(rounds, rule: Rule = DEFAULT_RULE) -> float:
    """Bootstrap variance of log(median) over one run's rounds (fixed seed: reproducible)."""
    rounds = np.asarray(rounds, dtype=float)
    if len(rounds) < 2:
        return 0.0
    rng = np.random.default_rng(rule.seed)
    medians = np.median(rng.choice(rounds, size=(rule.resamples, len(rounds))), axis=1)
    return float(np.var(np.log(medians)))


def median_var_factor(k: int) -> float:
    """var(median of k values) / var(one value), for normal values (exact for k <= 2)."""
    if k <= 2:
        return 1.0 / max(k, 1)
    return math.pi / (2 * k)


@dataclass
class Variances:
    """Run-to-run variances of log(median) from same-code runs: per cell a sum of squares and its
    degrees of freedom, and the same for the runs' common shifts."""

    cells: dict[str, tuple[float, int]] = field(default_factory=dict)
    shift_ss: float = 0.0
    shift_dof: int = 0
    runs: int = 0
    groups: int = 0

    def cell(self, test: str) -> tuple[float | None, int]:
        """(variance, dof) of one cell, (None, 0) when the history never timed it twice."""
        ss, dof = self.cells.get(test, (0.0, 0))
        return (ss / dof, dof) if dof else (None, 0)

    @property
    def pooled(self) -> float | None:
        """The median cell variance: the prior for a cell the history lacks."""
        found = [ss / dof for ss, dof in self.cells.values() if dof]
        return float(np.median(found)) if found else None

    @property
    def shift(self) -> tuple[float | None, int]:
        """(variance, dof) of a run's common shift."""
        return (self.shift_ss / self.shift_dof, self.shift_dof) if self.shift_dof else (None, 0)


def history_variances(groups: list[list[dict]]) -> Variances:
    """Variances from groups of runs, each group runs of one code (`Variances`; see the module docstring).

    In each group of two runs or more, the cells every run timed give one deviation per run from
    their mean, from which the run's shift (the median over cells) is taken out.
    """
    result = Variances()
    for runs in groups:
        if len(runs) < 2:
            continue
        ran = [outcomes(run)[0] for run in runs]
        tests = sorted(set.intersection(*(set(r) for r in ran)))
        tests = [t for t in tests if all(round_times_s(r[t]) for r in ran)]
        if not tests:
            continue
        y = np.array([[log_median(round_times_s(r[t])) for t in tests] for r in ran])
        dev = y - y.mean(axis=0)
        shift = np.median(dev, axis=1)
        resid = dev - shift[:, None]
        dof = len(runs) - 1
        for i, test in enumerate(tests):
            ss, n = result.cells.get(test, (0.0, 0))
            result.cells[test] = (ss + float(np.sum(resid[:, i] ** 2)), n + dof)
        result.shift_ss += float(np.sum(shift ** 2))
        result.shift_dof += dof
        result.runs += len(runs)
        result.groups += 1
    return result


def cell_variance(variances: Variances, test: str, within: float, rule: Rule = DEFAULT_RULE,
                  extra: tuple[float, int] = (0.0, 0)) -> float:
    """v_c: the history's variance of the cell, shrunk towards max(within-run variance, the pooled
    cell variance or run_sd_pct^2) with prior_dof degrees of freedom; `extra` adds a sum of squares
    and its dof (the confirmation reruns' own spread)."""
    pooled = variances.pooled
    prior = max(within, pooled if pooled is not None else (rule.run_sd_pct / 100) ** 2)
    s2, dof = variances.cell(test)
    ss = (s2 or 0.0) * dof + rule.prior_dof * prior + extra[0]
    return ss / (dof + rule.prior_dof + extra[1])


def cell_dof(variances: Variances, test: str, rule: Rule = DEFAULT_RULE, extra_dof: int = 0) -> float:
    """The degrees of freedom of `cell_variance`'s estimate."""
    return variances.cell(test)[1] + rule.prior_dof + extra_dof


def shift_variance(variances: Variances, rule: Rule = DEFAULT_RULE) -> float:
    """tau^2: the history's variance of a run's common shift, shrunk towards shift_sd_pct^2."""
    s2, dof = variances.shift
    return ((s2 or 0.0) * dof + rule.prior_dof * (rule.shift_sd_pct / 100) ** 2) / (dof + rule.prior_dof)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-14:
            break
    return h


def t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom (the normal's for dof = inf)."""
    if math.isinf(dof):
        return 1.0 - _NORMAL.cdf(t)
    x = dof / (dof + t * t)
    a, b = dof / 2, 0.5
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    tail = front * _betacf(a, b, x) / a if x < (a + 1) / (a + b + 2) else 1 - front * _betacf(b, a, 1 - x) / b
    return tail / 2 if t > 0 else 1 - tail / 2


def p_above(d: float, se: float, limit: float, dof: float = math.inf) -> float:
    """One-sided p-value of H0 'the true change is at most `limit`': Student's t with the
    variance's degrees of freedom (history + prior + reruns), so a variance estimated from few
    runs widens the tails where the correction for many cells looks."""
    if se <= 0:
        return 0.0 if d > limit else 1.0
    return t_sf((d - limit) / se, dof)


def reject(pvalues: list[float], rule: Rule = DEFAULT_RULE) -> list[bool]:
    """Which hypotheses the family's correction rejects (Holm's step-down or Benjamini-Hochberg)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    rejected = [False] * m
    if rule.correction == "holm":
        for rank, i in enumerate(order):
            if pvalues[i] > rule.alpha / (m - rank):
                break
            rejected[i] = True
    else:
        passing = [rank for rank, i in enumerate(order) if pvalues[i] <= (rank + 1) * rule.alpha / m]
        for i in order[:max(passing) + 1] if passing else []:
            rejected[i] = True
    return rejected


def classify(d: float, se: float, p: float, rejected: bool, final: bool, rule: Rule = DEFAULT_RULE) -> str:
    """A judged cell's status. REGRESSED: rejected after the correction. unsure: against a stored
    baseline (not `final`), slower than the threshold, so it is confirmed; in a confirmation
    (`final`), significant before the correction only, which fails unless allowed. faster: surely
    faster than the threshold. ok otherwise."""
    if rejected:
        return "REGRESSED"
    if (p < rule.alpha) if final else (d > rule.limit):
        return "unsure"
    if d + _NORMAL.inv_cdf(1 - rule.alpha) * se < -rule.limit:
        return "faster"
    return "ok"


def common_shift(log_ratios: list[float], noise_vars: list[float]) -> tuple[float, float]:
    """(D, se_D): the median log ratio over cells and its standard error from the cells' noise."""
    if not log_ratios:
        raise ValueError("no cell to take a common shift over")
    m = len(log_ratios)
    return float(np.median(log_ratios)), MEDIAN_SE_FACTOR * math.sqrt(float(np.mean(noise_vars)) / m)


def pct(log_ratio: float) -> float:
    """A log ratio as a percent change (+ = slower)."""
    return math.expm1(log_ratio) * 100


# --- the rule's error rates, from measured variances ------------------------------------------
def _above(mean: float, sd: float, limit: float) -> float:
    return 1.0 - _NORMAL.cdf((limit - mean) / sd) if sd > 0 else float(mean > limit)


def error_rates(cell_vars: list[float], shift_var: float, rule: Rule = DEFAULT_RULE, cells: int = 124,
                slowdown_pct: float = 0.0, baseline_runs: int = 1, reruns: int = 2,
                assumed_vars: list[float] | None = None) -> dict:
    """Expected rates of the two-stage rule for a run of `cells` cells whose true run-to-run variances
    are drawn from `cell_vars` (the measured ones, cycled; `assumed_vars`: those the rule uses for its
    standard errors, default the same), every cell slowed by `slowdown_pct`.

    The shift between the two runs' machine states (variance `shift_var`) is shared by all cells.
    A cell is confirmed when its change, or the common shift, exceeds the threshold against the
    stored baseline (stage 1), and fails when the ABBA confirmation (`reruns` runs a side) is
    significant at alpha before the correction (unsure) or after it (REGRESSED; Bonferroni's
    alpha / cells, Holm's first step, is used: a lower bound of Holm's power). Returns per-run
    probabilities: `confirm` (any cell to confirm), `fail` (any cell fails: a false alarm when
    slowdown_pct is 0), `regressed`; per-cell means `cell_confirm`, `cell_fail`, `cell_regressed`;
    and `cells_to_confirm`.
    """
    if not cell_vars:
        raise ValueError("no cell variances to compute error rates from")
    assumed_vars = assumed_vars or cell_vars
    slow = math.log1p(slowdown_pct / 100)
    z_unsure = _NORMAL.inv_cdf(1 - rule.alpha)
    z_crit = _NORMAL.inv_cdf(1 - rule.alpha / cells)
    factor = 1 + median_var_factor(baseline_runs)
    scale = cells / len(cell_vars)
    # The shift between the baseline's and the current run's machine states is shared by every cell:
    # integrate over it (Gauss-Hermite). Given it, the cells are independent; a run whose common shift
    # exceeds the threshold confirms every cell.
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / weights.sum()
    second = [(_above(slow, math.sqrt(v * 2 / reruns), rule.limit + z_unsure * math.sqrt(a * 2 / reruns)),
               _above(slow, math.sqrt(v * 2 / reruns), rule.limit + z_crit * math.sqrt(a * 2 / reruns)))
              for v, a in zip(cell_vars, assumed_vars)]
    totals = dict.fromkeys(("confirm", "fail", "regressed", "cell_confirm", "cell_fail", "cell_regressed"), 0.0)
    for node, weight in zip(nodes, weights):
        delta = node * math.sqrt(shift_var * factor)
        moved = slow + delta > rule.limit
        first = [1.0 if moved else _above(slow + delta, math.sqrt(v * factor), rule.limit) for v in cell_vars]
        fail = [p1 * p2 for p1, (p2, _) in zip(first, second)]
        regressed = [p1 * p2 for p1, (_, p2) in zip(first, second)]
        for key, ps in (("confirm", first), ("fail", fail), ("regressed", regressed)):
            totals[key] += weight * (1.0 - math.exp(scale * sum(math.log1p(-min(p, 1 - 1e-12)) for p in ps)))
            totals[f"cell_{key}"] += weight * float(np.mean(ps))
    totals["cells_to_confirm"] = cells * totals["cell_confirm"]
    return {key: float(value) for key, value in totals.items()}
