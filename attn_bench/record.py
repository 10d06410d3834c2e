"""What a cell records in pytest-benchmark's `extra_info`: the fields that name it, the checks it
passed, its timed results and their cost, and where its wall time went (`phase_s`)."""
from __future__ import annotations

from attn_tools.energy import usd_per_million_images

from . import envinfo
from .isolation import graph_breaks
from .model import VitConfig


def cell_fields(cell, profile: str, device: str, cfg: VitConfig, depth: bool = False) -> dict:
    """The fields that name `cell` (a harness.Cell) and its shape; `depth` for whole-model cells."""
    fields = {"impl": cell.impl.id, "library": cell.impl.library, "variant": cell.variant,
              "seq_len": cell.seq_len, "mode": cell.mode, "profile": profile, "device": device,
              "batch": cfg.batch, "heads": cfg.heads, "head_dim": cfg.head_dim}
    if depth:
        fields["depth"] = cfg.depth
    return fields


def check_fields(caches: dict, kernels, report, precision: str, model_report=None) -> dict:
    """What the cell's checks found: the compile caches (`isolation.compile_cache_fields`), graph
    breaks, the kernel check, the attention-level parity report, the model-level one if any, and the
    numerics at matmul `precision`."""
    fields = {**caches, "graph_breaks": graph_breaks(), **kernels.as_dict(), "parity": report.as_dict()}
    if model_report is not None:
        fields["model_parity"] = model_report.as_dict()
    fields["numerics"] = envinfo.numerics(precision)
    return fields


def cost_fields(price_per_gpu_hour: float | None, median_s: float, images_per_step: int) -> dict:
    """{"usd_per_million_images": ...} at `price_per_gpu_hour` ($); {} without one."""
    if price_per_gpu_hour is None:
        return {}
    return {"usd_per_million_images": usd_per_million_images(price_per_gpu_hour, median_s, images_per_step)}


def step_results(median_s: float, images: int, flops: float, compile_s: float,
                 price_per_gpu_hour: float | None) -> dict:
    """A timed model step's results: median ms, images/s, compile seconds, TFLOP/s, cost."""
    return {"median_ms": median_s * 1e3, "images_per_s": images / median_s, "compile_s": compile_s,
            "tflops": flops / median_s / 1e12, **cost_fields(price_per_gpu_hour, median_s, images)}


def attention_results(median_s: float, flops: float, first_call_s: float, tile_density: float | None) -> dict:
    """A timed attention call's results: median ms, TFLOP/s, compile seconds and, for a sparse
    variant (`tile_density`, the computed fraction of the tiles), the TFLOP/s of the tiles computed."""
    tflops = flops / median_s / 1e12
    fields = {"median_ms": median_s * 1e3, "tflops": tflops, "compile_s": first_call_s - median_s}
    if tile_density is not None:
        fields["tflops_effective"] = tflops * tile_density
    return fields


def do_bench_fields(median_s: float, flops: float, bare: tuple[float, str], host_ms: float,
                    device_ms: float | None, matmul_peak_tflops: float) -> dict:
    """The CUDA instruments beside a timed attention call: the bare median (`bare`: its ms and
    instrument) and how far the timed median is from it, host and device ms per call, and the
    share of the GPU's matmul peak."""
    bare_ms, instrument = bare
    return {
        "do_bench_ms": bare_ms,
        "do_bench_instrument": instrument,
        "vs_do_bench_pct": (median_s * 1e3 / bare_ms - 1) * 100,
        "host_ms": host_ms,
        "device_ms": device_ms,
        "tflops_device": flops / device_ms / 1e9 if device_ms else None,
        "pct_of_matmul_peak": flops / median_s / 1e12 / matmul_peak_tflops * 100,
    }


def finish(benchmark, info: dict, clock) -> dict:
    """`info` with the cell's `phase_s` (`clock`, a PhaseClock), stored in `benchmark.extra_info`."""
    info["phase_s"] = clock.as_dict()
    benchmark.extra_info.update(info)
    return info


__all__ = ["attention_results", "cell_fields", "check_fields", "cost_fields", "do_bench_fields", "finish",
           "step_results"]
