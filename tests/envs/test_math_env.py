"""The `math` environment: every bundled problem's reference solution and equivalent answer forms pass and
every near miss fails, through the real math-verify; the final answer is found in a box, an `Answer:` line
or the last number; a format reward; math-verify's timeouts and failures are infra errors, in the main
thread and off it; and `generate` + `curate` with an OpenAI-API teacher on a parquet file of problems."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import math_verify
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import small_recipe
from warmstart.envs import BUILT_IN
from warmstart.envs.math import SAMPLE, Extracted, MathEnv, MathOptions, extract_answer, gold_answer
from warmstart.envs.task_data import DataSource, load_rows
from warmstart.errors import WarmstartError
from warmstart.runs.jsonl import read_records
from warmstart.stages import curate, generate
from warmstart.types import Message, Provenance, Task, Trajectory

SAMPLE_ROWS = [json.loads(line) for line in SAMPLE.read_text().splitlines()]


def sample_tasks(env: MathEnv) -> dict[str, Task]:
    return {task.id: task for split in ("train", "eval") for task in env.tasks(split, split_size(env, split), 0)}


def split_size(env: MathEnv, split: str) -> int:
    return sum(row.split == split for row in load_rows(env.source, "test"))


ENV = MathEnv()
TASKS = sample_tasks(ENV)


def task_of(row: dict) -> Task:
    return TASKS[f"math/{row['id']}"]


def reply(task: Task, text: str) -> Trajectory:
    return Trajectory(
        task_id=task.id,
        policy="test",
        messages=[*task.prompt, Message(role="assistant", content=text)],
        provenance=Provenance(provider="test", model="m", created=0.0),
    )


def forms(key: str) -> list[tuple[str, str]]:
    return [(row["id"], form) for row in SAMPLE_ROWS for form in row[key]]


def test_the_sample_has_sixty_problems_in_both_styles_each_with_its_tests():
    assert len(SAMPLE_ROWS) == 60 and len(TASKS) == 60
    assert {row["style"] for row in SAMPLE_ROWS} == {"gsm8k", "math"}
    assert all(len(row["equivalent"]) >= 2 and len(row["near_miss"]) >= 3 for row in SAMPLE_ROWS)
    assert {t.split for t in TASKS.values()} == {"train", "eval"}


@pytest.mark.parametrize("row", SAMPLE_ROWS, ids=lambda row: row["id"])
def test_every_reference_solution_passes(row):
    task = task_of(row)
    trajectory = ENV.reference(task, random.Random(0))
    verdict = ENV.verify(task, trajectory)
    assert verdict.passed and verdict.reward == 1.0, verdict
    assert trajectory.messages[-1].reasoning == row["solution"]


@pytest.mark.parametrize("row_id, form", forms("equivalent"))
def test_every_equivalent_form_passes(row_id, form):
    task = TASKS[f"math/{row_id}"]
    verdict = ENV.verify(task, reply(task, f"Working it out... so the result is $\\boxed{{{form}}}$."))
    assert verdict.passed, verdict


@pytest.mark.parametrize("row_id, form", forms("near_miss"))
def test_every_near_miss_fails(row_id, form):
    task = TASKS[f"math/{row_id}"]
    verdict = ENV.verify(task, reply(task, f"Working it out... so the result is $\\boxed{{{form}}}$."))
    assert not verdict.passed and verdict.infra_error is None and verdict.details["reason"], verdict


@pytest.mark.parametrize(
    "text, answer, source",
    [
        ("First \\boxed{3}, then on reflection \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", "boxed"),
        ("The set is \\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}", "boxed"),  # nested braces balanced
        ("\\fbox{7} is it", "7", "boxed"),
        ("Steps: 3 + 4 = 7\nAnswer: 7", "7", "answer line"),
        ("**Final answer:** $12$ cm.", "12 cm", "answer line"),
        ("The answer is: \\(x^2\\)", "x^2", "answer line"),
        ("Answer: 3\nOn second thought, Answer: 5.", "5", "answer line"),
        ("Costs \\$2.50 each, and 1,024 of them", "1,024", "last number"),
        ("We get 3 and then 4/5 of it", "4/5", "last number"),
        ("an unclosed \\boxed{12 and then 9", "9", "last number"),
        ("the change is \u22125 degrees", "-5", "last number"),  # U+2212, the typeset minus
    ],
)
def test_the_final_answer_is_the_last_box_else_answer_line_else_last_number(text, answer, source):
    found = extract_answer(text, last_number_fallback=True)
    assert (found.text, found.source) == (answer, source)


def test_without_the_number_fallback_a_bare_number_is_no_answer():
    assert extract_answer("so it is 42", last_number_fallback=False) is None
    env = MathEnv(MathOptions(last_number_fallback=False))
    task = TASKS["math/g09"]
    verdict = env.verify(task, reply(task, "The difference is 16"))
    assert not verdict.passed and verdict.details["reason"] == "no final answer (no \\boxed{}, no 'Answer:' line)"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Half of 144 is 72.\n#### 72", "72"),
        ("So $x = 3$ and the area is $\\boxed{\\frac{9}{2}}$.", "\\frac{9}{2}"),
        ("  [1, 4)  ", "[1, 4)"),
    ],
)
def test_a_data_answer_gives_its_final_answer(text, expected):
    assert gold_answer(text) == expected


def test_a_typeset_minus_in_the_last_number_is_its_sign():
    task = Task(
        id="math/neg", env="math", prompt=[Message(role="user", content="q")], hidden={"answer": "-5"}, split="train"
    )
    assert ENV.verify(task, reply(task, "So the temperature fell to \u22125.")).passed


def test_a_numeric_data_answer_verifies_against_a_plain_decimal(tmp_path):
    # A JSON number read as str(2.5e-05): no reply was equal to "2.5e-05", so every right answer scored 0.
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "tiny", "problem": "What is 1/40000?", "answer": 2.5e-05}) + "\n")
    env = MathEnv(MathOptions(data=DataSource(path=str(path), id_field="id", eval_share=0.5)))
    (task,) = [t for split in ("train", "eval") for t in env.tasks(split, split_size(env, split), 0)]
    assert env.verify(task, reply(task, "\\boxed{0.000025}")).passed


def test_details_say_what_was_extracted_and_why_it_failed():
    task = TASKS["math/m04"]
    verdict = ENV.verify(task, reply(task, "Both conditions hold, so the domain is \\boxed{[1, 4]}."))
    assert verdict.details == {
        "extracted": "[1, 4]",
        "source": "boxed",
        "expected": "[1, 4)",
        "reason": "not equivalent to the expected answer",
    }
    assert ENV.verify(task, reply(task, "I do not know.")).details["reason"].startswith("no final answer")
    assert ENV.verify(task, reply(task, "")).details == {"reason": "no assistant reply"}


def test_format_weight_rewards_a_boxed_or_answer_line_answer_right_or_wrong():
    env = MathEnv(MathOptions(format_weight=0.2))
    task = TASKS["math/g16"]  # 150 seconds
    scored = {
        text: (v.reward, v.passed)
        for text in ("\\boxed{150}", "Answer: 150", "it takes 150", "\\boxed{140}", "it takes 140")
        for v in [env.verify(task, reply(task, text))]
    }
    assert scored == {
        "\\boxed{150}": (1.2, True),
        "Answer: 150": (1.2, True),
        "it takes 150": (1.0, True),
        "\\boxed{140}": (0.2, False),
        "it takes 140": (0.0, False),
    }


def test_an_answer_that_runs_math_verify_out_of_time_is_wrong_not_masked():
    """Masked as an infra error, a policy that writes such an answer when unsure left eval's pass@1 instead of
    scoring 0 (review 83: right on half the samples, towers on the rest, it was reported as pass@1 1.0)."""
    env = MathEnv(MathOptions(timeout_s=1))
    task = TASKS["math/m13"]
    verdict = env.verify(task, reply(task, "\\boxed{10^{10^{10}}}"))  # sympy would work on it for minutes
    assert (verdict.passed, verdict.infra_error) == (False, None), verdict
    assert verdict.details["reason"] == "math-verify could not compare it within timeout_s = 1 s"
    assert verdict.details["extracted"] == "10^{10^{10}}"


def test_an_expected_answer_that_runs_math_verify_out_of_time_is_an_infra_error():
    env = MathEnv(MathOptions(timeout_s=1))
    verdict = env.judge("10^{10^{10}}", Extracted("42", "boxed"))  # no reply could be judged against it
    assert verdict.infra_error and "math-verify" in verdict.infra_error and not verdict.passed


def test_a_math_verify_error_is_an_infra_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("sympy fell over")

    monkeypatch.setattr(math_verify, "verify", broken)
    task = TASKS["math/m13"]
    verdict = ENV.verify(task, reply(task, "\\boxed{42}"))
    assert verdict.infra_error == "math-verify failed: RuntimeError: sympy fell over" and verdict.reward == 0.0


def test_verification_off_the_main_thread_gives_the_same_verdicts():
    """math-verify's SIGALRM timeouts raise outside the main thread; the environment must still judge."""
    cases = [(task_of(row), form) for row in SAMPLE_ROWS[::6] for form in (row["equivalent"][0], row["near_miss"][0])]
    here = [ENV.verify(task, reply(task, f"\\boxed{{{form}}}")) for task, form in cases]
    with ThreadPoolExecutor(4) as pool:
        there = list(pool.map(lambda case: ENV.verify(case[0], reply(case[0], f"\\boxed{{{case[1]}}}")), cases))
    assert there == here and all(v.infra_error is None for v in there)


