"""Numeric parity against an fp32 reference, with tolerances from a same-dtype baseline.

Rule (as in flash-attention's tests): a tested tensor passes when
    max|tested - ref| <= factor * max|baseline - ref| + floor
where ref is computed in fp32, baseline is plain PyTorch math on the same bf16
inputs, factor is 2 for forward outputs and 3 for gradients and model-level
values, and floor is twice the fp32 rounding error at the reference's magnitude.
NaN or inf in a tested tensor always fails.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from attn_impls import AttnImpl, AttnShape
from attn_impls.native import attention_math
from attn_impls.registry import neighborhood_mask

FORWARD_FACTOR = 2.0
GRAD_FACTOR = 3.0
MODEL_FACTOR = 3.0


@dataclass(frozen=True)
class TensorCheck:
    """The errors of one tested tensor against its reference."""

    name: str
    max_err: float
    mean_err: float
    baseline_err: float
    limit: float
    worst_index: tuple[int, ...]
    finite: bool

    @property
    def ok(self) -> bool:
        return self.finite and self.max_err <= self.limit

    def line(self) -> str:
        status = "ok" if self.ok else ("NON-FINITE" if not self.finite else "FAIL")
        return (f"{self.name:>14}: max {self.max_err:.3e} (limit {self.limit:.3e} = "
                f"factor x baseline {self.baseline_err:.3e} + floor) mean {self.mean_err:.3e} "
                f"worst at {list(self.worst_index)} [{status}]")


def check_tensor(name: str, tested: torch.Tensor, baseline: torch.Tensor, ref: torch.Tensor,
                 factor: float) -> TensorCheck:
    """Compare `tested` and the same-dtype `baseline` with the fp32 `ref`."""
    ref = ref.detach().float()
    tested = tested.detach().float()
    if tested.shape != ref.shape:
        raise AssertionError(f"{name}: shape {tuple(tested.shape)} != reference {tuple(ref.shape)}")
    finite = bool(torch.isfinite(tested).all())
    diff = (tested - ref).abs()
    if not finite:
        diff = torch.where(torch.isfinite(tested), diff, torch.full_like(diff, float("inf")))
    worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
    baseline_err = float((baseline.detach().float() - ref).abs().max())
    floor = 2 * float((ref + 0.3 - 0.3 - ref).abs().max())
    return TensorCheck(name, float(diff.max()), float(diff.mean()), baseline_err,
                       factor * baseline_err + floor, worst, finite)


@dataclass
class ParityReport:
    """The checks of one parity test; `ok` when every check passes."""

    title: str
    checks: list[TensorCheck]
    note: str = ""
    first_step_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def summary(self) -> str:
        head = f"parity {'passed' if self.ok else 'FAILED'}: {self.title}"
        if self.note:
            head += f" ({self.note})"
        return "\n".join([head] + [c.line() for c in self.checks])

    def as_dict(self) -> dict:
        return {c.name: {"max_err": c.max_err, "limit": c.limit, "baseline_err": c.baseline_err}
                for c in self.checks}


def to_layout(t_bhsd: torch.Tensor, layout: str) -> torch.Tensor:
    return t_bhsd if layout == "bhsd" else t_bhsd.transpose(1, 2)


def from_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    return t if layout == "bhsd" else t.transpose(1, 2)


def _forward_backward(fn, q, k, v, grad_out, backward: bool):
    q, k, v = (t.detach().clone().requires_grad_(backward) for t in (q, k, v))
    out = fn(q, k, v)
    if not backward:
        return out.detach(), ()
    out.backward(grad_out.to(out.dtype))
    return out.detach(), (q.grad, k.grad, v.grad)


def attention_parity(impl: AttnImpl, variant: str, shape: AttnShape, batch: int,
                     backward: bool = True, seed: int = 0) -> ParityReport:
    """Output and q/k/v gradients of `impl` on bf16 inputs vs the fp32 reference."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    size = (batch, shape.heads, shape.seq_len, shape.head_dim)
    q, k, v, grad_out = (torch.randn(size, generator=gen).to(shape.device, torch.bfloat16)
                         for _ in range(4))
    mask = neighborhood_mask(shape.seq_len, shape.device) if variant == "neighborhood" else None

    def reference(q_bhsd, k_bhsd, v_bhsd):
        return attention_math(q_bhsd, k_bhsd, v_bhsd, variant, mask)

    ref_out, ref_grads = _forward_backward(reference, q.float(), k.float(), v.float(), grad_out, backward)
    base_out, base_grads = _forward_backward(reference, q, k, v, grad_out, backward)

    fn = impl.factory(variant, shape)

    def tested(q_bhsd, k_bhsd, v_bhsd):
        out = fn(to_layout(q_bhsd, impl.layout), to_layout(k_bhsd, impl.layout),
                 to_layout(v_bhsd, impl.layout))
        return from_layout(out, impl.layout)

    out, grads = _forward_backward(tested, q, k, v, grad_out, backward)
    checks = [check_tensor("out", out, base_out, ref_out, FORWARD_FACTOR)]
    for name, g, bg, rg in zip(("dq", "dk", "dv"), grads, base_grads, ref_grads):
        if g is None:  # the implementation's output does not depend on this input
            name, g = f"{name} (none)", torch.full_like(rg, float("nan"))
        checks.append(check_tensor(name, g, bg, rg, GRAD_FACTOR))
    note = "" if backward else "forward only: no backward on this device"
    title = f"{impl.id}/{variant} B={batch} H={shape.heads} S={shape.seq_len} D={shape.head_dim}"
    return ParityReport(title, checks, note)


@dataclass
class TrainingTrace:
    """What a few training steps produced: per-step losses, the logits of the first and
    last step, and the wall time of the first step (compilation, autotuning, JIT)."""

    losses: torch.Tensor
    first_logits: torch.Tensor
    last_logits: torch.Tensor
    first_step_s: float


def trace_steps(step, steps: int) -> TrainingTrace:
    """Run `steps` training steps of a fresh model.TrainStep and keep its outputs."""
    losses, first, first_step_s = [], None, 0.0
    for i in range(steps):
        start = time.perf_counter()
        step()
        if i == 0:
            first_step_s = time.perf_counter() - start
            first = step.last_logits.float().clone()
        losses.append(step.last_loss.float())
    return TrainingTrace(torch.stack(losses).cpu(), first.cpu(), step.last_logits.float().cpu(),
                         first_step_s)


def model_parity(title: str, tested: TrainingTrace, baseline: TrainingTrace,
                 reference: TrainingTrace) -> ParityReport:
    """Compare a cell's training trace with native bf16 (baseline) and fp32 (reference) traces."""
    checks = [check_tensor(name, getattr(tested, attr), getattr(baseline, attr),
                           getattr(reference, attr), MODEL_FACTOR)
              for name, attr in (("logits step 0", "first_logits"), ("logits last", "last_logits"),
                                 ("loss", "losses"))]
    losses = ", ".join(f"{x:.5f}" for x in tested.losses.tolist())
    ref = ", ".join(f"{x:.5f}" for x in reference.losses.tolist())
    return ParityReport(title, checks, note=f"losses [{losses}] vs fp32 native [{ref}]",
                        first_step_s=tested.first_step_s)
