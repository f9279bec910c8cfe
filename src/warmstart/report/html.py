"""`report.html`: one self-contained page per run, built from the files the stages wrote.

- the run's API dollars in all, and per stage (its LLM judge's and its earlier runs' apart), as costs.json;
- the held-out table: pass@1 and pass@k with 95 % intervals, share of the teacher, what each row cost
  (training seconds and FLOPs, the teacher data's API dollars) and what one point of pass@1 gained cost;
- paired differences of pass@1 on the same tasks, marked "within noise" where the interval holds 0;
- pass@1 versus training compute, warm start and cold start (`figures.compute_figure`);
- training curves (loss, reward, KL, flat-group share, tokens/s) from metrics.jsonl;
- the data funnel: generated -> verified -> kept, with the drop reasons;
- what the stages whose last run failed spent: apart, since a failed run made no row's model;
- a few failed samples of each policy, from eval/<policy>.jsonl.

Where the last eval failed, the results shown are the earlier eval's, and the page says so. Figures are
inline SVG, so the page needs no network and no other file: `warmstart report RUN_DIR` rebuilds it in the
run directory, or with `--out PATH` anywhere (a run directory one cannot write to); `warmstart demo`
writes it.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from ..errors import WarmstartError
from ..metrics.tally import comparison_note, unscored
from ..runs.costs import API_PARTS, failed_seconds, money, spent_seconds
from ..runs.directory import read_manifest, sample_paths
from ..runs.jsonl import read_json, write_text_atomic
from ..runs.tracking import read_metrics
from . import figures
from .attempts import curves_caption, failed_attempts, failed_because, failed_eval, stale_note, unfinished_runs, utc
from .checks import check_results, check_running, check_stages, is_number
from .lineage import Lineage, elsewhere_note, files_note, row_lineages, run_model
from .markup import table
from .target import PAGE_START, report_path, run_name

FAILURES_SHOWN = 3
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1.5em 0; } figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; font-size: 0.8em; }
.noise { color: #888; }
.stale { background: #fff4d6; padding: 0.5em; }
"""


def build_report(root: Path, out: Path | None = None) -> Path:
    """Write the report of the run at `root` to `out` (default `<root>/report.html`); return its path."""
    root = Path(root)
    target = report_path(root, out)  # before anything is drawn: a page that cannot be written is refused first
    manifest = read_manifest(root / "manifest.json")
    stages = check_stages(root / "manifest.json", manifest["stages"])
    running = check_running(root / "manifest.json", manifest.get("running"))  # absent from older manifests
    results = read_results(root / "eval" / "results.json")
    last_eval = failed_eval(stages)
    curves, data = figures.training_curves(read_metrics(root)), funnels(stages)
    name = html.escape(run_name(root))
    sections = [f"<h1>warmstart run: {name}</h1>", f"<p>{run_line(stages)}</p>", api_line(stages)]
    sections.append(unfinished_runs(running))
    sections.append(missing_note(results, curves, data, last_eval))
    if results:
        sections += held_out_sections(root, results, stages, last_eval, running)
    sections.append(failed_attempts(stages))
    sections.append(figure(curves, curves_caption(stages, running)))
    sections.append(figure(figures.funnel_figure(data), "The data funnel of each curated data set."))
    if results:
        sections.append(failures(root, results, last_eval))
    page = f"{PAGE_START}{name}</title>"
    page += f"<style>{STYLE}</style></head><body>{''.join(s for s in sections if s)}</body></html>\n"
    write_text_atomic(target, page)
    return target


def held_out_sections(
    root: Path, results: dict, stages: dict, last_eval: dict | None, running: dict | None = None
) -> list[str]:
    """The results table (said to be an earlier eval's where the last one failed), the paired differences
    and pass@1 against training compute."""
    # A stage that finished after the eval began reading the models (a failed eval's start bounds the earlier
    # results' too) made another model: told by the files' digests or the records' order (lineage.py).
    lineages = row_lineages(results, stages, root, running=running)
    stale = stale_note(root / "eval" / "results.json", last_eval)
    notes = row_notes(root, results, lineages, stages, running or {})
    return [
        results_table(results, lineages, stages, stale, notes),
        comparisons_table(results.get("comparisons", [])),
        figure(figures.compute_figure(results, lineages), COMPUTE_CAPTION),
    ]


COMPUTE_CAPTION = (
    "Held-out pass@1 (95 % intervals over tasks) against the wall seconds of training that made each model, "
    "cumulative from the untrained one; each arrow goes from the model a stage started from to the one it made."
)