def test_a_stuck_check_off_the_main_thread_is_an_infra_error(monkeypatch):
    release = threading.Event()

    def stuck(*args, **kwargs):
        release.wait(30)  # what a runaway sympy computation looks like from outside
        return []

    monkeypatch.setattr(math_verify, "parse", stuck)
    env = MathEnv(MathOptions(timeout_s=1))
    task = TASKS["math/m13"]
    with ThreadPoolExecutor(1) as pool:
        verdict = pool.submit(env.verify, task, reply(task, "\\boxed{42}")).result(timeout=20)
    release.set()
    assert verdict.infra_error == "math-verify took more than 3 s"


def test_tasks_are_disjoint_reproducible_and_prompted_with_the_instruction():
    train, eval_ = ENV.tasks("train", 40, seed=3), ENV.tasks("eval", 5, seed=3)
    assert not {t.id for t in train} & {t.id for t in eval_}
    assert [t.id for t in ENV.tasks("train", 40, seed=3)] == [t.id for t in train]
    assert [t.id for t in ENV.tasks("train", 40, seed=4)] != [t.id for t in train]
    assert train[0].prompt[-1].content.endswith("\n\nPut your final answer in \\boxed{}.")
    assert "answer" in train[0].hidden and "solution" in train[0].hidden and train[0].env == "math"
    with pytest.raises(ValueError, match="only 53 train problems"):
        ENV.tasks("train", 54, seed=0)


