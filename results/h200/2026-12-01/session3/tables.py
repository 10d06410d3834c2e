"""Tables of the 2026-12-01 third-session runs (run/m-*.json): training-step medians at seq 196 for
every library, te_fused at seq 3136, parity budgets, first-step (compile) times, skips and failures,
and the study's yardstick from the morning run (../y-196.json) beside the PyTorch cells.
Run: python3 results/h200/2026-12-01/session3/tables.py > results/h200/2026-12-01/session3/tables.md"""
import json
from pathlib import Path

HERE = Path(__file__).parent
RUN = HERE / "run"
runs = [(f.name, json.loads(f.read_text())) for f in sorted(RUN.glob("m-*.json"))]
study = {b["name"]: b["extra_info"] for b in json.loads((HERE.parent / "y-196.json").read_text())["benchmarks"]}

for seq in (196, 3136):
    print(f"## Training step, seq {seq} (median ms; first step s incl. compile; parity budget used attention / model)\n")
    print("| impl | variant | eager ms | compiled ms | first step s (eager / compiled) | kernel | graph breaks | parity budget (eager; compiled) | file |")
    print("| --- | --- | ---: | ---: | --- | --- | ---: | --- | --- |")
    cells = {}
    for name, d in runs:
        for b in d["benchmarks"]:
            e = b["extra_info"]
            if e["seq_len"] == seq:
                cells.setdefault((e["impl"], e["variant"], name), {})[e["mode"]] = e
    for (impl, variant, name), m in cells.items():
        eager, comp = m.get("eager"), m.get("compiled")
        ms = " | ".join(f"{x['median_ms']:.2f}" if x else "–" for x in (eager, comp))
        first = " / ".join(f"{x['first_step_s']:.1f}" if x else "–" for x in (eager, comp))
        budgets = "; ".join(f"{x['parity']['max_budget_used']:.2f} / {x['model_parity']['max_budget_used']:.2f}"
                            for x in (eager, comp) if x)
        kernel = (comp or eager)["kernel"][:48]
        print(f"| {impl} | {variant} | {ms} | {first} | {kernel} | {comp['graph_breaks'] if comp else '–'} | {budgets} | {name} |")
    passing = [b for _, d in runs for b in d["benchmarks"] if b["extra_info"]["seq_len"] == seq]
    worst = max((b["extra_info"]["parity"]["max_budget_used"], b["name"]) for b in passing)
    worst_m = max((b["extra_info"]["model_parity"]["max_budget_used"], b["name"]) for b in passing)
    print(f"\n{len(passing)} timed cells, all passed parity and the kernel check. Largest budget fraction used: "
          f"attention {worst[0]:.2f} ({worst[1]}), model {worst_m[0]:.2f} ({worst_m[1]}).\n")

print("## Skipped and failed\n")
for name, d in runs:
    for s in d["attn_suite"]["skipped"]:
        print(f"- {name}: `{s['test'].split('::')[-1]}`: {' '.join(s['reason'].split())[:300]}")
    for f in d["attn_suite"]["failed"]:
        print(f"- **FAILED** {name}: `{f['test'].split('::')[-1]}`: {f['message'][-300:]}")

print("\n## PyTorch plain cells, seq 196: this session against the morning's yardstick run (../y-196.json)\n")
print("| cell | this session ms | morning ms | study's code ms (morning, same process) | this session vs study |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, d in runs:
    for b in d["benchmarks"]:
        y = study.get(b["name"])
        if y:
            now = b["extra_info"]["median_ms"]
            print(f"| {b['name'].split('[')[1][:-1]} | {now:.2f} | {y['median_ms']:.2f} | {y['study_median_ms']:.2f} | "
                  f"{(now / y['study_median_ms'] - 1) * 100:+.2f} % |")