def read_results(path: Path) -> dict | None:
    """eval/results.json, checked (`checks.check_results`); None where eval has not finished yet."""
    results = read_json(path)
    if results is None:
        return None
    if not (isinstance(results.get("policies"), dict) and results.get("rows")):
        raise WarmstartError(f"{path}: holds no eval results (no policies, no rows)")
    return check_results(path, results)


def missing_note(results: dict | None, curves: str | None, funnel_data: list[dict], last_eval: dict | None) -> str:
    """What a run stopped partway (or not yet run that far) lacks, said rather than left out without a word."""
    no_results = (
        f"held-out results (no eval/results.json: the last eval {failed_because(last_eval)})"
        if last_eval
        else "held-out results (no eval/results.json: eval has not finished)"
    )
    lacking = [
        *([no_results] if results is None else []),
        *(["training curves (no training steps in metrics.jsonl)"] if curves is None else []),
        *(["the data funnel (no curate stage has finished)"] if not funnel_data else []),
    ]
    return f"<p>Not in this run yet: {html.escape('; '.join(lacking))}.</p>" if lacking else ""


def figure(svg: str | None, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>" if svg else ""


def run_line(stages: dict) -> str:
    seconds = sum(spent_seconds(s) for s in stages.values())
    failed = [name for name, s in stages.items() if s.get("status") == "failed"]
    stopped = [name for name, s in stages.items() if s.get("stopped_runs") and s.get("status") != "failed"]
    in_failed = sum(failed_seconds(s) for s in stages.values())
    of_them = f" ({in_failed:,.0f} s of them in runs that failed)" if in_failed else ""
    note = f" Failed: {', '.join(failed)} (below)." if failed else ""
    note += f" Stopped part-way since their last finished run: {', '.join(stopped)} (below)." if stopped else ""
    count = f"{len(stages)} stage{'' if len(stages) == 1 else 's'}"
    return html.escape(f"{count}, {seconds:,.0f} s in all{of_them}. Built {utc(time.time())}.{note}")


SPEND_PARTS = {"api": "", "api_judge": "its judge", "api_earlier_runs": "earlier runs"}  # costs.json key: how said


def api_line(stages: dict) -> str:
    """The run's API dollars as costs.json adds them up (runs/costs.py `write_costs`): in all, then per stage
    its run's, its LLM judge's and its earlier runs' (eval's) parts; a price unknown is said, never taken as 0.
    Nothing where no stage called an API (a local run's cost is its seconds)."""
    total, unknown, said = 0.0, set(), []
    for name, entry in sorted(stages.items()):
        shares = []
        for field, key in API_PARTS.items():
            cost = entry.get(field)
            if not isinstance(cost, dict) or not cost.get("api", (cost.get("requests") or 0) > 0):
                continue  # none, or a local policy's
            usd, priced = cost.get("usd"), cost.get("usd_priced")  # older records lack usd_priced
            if not is_number(usd):
                unknown |= {str(m) for m in cost.get("unknown_price_models") or ["a model"]}
            known, said_usd = spend_said(usd, priced)
            total += known
            shares.append(" ".join(filter(None, [SPEND_PARTS[key], said_usd])))
        if shares:
            said.append(f"{name} {', '.join(shares)}")
    if not said:
        return ""
    in_all = f"{money(total)} in all"
    if unknown:
        in_all = (
            f"{money(total)} priced, and replies of {', '.join(sorted(unknown))}, whose price is unknown (api.prices)"
        )
    return "<p>" + html.escape(f"API dollars: {in_all} ({'; '.join(said)}).") + "</p>"


def spend_said(usd, priced) -> tuple[float, str]:
    """A cost's dollars known (all of them, or the priced part beside a price unknown) and how it is said."""
    if is_number(usd):
        return usd, money(usd)
    if is_number(priced) and priced:
        return priced, f"{money(priced)} + price unknown"
    return 0.0, "price unknown"


def api_dollars(stages: dict, lin: Lineage) -> float | None:
    """The API dollars of what made the row's model (None where a price is unknown): the teacher data its SFT
    stages trained on, the teacher's replies and generate's LLM judge's (costs.json counts both as the
    data's cost), and the LLM judge each of its stages paid for (GRPO's reward)."""
    costs = []
    for name in lin.stages:
        entry = stages[name]
        costs.append(entry.get("api_cost_judge"))
        curate = stages.get(f"curate:{entry.get('data')}", {}) if name.startswith("sft:") else {}
        generate = stages.get(f"generate:{curate.get('source')}", {}) if curate else {}
        costs += [generate.get("api_cost"), generate.get("api_cost_judge")]
    total = 0.0
    for cost in filter(None, costs):
        if cost.get("usd") is None:
            return None
        total += cost["usd"]
    return total


def eval_sample(path: Path, number: int, line: bytes) -> dict:
    """One line of eval/<policy>.jsonl, or one error naming it (a hand-edited or torn file)."""
    try:
        record = json.loads(line.decode("utf-8"))  # decoded here: json.loads would guess UTF-16 from odd bytes
    except ValueError:  # not JSON, or not UTF-8
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("task_id"), str):
        raise WarmstartError(f"{path}:{number}: not an eval sample (a JSON object with a task_id)")
    messages = record.get("messages")
    if not isinstance(messages, list) or not all(is_message(m) for m in messages):
        raise WarmstartError(f"{path}:{number}: an eval sample without its messages")
    verdict = record.get("verdict")
    if not (verdict is None or isinstance(verdict, dict) and isinstance(verdict.get("details") or {}, dict)):
        raise WarmstartError(f"{path}:{number}: an eval sample whose verdict is not an object")
    return record


