"""Attention implementations for the benchmark suite, one adapter module per library.

Each adapter registers `AttnImpl` entries into `REGISTRY` on import; optional
libraries are imported only inside their adapter's probe and factory.
"""
from . import flash, flex, native, sdpa, te, xformers  # noqa: F401,E402  (registration order = report order)
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

__all__ = ["LAYOUTS", "REGISTRY", "SOFTCAP", "VARIANTS", "AttnFn", "AttnImpl", "AttnShape",
           "Unsupported", "get_impl", "library_version", "neighborhood_mask", "softcap_scores"]
