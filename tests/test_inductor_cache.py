"""--attn-inductor-cache: one Inductor cache folder per implementation, kept between runs."""
from __future__ import annotations

import torch

from attn_bench.harness import fresh_cell_state, inductor_cache_state, use_inductor_cache


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
