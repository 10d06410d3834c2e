"""The attention-kernel and inference cells' parts on CPU: FLOPs, tile density, the timed call,
round sizing, the GPU paths' arithmetic with stand-ins, and one cell of each run in process."""
import math
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from attn_bench import kernel_bench
from attn_bench.harness import Suite
from attn_bench.kernel_bench import AttentionCall, SyncedRounds, attention_call, attention_flops
from attn_bench.model import train_step_flops
from attn_impls import AttnShape, neighborhood_mask
from attn_impls.native import attention_math

pytestmark = pytest.mark.suite
ROOT = Path(__file__).resolve().parents[1]


def test_attention_flops_follow_the_formulas():
    forward = 4 * 128 * 16 * 196**2 * 64  # 4·B·H·S²·D
    assert attention_flops(128, 16, 196, 64, "fwd") == forward
    assert attention_flops(128, 16, 196, 64, "fwd_bwd") == 3.5 * forward
    assert attention_flops(8, 12, 3136, 64, "fwd") == 4 * 8 * 12 * 3136**2 * 64
    with pytest.raises(ValueError, match="valid: fwd, fwd_bwd"):
        attention_flops(1, 1, 196, 64, "bwd")


def _density_by_loops(seq_len, tile):
    """The definition, tile by tile: entries of the tiles holding an allowed entry / S²."""
    mask = neighborhood_mask(seq_len, "cpu")
    covered = 0
    for q0 in range(0, seq_len, tile):
        for k0 in range(0, seq_len, tile):
            block = mask[q0:q0 + tile, k0:k0 + tile]
            covered += block.numel() if bool(block.any()) else 0
    return covered / seq_len**2


def test_neighborhood_tile_density():
    # 16 x 16 grid, 64-token tiles = 4 grid rows; a query tile sees rows within ±4:
    # tiles 0 and 3 reach 2 key tiles, tiles 1 and 2 reach 3: 10 of 16 tiles.
    assert kernel_bench.neighborhood_tile_density(256, tile=64) == 10 / 16
    assert kernel_bench.neighborhood_tile_density(196) == 1.0  # 2 x 2 tiles of 128, none empty
    density = kernel_bench.neighborhood_tile_density(3136)
    assert density == pytest.approx(_density_by_loops(3136, 128), rel=1e-12)
    assert 0.15 < density < 0.3  # dense FLOPs overstate the work about 4-5x at 3136
    assert kernel_bench.neighborhood_tile_density(196, tile=32) == pytest.approx(_density_by_loops(196, 32))


@pytest.mark.parametrize("layout", ["bhsd", "bshd"])
def test_attention_call_inputs_and_directions(layout):
    shape = AttnShape(heads=2, head_dim=16, seq_len=196, device="cpu")

    def attention(q, k, v):  # bhsd math on either layout
        if layout == "bshd":
            return attention_math(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), "plain").transpose(1, 2)
        return attention_math(q, k, v, "plain")

    fwd = attention_call(attention, layout, 3, shape, "fwd")
    expected_dims = (3, 2, 196, 16) if layout == "bhsd" else (3, 196, 2, 16)
    assert [tuple(t.shape) for t in fwd.inputs] == [expected_dims] * 3
    assert all(t.dtype == torch.bfloat16 and t.is_contiguous() and not t.requires_grad for t in fwd.inputs)
    assert fwd.grad_out is None and tuple(fwd().shape) == expected_dims

    both = attention_call(attention, layout, 3, shape, "fwd_bwd")
    assert all(t.requires_grad for t in both.inputs) and both.grad_out.shape == expected_dims
    both()
    first = [t.grad.clone() for t in both.inputs]
    both()
    assert all(torch.equal(a, t.grad) for a, t in zip(first, both.inputs))  # no accumulation
    assert torch.equal(fwd.inputs[0], both.inputs[0].detach())  # same seed, same inputs
    with pytest.raises(ValueError, match="valid: fwd, fwd_bwd"):
        attention_call(attention, layout, 3, shape, "backward")


def test_compiled_attention_call_keeps_an_adapters_compiler_disable():
    """xFormers' adapter runs outside graphs (torch.compiler.disable); torch.compile(fn) of a
    disabled fn traces it anyway, which failed on the H200. The compiled call must not, and it
    calls the adapter once eagerly first (Transformer Engine fills its backend cache there)."""
    from torch._dynamo.testing import CompileCounter
    shape = AttnShape(heads=2, head_dim=16, seq_len=64, device="cpu")
    eager_calls = []

    @torch.compiler.disable
    def outside_graph(q, k, v):
        eager_calls.append(torch.compiler.is_compiling())
        return attention_math(q, k, v, "plain")

    counter = CompileCounter()
    original = torch.compile
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "compile", lambda fn: original(fn, backend=counter))
        call = attention_call(outside_graph, "bhsd", 2, shape, "fwd", compiled=True)
    assert eager_calls == [False]  # the priming call, before anything is compiled
    call()
    assert counter.op_count == 0 and eager_calls == [False, False]


