"""The attention call alone (test_attention): FLOPs, the timed call, round sizing, bare timing
and the GPU's bf16 dense matmul peak.

FLOPs count the two matmuls of attention, q·kᵀ and p·v: 4·B·H·S²·D for the forward, and
3.5× that for forward + backward (FlashAttention's convention: the backward's five matmuls
are 2.5× the forward's two). Every variant is counted dense; for neighborhood,
`neighborhood_tile_density` gives the share of that work a block-sparse kernel cannot skip
(`tflops_effective`).
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from attn_impls import AttnFn, AttnShape, neighborhood_mask

from .model import synchronize

DIRECTIONS = ("fwd", "fwd_bwd")
FWD_BWD_FLOP_FACTOR = 3.5
TILE = 128  # tile side of tflops_effective (FlexAttention's default BLOCK_SIZE)
# A timed round lasts at least this long, so that launch overhead and the one synchronize
# per round are measured the way a training step sees them (back to back, no sync between).
# On CPU nothing is asynchronous; a few ms only steadies the timer.
ROUND_TARGET_S = {"cuda": 0.020, "cpu": 0.002}
MAX_CALLS_PER_ROUND = 1024
MATMUL_PEAK_SIZE = 8192
DO_BENCH = "triton.testing.do_bench"
CUDA_EVENTS = "cuda events"


def attention_flops(batch: int, heads: int, seq_len: int, head_dim: int, direction: str) -> float:
    """Dense attention FLOPs of one call: 4·B·H·S²·D forward, 3.5× that for fwd_bwd."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    forward = 4.0 * batch * heads * seq_len**2 * head_dim
    return forward * (FWD_BWD_FLOP_FACTOR if direction == "fwd_bwd" else 1.0)


def neighborhood_tile_density(seq_len: int, tile: int = TILE) -> float:
    """Share of the S×S scores that lie in `tile`×`tile` (query block, key block) tiles holding
    at least one allowed entry of the neighborhood mask: the work left to a kernel that skips
    empty tiles. Edge tiles (S not a multiple of `tile`) count with their real size, so this
    is the fraction of non-empty tiles whenever S is a multiple of `tile`."""
    mask = neighborhood_mask(seq_len, "cpu")
    blocks = math.ceil(seq_len / tile)
    pad = blocks * tile - seq_len
    nonempty = F.pad(mask, (0, pad, 0, pad)).view(blocks, tile, blocks, tile).any(dim=3).any(dim=1)
    sizes = torch.tensor([min(tile, seq_len - i * tile) for i in range(blocks)], dtype=torch.float64)
    covered = (nonempty * sizes[:, None] * sizes[None, :]).sum()
    return float(covered) / seq_len**2


@dataclass
class AttentionCall:
    """One call of an attention callable on fixed bf16 inputs, as test_attention times it: the
    forward, and with `grad_out` its backward too. It never synchronizes."""

    forward: AttnFn
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    grad_out: torch.Tensor | None = None
    last_out: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        if self.grad_out is None:
            self.last_out = self.forward(*self.inputs)
            return self.last_out
        for t in self.inputs:
            t.grad = None  # no gradient accumulation kernel in the timed call
        out = self.forward(*self.inputs)
        # Some adapters return (B, S, H·D) instead of their layout's 4-d shape.
        out.backward(self.grad_out.view(out.shape))
        self.last_out = out.detach()
        return self.last_out


def attention_call(attention: AttnFn, layout: str, batch: int, shape: AttnShape, direction: str,
                   compiled: bool = False, seed: int = 0) -> AttentionCall:
    """The timed call of one test_attention cell.

    q, k, v: separate contiguous tensors in `layout` ((B, H, S, D) or (B, S, H, D)), standard
    normal, bf16 on `shape.device`, from `seed`; for fwd_bwd they require
    grad and a fixed standard-normal output gradient is used. `compiled`: the callable is
    wrapped in `torch.compile` (for fwd_bwd, its backward is then the compiled backward).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    dims = ((batch, shape.heads, shape.seq_len, shape.head_dim) if layout == "bhsd"
            else (batch, shape.seq_len, shape.heads, shape.head_dim))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v, grad_out = (torch.randn(dims, generator=gen).to(shape.device, torch.bfloat16) for _ in range(4))
    backward = direction == "fwd_bwd"
    for t in (q, k, v):
        t.requires_grad_(backward)
    forward = attention
    if compiled:
        # One eager call first: library-side caches keyed by the inputs (Transformer Engine's
        # backend selection) are then filled outside the traced code, which Dynamo failed to
        # trace on the H200. The wrapper keeps an adapter's torch.compiler.disable in force:
        # torch.compile(fn) unwraps a disabled fn and traces it anyway.
        attention(q, k, v)

        def compiled_attention(q, k, v):
            return attention(q, k, v)

        forward = torch.compile(compiled_attention)
    return AttentionCall(forward, (q, k, v), grad_out if backward else None)


class SyncedRounds:
    """Calls `fn` and synchronizes `device` after every `calls_per_round`-th call.

    Passed to `benchmark.pedantic(..., iterations=calls_per_round)` right after it is made,
    every warm-up and timed round then ends with exactly one synchronize.
    """

    def __init__(self, fn: Callable, device: str, calls_per_round: int = 1):
        self.fn, self.device, self.calls_per_round = fn, device, calls_per_round
        self.calls = 0

    def __call__(self):
        result = self.fn()
        self.calls += 1
        if self.calls % self.calls_per_round == 0:
            synchronize(self.device)
        return result


def _seconds_per_call(fn: Callable, device: str, calls: int) -> tuple[float, float]:
    """(host, wall) seconds per call of `calls` back-to-back calls of `fn` ended by one synchronize:
    host until the last call returns, wall until the device has finished."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host_s = time.perf_counter() - start
    synchronize(device)
    return host_s / calls, (time.perf_counter() - start) / calls


