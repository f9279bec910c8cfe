"""One policy's eval samples counted per task, and the numbers eval reports from them.

Per task: how many samples were judged and how many passed (infra errors are left out, never scored 0).
From those: pass@1 and pass@k (unbiased, `passk.py`) with bootstrap intervals over tasks
(`bootstrap.py`), and, between two policies on the same tasks, the paired difference of pass@1.
What rides along: output tokens, tool use and passes by task size (tool environments), and judge-verifier
agreement (an LLM judge beside the verifier).
"""

from __future__ import annotations

from .bootstrap import bootstrap_mean, paired_difference
from .passk import pass_at_k


class PassTally:
    def __init__(self, task_ids: list[str]):
        self.task_ids = task_ids
        self.passed = {t: 0 for t in task_ids}
        self.judged = {t: 0 for t in task_ids}  # samples with a verdict
        self.tokens_out, self.infra_errors = 0, 0
        self.request_errors = 0  # samples whose request failed (no answer to verify): never scored 0
        self.by_size, self.agreement = BySize(), Agreement()

    def add(self, task, trajectory, verdict) -> None:
        if verdict.infra_error is not None:
            self.infra_errors += 1
            return
        self.judged[task.id] += 1
        self.passed[task.id] += verdict.passed
        self.tokens_out += sum(u.tokens_out for u in trajectory.usage)
        self.by_size.add(task, trajectory, verdict.passed)
        self.agreement.add(verdict.details)

    def row(self, k: int, tools: bool) -> dict:
        """pass@1 and pass@k with their intervals, the per-task counts, and what rides along. pass@k is
        None where no task kept k judged samples. Raises ValueError when no sample was judged at all."""
        counts = {t: (self.judged[t], self.passed[t]) for t in self.task_ids}
        if not any(n for n, _ in counts.values()):
            raise ValueError(
                f"no sample could be scored ({self.request_errors} requests failed, "
                f"{self.infra_errors} verifier infra errors)"
            )
        pass_1 = bootstrap_mean(list(per_task_pass(counts, 1).values()), bounds=(0.0, 1.0))
        full = per_task_pass(counts, k)
        pass_k = bootstrap_mean(list(full.values()), bounds=(0.0, 1.0)) if full else None
        return {
            "pass@1": pass_1.value,
            "pass@1_ci": pass_1.as_list(),
            f"pass@{k}": pass_k.value if pass_k else None,
            f"pass@{k}_ci": pass_k.as_list() if pass_k else None,
            "infra_errors": self.infra_errors,
            "request_errors": self.request_errors,
            "tasks": len(self.task_ids),
            "tasks_scored": sum(1 for n, _ in counts.values() if n),  # pass@1 is over these
            # pass@k is over these: a task left with fewer than k judged samples has no unbiased pass@k, and
            # the tasks that keep k are those its verifier judged, not a random share: said, not hidden.
            "tasks_scored_k": len(full),
            "samples_per_task": k,
            "tokens_out": self.tokens_out,
            "per_task": {t: list(c) for t, c in counts.items()},
            **(self.by_size.summary() if tools else {}),
            **({"judge_agreement": self.agreement.summary()} if self.agreement.seen else {}),
        }


def unscored(row: dict) -> str:
    """What a row's pass@k leaves out: samples whose request failed or whose verifier could not judge, the
    tasks left with no scored sample, and those left with fewer than k ("" where nothing was left out)."""
    requests, infra = row.get("request_errors", 0), row.get("infra_errors", 0)
    if not requests and not infra:
        return ""
    parts = [f"{requests} failed requests"] * bool(requests) + [f"{infra} infra errors"] * bool(infra)
    scored = row.get("tasks_scored", row["tasks"])
    missing = row["tasks"] - scored
    return ", ".join(parts) + (f"; {missing} tasks unscored" if missing else "") + short_of_k(row, scored)