def is_message(message) -> bool:
    """A message as the failures section reads it: a role, and text (or nothing) where it says something."""
    texts = (message.get(key) for key in ("content", "reasoning")) if isinstance(message, dict) else ()
    return (
        isinstance(message, dict)
        and isinstance(message.get("role"), str)
        and all(text is None or isinstance(text, str) for text in texts)
    )


def row_notes(root: Path, results: dict, lineages: dict[str, Lineage | None], stages: dict, running: dict) -> list[str]:
    """What the table says of a row beside its cost: its model's files changed after the eval (a killed run),
    or it scored another run directory's model (no cost here, and why)."""
    notes = []
    for name in results["rows"]:
        row, lin = results["policies"][name], lineages.get(name)
        model = run_model(row.get("policy")) if lin is not None else None
        note = files_note(row, model, root, stages, running) if lin is not None else elsewhere_note(row, root)
        notes += [f"{name}: {note}"] if note else []
    return notes


def results_table(
    results: dict, lineages: dict[str, Lineage | None], stages: dict, stale: str = "", notes: list[str] = ()
) -> str:
    k, policies = results["k"], results["policies"]
    teacher = policies.get("teacher", {}).get("pass@1")
    base = policies.get("base", {}).get("pass@1")
    at_k = [f"pass@{k} [95 %]"] if k > 1 else []  # k = 1: pass@k is pass@1, shown once
    head = ["policy", "pass@1 [95 %]", *at_k, "% of teacher", "train s", "train FLOPs", "API $"]
    head += ["s per pass@1 point", "$ per pass@1 point"]
    rows = []
    for name in results["rows"]:
        p, lin = policies[name], lineages.get(name)
        share = f"{p['pass@1'] / teacher:.0%}" if teacher else ""
        cells = [name, interval(p["pass@1"], p.get("pass@1_ci"))]
        cells += [interval(p.get(f"pass@{k}"), p.get(f"pass@{k}_ci"))] if k > 1 else []
        cells.append(share)
        cells += cost_cells(p["pass@1"], base, lin, stages, gain_within_noise(results, name))
        rows.append(cells)
    caption = f"{first_tasks(policies)} held-out tasks, {k} samples each at temperature {results['temperature']}."
    left_out = [f"{name}: {unscored(policies[name])}" for name in results["rows"] if unscored(policies[name])]
    if left_out:  # failed requests and infra errors are never scored 0: those rows are over fewer samples
        caption += " Not scored (left out, never counted as failures): " + "; ".join(left_out) + "."
    unknown = [f"{name}: {lin.unknown}" for name in results["rows"] if (lin := lineages.get(name)) and lin.unknown]
    if unknown:
        caption += " Cost unknown (the training that made the model is not recorded): " + "; ".join(unknown) + "."
    if notes:
        caption += " Also: " + "; ".join(notes) + "."
    return "<h2>Held-out results</h2>" + stale + table(head, rows) + f"<p>{html.escape(caption)}</p>"


def gain_within_noise(results: dict, name: str) -> bool:
    """Whether the row's lead over the base row is within noise (its paired interval holds 0)."""
    against_base = next((c for c in results.get("comparisons") or [] if (c["a"], c["b"]) == (name, "base")), None)
    return bool(against_base and against_base.get("within_noise"))