def test_math_is_a_built_in_environment():
    assert BUILT_IN["math"] == (MathEnv, MathOptions)


def test_the_reference_teacher_needs_worked_solutions(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"problem": "What is 6 times 7?", "answer": "42"}) + "\n")
    env = MathEnv(MathOptions(data=DataSource(path=str(path), eval_share=0.5)))
    (task,) = [t for split in ("train", "eval") for t in env.tasks(split, split_size(env, split), 0)]
    with pytest.raises(WarmstartError, match="solution_field"):
        env.reference(task, random.Random(0))
    assert env.verify(task, reply(task, "6 * 7 = \\boxed{42}")).passed


# --- generate + curate with an OpenAI-API teacher on a parquet file of problems -------------------------

WRONG = {"g05", "m11"}  # the teacher gets these wrong: curate must drop them


class MathTeacher(ThreadingHTTPServer):
    """A loopback OpenAI-compatible server answering the sample's problems: the worked solution and a boxed
    answer (a near miss for the problems in WRONG), through the real openai SDK."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), TeacherHandler)
        self.asked: list[str] = []

    def answer_to(self, prompt: str) -> str:
        row = next(row for row in SAMPLE_ROWS if prompt.startswith(row["problem"]))
        self.asked.append(row["id"])
        final = row["near_miss"][0] if row["id"] in WRONG else row["equivalent"][0]
        return f"{row['solution']}\n\nAnswer: $\\boxed{{{final}}}$"


class TeacherHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_json(
            {"object": "list", "data": [{"id": "math-teacher", "object": "model", "created": 0, "owned_by": "t"}]}
        )

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        message = {"role": "assistant", "content": self.server.answer_to(prompt)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        usage = {"prompt_tokens": 50, "completion_tokens": 80, "total_tokens": 130}
        self.send_json(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }
        )

    def send_json(self, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def problems_parquet(path) -> None:
    """The sample as another dataset would hold it: `question`, and an `answer` in GSM8K's `#### N` form
    or MATH's boxed solution, so the final answer has to be found in it."""
    rows = [
        {
            "uid": row["id"],
            "question": row["problem"],
            "answer": f"{row['solution']}\n#### {row['answer']}"
            if row["style"] == "gsm8k"
            else f"{row['solution']} So the answer is $\\boxed{{{row['answer']}}}$.",
        }
        for row in SAMPLE_ROWS
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_generate_and_curate_with_an_api_teacher_on_a_parquet_file(tmp_path):
    problems_parquet(tmp_path / "problems.parquet")
    data = {"path": str(tmp_path / "problems.parquet"), "prompt_field": "question", "id_field": "uid"}
    env = MathEnv(MathOptions(data=DataSource(**data)))
    sizes = {split: split_size(env, split) for split in ("train", "eval")}
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."math-teacher"]\ninput = 1.0\noutput = 4.0\n')
    server = MathTeacher()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        recipe = small_recipe(
            tmp_path / "run",
            "env.name='math'",
            f"env.options={{data = {{path = '{data['path']}', prompt_field = 'question', id_field = 'uid'}}}}",
            f"generate.teacher='openai:math-teacher@http://127.0.0.1:{server.server_port}/v1'",
            f"api.prices='{prices}'",
            train=sizes["train"],
            eval_=sizes["eval"],
        )
        trajectories = read_records(generate.run(recipe), Trajectory)
        kept = read_records(curate.run(recipe), Trajectory)
    finally:
        server.shutdown()
        server.server_close()
    train_ids = {t.id.removeprefix("math/") for t in env.tasks("train", sizes["train"], 0)}
    assert sorted(server.asked) == sorted(train_ids)
    failed = {t.task_id.removeprefix("math/") for t in trajectories if not t.verdict.passed}
    assert failed == WRONG & train_ids and all(t.verdict.infra_error is None for t in trajectories)
    assert {t.task_id.removeprefix("math/") for t in kept} == train_ids - WRONG  # kept: exactly the verified


@pytest.mark.parametrize("answer", ["\\boxed{}", "$$", "She has 5 apples. #### ", "\\boxed{ }"])
def test_a_data_answer_with_no_final_answer_in_it_is_an_error(tmp_path, answer):
    """A field that holds text but no final answer once its box, `####` or `$` are read: every reply, the
    right one too, had scored 0 as "not parsable as maths", and GRPO trained against right answers."""
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "q0", "problem": "What is 2 + 3?", "answer": answer}) + "\n")
    env = MathEnv(MathOptions(data=DataSource(path=str(path), id_field="id", eval_share=0.5)))
    split = "eval" if split_size(env, "eval") else "train"
    with pytest.raises(WarmstartError, match=r"p.jsonl: row 'q0': field 'answer' holds no final answer"):
        env.tasks(split, 1, 0)


@pytest.mark.parametrize("answer", ["", "   ", "$$"])
def test_a_task_files_blank_answer_is_a_problem_of_that_task(answer):
    task = TASKS["math/m13"].model_copy(update={"hidden": {"answer": answer}})
    assert ENV.task_problem(task) == "hidden.answer is blank: no reply could pass"
    assert ENV.task_problem(TASKS["math/m13"]) is None
