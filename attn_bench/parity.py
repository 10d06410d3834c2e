"""Numeric parity against fp32 references, with tolerances from correct same-dtype runs.

Attention level (the callable a cell's model uses, on the path the model uses):
one packed bf16 (B, S, 3, H, D) qkv tensor is split into q, k, v views with
`model.split_qkv` in the implementation's layout, and the output goes back
through `model.merge_heads`; compiled cells compile that whole function.
A tensor (output, dq, dk, dv) passes when
    max|tested - ref| <= factor * max|baseline - ref| + floor
where ref is fp32 math on the same inputs, baseline is plain PyTorch math on the
bf16 inputs, factor is 2 for the output and 3 for gradients, and floor is twice
the fp32 rounding error at the reference's magnitude. It runs on two input sets
(INPUT_SETS): "wide" scores (std 2.5 × the softcap, so the cap acts) and "soft"
ones (where a scale error shows). Every report carries negative controls: wrong
fp32 references (a 2 % scale error; for softcap the plain variant and softcap 20;
for neighborhood the plain variant and radius 4) must exceed the limit by
CONTROL_MARGIN, or the check is powerless and fails.

The gradients' scale is checked apart (`projection_deviation`, PROJ_FACTOR, PROJ_FLOOR): a gradient
2 % too small hides inside bf16's noise for the max-abs and rel-L2 rules, not for the projection
<g, g_ref> / <g_ref, g_ref>, whose deviation from 1 must stay within PROJ_FACTOR x bf16 math's + the
floor; the control "grad 2 % small" must exceed each gradient's limit by CONTROL_MARGIN on some input
set. The model level checks each block's dW_q, dW_k and dW_v the same way (MODEL_PROJ_FACTOR x the
correct bf16 runs' deviation + MODEL_PROJ_FLOOR), in the "soft" parity models (PROJ_MODEL_SETS).
Failure messages name the worst check.

Model level: the first training step of fresh parity models of the cell
(logits, each block's qkv weight gradient split into its q·k and v parts, and all
gradients together; relative L2 error) against native fp32 eager. Parity models
carry weights rescaled by `make_attention_matter` (the timed model keeps timm's
init). A quantity passes when
    rel_err <= MODEL_FACTOR * max(rel_err of correct bf16 runs) + MODEL_FLOOR
over native bf16, sdpa_math bf16 (where it has the variant) and native bf16 on
inputs nudged within bf16 rounding. NaN or inf always fails. Forward only
(`check_model_forward`, inference cells of implementations without a backward on the
device): the logits of an inference forward of the same parity models, under the same limit.

Why these constants (smoke profile, CPU, scripts/parity_margins.py and
tests/test_power.py): the correct bf16 runs differ from each other by at most
~1.2x; correct implementations used at most ~0.5 of the model budget; a 2 % scale
error, the subtlest wrong attention tested, used 1.6-1.9x of it at factor 2 (only
~1.1x at factor 3, so 3 had no power against it). Score std 1 maximises that
margin (measured at 1, 4, 10: 1.1, 0.55, 0.35 of a factor-3 budget); peaked
models (std 60) make bf16 noise swamp everything but the softcap, hence the
separate "wide" model for softcap cells only. The floor (2^-10) is below every
measured baseline error (>= 3.8e-3) and only guards against a zero baseline.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from attn_impls import AttnFn, AttnShape
from attn_impls.native import attention_math
from attn_impls.registry import NEIGHBORHOOD_RADIUS, SOFTCAP, neighborhood_mask

from .model import (
    InferStep,
    TrainStep,
    VitConfig,
    build_model,
    compile_model,
    merge_heads,
    split_qkv,
    synthetic_batch,
)

FORWARD_FACTOR = 2.0
GRAD_FACTOR = 3.0
# Attention-level input sets by the std of their scores (q·kᵀ/√d). "wide": 2.5 × the
# softcap, so the cap changes most scores; the softmax is then nearly one-hot and bf16
# math's rounding of such scores is coarse, so a scale error hides there. "soft": a
# soft softmax, where a 2 % scale error moves the output (measured in `attention_margins`).
INPUT_SETS = {"soft": 1.0, "wide": 2.5 * SOFTCAP}
SCALE_CONTROL = "scale 2 % off"
GRADS = ("dq", "dk", "dv")
# A negative control must exceed the check's limit by this factor.
CONTROL_MARGIN = 1.5
# Gradients' scale (the projection statistic, `projection_deviation`): a tensor passes when
#     |<g, g_ref> / <g_ref, g_ref> - 1| <= PROJ_FACTOR * (the same for bf16 math) + PROJ_FLOOR.
# Max |err| and rel L2 against k x bf16's error cannot resolve a 2 % scale bias inside bf16's noise
# (issue 27: a dq 2 % too small passed both levels at seq 196 for softcap); bf16 rounding leaves the
# projection nearly unbiased, a scale error moves it by its full size. PROJ_FLOOR and MODEL_PROJ_FLOOR:
# see `projection_deviation` for the measured numbers they come from.
PROJ_FACTOR = 3.0
PROJ_FLOOR = 2e-3
MODEL_PROJ_FACTOR = 2.0
MODEL_PROJ_FLOOR = 2e-3
GRAD_SCALE_CONTROL = "grad 2 % small"
# The parity models whose gradients' scale is checked: in softcap's "wide" model correct bf16 runs
# deviate by up to 1.2e-2, the size of the error to find, and native compiled on CPU by 6.3e-3 against
# their 4.9e-3 (0.54 of that limit): the statistic cannot resolve a 2 % error there, "soft" can.
PROJ_MODEL_SETS = ("soft",)
# Model level, see the module docstring and `check_model`.
MODEL_FACTOR = 2.0
MODEL_FLOOR = 2.0**-10  # a quarter of bf16's unit roundoff, as a relative L2 error
# Parity models by the std of their attention scores: "soft" (a 2 % scale error shows,
# see `make_attention_matter`), and for softcap cells "wide" (2 × the softcap, so the cap acts).
MODEL_SETS = {"soft": 1.0, "wide": 2.0 * SOFTCAP}


@dataclass(frozen=True)
class TensorCheck:
    """One tested tensor: its error against the reference and the limit it must stay under."""

    name: str
    err: float
    limit: float
    baseline_err: float
    finite: bool
    metric: str = "max abs"
    where: str = ""

    @property
    def ok(self) -> bool:
        return self.finite and self.err <= self.limit

    @property
    def budget_used(self) -> float:
        """err / limit: below 1 passes; inf when the tensor is not finite."""
        return self.err / self.limit if self.finite else float("inf")

    def line(self) -> str:
        status = "ok" if self.ok else ("NON-FINITE" if not self.finite else "FAIL")
        return (f"{self.name:>22}: {self.metric} {self.err:.3e} = {self.budget_used:.2f} of limit "
                f"{self.limit:.3e} (baseline {self.baseline_err:.3e}){self.where} [{status}]")


@dataclass(frozen=True)
class ControlCheck:
    """A wrong reference the check must catch by CONTROL_MARGIN; otherwise it is powerless."""

    name: str
    budget_used: float
    gating: bool = True  # False: reported only (see check_attention)

    @property
    def powerful(self) -> bool:
        return self.budget_used >= CONTROL_MARGIN or not self.gating

    def line(self) -> str:
        if self.budget_used >= CONTROL_MARGIN:
            status = "ok"
        else:
            status = f"{'POWERLESS' if self.gating else 'weak, not gating'}: needs {CONTROL_MARGIN:g}x the limit"
        return f"{'control ' + self.name:>22}: {self.budget_used:.2f} x limit [{status}]"


@dataclass
class ParityReport:
    """The checks of one parity test; `ok` when every check passes and every control has power."""

    title: str
    checks: list[TensorCheck]
    controls: list[ControlCheck] = field(default_factory=list)
    note: str = ""
    first_step_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and all(c.powerful for c in self.controls)

    @property
    def powerless(self) -> list[str]:
        return [c.name for c in self.controls if not c.powerful]

    @property
    def max_budget_used(self) -> float:
        """The largest err / limit of any check (the false-failure margin of a correct run)."""
        return max((c.budget_used for c in self.checks), default=0.0)

    @property
    def worst(self) -> TensorCheck | None:
        """The check that used the largest share of its limit."""
        return max(self.checks, key=lambda c: c.budget_used, default=None)

    def summary(self) -> str:
        status = "passed" if self.ok else ("POWERLESS" if self.powerless else "FAILED")
        head = f"parity {status}: {self.title}, max {self.max_budget_used:.2f} of budget"
        worst = self.worst
        if worst is not None and not self.ok:
            head += f"; worst: {worst.name}, {worst.metric} {worst.err:.3e} against limit {worst.limit:.3e}"
        if self.note:
            head += f" ({self.note})"
        return "\n".join([head] + [c.line() for c in self.checks] + [c.line() for c in self.controls])

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "max_budget_used": self.max_budget_used,
            "checks": {c.name: {"err": c.err, "limit": c.limit, "baseline_err": c.baseline_err,
                                "metric": c.metric} for c in self.checks},
            "controls": {c.name: c.budget_used for c in self.controls},
            "powerless": self.powerless,
        }


def _nonfinite_as_inf(diff: torch.Tensor, tested: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(tested), diff, torch.full_like(diff, float("inf")))


def max_abs_error(tested: torch.Tensor, ref: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    """max|tested - ref| (inf where tested is not finite) and where it occurs."""
    tested, ref = tested.detach().float(), ref.detach().float()
    if tested.shape != ref.shape:
        raise AssertionError(f"shape {tuple(tested.shape)} != reference {tuple(ref.shape)}")
    diff = _nonfinite_as_inf((tested - ref).abs(), tested)
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    return float(diff.max()), worst


def relative_error(tested: torch.Tensor, ref: torch.Tensor) -> float:
    """‖tested - ref‖₂ / ‖ref‖₂ (inf when tested is not finite)."""
    tested, ref = tested.detach().float(), ref.detach().float()
    if tested.shape != ref.shape:
        raise AssertionError(f"shape {tuple(tested.shape)} != reference {tuple(ref.shape)}")
    if not bool(torch.isfinite(tested).all()):
        return float("inf")
    return float((tested - ref).norm() / ref.norm())


def projection_deviation(tested: torch.Tensor, ref: torch.Tensor) -> float:
    """|<tested, ref> / <ref, ref> - 1| in float64 (inf when tested is not finite): how far the scale of
    `tested` along `ref` is from 1. A gradient 2 % too small gives 0.02 whatever its noise; bf16 rounding
    noise is nearly orthogonal to `ref` and leaves it near 0.

    The floors come from measurement (CPU, smoke profile, seeds 0-2, every variant at 196 and 3136):
    - attention level (dq, dk, dv; PROJ_FLOOR 2e-3): bf16 math deviates by at most 3.3e-4 on the "soft"
      input set and by up to 4.6e-2 on "wide", where its bf16 scores are too coarse for a nearly one-hot
      softmax; the correct kernels that compute in fp32 inside (sdpa_math, sdpa_flash on CPU) by at most
      7.7e-4 (sdpa_flash, plain 196 wide), 2.6x below the floor. So on "soft" the limit is at most
      3 x 3.3e-4 + 2e-3 = 3e-3, and a gradient 2 % off uses >= 6.7x of it.
    - model level (each block's dW_q, dW_k, dW_v; MODEL_PROJ_FLOOR 2e-3): correct bf16 runs (native,
      sdpa_math, sdpa_flash, native on nudged inputs) deviate alike, by 1e-5 to 3.5e-3 in the "soft"
      models (mostly the rest of the model's autocast, the same for every kernel) and up to 1.2e-2 in
      softcap's "wide" one; at some seeds all of them are below 3.2e-4 (plain 3136, seed 2), where the floor
      leaves a correct kernel room. The soft limit is then at most 2 x 3.5e-3 + 2e-3 = 9e-3: a 2 % error uses
      >= 2.2x of it.
    """
    tested, ref = tested.detach().double(), ref.detach().double()
    if tested.shape != ref.shape:
        raise AssertionError(f"shape {tuple(tested.shape)} != reference {tuple(ref.shape)}")
    if not bool(torch.isfinite(tested).all()):
        return float("inf")
    return abs(float((tested * ref).sum() / (ref * ref).sum()) - 1.0)


def fp32_floor(ref: torch.Tensor) -> float:
    """Twice the fp32 rounding error at the reference's magnitude."""
    return 2 * float(torch.finfo(torch.float32).eps * ref.detach().float().abs().max())


# --- attention level ----------------------------------------------------------------

def math_attention(q, k, v, *, scale_factor: float = 1.0, softcap: float | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(softcap(q·kᵀ·scale))·v on bhsd tensors with every knob exposed (for controls)."""
    scores = (q @ k.transpose(-2, -1)) * (scale_factor * q.shape[-1] ** -0.5)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def control_attentions(variant: str, seq_len: int, device) -> dict[str, AttnFn]:
    """Wrong bhsd attentions that the variant's reference must be told apart from."""
    mask = neighborhood_mask(seq_len, device) if variant == "neighborhood" else None
    softcap = SOFTCAP if variant == "softcap" else None
    controls = {SCALE_CONTROL: lambda q, k, v: math_attention(
        q, k, v, scale_factor=1.02, softcap=softcap, mask=mask)}
    if variant != "plain":
        controls["plain"] = lambda q, k, v: math_attention(q, k, v)
    if variant == "softcap":
        controls["softcap 20"] = lambda q, k, v: math_attention(q, k, v, softcap=20.0)
    if variant == "neighborhood":
        radius_mask = neighborhood_mask(seq_len, device, radius=NEIGHBORHOOD_RADIUS - 1)
        controls[f"radius {NEIGHBORHOOD_RADIUS - 1}"] = lambda q, k, v: math_attention(q, k, v, mask=radius_mask)
    return controls


def packed(attention: AttnFn, layout: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The block's path around `attention`: packed qkv → split_qkv → attention → merge_heads."""
    def split_attend_merge(qkv_bs3hd: torch.Tensor) -> torch.Tensor:
        return merge_heads(attention(*split_qkv(qkv_bs3hd, layout)), layout)
    return split_attend_merge


def attention_inputs(shape: AttnShape, batch: int, score_std: float, seed: int = 0):
    """Packed bf16 qkv (B, S, 3, H, D) with q and k scaled to scores of std `score_std`, and a
    bf16 output gradient (B, S, H·D)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    qkv = torch.randn(batch, shape.seq_len, 3, shape.heads, shape.head_dim, generator=gen)
    # score = Σ_d q_d k_d / √d has std σ² when q and k entries have std σ.
    qkv[:, :, :2] *= score_std**0.5
    grad_out = torch.randn(batch, shape.seq_len, shape.heads * shape.head_dim, generator=gen)
    return qkv.to(shape.device, torch.bfloat16), grad_out.to(shape.device, torch.bfloat16)


def run_packed(fn, qkv: torch.Tensor, grad_out: torch.Tensor, backward: bool) -> dict[str, torch.Tensor]:
    """Output, and with `backward` the gradient of the packed input as dq, dk, dv."""
    qkv = qkv.detach().clone().requires_grad_(backward)
    out = fn(qkv)
    result = {"out": out.detach().float()}
    if backward:
        out.backward(grad_out.to(out.dtype))
        grad = qkv.grad if qkv.grad is not None else torch.full_like(qkv, float("nan"))
        result.update(zip(("dq", "dk", "dv"), (g.float() for g in grad.unbind(2))))
    return result


@dataclass
class AttentionInputs:
    """One input set of a reference: inputs, fp32 results, limits and the controls' errors,
    keyed by tensor name (out, dq, dk, dv)."""

    qkv: torch.Tensor
    grad_out: torch.Tensor
    ref: dict[str, torch.Tensor]
    baseline_err: dict[str, float]
    limits: dict[str, float]
    control_errs: dict[str, dict[str, float]]  # control → tensor → max abs error
    baseline_proj: dict[str, float] = field(default_factory=dict)  # gradient → bf16 math's projection deviation
    proj_limits: dict[str, float] = field(default_factory=dict)  # gradient → limit of its projection deviation


@dataclass
class AttentionReference:
    """The input sets of one (variant, shape) and their fp32 results, shared by every implementation."""

    variant: str
    inputs: dict[str, AttentionInputs]  # keyed by INPUT_SETS name


def attention_reference(variant: str, shape: AttnShape, batch: int, seed: int = 0) -> AttentionReference:
    """fp32 and bf16-math results of `variant` on each input set, and the controls' errors."""
    mask = neighborhood_mask(shape.seq_len, shape.device) if variant == "neighborhood" else None

    def reference(q, k, v):
        return attention_math(q, k, v, variant, mask)

    inputs = {}
    for set_name, score_std in INPUT_SETS.items():
        qkv, grad_out = attention_inputs(shape, batch, score_std, seed)
        ref = run_packed(packed(reference, "bhsd"), qkv.float(), grad_out, backward=True)
        base = run_packed(packed(reference, "bhsd"), qkv, grad_out, backward=True)
        baseline_err = {name: max_abs_error(base[name], ref[name])[0] for name in ref}
        limits = {name: (FORWARD_FACTOR if name == "out" else GRAD_FACTOR) * baseline_err[name]
                  + fp32_floor(ref[name]) for name in ref}
        control_errs = {}
        for control, fn in control_attentions(variant, shape.seq_len, shape.device).items():
            wrong = run_packed(packed(fn, "bhsd"), qkv.float(), grad_out, backward=True)
            control_errs[control] = {name: max_abs_error(wrong[name], ref[name])[0] for name in ref}
        baseline_proj = {name: projection_deviation(base[name], ref[name]) for name in GRADS}
        proj_limits = {name: PROJ_FACTOR * baseline_proj[name] + PROJ_FLOOR for name in GRADS}
        inputs[set_name] = AttentionInputs(qkv, grad_out, ref, baseline_err, limits, control_errs,
                                           baseline_proj, proj_limits)
    return AttentionReference(variant, inputs)


def check_attention(title: str, attention: AttnFn, layout: str, reference: AttentionReference,
                    compiled: bool = False, backward: bool = True) -> ParityReport:
    """`attention` on the model's path (compiled if `compiled`) against `reference`."""
    fn = packed(attention, layout)
    if compiled:
        fn = torch.compile(fn)
    checks = []
    control_budget: dict[str, float] = {}
    grad_scale_budget: dict[str, float] = {}  # gradient → its best input set's budget for a 2 % scale error
    for set_name, inputs in reference.inputs.items():
        tested = run_packed(fn, inputs.qkv, inputs.grad_out, backward)
        for name, value in tested.items():
            err, worst = max_abs_error(value, inputs.ref[name])
            checks.append(TensorCheck(f"{name} ({set_name})", err, inputs.limits[name], inputs.baseline_err[name],
                                      bool(torch.isfinite(value).all()), where=f" at {list(worst)}"))
        if backward:
            for name in GRADS:
                value = tested[name]
                checks.append(TensorCheck(f"{name} ({set_name}) scale", projection_deviation(value, inputs.ref[name]),
                                          inputs.proj_limits[name], inputs.baseline_proj[name],
                                          bool(torch.isfinite(value).all()), metric="proj dev"))
            for name in GRADS:
                grad_scale_budget[name] = max(grad_scale_budget.get(name, 0.0), 0.02 / inputs.proj_limits[name])
        for control, errs in inputs.control_errs.items():
            budget = max(errs[name] / inputs.limits[name] for name in tested)
            control_budget[control] = max(control_budget.get(control, 0.0), budget)
    if grad_scale_budget:
        # A gradient 2 % too small deviates by exactly 0.02: some input set must see that in each gradient.
        control_budget[GRAD_SCALE_CONTROL] = min(grad_scale_budget.values())
    # Forward-only checks (flex on CPU) see no gradients; there the 2 % scale control is
    # reported but does not gate (the output alone showed it at 1.4x the limit, softcap 3136).
    controls = [ControlCheck(name, budget, gating=backward or name != SCALE_CONTROL)
                for name, budget in control_budget.items()]
    note = "" if backward else "forward only: no backward on this device"
    return ParityReport(title, checks, controls, note)


# --- model level --------------------------------------------------------------------

@dataclass
class StepOutputs:
    """What the first training step of a fresh model produced."""

    logits: torch.Tensor
    grads: dict[str, torch.Tensor]
    seconds: float


def first_step(model: torch.nn.Module, images, labels, device: str, autocast: bool) -> StepOutputs:
    """Run one training step (the study's TrainStep) and keep its logits and gradients."""
    step = TrainStep(model, images, labels, device, autocast=autocast)
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    grads = {name: p.grad.detach().float().clone() for name, p in model.named_parameters()
             if p.grad is not None}
    return StepOutputs(step.last_logits.float().clone(), grads, seconds)


def model_quantities(out: StepOutputs) -> dict[str, torch.Tensor]:
    """The compared tensors: logits, each block's qkv weight gradient (it flows only through
    attention) and all gradients together."""
    quantities = {"logits": out.logits}
    for name, grad in out.grads.items():
        if name.endswith("qkv.weight"):
            block = name.removesuffix(".qkv.weight")
            dim = grad.shape[1]
            quantities[f"{block} dW_qk"] = grad[: 2 * dim]
            quantities[f"{block} dW_v"] = grad[2 * dim:]
    quantities["all grads"] = torch.cat([g.flatten() for _, g in sorted(out.grads.items())])
    return quantities


def model_projections(out: StepOutputs) -> dict[str, torch.Tensor]:
    """The gradients whose scale the model check tests (`projection_deviation`): each block's q, k and v
    weight gradient apart, so that one wrong gradient of the attention shows at its full size."""
    quantities = {}
    for name, grad in out.grads.items():
        if name.endswith("qkv.weight"):
            block = name.removesuffix(".qkv.weight")
            for part, weight in zip(("dW_q", "dW_k", "dW_v"), grad.chunk(3)):
                quantities[f"{block} {part}"] = weight
    return quantities


def make_attention_matter(model: torch.nn.Module, images: torch.Tensor, score_std: float,
                          passes: int = 3) -> None:
    """Rescale each block's q, k and proj weights (in place) so its attention scores have std
    `score_std` and its attention branch is as large as the residual stream it adds to.

    timm's init gives nearly uniform attention (score std ~0.05) whose branch is small
    next to the residual, so a wrong kernel hardly changes the model's outputs.
    """
    stats = {}

    def record(block):
        def hook(module, args, output):
            x_in = args[0]
            B, S, C = x_in.shape
            qkv = block.qkv(block.norm1(x_in)).reshape(B, S, 3, block.heads, C // block.heads)
            q, k, v = split_qkv(qkv, "bhsd")
            scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            branch = block.proj(merge_heads(block.attention(q, k, v), "bhsd"))
            stats[block] = (float(scores.std()), float(branch.std()), float(x_in.std()))
        return hook

    with torch.no_grad():
        for _ in range(passes):
            handles = [block.register_forward_hook(record(block)) for block in model.blocks]
            model(images[:1])
            for h in handles:
                h.remove()
            for block in model.blocks:
                score, branch, residual = stats[block]
                dim = block.proj.in_features
                block.qkv.weight[: 2 * dim] *= (score_std / score) ** 0.5
                block.proj.weight *= residual / branch


@dataclass
class ModelReference:
    """One parity model of a (variant, config) and its fp32 and correct-bf16 results."""

    name: str
    cfg: VitConfig
    weights: dict[str, torch.Tensor]
    images: torch.Tensor
    labels: torch.Tensor
    ref: dict[str, torch.Tensor]
    baseline_errs: dict[str, dict[str, float]]  # correct bf16 run → quantity → relative error
    proj: dict[str, torch.Tensor] = field(default_factory=dict)  # fp32 `model_projections`
    baseline_projs: dict[str, dict[str, float]] = field(default_factory=dict)  # run → gradient → proj dev

    def baseline(self, quantity: str) -> float:
        return max(errs[quantity] for errs in self.baseline_errs.values())

    def limit(self, quantity: str) -> float:
        return MODEL_FACTOR * self.baseline(quantity) + MODEL_FLOOR

    def proj_baseline(self, gradient: str) -> float:
        return max(devs[gradient] for devs in self.baseline_projs.values())

    def proj_limit(self, gradient: str) -> float:
        return MODEL_PROJ_FACTOR * self.proj_baseline(gradient) + MODEL_PROJ_FLOOR


def parity_model(cfg: VitConfig, attention: AttnFn, layout: str, device: str, weights: dict,
                 compile_scope: str | None = None) -> torch.nn.Module:
    """A fresh model of the cell carrying the parity weights, compiled with `compile_scope`
    (model.COMPILE_SCOPES) unless it is None."""
    model = build_model(cfg, attention, layout, device)
    model.load_state_dict(weights)
    if compile_scope:
        compile_model(model, compile_scope)
    return model


def model_sets(variant: str) -> dict[str, float]:
    """The parity models of `variant` by name and score std: "wide" only where the softcap acts."""
    return {name: std for name, std in MODEL_SETS.items() if name != "wide" or variant == "softcap"}


def model_references(cfg: VitConfig, variant: str, device: str,
                     correct_runs: dict[str, tuple[AttnFn, str]], seed: int = 0) -> list[ModelReference]:
    """For each of `model_sets(variant)`: the parity weights, the fp32 native result, and the
    errors of the correct bf16 runs.

    `correct_runs` maps a name to (attention, layout) of a correct implementation, run in
    bf16 eager; native bf16 on images nudged within bf16's rounding is always added.
    """
    from attn_impls import REGISTRY  # the native entry
    shape = AttnShape(cfg.heads, cfg.head_dim, cfg.seq_len, device)
    native = REGISTRY["native"].factory(variant, shape)
    images, labels = synthetic_batch(cfg, device, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    # Relative changes up to 2^-8 move each input by at most one bf16 rounding step.
    nudged = images * (1 + 2.0**-8 * (2 * torch.rand(images.shape, generator=gen) - 1)).to(device)
    runs = {name: (attention, layout, images) for name, (attention, layout) in correct_runs.items()}
    runs["native, inputs nudged"] = (native, "bhsd", nudged)
    references = []
    for set_name, score_std in model_sets(variant).items():
        model = build_model(cfg, native, "bhsd", device, seed=seed)
        make_attention_matter(model, images, score_std)
        weights = copy.deepcopy(model.state_dict())
        del model
        ref_out = first_step(parity_model(cfg, native, "bhsd", device, weights), images, labels, device,
                             autocast=False)
        ref, proj = model_quantities(ref_out), model_projections(ref_out)
        baseline_errs, baseline_projs = {}, {}
        for name, (attention, layout, inputs) in runs.items():
            out = first_step(parity_model(cfg, attention, layout, device, weights), inputs, labels, device,
                             autocast=True)
            baseline_errs[name] = {q: relative_error(t, ref[q]) for q, t in model_quantities(out).items()}
            baseline_projs[name] = {g: projection_deviation(t, proj[g]) for g, t in model_projections(out).items()}
        references.append(ModelReference(set_name, cfg, weights, images, labels, ref, baseline_errs, proj,
                                         baseline_projs))
    return references


def check_model(title: str, attention: AttnFn, layout: str, references: list[ModelReference], device: str,
                compile_scope: str | None = None) -> ParityReport:
    """First bf16 training step of a fresh parity model of the cell per reference (compiled
    with `compile_scope` unless it is None).

    Sets `first_step_s` to the first model's first step (compilation included in compiled cells).
    """
    checks, first_step_s = [], None
    for reference in references:
        model = parity_model(reference.cfg, attention, layout, device, reference.weights, compile_scope)
        out = first_step(model, reference.images, reference.labels, device, autocast=True)
        del model
        if first_step_s is None:
            first_step_s = out.seconds
        for name, value in model_quantities(out).items():
            checks.append(TensorCheck(f"{name} ({reference.name})", relative_error(value, reference.ref[name]),
                                      reference.limit(name), reference.baseline(name),
                                      bool(torch.isfinite(value).all()), metric="rel L2"))
        for name, value in model_projections(out).items() if reference.name in PROJ_MODEL_SETS else ():
            checks.append(TensorCheck(f"{name} ({reference.name}) scale",
                                      projection_deviation(value, reference.proj[name]), reference.proj_limit(name),
                                      reference.proj_baseline(name), bool(torch.isfinite(value).all()),
                                      metric="proj dev"))
    note = "limits from correct bf16 runs: " + ", ".join(references[0].baseline_errs)
    return ParityReport(title, checks, note=note, first_step_s=first_step_s or 0.0)


def check_model_forward(title: str, attention: AttnFn, layout: str, references: list[ModelReference],
                        device: str, compile_scope: str | None = None) -> ParityReport:
    """The model check without a backward (for implementations that have none here): the
    logits of one inference forward (`InferStep`) of a fresh parity model per reference
    against the fp32 logits, under `check_model`'s limit for logits."""
    checks = []
    for reference in references:
        model = parity_model(reference.cfg, attention, layout, device, reference.weights, compile_scope)
        logits = InferStep(model, reference.images, device)().float()
        del model
        checks.append(TensorCheck(f"logits ({reference.name})", relative_error(logits, reference.ref["logits"]),
                                  reference.limit("logits"), reference.baseline("logits"),
                                  bool(torch.isfinite(logits).all()), metric="rel L2"))
    note = ("forward only: logits of the inference forward; limits from correct bf16 runs: "
            + ", ".join(references[0].baseline_errs))
    return ParityReport(title, checks, note=note)
