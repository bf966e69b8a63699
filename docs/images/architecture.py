"""Draw docs/images/architecture.png: the layers of graphsphere and who may import whom."""
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

layers = [
    ("command line", ["cli", "commands"], "#d0d0d0"),
    ("experiments", ["experiments  (cosmology, shapes, climate, stations)"], "#f4c7a1"),
    ("training, pictures", ["train", "plot"], "#f7e1a0"),
    ("data, models", ["data", "models"], "#cfe8c8"),
    ("layers (PyTorch)", ["nn"], "#b9e0d9"),
    ("kernel-width tuning", ["tuning"], "#bcd4ef"),
    ("analysis", ["equivariance", "spectral"], "#bcd4ef"),
    ("rotations", ["rotation"], "#bcd4ef"),
    ("graphs (NumPy/SciPy)", ["graph"], "#d7cdef"),
    ("widths, neighbours", ["kernel_widths", "neighbours"], "#d7cdef"),
    ("samplings (NumPy)", ["sampling"], "#e8cde6"),
    ("utilities", ["config", "files"], "#eeeeee"),
]
fig, ax = plt.subplots(figsize=(9, 7.2))
n = len(layers)
for i, (label, mods, color) in enumerate(layers):
    y = n - 1 - i
    ax.add_patch(plt.Rectangle((0, y + 0.08), 9.8, 0.84, color=color, ec="k", lw=0.6))
    ax.text(0.15, y + 0.5, label, va="center", ha="left", fontsize=9, style="italic", color="#333333")
    width = 6.2 / len(mods)
    for j, m in enumerate(mods):
        x = 3.4 + j * width
        ax.add_patch(plt.Rectangle((x + 0.05, y + 0.2), width - 0.1, 0.6, color="white", ec="k", lw=0.6))
        ax.text(x + width / 2, y + 0.5, f"graphsphere.{m}" if m != "..." else "...", va="center", ha="center",
                fontsize=8.5, family="monospace")  # noqa: E501
ax.annotate("", xy=(10.2, 0.3), xytext=(10.2, n - 0.3), arrowprops=dict(arrowstyle="->", lw=1.5))
ax.text(10.35, n / 2, "imports go down only\n(import-linter checks it)", rotation=90, va="center", fontsize=9)
ax.set_xlim(0, 11)
ax.set_ylim(0, n)
ax.axis("off")
ax.set_title("graphsphere: the layers (pyproject.toml [tool.importlinter])", fontsize=11)
fig.tight_layout()
fig.savefig("docs/images/architecture.png", dpi=110)
