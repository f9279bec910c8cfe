"""The report's figures, drawn with matplotlib and returned as inline SVG (the page needs no network).

Each function takes what the run wrote (metrics.jsonl rows, eval results, lineages, the manifest) and
returns one `<svg>` string, or None when the run has nothing to draw for it.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: draw to files only

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from .lineage import Lineage, run_model  # noqa: E402

SVG_METADATA = ("Creator", "Date", "Format", "Type")
CURVES = [  # (scalar, title), in the order drawn; a scalar no stage logged is left out
    ("loss", "training loss"),
    ("reward", "GRPO: mean reward"),
    ("flat_groups", "GRPO: share of flat groups"),
    ("kl", "KD: KL to the teacher per token"),
    ("reverse_kl", "on-policy: reverse KL per token"),
    ("tokens_per_s", "tokens per second"),
]


# Names on a figure (rows, stages, drop reasons) are the user's text: `student $x_$` is no TeX to parse (it had
# stopped the report with matplotlib's traceback) and `$5 vs $10` no maths to set in italics.
PLAIN_TEXT = matplotlib.rc_context({"text.parse_math": False})


def svg(fig) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "warmstart", "svg.fonttype": "none"}):
        # No metadata block: no date (the same run draws the same figure) and no namespace URLs in the page.
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={k: None for k in SVG_METADATA})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # the XML prolog and doctype are not allowed inside HTML


def series(metrics: list[dict], scalar: str) -> dict[str, tuple[list[int], list[float]]]:
    """stage -> (steps, values) of one scalar, as the stage's last run made them. A stage's step that does not
    follow the one before it (in metrics.jsonl's order) starts another run of it: resumed from a checkpoint
    at that step, or trained again from scratch (step 1); what earlier runs logged from that step on is
    not this run's, and is left out (the curve of a 2-step retrain had been the old 4-step run's beyond it)."""
    by_stage: dict[str, dict[int, float]] = {}
    last_step: dict[str, int] = {}
    for row in metrics:
        if "step" not in row:
            continue
        stage, step = row["stage"], row["step"]
        points = by_stage.setdefault(stage, {})
        if step <= last_step.get(stage, step - 1):
            for later in [s for s in points if s >= step]:
                del points[later]
        last_step[stage] = step
        if row.get(scalar) is not None:  # null: a value that was not finite
            points[step] = row[scalar]
    by_stage = {stage: points for stage, points in by_stage.items() if points}
    return {stage: (sorted(points), [points[s] for s in sorted(points)]) for stage, points in by_stage.items()}


@PLAIN_TEXT
def training_curves(metrics: list[dict]) -> str | None:
    """A panel per scalar some stage logged; a stage of one step is its one point (a run of one step had been
    told it had no training steps)."""
    panels = [(scalar, title, series(metrics, scalar)) for scalar, title in CURVES]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (scalar, title, lines) in zip(axes[:, 0], panels):
        for stage, (steps, values) in sorted(lines.items()):
            ax.plot(steps, values, label=stage, linewidth=1.2, marker="o" if len(steps) == 1 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        values = [v for _, vs in lines.values() for v in vs]
        if scalar == "loss" and min(values) > 0 and max(values) / min(values) > 20:  # a loss falling by decades
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return svg(fig)


@PLAIN_TEXT
def compute_figure(results: dict, lineages: dict[str, Lineage | None]) -> str | None:
    """pass@1 (with its 95 % interval) against the training seconds that made each model; an arrow from the
    model each one started from: the warm start (base -> SFT -> GRPO) and the cold start side by side."""
    # A row whose training is not recorded (lineage.py: its stage's last run failed, say) has no place on the x axis.
    rows = {name: lin for name, lin in lineages.items() if lin is not None and not lin.unknown}
    if not any(lin.stages for lin in rows.values()):
        return None
    policies = results["policies"]
    by_model = {run_model(policies[name]["policy"]): name for name in rows}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, lin in rows.items():
        p = policies[name]
        low, high = p.get("pass@1_ci") or [p["pass@1"], p["pass@1"]]
        # max(0, ...): an interval rounded to 4 places may end a hair inside its unrounded value
        below, above = max(0.0, p["pass@1"] - low), max(0.0, high - p["pass@1"])
        ax.errorbar(lin.seconds, p["pass@1"], yerr=[[below], [above]], fmt="o", capsize=3)
        ax.annotate(name, (lin.seconds, p["pass@1"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
        parent = by_model.get(lin.parent) if lin.parent else None
        if parent and parent != name:
            start = (rows[parent].seconds, policies[parent]["pass@1"])
            ax.annotate("", (lin.seconds, p["pass@1"]), start, arrowprops={"arrowstyle": "->", "alpha": 0.5})
    if "teacher" in policies:
        ax.axhline(policies["teacher"]["pass@1"], linestyle="--", color="grey", label="teacher")
        ax.legend(fontsize=8)
    ax.set_xlabel("training compute (wall seconds, cumulative from the untrained model)")
    ax.set_ylabel("held-out pass@1")
    ax.set_title("pass@1 versus training compute: warm start and cold start", fontsize=10)
    ax.grid(alpha=0.3)
    return svg(fig)


@PLAIN_TEXT
def funnel_figure(funnels: list[dict]) -> str | None:
    """Per curated data set: generated -> verified -> kept, and the drop reasons (`report.html.funnels`)."""
    if not funnels:
        return None
    fig, axes = plt.subplots(len(funnels), 1, figsize=(8, 1.9 * len(funnels)), squeeze=False)
    for ax, funnel in zip(axes[:, 0], funnels):
        labels = ["generated", "verified", "kept"]
        values = [funnel["generated"], funnel["verified"], funnel["kept"]]
        ax.barh(labels, values, color=["#8aa", "#5a8", "#385"])
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:,}", va="center", fontsize=8)
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in funnel["dropped"].items()) or "nothing dropped"
        ax.set_title(f"{funnel['name']} (dropped: {reasons})", fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.2 or 1)
    fig.tight_layout()
    return svg(fig)