def cost_cells(
    pass_1: float, base: float | None, lin: Lineage | None, stages: dict, within_noise: bool = False
) -> list[str]:
    """A row's train seconds, FLOPs and API dollars, and those per point of pass@1 gained over the base row:
    none where the gain is within noise (a ratio over noise is no measurement, as for gap closed)."""
    if lin is None or not lin.stages:
        return ["", "", "", "", ""]
    if lin.unknown:  # neither the seconds nor the data of the run that made the model are recorded
        return ["unknown"] * 5
    dollars = api_dollars(stages, lin)
    usd = "price unknown" if dollars is None else money(dollars).removeprefix("$")
    spent = [f"{lin.seconds:,.0f}", f"{lin.flops:.2e}", usd]
    if base is None:  # no base row: no gain to divide by, which is not "no gain"
        return spent + ["n/a (no base row)"] * 2
    if within_noise:
        return spent + ["within noise"] * 2
    points = 100 * (pass_1 - base)
    per_s = f"{lin.seconds / points:,.1f}" if points > 0 else "no gain"
    per_usd = (
        money(dollars / points).removeprefix("$")
        if points > 0 and dollars is not None
        else ("n/a" if dollars is None else "no gain")
    )
    return spent + [per_s, per_usd]


def first_tasks(policies: dict) -> int:
    return next(iter(policies.values()))["tasks"]


def interval(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def comparisons_table(comparisons: list[dict]) -> str:
    if not comparisons:
        return ""
    rows = []
    for c in comparisons:
        rows.append(
            [c["a"], c["b"], f"{c['diff']:+.3f}", f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]", comparison_note(c)]
        )
    head = ["policy", "minus", "pass@1 difference", "95 % interval", ""]
    return "<h2>Paired differences on the same tasks</h2>" + table(head, rows)


def funnels(stages: dict) -> list[dict]:
    """Per curate stage: what its source generated, how much of it passed verification, what it kept."""
    out = []
    for name, entry in sorted(stages.items()):
        if not name.startswith("curate:") or "kept" not in entry:
            continue
        source = stages.get(f"generate:{entry.get('source')}", {})
        verified = (source.get("api_cost") or {}).get("accepted", entry["kept"])
        out.append(
            {
                "name": name,
                "generated": entry["input"],
                "verified": verified,
                "kept": entry["kept"],
                "dropped": entry["dropped"],
            }
        )
    return out


def failures(root: Path, results: dict, last_eval: dict | None) -> str:
    heading = "Some failures" + (" (of the earlier eval: the last one failed)" if last_eval else "")
    parts = [f"<h2>{html.escape(heading)}</h2>"]
    for name, path in sample_paths(root, results["rows"]).items():
        shown = failed_samples(path)
        if shown:
            parts.append(f"<h3>{html.escape(name)}</h3>" + "".join(shown))
    return "".join(parts) if len(parts) > 1 else ""


def failed_samples(path: Path) -> list[str]:
    if not path.exists():
        return []
    shown, tasks = [], set()
    # A line at a time, split at b"\n" only (as written): a large eval is never read whole.
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = eval_sample(path, number, line)
            if shows_failure(record, tasks):
                tasks.add(record["task_id"])
                shown.append(failure_block(record))
            if len(shown) == FAILURES_SHOWN:
                break
    return shown


def shows_failure(record: dict, tasks_shown: set[str]) -> bool:
    """A failed sample worth showing: judged (not an infra error), of a task not shown yet (a few different
    failures say more than one task's k samples)."""
    verdict = record.get("verdict") or {}
    return verdict.get("passed") is False and not verdict.get("infra_error") and record["task_id"] not in tasks_shown


# What a failure block shows of the prompt and the reply: an swe task's prompt (a problem statement and
# its instructions) runs to thousands of characters, and the page shows several failures of each row.
PROMPT_CHARS, REPLY_CHARS, REASON_CHARS = 1_500, 600, 600


def failure_block(record: dict) -> str:
    verdict = record.get("verdict") or {}
    prompt = cut(" ".join(m.get("content") or "" for m in record["messages"] if m["role"] == "user"), PROMPT_CHARS)
    reply = next((m for m in reversed(record["messages"]) if m["role"] == "assistant"), {})
    said = cut("\n".join(x for x in (reply.get("reasoning"), reply.get("content")) if x), REPLY_CHARS)
    why = cut(str((verdict.get("details") or {}).get("reason", "failed")), REASON_CHARS)
    return f"<pre>{html.escape(prompt)}\n---\n{html.escape(said)}\n--- {html.escape(why)}</pre>"


def cut(text: str, most: int) -> str:
    """`text` up to `most` characters, its cut said."""
    return text if len(text) <= most else f"{text[:most]} [... {len(text) - most:,} more characters]"
