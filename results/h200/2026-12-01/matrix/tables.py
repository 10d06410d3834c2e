"""Tables of the 2026-12-01 matrix run (run/*.json): train-step medians at seq 3136 per implementation,
attention-kernel TFLOP/s, attention's share of the step, parity budgets, skips and failures.
Run: python3 results/h200/2026-12-01/matrix/tables.py > results/h200/2026-12-01/matrix/tables.md"""
import json
from pathlib import Path

RUN = Path(__file__).parent / "run"


def load(pattern):
    out = []
    for f in sorted(RUN.glob(pattern)):
        if f.stat().st_size:
            out.append((f.name, json.loads(f.read_text())))
    return out


train = [(n, b) for n, d in load("m-*.json") for b in d["benchmarks"]]
print("## Training step, seq 3136 (median ms; kernel that ran; graph breaks; parity budget used attention/model)\n")
print("| impl | variant | eager ms | compiled ms | kernel (compiled) | graph breaks | parity budget (attn / model) | file |")
print("| --- | --- | ---: | ---: | --- | ---: | --- | --- |")
cells = {}
for name, b in train:
    e = b["extra_info"]
    e["_file"] = name
    cells.setdefault((e["impl"], e["variant"], name), {})[e["mode"]] = e
for (impl, variant, name), modes in cells.items():
    eager, comp = modes.get("eager"), modes.get("compiled")
    any_ = comp or eager
    budgets = "; ".join(f"{m[0]} {x['parity']['max_budget_used']:.2f}/{x['model_parity']['max_budget_used']:.2f}"
                        for m, x in (("eager", eager), ("compiled", comp)) if x)
    print(f"| {impl} | {variant} | {eager['median_ms']:.2f} | " if eager else f"| {impl} | {variant} | – | ", end="")
    print(f"{comp['median_ms']:.2f} | " if comp else "– | ", end="")
    print(f"{any_['kernel'][:48]} | {comp['graph_breaks'] if comp else '–'} | {budgets} | {name} |")
worst = max((b["extra_info"]["parity"]["max_budget_used"], b["name"]) for _, b in train)
worst_m = max((b["extra_info"]["model_parity"]["max_budget_used"], b["name"]) for _, b in train)
print(f"\nLargest budget fraction used by a passing cell: attention {worst[0]:.2f} ({worst[1]}), model {worst_m[0]:.2f} ({worst_m[1]}).\n")

print("## Skipped and failed (training, seq 3136)\n")
for name, d in load("m-*.json"):
    for s in d["attn_suite"]["skipped"]:
        print(f"- {name}: `{s['test'].split('::')[-1]}`: {s['reason'][:300]}")
    for f in d["attn_suite"]["failed"]:
        print(f"- **FAILED** {name}: `{f['test'].split('::')[-1]}`: {f['message'][-300:]}")

kern = [(n, d, b) for n, d in load("a-*.json") for b in d["benchmarks"]]
print("\n## Attention kernel alone, seq 3136, (B, H, S, D) = (8, 12, 3136, 64), bf16\n")
peaks = {d["attn_suite"].get("matmul_peak_tflops") for _, d, _ in kern}
print(f"Measured bf16 dense matmul peak (8192^3, do_bench) per process: {', '.join(f'{p:.0f}' for p in peaks if p)} TFLOP/s.\n")
print("| impl | variant | mode | fwd ms | fwd TFLOP/s | fwd_bwd ms | fwd_bwd TFLOP/s | % of matmul peak (fwd_bwd) | vs do_bench (fwd / fwd_bwd) | file |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
k = {}
for name, d, b in kern:
    e = b["extra_info"]
    k.setdefault((e["impl"], e["variant"], e["mode"], name), {})[e["direction"]] = e
for (impl, variant, mode, name), dirs in k.items():
    f, fb = dirs.get("fwd"), dirs.get("fwd_bwd")
    def cols(x):
        if not x:
            return "– | –"
        eff = f" ({x['tflops_effective']:.0f} effective)" if x.get("tflops_effective") else ""
        return f"{x['median_ms']:.3f} | {x['tflops']:.0f}{eff}"
    vs = " / ".join(f"{x['vs_do_bench_pct']:+.1f} %" if x and x.get("vs_do_bench_pct") is not None else "–" for x in (f, fb))
    pct = f"{fb['pct_of_matmul_peak']:.0f} %" if fb and fb.get("pct_of_matmul_peak") else "–"
    print(f"| {impl} | {variant} | {mode} | {cols(f)} | {cols(fb)} | {pct} | {vs} | {name} |")
print("\n## Failed attention-kernel cells\n")
for name, d in load("a-*.json"):
    for fl in d["attn_suite"]["failed"]:
        msg = " ".join(fl["message"].split())
        print(f"- {name}: `{fl['test'].split('::')[-1]}`: …{msg[-260:]}")

print("\n## Attention's share of the training step (seq 3136, eager, plain): kernel fwd_bwd ms × depth 6 / step ms\n")
print("| impl | kernel fwd_bwd ms | × 6 blocks | train step ms | share | runs |")
print("| --- | ---: | ---: | ---: | ---: | --- |")
for (impl, variant, mode, name), dirs in k.items():
    if variant != "plain" or mode != "eager" or "fwd_bwd" not in dirs:
        continue
    # the training run of the same library set: a-3136-X.json pairs with m-3136-X.json (torch: m-3136-torch)
    same_set = name.replace("a-", "m-", 1)
    step = [m["eager"] for (i, v, n), m in sorted(cells.items(), key=lambda kv: kv[0][2] != same_set)
            if i == impl and v == "plain" and "eager" in m and n in (same_set, "m-3136-torch.json")]
    if step:
        kms = dirs["fwd_bwd"]["median_ms"]
        share = 6 * kms / step[0]["median_ms"] * 100
        print(f"| {impl} | {kms:.3f} | {6 * kms:.2f} | {step[0]['median_ms']:.2f} | {share:.0f} % | {name}, {step[0]['_file']} |")
