"""Attention implementations for the benchmark suite, one adapter module per library.

Each adapter registers `AttnImpl` entries into `REGISTRY` on import; optional
libraries are imported only inside their adapter's probe and factory.
"""
from .registry import (
    LAYOUTS,
    REGISTRY,
    SOFTCAP,
    VARIANTS,
    AttnFn,
    AttnImpl,
    AttnShape,
    Unsupported,
    get_impl,
    library_version,
    neighborhood_mask,
    softcap_scores,
)

# Registration order is the order of reports and of `python -m attn_impls`.
from . import native, sdpa, flex, flash, te, xformers  # noqa: E402, F401

__all__ = ["LAYOUTS", "REGISTRY", "SOFTCAP", "VARIANTS", "AttnFn", "AttnImpl", "AttnShape",
           "Unsupported", "get_impl", "library_version", "neighborhood_mask", "softcap_scores"]