def seconds_per_call(fn: Callable, device: str, calls: int = 3) -> float:
    """Wall seconds per call of `calls` back-to-back calls of `fn` ended by one synchronize."""
    return _seconds_per_call(fn, device, calls)[1]


def host_ms_per_call(fn: Callable, device: str, calls: int) -> float:
    """Host ms per call of `calls` back-to-back calls of `fn`: the time until the last call
    returns, before the synchronize that waits for the device. Where it approaches the round's
    time per call, the round is bound by the host (Python, guards, launches), which a CUDA-event
    timing such as do_bench's leaves out. A full launch queue also holds the host back, so it
    can reach the round's time for a device-bound call that launches very many kernels."""
    return _seconds_per_call(fn, device, calls)[0] * 1e3


def device_ms_per_call(fn: Callable, device: str, calls: int) -> float:
    """Device-busy ms per call of one round of `calls` back-to-back calls of `fn` on a CUDA device,
    from the profiler: the union of the time ranges of every kernel, copy and memset that the round
    ran, overlaps counted once. The gaps in which the device waited for the host are left out, so
    for a call bound by the host (see `host_ms_per_call`) this is still the kernels' own time."""
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        synchronize(device)
    return busy_ms(device_intervals_us(prof.events())) / calls


def device_intervals_us(events) -> list[tuple[float, float]]:
    """(start, end) µs of the profiler events that ran on a CUDA device."""
    return [(e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA]


def busy_ms(intervals_us) -> float:
    """Milliseconds covered by the union of (start, end) µs intervals."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals_us):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total / 1e3


def calls_per_round(call_s: float, target_s: float, limit: int = MAX_CALLS_PER_ROUND) -> int:
    """Calls per timed round: the smallest power of two with which a round of calls of `call_s`
    lasts at least `target_s` (at most `limit`). Powers of two keep the count of a cell the
    same across reruns unless its time moves across a factor of two; the gate refuses to
    compare runs whose rounds differ (runs.CELL_SETTINGS: pytest-benchmark's `iterations`)."""
    if call_s <= 0:
        return limit
    calls = max(1, math.ceil(target_s / call_s))
    return min(limit, 1 << (calls - 1).bit_length())


def size_rounds(fn: Callable, device: str) -> int:
    """Calls per timed round of `fn` on `device` (`calls_per_round` to ROUND_TARGET_S): one call
    estimates, and where that gives several calls, a round of that many refines the estimate."""
    target_s = round_target_s(device)
    calls = calls_per_round(seconds_per_call(fn, device, calls=1), target_s)
    if calls > 1:
        calls = calls_per_round(seconds_per_call(fn, device, calls=calls), target_s)
    return calls


def round_target_s(device: str) -> float:
    """ROUND_TARGET_S of `device`'s type."""
    return ROUND_TARGET_S["cuda" if device.startswith("cuda") else "cpu"]


def bare_median_ms(fn: Callable, device: str) -> tuple[float, str]:
    """Median ms of one call of `fn` timed on its own on a CUDA device, and the instrument:
    `triton.testing.do_bench` (CUDA events around each call, L2 flushed before each) if
    triton imports, else `cuda_event_median_ms` (the same without the flush)."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return cuda_event_median_ms(fn, device), CUDA_EVENTS
    return float(do_bench(fn, return_mode="median")), DO_BENCH


def cuda_event_median_ms(fn: Callable, device: str, warmup_s: float = 0.025, measure_s: float = 0.1) -> float:
    """Median ms of `fn` with a CUDA event pair around each call, after warming up for
    about `warmup_s`, over about `measure_s` of calls (do_bench's defaults)."""
    estimate_s = seconds_per_call(fn, device, calls=5)
    for _ in range(calls_per_round(estimate_s, warmup_s)):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(max(10, calls_per_round(estimate_s, measure_s)))]
    for start, end in events:
        start.record()
        fn()
        end.record()
    synchronize(device)
    return statistics.median(start.elapsed_time(end) for start, end in events)


def matmul_peak_tflops(device: str, size: int = MATMUL_PEAK_SIZE) -> tuple[float, str]:
    """Measured bf16 dense matmul TFLOP/s of the GPU (one size³ matmul, `bare_median_ms`),
    and the instrument."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device, torch.bfloat16) for _ in range(2))
    ms, instrument = bare_median_ms(lambda: a @ b, device)
    return 2.0 * size**3 / (ms * 1e-3) / 1e12, instrument
