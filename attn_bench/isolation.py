"""Cell isolation: what one cell leaves for the next (compiled graphs, counters, memory, the
Inductor cache folder) and what a cell reads of that state (compile caches, peak memory)."""
from __future__ import annotations

import gc
import os

import torch


def fresh_cell_state(device: str) -> None:
    """Forget the previous cell's compiled graphs and counters; free its memory.

    The collection here covers every object; what survives it outlives the cell, so it is
    frozen (`gc.freeze`) and the cell's own collections (`release_memory`) scan only what the
    cell creates: about 0.2 s less each (torch's ~500k objects), several times a cell.
    The next cell unfreezes it again, so nothing escapes collection for longer than a cell.
    """
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # reset() keeps them: graph breaks are per cell
    gc.unfreeze()
    release_memory(device)
    gc.freeze()


def use_inductor_cache(root: str | None, impl_id: str) -> None:
    """Point Inductor's on-disk caches at ROOT/<impl_id>, and Triton's at ROOT/triton; nothing if root is None.

    One folder per implementation because Inductor's cache keys omit SDPA's backend selection
    when it is made outside the compiled code (pytorch/pytorch#185449): on the H200 a process
    that pinned cuDNN that way ran FlashAttention's graph, which another process had cached
    (H200, 2026-12-01). The suite's adapters pin inside, where the backend is
    part of the key; separate folders make sure no adapter can be served another's graph.
    Triton's cache is keyed by the kernel's source and target, so it is shared. Call before the
    cell compiles anything: Inductor reads these variables at each use.
    """
    if root is None:
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(os.path.join(root, impl_id))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.abspath(os.path.join(root, "triton")))


def inductor_cache_state() -> str:
    """'cold', 'warm' or 'mixed' from Inductor's FX-graph cache counters; 'none' if nothing compiled."""
    counters = torch._dynamo.utils.counters["inductor"]
    hits, misses = counters.get("fxgraph_cache_hit", 0), counters.get("fxgraph_cache_miss", 0)
    if not hits and not misses:
        return "none"
    return "mixed" if hits and misses else ("warm" if hits else "cold")


def aot_cache_state() -> str:
    """'hit', 'miss' or 'bypass' from AOTAutograd's cache counters, 'mixed' if graphs differed, 'none'
    if nothing compiled. 'bypass' means it refused to cache a graph: each process traces its forward
    and backward again, even when Inductor's cache (`inductor_cache_state`) serves the compiled code."""
    counters = torch._dynamo.utils.counters["aot_autograd"]
    seen = [state for state in ("hit", "miss", "bypass") if counters.get(f"autograd_cache_{state}")]
    return "mixed" if len(seen) > 1 else (seen[0] if seen else "none")


def compile_cache_fields() -> dict[str, str]:
    """A cell's record of the compile caches after its first step: `compile_cache` (Inductor's) and
    `aot_cache` (AOTAutograd's)."""
    return {"compile_cache": inductor_cache_state(), "aot_cache": aot_cache_state()}


def graph_breaks() -> int:
    """The graph breaks counted since the cell began (`fresh_cell_state` clears the counters)."""
    return sum(torch._dynamo.utils.counters["graph_break"].values())


def release_memory(device: str) -> None:
    """Collect garbage and, on CUDA, return the caching allocator's free blocks."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def peak_gib(device: str) -> float | None:
    """The peak allocated GiB since the last reset of the peak statistics; None off CUDA."""
    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def memory_summary(device: str) -> str:
    """The memory figures an out-of-memory failure reports ("CPU run" off CUDA)."""
    if not device.startswith("cuda"):
        return "CPU run"
    free, total = torch.cuda.mem_get_info(device)
    return (f"peak allocated {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB, "
            f"now allocated {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB, "
            f"free {free / 2**30:.1f} of {total / 2**30:.1f} GiB")


__all__ = ["aot_cache_state", "compile_cache_fields", "fresh_cell_state", "graph_breaks", "inductor_cache_state",
           "memory_summary", "peak_gib", "release_memory", "use_inductor_cache"]