def test_attention_call_takes_an_output_of_merged_heads():
    """Some adapters (Transformer Engine) return (B, S, H·D); the gradient is viewed to match."""
    q, k, v = (torch.randn(2, 8, 3, 4, requires_grad=True) for _ in range(3))
    call = AttentionCall(lambda q, k, v: (q * k + v).reshape(2, 8, 12), (q, k, v), torch.randn(2, 8, 3, 4))
    assert call().shape == (2, 8, 12) and q.grad.shape == q.shape


def test_synced_rounds_synchronize_once_per_round(monkeypatch):
    syncs = []
    monkeypatch.setattr(kernel_bench, "synchronize", lambda device: syncs.append(calls[0]))
    calls = [0]

    def fn():
        calls[0] += 1
        return calls[0]

    rounds = SyncedRounds(fn, "cuda", calls_per_round=3)
    assert [rounds() for _ in range(7)] == list(range(1, 8))
    assert syncs == [3, 6]


def test_host_ms_per_call_is_the_time_until_the_last_call_returns():
    calls = []

    def call():
        time.sleep(0.002)
        calls.append(1)

    host_ms = kernel_bench.host_ms_per_call(call, "cpu", calls=5)
    assert len(calls) == 5
    assert 2.0 <= host_ms < 20.0


def test_busy_ms_counts_overlapping_device_time_once():
    assert kernel_bench.busy_ms([]) == 0.0
    assert kernel_bench.busy_ms([(0, 1000), (3000, 3500)]) == 1.5  # disjoint: the gap is not busy
    assert kernel_bench.busy_ms([(0, 1000), (500, 2000), (100, 200)]) == 2.0  # overlapping and nested
    assert kernel_bench.busy_ms([(3000, 3500), (0, 1000), (1000, 1500)]) == 2.0  # unsorted, touching


def test_device_intervals_are_the_cuda_events_of_a_torch_profile():
    """Built from torch's own FunctionEvent, so the attribute names are the ones a real profile has."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent
    events = [FunctionEvent(id=1, name="aten::mm", thread=0, start_us=0, end_us=50, device_type=DeviceType.CPU),
              FunctionEvent(id=2, name="flash_fwd_kernel", thread=0, start_us=10, end_us=40,
                            device_type=DeviceType.CUDA),
              FunctionEvent(id=3, name="Memset", thread=0, start_us=45, end_us=47, device_type=DeviceType.CUDA)]
    assert kernel_bench.device_intervals_us(events) == [(10, 40), (45, 47)]
    assert kernel_bench.busy_ms(kernel_bench.device_intervals_us(events)) == 0.032


def test_device_ms_per_call_profiles_one_round_of_calls():
    calls = []
    # On CPU nothing runs on a device: the round still makes every call and busy time is zero.
    assert kernel_bench.device_ms_per_call(lambda: calls.append(1), "cpu", calls=4) == 0.0
    assert len(calls) == 4


def test_calls_per_round():
    assert kernel_bench.calls_per_round(0.001, 0.020) == 32  # 20 calls reach the target: next power of two
    assert kernel_bench.calls_per_round(0.00125, 0.020) == 16
    assert kernel_bench.calls_per_round(0.0003, 0.020) == 128
    assert kernel_bench.calls_per_round(0.5, 0.020) == 1
    assert kernel_bench.calls_per_round(1e-9, 0.020) == kernel_bench.MAX_CALLS_PER_ROUND
    assert kernel_bench.calls_per_round(0.0, 0.020) == kernel_bench.MAX_CALLS_PER_ROUND
    assert kernel_bench.round_target_s("cuda:0") == 0.020 and kernel_bench.round_target_s("cpu") < 0.020


def test_bare_timing_uses_do_bench_or_says_it_did_not(monkeypatch):
    """The instrument choice and the matmul peak's arithmetic (the timing itself needs CUDA)."""
    triton_testing = SimpleNamespace(do_bench=lambda fn, return_mode: (fn(), 2.5)[1])
    monkeypatch.setitem(sys.modules, "triton.testing", triton_testing)
    assert kernel_bench.bare_median_ms(lambda: None, "cuda") == (2.5, "triton.testing.do_bench")
    monkeypatch.setitem(sys.modules, "triton.testing", None)  # import fails
    monkeypatch.setattr(kernel_bench, "cuda_event_median_ms", lambda fn, device: 3.0)
    assert kernel_bench.bare_median_ms(lambda: None, "cuda") == (3.0, "cuda events")

    def two_ms(fn, device):
        assert fn().shape == (64, 64)
        return 2.0, "stand-in"

    monkeypatch.setattr(kernel_bench, "bare_median_ms", two_ms)
    tflops, instrument = kernel_bench.matmul_peak_tflops("cpu", size=64)
    assert tflops == pytest.approx(2 * 64**3 / 2e-3 / 1e12) and instrument == "stand-in"


