"""--attn-inductor-cache: one Inductor cache folder per implementation, kept between runs."""
from __future__ import annotations

import torch

from attn_bench.harness import fresh_cell_state, inductor_cache_state, use_inductor_cache
from attn_impls import AttnShape, get_impl


def _gelu_twice(x):
    return torch.nn.functional.gelu(x) * 2


def _compile_as(impl_id: str, root) -> str:
    """Compile the same function as a cell of `impl_id` would: whether Inductor's cache was cold or warm."""
    fresh_cell_state("cpu")
    use_inductor_cache(str(root), impl_id)
    torch.compile(_gelu_twice)(torch.randn(8, 8))
    return inductor_cache_state()


def test_each_implementation_compiles_into_its_own_folder(tmp_path, monkeypatch):
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    # The same graph under another implementation is not served from the first one's folder
    # (pytorch/pytorch#185449: the key omits SDPA's backend), but a later run of the same one is.
    assert _compile_as("sdpa_flash", tmp_path) == "cold"
    assert _compile_as("sdpa_cudnn", tmp_path) == "cold"
    assert _compile_as("sdpa_flash", tmp_path) == "warm"
    assert {"sdpa_flash", "sdpa_cudnn"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "sdpa_cudnn" / "fxgraph").is_dir()


def test_no_root_leaves_inductor_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    use_inductor_cache(None, "sdpa_flash")
    assert torch._inductor.runtime.cache_dir_utils.cache_dir() == str(tmp_path)


def _aot_cache_and_flash(attention, folder) -> tuple[str, bool]:
    """Compile `attention` fwd+bwd with Inductor's caches in `folder`: the AOT-autograd cache's
    verdict, and whether the compiled call runs SDPA's flash kernel (profiled after compiling)."""
    fresh_cell_state("cpu")
    use_inductor_cache(str(folder), "shared")  # one folder for every backend: only the key can tell them apart
    compiled = torch.compile(attention)
    q = torch.randn(1, 2, 16, 32, requires_grad=True)
    compiled(q, q, q).sum().backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        compiled(q, q, q).sum().backward()
    counters = torch._dynamo.utils.counters["aot_autograd"]
    verdict = next((k.removeprefix("autograd_cache_") for k in ("autograd_cache_hit", "autograd_cache_miss",
                                                                "autograd_cache_bypass") if counters.get(k)), "none")
    return verdict, any(e.name == "aten::_scaled_dot_product_flash_attention_for_cpu" for e in prof.events())


def test_pinned_sdpa_graphs_are_cached_apart(tmp_path, monkeypatch):
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    shape = AttnShape(2, 32, 16, "cpu")
    flash, math = (get_impl(i).factory("plain", shape) for i in ("sdpa_flash", "sdpa_math"))
    # The adapters pin their backend inside the compiled function (attn_impls/sdpa.py): the
    # AOT-autograd cache takes their graphs, one entry per backend, and serves each its own.
    assert _aot_cache_and_flash(flash, tmp_path) == ("miss", True)
    assert _aot_cache_and_flash(math, tmp_path) == ("miss", False)
    assert _aot_cache_and_flash(flash, tmp_path) == ("hit", True)
    assert _aot_cache_and_flash(math, tmp_path) == ("hit", False)

