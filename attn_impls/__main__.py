"""`python -m attn_impls`: every implementation with its version or why it is unavailable."""
from __future__ import annotations

import torch

from . import REGISTRY, library_version
from .registry import VARLEN_REGISTRY


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (CPU only)"
    print(f"device: {device}   GPU: {gpu}   torch {torch.__version__}\n")
    rows = [("id", "library", "version", "layout", "variants", "hardware", "status")]
    for impl in REGISTRY.values():
        rows.append((impl.id, impl.library, library_version(impl.library), impl.layout,
                     ",".join(impl.variants),
                     "proven" if impl.proven_on_hardware else "UNPROVEN on hardware",
                     impl.probe(device) or "available"))
    _print_table(rows)
    print("\nvariable-size images (test_varlen_train_step):\n")
    rows = [("id", "library", "version", "packing", "hardware", "status")]
    for impl in VARLEN_REGISTRY.values():
        rows.append((impl.id, impl.library, library_version(impl.library), impl.packing,
                     "proven" if impl.proven_on_hardware else "UNPROVEN on hardware",
                     impl.probe(device) or "available"))
    _print_table(rows)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


if __name__ == "__main__":
    main()
