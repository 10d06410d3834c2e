"""--attn-inductor-cache: one Inductor cache folder per implementation, kept between runs; the
SDPA adapters' graphs in AOTAutograd's cache, one entry per pinned backend; and the traced
FlashAttention adapters' graphs, which hold an autograd.Function, in that cache too."""
from __future__ import annotations

import sys

import pytest
import torch

from attn_bench.isolation import aot_cache_state, fresh_cell_state, inductor_cache_state, use_inductor_cache
from attn_impls import AttnShape, get_impl

pytestmark = pytest.mark.suite
SHAPE = AttnShape(2, 32, 16, "cpu")


@pytest.fixture(autouse=True)
def _inductor_env(monkeypatch):
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)  # restored after the test


def _compile(attention, root, folder: str):
    """Compile `attention` fwd+bwd as a cell whose caches are ROOT/FOLDER; returns the compiled function."""
    fresh_cell_state("cpu")
    use_inductor_cache(str(root), folder)
    compiled = torch.compile(attention)
    q = torch.randn(1, SHAPE.heads, SHAPE.seq_len, SHAPE.head_dim, requires_grad=True)
    compiled(q, q, q).sum().backward()
    return compiled, q


def test_each_implementation_compiles_into_its_own_folder(tmp_path):
    attention = get_impl("sdpa_flash").factory("plain", SHAPE)
    # The same graph in another implementation's folder is not served from the first one's,
    # but a later run of the same implementation is.
    _compile(attention, tmp_path, "sdpa_flash")
    assert inductor_cache_state() == "cold"
    _compile(attention, tmp_path, "sdpa_cudnn")
    assert inductor_cache_state() == "cold"
    _compile(attention, tmp_path, "sdpa_flash")
    assert inductor_cache_state() == "warm"
    assert {"sdpa_flash", "sdpa_cudnn"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "sdpa_cudnn" / "fxgraph").is_dir()


def test_no_root_leaves_inductor_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    use_inductor_cache(None, "sdpa_flash")
    assert torch._inductor.runtime.cache_dir_utils.cache_dir() == str(tmp_path)


def _aot_cache_and_flash(attention, root) -> tuple[str, bool]:
    """Compile `attention` with its caches in ROOT/shared: the AOT-autograd cache's verdict, and
    whether the compiled call runs SDPA's flash kernel (profiled after compiling)."""
    compiled, q = _compile(attention, root, "shared")  # one folder for every backend: only the key tells them apart
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        compiled(q, q, q).sum().backward()
    return aot_cache_state(), any(e.name == "aten::_scaled_dot_product_flash_attention_for_cpu" for e in prof.events())


def test_pinned_sdpa_graphs_are_cached_apart(tmp_path):
    flash, math = (get_impl(i).factory("plain", SHAPE) for i in ("sdpa_flash", "sdpa_math"))
    # The adapters pin their backend inside the compiled function (attn_impls/sdpa.py): the
    # AOT-autograd cache takes their graphs, one entry per backend, and serves each its own.
    assert _aot_cache_and_flash(flash, tmp_path) == ("miss", True)
    assert _aot_cache_and_flash(math, tmp_path) == ("miss", False)
    assert _aot_cache_and_flash(flash, tmp_path) == ("hit", True)
    assert _aot_cache_and_flash(math, tmp_path) == ("hit", False)


# A stand-in with FA2's structure (flash_attn_interface.FlashAttnFunc): custom ops for the kernels,
# called from a torch.autograd.Function that saves its inputs and returns the gradients.
@torch.library.custom_op("attn_bench_stand_in::flash_fwd", mutates_args=(), device_types="cpu")
def _flash_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q.transpose(1, 2) @ k.permute(0, 2, 3, 1) * q.shape[-1] ** -0.5, -1).matmul(
        v.transpose(1, 2)).transpose(1, 2).contiguous()


@_flash_fwd.register_fake
def _(q, k, v):
    return q.new_empty(q.shape)  # contiguous, as the kernel's output


@torch.library.custom_op("attn_bench_stand_in::flash_bwd", mutates_args=("dq", "dk", "dv"), device_types="cpu")
def _flash_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor) -> None:
    q, k, v, dout = (t.transpose(1, 2) for t in (q, k, v, dout))
    scale = q.shape[-1] ** -0.5
    p = torch.softmax(q @ k.transpose(-1, -2) * scale, -1)
    dp = dout @ v.transpose(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
    for grad, value in zip((dq, dk, dv), (ds @ k, ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ dout)):
        grad.copy_(value.transpose(1, 2))


class _FlashAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return torch.ops.attn_bench_stand_in.flash_fwd(q, k, v)

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        dq, dk, dv = (torch.empty_like(t) for t in (q, k, v))
        torch.ops.attn_bench_stand_in.flash_bwd(dout, q, k, v, dq, dk, dv)
        return dq, dk, dv


def _on_bhsd(attention_bshd):
    """An attention on bshd tensors (FlashAttention's layout) called with bhsd ones, as `_compile` passes."""
    def attention(q, k, v):
        return attention_bshd(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    return attention


def _aot_cache_verdicts(attention, root) -> list[str]:
    """The AOT-autograd cache's verdict on two cells (fresh state each) that compile `attention`."""
    verdicts = []
    for _ in range(2):
        _compile(attention, root, "fa_stand_in")
        verdicts.append(aot_cache_state())
    return verdicts


def test_flash_adapters_let_aot_autograd_cache_their_autograd_function(tmp_path, monkeypatch):
    """FA2's and FA3's graphs hold an autograd.Function, which AOTAutograd's cache bypasses unless
    told otherwise (on the H200 their warm first steps took 12-14 s at seq 196, native's 3 s)."""
    import torch._functorch.config

    from attn_impls.flash import _factory
    from attn_impls.native import attention_math

    monkeypatch.setattr(torch._functorch.config, "autograd_cache_allow_custom_autograd_functions", False)
    stand_in = type(sys)("stand_in_flash_graph")
    stand_in.flash_attn_func = lambda q, k, v, softcap=0.0: _FlashAttnFunc.apply(q, k, v)
    monkeypatch.setitem(sys.modules, "stand_in_flash_graph", stand_in)

    # torch's default: the graph holds an autograd.Function, so every run bypasses the cache ...
    assert _aot_cache_verdicts(_on_bhsd(stand_in.flash_attn_func), tmp_path / "bare") == ["bypass", "bypass"]
    # ... the traced adapter (FA2, FA3) opts in, and a second run is served from the cache,
    attention = _on_bhsd(_factory("stand_in_flash_graph")("plain", SHAPE))
    assert _aot_cache_verdicts(attention, tmp_path / "adapter") == ["miss", "hit"]
    # with the stand-in's gradients, which match the math reference's.
    q = torch.randn(1, SHAPE.heads, SHAPE.seq_len, SHAPE.head_dim, requires_grad=True)
    expected = torch.autograd.grad(attention_math(q, q, q, "plain").sum(), q)[0]
    assert torch.allclose(torch.autograd.grad(torch.compile(attention)(q, q, q).sum(), q)[0], expected, atol=1e-5)
