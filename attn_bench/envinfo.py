"""Versions, GPU and availability recorded with every result."""
from __future__ import annotations

import re

import torch

from attn_impls import REGISTRY, VARIANTS, library_version

LIBRARIES = ("torch", "timm", "triton", "pytest-benchmark", "flash-attn", "flash-attn-3",
             "flash-attn-4", "nvidia-cutlass-dsl", "transformer-engine", "transformer-engine-torch",
             "xformers")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def gpu_info(device: str) -> dict:
    """GPU name, capability, driver, CUDA and cuDNN, or the CPU's stand-ins."""
    if not device.startswith("cuda"):
        return {"gpu": "cpu", "gpu_slug": "cpu", "capability": None, "driver": None,
                "cuda": torch.version.cuda, "cudnn": None}
    props = torch.cuda.get_device_properties(device)
    try:
        import pynvml  # nvidia-ml-py, present where the driver is
        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
    except Exception as e:  # the record says why rather than failing the run
        driver = f"unknown ({type(e).__name__})"
    return {
        "gpu": props.name,
        "gpu_slug": gpu_slug(props.name),
        "uuid": gpu_uuid(props),
        "capability": f"sm_{props.major}{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def gpu_uuid(props) -> str | None:
    """The physical GPU's UUID (as nvidia-smi -L shows it), None where torch does not report one."""
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"


def gpu_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': a file-name-safe GPU model id."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def numerics(matmul_precision: str | None = None) -> dict:
    """Every global numerics setting that changes which kernels run or how they round.

    With `matmul_precision`, the settings as they are while that float32 matmul precision
    is in force (the timed steps set it for their duration, see model.TrainStep).
    """
    from .model import float32_matmul_precision

    with float32_matmul_precision(matmul_precision or torch.get_float32_matmul_precision()):
        matmul = torch.backends.cuda.matmul
        return {
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": matmul.allow_tf32,
            "cuda_matmul_allow_bf16_reduced_precision_reduction": matmul.allow_bf16_reduced_precision_reduction,
            "cuda_matmul_allow_fp16_reduced_precision_reduction": matmul.allow_fp16_reduced_precision_reduction,
            "sdpa_math_fp16_bf16_reduction": torch.backends.cuda.fp16_bf16_reduction_math_sdp_allowed(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        }


def library_versions() -> dict[str, str]:
    return {lib: library_version(lib) for lib in LIBRARIES}


def availability(device: str) -> dict[str, dict]:
    """Per implementation: version, "available" or the reason it is not, and its variants."""
    table = {}
    for impl in REGISTRY.values():
        reason = impl.probe(device)
        table[impl.id] = {
            "library": impl.library,
            "version": library_version(impl.library),
            "status": reason or "available",
            "variants": list(impl.variants),
            "layout": impl.layout,
            "proven_on_hardware": impl.proven_on_hardware,
        }
    return table


__all__ = ["VARIANTS", "availability", "default_device", "gpu_info", "gpu_slug", "library_versions", "numerics"]
