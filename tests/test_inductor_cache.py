"""--attn-inductor-cache: one Inductor cache folder per implementation, kept between runs; and the
SDPA adapters' graphs in AOTAutograd's cache, one entry per pinned backend."""
from __future__ import annotations

import pytest
import torch

from attn_bench.harness import fresh_cell_state, inductor_cache_state, use_inductor_cache
from attn_impls import AttnShape, get_impl

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
    counters = torch._dynamo.utils.counters["aot_autograd"]
    verdict = next((k.removeprefix("autograd_cache_") for k in ("autograd_cache_hit", "autograd_cache_miss",
                                                                "autograd_cache_bypass") if counters.get(k)), "none")
    return verdict, any(e.name == "aten::_scaled_dot_product_flash_attention_for_cpu" for e in prof.events())


def test_pinned_sdpa_graphs_are_cached_apart(tmp_path):
    flash, math = (get_impl(i).factory("plain", SHAPE) for i in ("sdpa_flash", "sdpa_math"))
    # The adapters pin their backend inside the compiled function (attn_impls/sdpa.py): the
    # AOT-autograd cache takes their graphs, one entry per backend, and serves each its own.
    assert _aot_cache_and_flash(flash, tmp_path) == ("miss", True)
    assert _aot_cache_and_flash(math, tmp_path) == ("miss", False)
    assert _aot_cache_and_flash(flash, tmp_path) == ("hit", True)
    assert _aot_cache_and_flash(math, tmp_path) == ("hit", False)
