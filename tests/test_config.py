"""The recipe: typed sections, errors that name the key, `--set` overrides, and the CLI's one-line errors."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from warmstart import cli
from warmstart.config import FINGERPRINT, PolicySpec, Recipe, load_recipe, parse_override, recipe_toml, with_section
from warmstart.errors import WarmstartError
from warmstart.types import Message, Provenance, Trajectory

WARMSTART = Path(sys.executable).with_name("warmstart")  # the console script of the venv running the tests


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the recipe model -----------------------------------------------------------------------------


def test_defaults_validate_and_agree():
    assert load_recipe(None) == Recipe() == Recipe.model_validate({})
    assert str(Recipe().generate.teacher) == "reference" and Recipe().env.name == "arithmetic"


@pytest.mark.parametrize("section", [*Recipe.model_fields, "sft.tiny"])
def test_unknown_key_in_any_section_names_the_full_key(tmp_path, section):
    head, _, sub = section.partition(".")
    table = f"[{head}]\n" + (f"[{head}.{sub}]\n" if sub else "") + "bogus_key = 1\n"
    recipe = write(tmp_path / "r.toml", table)
    with pytest.raises(WarmstartError) as info:
        load_recipe(recipe)
    assert str(info.value) == f"{recipe}: unknown key {section}.bogus_key"


def test_unknown_section_and_misspelled_key_are_named():
    with pytest.raises(WarmstartError, match=r"^recipe: unknown key sftt$"):
        load_recipe(None, ["sftt.lr=1"])
    with pytest.raises(WarmstartError, match=r"^recipe: unknown key sft\.lrr$"):
        load_recipe(None, ["sft.lrr=0.1"])


@pytest.mark.parametrize(
    "key, toml_value",
    [
        ("run.seed", '"zero"'),
        ("env.name", '"chess"'),
        ("tasks.train", "0"),  # out of range is a wrong value too
        ("generate.concurrency", '"many"'),
        ("curate.dedup", '"maybe"'),
        ("sft.lr", "[1, 2]"),
        ("sft.tiny.hidden_size", '"big"'),
        ("eval.top_p", "1.5"),
        ("eval.policies", '"student"'),
        ("eval.policies", "{}"),  # no row to evaluate
        ("eval.policies", '{" " = "reference"}'),  # a row with no name
        # values of another TOML type are not converted (lax validation took each of these)
        ("sft.lr", "true"),
        ("tasks.train", "true"),
        ("eval.k", "true"),
        ("curate.dedup", '"yes"'),
        ("curate.dedup", "1"),
        ("run.seed", '"7"'),
        ("generate.temperature", "inf"),
        ("sft.lr", "nan"),
    ],
)
def test_wrong_type_names_the_key(tmp_path, key, toml_value):
    *tables, name = key.split(".")
    recipe = write(tmp_path / "r.toml", f"[{'.'.join(tables)}]\n{name} = {toml_value}\n")
    with pytest.raises(WarmstartError, match=f"^{re.escape(str(recipe))}: {re.escape(key)}: "):
        load_recipe(recipe)


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(WarmstartError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(WarmstartError, match="not valid TOML"):
        load_recipe(write(tmp_path / "bad.toml", "[run\nseed = 1\n"))
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[run]\ndir = "runs/caf\xe9"\n')
    with pytest.raises(WarmstartError, match=re.escape(f"{latin1}: not UTF-8 text (byte 21), so not TOML")):
        load_recipe(latin1)


TUPLE_KEYS = {  # every key whose value is a tuple, with a TOML array for it
    "curate.teacher_pass_rate": "[0.2, 0.8]",
    "curate.student_pass_rate": "[0, 0.75]",
    "eval.compare": '[["student", "teacher"]]',
}


def tuple_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += tuple_keys(annotation, f"{prefix}{name}.")
        elif "tuple" in repr(annotation):
            keys.append(prefix + name)
    return keys


def test_every_tuple_key_takes_a_toml_array_under_strict_validation():
    # TOML has no tuples: a tuple-typed key that took no array would refuse every recipe that sets it
    # (eval.compare did, and `warmstart demo` with it).
    assert sorted(tuple_keys(Recipe)) == sorted(TUPLE_KEYS)
    recipe = load_recipe(None, [f"{key}={value}" for key, value in TUPLE_KEYS.items()])
    assert recipe.eval.compare == [("student", "teacher")]
    assert with_section(recipe, "eval", compare=[["a", "b"]]).eval.compare == [("a", "b")]


def test_a_pass_rate_range_is_a_toml_array_of_two_numbers():
    recipe = load_recipe(None, ["curate.teacher_pass_rate=[0.2, 0.8]", "curate.student_pass_rate=[0, 0.75]"])
    assert recipe.curate.teacher_pass_rate == (0.2, 0.8) and recipe.curate.student_pass_rate == (0.0, 0.75)
    with pytest.raises(WarmstartError, match=r"curate.teacher_pass_rate.0: Input should be a valid number"):
        load_recipe(None, ["curate.teacher_pass_rate=[true, 0.8]"])


def test_an_unreadable_recipe_is_one_error(tmp_path, monkeypatch):
    recipe = write(tmp_path / "r.toml", "[run]\nseed = 1\n")

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refused)  # as a file of another user's reads (the tests run as root)
    with pytest.raises(WarmstartError, match=re.escape(f"{recipe}: cannot read the recipe (Permission denied)")):
        load_recipe(recipe)


# --- --set overrides ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("sft.lr=1e-3", ["sft", "lr"], 1e-3),
        ("run.seed=7", ["run", "seed"], 7),
        ("curate.dedup=false", ["curate", "dedup"], False),
        ("env.options.digits=[1, 2, 3]", ["env", "options", "digits"], [1, 2, 3]),
        ('generate.output="042"', ["generate", "output"], "042"),
        ("generate.teacher=reference", ["generate", "teacher"], "reference"),  # a bare word is a string
        ("generate.teacher=hf:/models/x", ["generate", "teacher"], "hf:/models/x"),
        ("eval.policies.api=openai:m@http://h/v1?a=b", ["eval", "policies", "api"], "openai:m@http://h/v1?a=b"),
    ],
)
def test_parse_override(text, path, value):
    assert parse_override(text) == (path, value)


def test_overrides_apply_on_top_of_the_file_and_create_nested_keys(tmp_path):
    recipe = write(tmp_path / "r.toml", "[sft]\nlr = 0.5\nsteps = 10\n")
    loaded = load_recipe(
        recipe, ["sft.lr=1e-4", "env.options.digits=[3]", "sft.tiny.num_layers=2", "eval.policies.big=hf:/m"]
    )
    assert loaded.sft.lr == 1e-4 and loaded.sft.steps == 10  # untouched keys keep the file's value
    assert loaded.env.options == {"digits": [3]}
    assert loaded.sft.tiny.num_layers == 2
    assert str(loaded.eval.policies["big"]) == "hf:/m"


def test_bad_overrides_are_errors(tmp_path):
    with pytest.raises(WarmstartError, match="expected stage.key=value"):
        load_recipe(None, ["sft.lr"])
    with pytest.raises(WarmstartError, match=r"^recipe: sft\.steps: "):
        load_recipe(None, ["sft.steps=many"])
    with pytest.raises(WarmstartError, match="lr is not a section"):
        load_recipe(write(tmp_path / "r.toml", "[sft]\nlr = 0.5\n"), ["sft.lr.x=1"])


def test_overrides_do_not_leak_into_the_base_dict():
    # The CLI's demo passes its embedded recipe as `base`; loading twice must not carry overrides over.
    base = {"run": {"seed": 1}, "env": {"options": {"digits": [1]}}}
    load_recipe(None, ["run.seed=5", "env.options.digits=[2]"], base=base)
    assert base == {"run": {"seed": 1}, "env": {"options": {"digits": [1]}}}


# --- the resolved recipe as TOML ----------------------------------------------------------------


def reload(recipe: Recipe) -> Recipe:
    return Recipe.model_validate(tomllib.loads(recipe_toml(recipe)))


def test_recipe_toml_round_trips():
    assert reload(Recipe()) == Recipe()
    custom = load_recipe(
        None,
        [
            'run.dir="runs/with \\"quotes\\" and \\\\ backslash"',
            "run.seed=-3",
            "tasks.train_file=/data/t.jsonl",
            "env.options.ops=['+', '*']",
            "env.options.teacher_error_rate=0.0",
            "sft.lr=1e-10",
            "curate.require_passed=false",
            "generate.temperature=0.0",
            "eval.policies.api=openai:m@http://h/v1",
        ],
    )
    assert reload(custom) == custom
    assert "eval_file" not in recipe_toml(custom)  # None means "not set": left out, not written as ""


def test_recipe_toml_round_trips_policy_names_that_are_not_bare_keys():
    # Policy names are the user's; "qwen2.5" must not come back as a nested table {"qwen2": {"5": ...}}.
    custom = load_recipe(None, ["eval.policies.x=hf:/m"])
    custom = with_section(
        custom, "eval", policies={"qwen2.5-7b": "hf:/models/qwen", "student, answer only": "run:student-answer-only"}
    )
    assert reload(custom) == custom


# --- the CLI: one line on stderr, exit 1, nothing written ------------------------------------------

CLI_RECIPE = """
[run]
dir = "{dir}"
[tasks]
train = 4
eval = 4
[generate]
teacher = "reference"
concurrency = 1
"""


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli_in_fork(args: list[str], tmp_path: Path) -> CliResult:
    """`warmstart ARGS` in a forked child: a real process with its own exit status and stderr, without
    paying the torch + transformers import of a fresh interpreter again (~10 s on a busy 2-core box)."""
    out_file, err_file = tmp_path / "cli.out", tmp_path / "cli.err"
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 70
        try:
            for fd, path in ((1, out_file), (2, err_file)):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(target, fd)
                os.close(target)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
            logging.root.handlers.clear()  # as in a fresh interpreter, so the CLI's own logging setup applies
            sys.argv = ["warmstart", *args]
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return CliResult(os.waitstatus_to_exitcode(status), out_file.read_text(), err_file.read_text())


@pytest.fixture
def run_dir_with_records(tmp_path) -> tuple[Path, Path]:
    """A recipe and an existing trajectories file: one record plus a torn tail that any appender would cut."""
    recipe = write(tmp_path / "recipe.toml", CLI_RECIPE.format(dir=tmp_path / "run"))
    out = tmp_path / "run" / "trajectories" / "teacher.jsonl"
    out.parent.mkdir(parents=True)
    record = Trajectory(
        task_id="arithmetic/not-a-task",
        policy="reference",
        messages=[Message(role="assistant", content="Answer: 3")],
        provenance=Provenance(provider="reference", model="m", created=0.0),
    )
    out.write_text(record.model_dump_json() + "\n" + '{"task_id": "torn')
    return recipe, out


def assert_one_error_line(result: CliResult, *fragments: str) -> None:
    assert result.code == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "recipe_text, args, fragments",
    [
        ("[sft]\nlrr = 1\n", [], ["unknown key sft.lrr"]),
        ('[sft]\nsteps = "many"\n', [], ["sft.steps", "integer"]),
        (
            "",
            ["--set", "generate.teacher=openai:gpt-4o", "--set", "api.key_env=WARMSTART_NO_SUCH_KEY"],
            ["generate.teacher", "WARMSTART_NO_SUCH_KEY is not set"],
        ),
        (
            "",
            ["--set", "generate.teacher=openai:m@http://127.0.0.1:9/v1"],
            ["generate.teacher", "cannot reach http://127.0.0.1:9/v1"],
        ),
        ("", ["--set", "generate.teacher=gemini:pro"], ["generate.teacher", "unknown policy 'gemini:pro'"]),
        ("", ["--set", "generate.teacher=hf:/nonexistent"], ["generate.teacher", "/nonexistent"]),
        ('[env.options]\nopss = ["+"]\n', [], ["recipe.toml: unknown key env.options.opss"]),  # the file named
        ("", ["--set", "generate.teacher"], ["expected stage.key=value"]),
        ("[run\n", [], ["not valid TOML"]),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "openai-no-key",
        "openai-unreachable",
        "unknown-backend",
        "hf-missing",
        "env-option-typo",
        "set-without-equals",
        "bad-toml",
    ],
)
def test_cli_errors_are_one_line_and_write_no_records(run_dir_with_records, tmp_path, recipe_text, args, fragments):
    recipe, out = run_dir_with_records
    recipe.write_text(recipe.read_text() + recipe_text)  # appended: "[run\n" breaks the whole file
    before = out.read_bytes()
    assert_one_error_line(run_cli_in_fork(["generate", str(recipe), *args], tmp_path), *fragments)
    assert out.read_bytes() == before


def test_cli_missing_recipe_file(tmp_path):
    missing = tmp_path / "missing.toml"
    assert_one_error_line(run_cli_in_fork(["generate", str(missing)], tmp_path), str(missing), "not found")


def test_cli_success_appends_records(run_dir_with_records, tmp_path):
    # The control for the tests above: the same harness does see a stage that writes.
    recipe, out = run_dir_with_records
    result = run_cli_in_fork(["generate", str(recipe)], tmp_path)
    assert result.code == 0, result
    assert "error" not in result.stderr
    assert len(out.read_text().splitlines()) == 1 + 4  # the existing record kept, the torn tail cut


def test_console_script_in_a_fresh_interpreter(run_dir_with_records):
    # One run through the installed entry point: nothing else (import warnings, logs) lands on stderr.
    recipe, out = run_dir_with_records
    recipe.write_text(recipe.read_text() + "[sft]\nlrr = 1\n")
    before = out.read_bytes()
    result = subprocess.run([str(WARMSTART), "generate", str(recipe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: {recipe}: unknown key sft.lrr"]
    assert out.read_bytes() == before


# --- policy strings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, name, base_url",
    [
        ("reference", "reference", "", None),
        ("teacher", "own", "teacher", None),
        ("base", "own", "base", None),
        ("run:student-grpo", "run", "student-grpo", None),
        ("hf:/models/qwen", "hf", "/models/qwen", None),
        ("hf:model.Q4_1.gguf", "hf", "model.Q4_1.gguf", None),
        ("vllm:/models/big", "vllm", "/models/big", None),
        ("openai:gpt-4.1", "openai", "gpt-4.1", None),
        ("openai:tiny@http://127.0.0.1:8000/v1/", "openai", "tiny", "http://127.0.0.1:8000/v1"),
        ("openai:org/model@v2", "openai", "org/model@v2", None),  # an @ not followed by a URL is part of the name
        (
            "anthropic:claude-sonnet-4-5@https://proxy.example/",
            "anthropic",
            "claude-sonnet-4-5",
            "https://proxy.example",
        ),
    ],
)
def test_policy_strings_parse_once_and_write_back_as_written(text, kind, name, base_url):
    spec = PolicySpec.parse(text)
    assert (spec.kind, spec.name, spec.base_url) == (kind, name, base_url)
    assert str(spec) == text
    loaded = load_recipe(None, [f"generate.teacher='{text}'"])
    assert loaded.generate.teacher == spec and loaded.model_dump()["generate"]["teacher"] == text
    assert reload(loaded) == loaded


@pytest.mark.parametrize("text", ["gemini:pro", "hf:", "openai:", "", "students", "/a/bare/path"])
def test_an_unknown_policy_string_is_refused_at_load_naming_the_key(text):
    with pytest.raises(
        WarmstartError, match=f"recipe: eval.policies.x: unknown policy {text!r}; expected reference, hf:PATH"
    ):
        load_recipe(None, [f"eval.policies.x='{text}'"])


def test_a_model_to_start_from_may_be_a_bare_directory():
    spec = load_recipe(None, ["grpo.init=/models/my-student"]).grpo.init
    assert (spec.kind, spec.name, str(spec)) == ("hf", "/models/my-student", "/models/my-student")
    assert load_recipe(None, ["grpo.init=base"]).grpo.init == PolicySpec.parse("base")


def test_with_section_validates_its_changes_like_a_recipe_file():
    changed = with_section(Recipe(), "sft", teacher="run:kd-teacher", steps=3)
    assert changed.sft.teacher == PolicySpec("run", "kd-teacher", text="run:kd-teacher") and changed.sft.steps == 3
    with pytest.raises(WarmstartError, match="sft.steps"):
        with_section(Recipe(), "sft", steps=0)
    with pytest.raises(WarmstartError, match="unknown policy 'nope'"):
        with_section(Recipe(), "generate", teacher="nope")


# --- names of files and directories inside the run directory ---------------------------------------

RUN_NAME_KEYS = ["generate.output", "curate.input", "curate.output", "sft.data", "sft.output", "grpo.output"]
MODEL_NAME_KEYS = ["sft.output", "grpo.output"]


def recipe_with(key: str, value) -> Recipe:
    section, name = key.split(".")
    return load_recipe(None, base={section: {name: value}})


@pytest.mark.parametrize("key", RUN_NAME_KEYS)
@pytest.mark.parametrize(
    "value, why",
    [
        ("", "must be a name"),
        ("..", "starts with a dot"),
        (".", "starts with a dot"),
        (".hidden", "starts with a dot"),
        ("../../escaped", "is a path"),
        ("a/b", "is a path"),
        ("/tmp/abs", "is a path"),
        ("a\\b", "is a path"),
        ("a\x00b", "control character"),
        ("two\nlines", "control character"),
        (" padded", "space"),
        ("x" * 101, "101 bytes long"),
    ],
    ids=[
        "empty",
        "dotdot",
        "dot",
        "hidden",
        "escape",
        "sub",
        "absolute",
        "backslash",
        "nul",
        "newline",
        "space",
        "long",
    ],
)
def test_a_name_inside_the_run_directory_must_be_plain(key, value, why):
    with pytest.raises(WarmstartError) as info:
        recipe_with(key, value)
    message = str(info.value)
    assert message.startswith(f"recipe: {key}: ") and why in message, message
    assert "\n" not in message


@pytest.mark.parametrize("key", RUN_NAME_KEYS)
@pytest.mark.parametrize("value", ["student", "student-1of4", "kd_train.half", "v1.5", "étudiant", "a b", "x" * 100])
def test_plain_names_are_accepted(key, value):
    section, name = key.split(".")
    assert getattr(getattr(recipe_with(key, value), section), name) == value


def test_a_bad_name_from_set_is_refused_too():
    with pytest.raises(WarmstartError, match=r"^recipe: sft\.output: '\.\.' starts with a dot"):
        load_recipe(None, ["sft.output='..'"])


@pytest.mark.parametrize("key", MODEL_NAME_KEYS)
@pytest.mark.parametrize("value, why", [("base", "untrained student"), ("student.tmp", "temporary directory")])
def test_a_trained_model_may_not_take_the_base_or_a_temporary_name(key, value, why):
    with pytest.raises(WarmstartError, match=f"^recipe: {re.escape(key)}: .*{why}"):
        recipe_with(key, value)
    assert recipe_with("generate.output", value).generate.output == value  # a file name elsewhere: no clash


def test_a_run_policy_names_a_model_of_the_run_not_a_path():
    with pytest.raises(WarmstartError, match=r"^recipe: eval\.policies\.x: run:NAME .*'\.\./x' is a path"):
        load_recipe(None, ["eval.policies.x='run:../x'"])
    assert load_recipe(None, ["eval.policies.x='run:base'"]).eval.policies["x"] == PolicySpec(
        "run", "base", text="run:base"
    )


@pytest.mark.parametrize(
    "overrides, why",
    [
        (["grpo.overlong_buffer=1000", "grpo.max_new_tokens=24"], "overlong_buffer = 1000 must be less than max_new"),
        (["grpo.teacher_tokens_budget=100"], "teacher_tokens_budget counts a teacher's scored tokens"),
        (["grpo.reward_weight=0"], "reward_weight weighs the reward against a teacher's distillation"),
    ],
)
def test_grpo_settings_that_would_do_nothing_are_refused(overrides, why):
    with pytest.raises(WarmstartError, match=re.escape(why)):
        load_recipe(None, overrides)
    with_teacher = load_recipe(None, ["grpo.teacher='run:teacher-model'", "grpo.reward_weight=0"])
    assert with_teacher.grpo.reward_weight == 0.0


def test_a_fingerprint_names_api_policies_by_backend_and_model_not_by_their_url():
    """Every stage's fingerprint dumps its sections with FINGERPRINT: the same server on another port (a
    `warmstart serve --port 0`, a restarted vLLM) is the same model, in every policy field of every
    section, while the recipe written back keeps each URL."""
    url = "http://127.0.0.1:{port}/v1"
    policies = {
        "generate.teacher": "openai:t@{url}",
        "env.judge.policy": "anthropic:j@{url}",
        "curate.student": "openai:s@{url}",
        "sft.teacher": "openai:k@{url}",
        "grpo.teacher": "openai:g@{url}",
        "eval.policies.api": "openai:e@{url}",
    }

    def recipe(port: int) -> Recipe:
        where = url.format(port=port)
        return load_recipe(None, [f"{key}={value.format(url=where)}" for key, value in policies.items()])

    first, second = recipe(8001), recipe(9002)
    for section in ("generate", "env", "curate", "sft", "grpo", "eval"):
        dumped = getattr(first, section).model_dump(context=FINGERPRINT)
        assert dumped == getattr(second, section).model_dump(context=FINGERPRINT), section
        assert "127.0.0.1" not in repr(dumped), section
    assert first.generate.model_dump()["teacher"] == "openai:t@http://127.0.0.1:8001/v1"
    assert "127.0.0.1:8001" in recipe_toml(first)


def test_a_recipe_written_with_a_byte_order_mark_is_read(tmp_path):
    """TOML is UTF-8 and tomllib refuses a BOM ("Invalid statement at line 1, column 1"), which Windows
    editors write: the error pointed at nothing the user could see."""
    path = tmp_path / "recipe.toml"
    path.write_bytes(b"\xef\xbb\xbf[sft]\nsteps = 7\n")
    assert load_recipe(path).sft.steps == 7


@pytest.mark.parametrize("text", ["=3", "sft..lr=3", ".lr=3", "sft.=3", " =3"])
def test_an_override_with_an_empty_part_in_its_key_is_one_error(text):
    with pytest.raises(WarmstartError, match="no empty part in the key"):
        load_recipe(None, [text])


def test_env_verify_timeout_is_written_back_but_is_no_part_of_a_fingerprint():
    """It only stops a verifier that hangs: a stage rerun with another bound is the same stage."""
    short, default = load_recipe(None, ["env.verify_timeout=5"]), load_recipe(None, [])
    assert short.env.model_dump(context=FINGERPRINT) == default.env.model_dump(context=FINGERPRINT)
    assert "verify_timeout" not in default.env.model_dump(context=FINGERPRINT)
    assert default.env.verify_timeout == 300.0
    assert "verify_timeout = 5.0" in recipe_toml(short)
    with pytest.raises(WarmstartError, match="verify_timeout"):
        load_recipe(None, ["env.verify_timeout=0"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.dir=''", "run.dir: is blank: name a file or directory"),  # had written the run into the cwd
        ("run.dir='  '", "run.dir: is blank: name a file or directory"),
        ("tasks.train_file=''", "tasks.train_file: is blank: name a file or directory"),
        ("tasks.eval_file=''", "tasks.eval_file: is blank: name a file or directory"),
        ("api.prices=''", "api.prices: is blank: name a file or directory"),
        ("curate.decontaminate_against=['b.jsonl', '']", "curate.decontaminate_against.1: is blank"),
        ("run.seed=18446744073709551616", "run.seed: Input should be less than 9223372036854775808"),  # sft had crashed
        ("run.seed=-9223372036854775809", "run.seed: Input should be greater than or equal to -9223372036854775808"),
    ],
)
def test_a_blank_path_or_a_seed_torch_cannot_take_is_one_error(override, message):
    with pytest.raises(WarmstartError, match=f"^recipe: {re.escape(message)}"):
        load_recipe(None, [override])


def test_a_gradings_wall_clock_past_the_verifiers_timeout_is_refused_as_the_recipe_loads():
    """Every grading that ran to its own limit would be killed as an infra error (and an swe grading killed so
    had left its copy of the repository behind)."""
    with pytest.raises(WarmstartError, match=r"env.options.wall_s = 400 s is not below env.verify_timeout = 300 s"):
        load_recipe(None, ["env.name='swe'", "env.options={wall_s=400}"])
    assert load_recipe(None, ["env.name='swe'", "env.options={wall_s=400}", "env.verify_timeout=500"])
