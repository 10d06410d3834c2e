"""Print the false-failure margin of the parity gate: for correct implementations on this
device, the largest fraction of its budget (error / limit) any check used, per seed.

    .venv/bin/python scripts/parity_margins.py [--profile smoke] [--seeds 3] [--compiled]
"""
from __future__ import annotations

import argparse

import torch

from attn_bench import parity
from attn_bench.model import get_config
from attn_impls import REGISTRY, AttnShape

CORRECT = ("native", "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flex")


def margins(profile: str, device: str, seeds: int, modes: tuple[str, ...]) -> list[tuple]:
    """(impl, variant, seq_len, mode, seed, attention budget used, model budget used or None) rows."""
    rows = []
    for seq_len in (196, 3136):
        cfg = get_config(profile, seq_len)
        shape = AttnShape(cfg.heads, cfg.head_dim, seq_len, device)
        for variant in ("plain", "softcap", "neighborhood"):
            impls = [REGISTRY[i] for i in CORRECT
                     if not REGISTRY[i].unsupported_reason(variant, device, backward=False)]
            for seed in range(seeds):
                attention_ref = parity.attention_reference(variant, shape, min(cfg.batch, 2), seed)
                correct = {i.id: (i.factory(variant, shape), i.layout)
                           for i in (REGISTRY["native"], REGISTRY["sdpa_math"]) if variant in i.variants}
                model_refs = parity.model_references(cfg, variant, device, correct, seed)
                for impl in impls:
                    backward = impl.backward and (device != "cpu" or impl.cpu_backward)
                    for mode in modes:
                        torch._dynamo.reset()
                        attention = impl.factory(variant, shape)
                        compiled = mode == "compiled"
                        kernel = parity.check_attention(impl.id, attention, impl.layout, attention_ref,
                                                        compiled, backward)
                        model = (parity.check_model(impl.id, attention, impl.layout, model_refs, device, compiled)
                                 if backward else None)
                        rows.append((impl.id, variant, seq_len, mode, seed, kernel.max_budget_used,
                                     model.max_budget_used if model else None))
                        print(*rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--compiled", action="store_true", help="also compiled mode")
    args = parser.parse_args()
    rows = margins(args.profile, args.device, args.seeds, ("eager", "compiled") if args.compiled else ("eager",))
    print("\n| impl | variant | seq_len | mode | max attention budget used | max model budget used |")
    print("| --- | --- | ---: | --- | ---: | ---: |")
    groups: dict[tuple, list] = {}
    for impl, variant, seq_len, mode, _seed, kernel, model in rows:
        groups.setdefault((impl, variant, seq_len, mode), []).append((kernel, model))
    for (impl, variant, seq_len, mode), values in groups.items():
        kernel = max(k for k, _ in values)
        models = [m for _, m in values if m is not None]
        model = f"{max(models):.2f}" if models else "forward only"
        print(f"| {impl} | {variant} | {seq_len} | {mode} | {kernel:.2f} | {model} |")


if __name__ == "__main__":
    main()