def short_of_k(row: dict, scored: int) -> str:
    """Where pass@k is over fewer tasks than pass@1 (some kept fewer than k judged samples): over how many.
    Those tasks are the ones the verifier and the API happened to serve, so the reader must know."""
    k, over = row.get("samples_per_task", 1), row.get("tasks_scored_k", scored)  # older results lack the key
    return f"; pass@{k} over {over} of {row['tasks']} tasks" if k > 1 and over < scored else ""


def per_task_pass(counts: dict[str, tuple[int, int]], k: int) -> dict[str, float]:
    """Each task's unbiased pass@k, over the tasks that kept at least k judged samples."""
    return {t: pass_at_k(n, c, k) for t, (n, c) in counts.items() if n >= k}


def compare(a: dict, b: dict) -> dict | None:
    """pass@1 of policy row `a` minus that of row `b` (eval results with `per_task`), paired over the tasks
    both scored (`tasks`, of the `tasks_either` one of them scored); None where they scored none in common
    (failed requests, infra errors: there is no paired difference to measure)."""
    pass_a, pass_b = per_task_pass(a["per_task"], 1), per_task_pass(b["per_task"], 1)
    if not pass_a.keys() & pass_b.keys():
        return None
    diff = paired_difference(pass_a, pass_b)
    low, high = diff.as_list()
    return {
        "diff": round(diff.value, 4),
        "ci": [low, high],
        "within_noise": low <= 0.0 <= high,  # of the interval as written: a reader derives it from `ci`
        "tasks": len(pass_a.keys() & pass_b.keys()),
        "tasks_either": len(pass_a.keys() | pass_b.keys()),
    }


def comparison_note(comparison: dict) -> str:
    """ "within noise", and where the two rows did not score the same tasks (failed requests, infra errors),
    over how many the difference is: over fewer than the rows' own pass@1, which it may seem to contradict."""
    parts = ["within noise"] if comparison["within_noise"] else []
    shared, either = comparison.get("tasks"), comparison.get("tasks_either")  # older results lack them
    if shared is not None and either is not None and shared < either:
        parts.append(f"over the {shared} of {either} tasks both scored")
    return "; ".join(parts)


class Agreement:
    """Judge vs verifier on the samples where both gave an opinion (see envs/judge.py), and the samples
    where the judge failed (`use = "compare"`: the verifier decided them; a judge that never answered had
    looked like no judge at all)."""

    def __init__(self):
        self.samples, self.agree, self.judge_only, self.verifier_only = 0, 0, 0, 0
        self.judge_errors, self.first_error = 0, None

    @property
    def seen(self) -> bool:
        return bool(self.samples or self.judge_errors)

    def add(self, details: dict) -> None:
        if error := details.get("judge_error"):
            self.judge_errors += 1
            self.first_error = self.first_error or str(error)
        judge, verifier = details.get("judge_passed"), details.get("verifier_passed")
        if judge is None or verifier is None:
            return
        self.samples += 1
        self.agree += judge == verifier
        self.judge_only += judge and not verifier
        self.verifier_only += verifier and not judge

    def summary(self) -> dict:
        return {
            "samples": self.samples,
            "agreement": round(self.agree / self.samples, 4) if self.samples else None,
            "judge_pass_verifier_fail": self.judge_only,
            "judge_fail_verifier_pass": self.verifier_only,
            "judge_errors": self.judge_errors,
            **({"first_judge_error": self.first_error[:300]} if self.first_error else {}),
        }


class BySize:
    """Per task size (`meta["size"]`, where tasks have one): the share of samples that called a tool
    (did the student learn *when* to use one, not only how) and the share that passed."""

    def __init__(self):
        self.samples: dict[str, list[tuple[bool, bool]]] = {}

    def add(self, task, trajectory, passed: bool) -> None:
        used = any(m.tool_calls for m in trajectory.messages if m.role == "assistant")
        self.samples.setdefault(task.meta.get("size", "all"), []).append((used, passed))

    def summary(self) -> dict:
        def share(values) -> float:
            return round(sum(values) / len(values), 4)

        sizes = sorted(self.samples.items())
        return {
            "tool_use": {size: share([used for used, _ in s]) for size, s in sizes},
            "passed_by_size": {size: share([passed for _, passed in s]) for size, s in sizes},
        }
