"""Plots bench/gpu/results.json: decode tokens/s against batch size per adapter count, with the
bandwidth floor of the no-adapter and all-distinct cases. Usage: python3 bench/gpu/plot.py results.json out.png"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

r = json.load(open(sys.argv[1]))
fig, ax = plt.subplots(figsize=(7, 4.5))
counts = sorted({d["adapters"] for d in r["decode"]})
for a in counts:
    rows = sorted([d for d in r["decode"] if d["adapters"] == a], key=lambda d: d["batch"])
    ax.plot([d["batch"] for d in rows], [d["tokS"] for d in rows], marker="o", label=f"{a} adapters" if a else "no adapter")
for a, style in ((0, ":"), (max(counts), "--")):
    rows = sorted([d for d in r["decode"] if d["adapters"] == a], key=lambda d: d["batch"])
    ax.plot([d["batch"] for d in rows], [d["floorTokS"] for d in rows], "k" + style, lw=1, label=f"floor ({a} adapters)" if a else "floor (no adapter)")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("batch (sequences per step)")
ax.set_ylabel("decode tokens/s")
ax.set_title(f"Mistral-7B shapes, bf16, 1K context — {r['device']}")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