class FakeBenchmark:
    """What the harness uses of pytest-benchmark's fixture, timing with perf_counter."""

    disabled = False

    def __init__(self):
        self.extra_info, self.group, self.calls = {}, None, 0

    def pedantic(self, target, rounds, warmup_rounds, iterations):
        times = []
        for i in range(warmup_rounds + rounds):
            start = time.perf_counter()
            for _ in range(iterations):
                target()
            self.calls += iterations
            if i >= warmup_rounds:
                times.append((time.perf_counter() - start) / iterations)
        self.stats = SimpleNamespace(stats=SimpleNamespace(median=sorted(times)[len(times) // 2]))
        return target()


@pytest.fixture(scope="module")
def suite():
    return Suite(profile="smoke", device="cpu", rounds=2, warmup=1)


def test_attention_cell_records_flops_and_effective_tflops(suite):
    cell = suite.attention_cell("native", "neighborhood", 196, "eager", "fwd_bwd")
    benchmark = FakeBenchmark()
    info = suite.run_attention_cell(cell, benchmark)
    assert benchmark.extra_info == info and benchmark.group == "attention-196-eager-fwd_bwd"
    cfg = suite.config(196)
    assert info["flops"] == 3.5 * 4 * cfg.batch * cfg.heads * 196**2 * cfg.head_dim
    assert info["tflops"] == pytest.approx(info["flops"] / (info["median_ms"] / 1e3) / 1e12)
    assert info["tflops_effective"] == pytest.approx(info["tflops"] * kernel_bench.neighborhood_tile_density(196))
    assert info["direction"] == "fwd_bwd" and info["parity"]["ok"] and info["kernel"].startswith("matmul+softmax")
    assert benchmark.calls == info["calls_per_round"] * 3  # 1 warm-up and 2 timed rounds
    assert "do_bench_ms" not in info and info["peak_gib"] is None  # CUDA only



def test_attention_results_scale_effective_tflops_by_the_tile_density():
    """A sparse variant's effective TFLOP/s counts only the tiles it computes (at seq 196 neighborhood
    computes every tile, so the cell test above cannot tell)."""
    from attn_bench.record import attention_results

    fields = attention_results(median_s=0.002, flops=4e12, first_call_s=1.0, tile_density=0.25)
    assert fields == pytest.approx({"median_ms": 2.0, "tflops": 2000.0, "compile_s": 0.998, "tflops_effective": 500.0})
    assert "tflops_effective" not in attention_results(0.002, 4e12, 1.0, tile_density=None)

def test_attention_cell_without_backward_runs_forward_only(suite):
    """flex has no backward on CPU: its fwd cells run (parity forward-only), fwd_bwd cells skip."""
    from attn_bench.harness import CellSkip

    with pytest.raises(CellSkip, match="no backward pass on CPU"):
        suite.attention_cell("flex", "plain", 196, "eager", "fwd_bwd")
    info = suite.run_attention_cell(suite.attention_cell("flex", "plain", 196, "eager", "fwd"), FakeBenchmark())
    assert info["parity"]["ok"] and info["kernel"] == "flex's kernel (unnamed on this device)"
    smoke = suite.config(196)  # forward FLOPs 4·B·H·S²·D of the smoke shape
    assert "tflops_effective" not in info and info["flops"] == 4 * smoke.batch * smoke.heads * 196**2 * smoke.head_dim
    assert {"parity", "first_step", "timed", "total"} <= set(info["phase_s"])


def test_infer_cell_forward_only_model_check(suite):
    cell = suite.cell("flex", "softcap", 196, "eager", backward=False)
    info = suite.run_infer_cell(cell, FakeBenchmark())
    assert info["model_parity"]["ok"] and list(info["model_parity"]["checks"]) == ["logits (soft)", "logits (wide)"]
    cfg = suite.config(196)
    assert info["images_per_s"] == pytest.approx(cfg.batch / (info["median_ms"] / 1e3))
    assert info["model_flops"] * 3 == pytest.approx(train_step_flops(cfg))
    assert info["numerics"]["float32_matmul_precision"] == "high"
    assert math.isfinite(info["compile_s"])
    assert info["phase_s"]["first_step"] >= info["first_step_s"] and "study" not in info["phase_s"]


def test_phase_clock_adds_up_each_phase_and_the_rest():
    from attn_bench.harness import PhaseClock

    clock = PhaseClock()
    for _ in range(2):
        with clock("timed"):
            time.sleep(0.02)
    time.sleep(0.01)
    phases = clock.as_dict()
    assert set(phases) == {"timed", "other", "total"}
    assert 0.04 <= phases["timed"] < phases["total"] and phases["other"] >= 0.01
    assert phases["total"] == pytest.approx(phases["timed"] + phases["other"])


def test_direction_option_selects_attention_cells_only():
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q",
                             "tests/test_attention.py", "tests/test_infer_step.py", "--attn-direction", "fwd_bwd",
                             "--attn-impl", "native", "--attn-variant", "plain", "--attn-seq-len", "196"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    ids = {line.rpartition("::")[2] for line in result.stdout.splitlines() if "::" in line}
    assert ids == {"test_attention[native-plain-196-eager-fwd_bwd]",
                   "test_attention[native-plain-196-compiled-fwd_bwd]",
                   "test_infer_step[native-plain-196-eager]",
                   "test_infer_step[native-plain-196-compiled]"}, result.stdout
