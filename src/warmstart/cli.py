"""The `warmstart` command line. Every command is a thin shell over a stage's `run(recipe)`."""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.logging import RichHandler

from .config import PolicySpec, Recipe, load_recipe, with_section
from .demos.recipe import DEMO_RECIPE, KD_SFT
from .errors import WarmstartError, error_line, peer_failed
from .runs.tracking import check_installed

# Stages import torch and transformers (seconds); they are imported inside the commands, after the
# recipe is checked, so that a mistake in the recipe is reported at once.

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Distill a teacher into a student, then RL on verifiable rewards."
)

RecipeArg = typer.Argument(..., help="Recipe TOML file.", exists=False)
SetOption = typer.Option([], "--set", help="Override a recipe key: --set sft.lr=1e-3 (repeatable).")
# Keys `warmstart demo` sets itself, stage by stage (demos/pump.py, kd_ablation.py): an override would be
# taken by some stages and not others.
DEMO_NAMES = {
    "generate.output",
    "curate.input",
    "curate.output",
    "sft.data",
    "sft.output",
    "grpo.init",
    "grpo.output",
    "eval.policies",
}

# The eval row `run --rl` adds for the GRPO model (the demos' name for it too).
GRPO_ROW = "student + GRPO"

# Libraries that log a line per request at INFO ("HTTP Request: POST ..."): 20,000 lines for a real
# generate. Shown with -v; their warnings always are.
CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic")


@app.callback()
def options(verbose: bool = typer.Option(False, "-v", "--verbose", help="Also log every request.")):
    """Runs before any command: the logging every command shares."""
    _setup_logging(verbose)


def _setup_logging(verbose: bool) -> None:
    # Plain lines when stderr is not a terminal, so logs that go to files are not wrapped mid-message.
    handler = RichHandler(show_path=False, show_time=False) if sys.stderr.isatty() else logging.StreamHandler()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # Per-file load/save bars of transformers and the hub would drown the stage bars. Both read this when
    # first imported, which a stage that needs no model (generate from an API, curate) never does.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _run_stages(recipe: Recipe, stage_names: list[str]) -> None:
    def run_all() -> None:
        from . import stages
        from .envs import make_env
        from .runs.directory import recipe_when_worked

        make_env(recipe.env)  # an environment that cannot load (a plugin's import, its options) fails first
        if {"generate", "eval"} & set(stage_names):  # an unreachable [ray] cluster too, before anything is written
            from . import cluster

            cluster.connect(recipe)
        with recipe_when_worked(recipe):
            for name in stage_names:
                stages.runner(name)(recipe)

    _run_reporting_errors(run_all)


def _run_reporting_errors(action) -> None:
    """Run `action`; a WarmstartError (or a file-system error) is one `error:` line and exit status 1."""
    try:
        action()
    except (WarmstartError, OSError) as exc:
        _report(error_line(exc))
        raise typer.Exit(1) from None
    except RuntimeError as exc:
        if not _main_went_away(exc):
            raise
        raise typer.Exit(1) from None  # the main process stopped first and says why: its error line is the one


def _main_went_away(exc: RuntimeError) -> bool:
    """Under torchrun, a process other than the main one whose collective failed because the main process
    left the group (it met an error of its own, said on its one line, and abandoned the group)."""
    return os.environ.get("RANK", "0") != "0" and peer_failed(exc)


def _report(line: str) -> None:
    """An error line, said once: under torchrun every process meets the same error, the main one says it."""
    if os.environ.get("RANK", "0") == "0":
        typer.echo(line, err=True)


def _load(recipe_path: Path | None, overrides: list[str], base: dict | None = None) -> Recipe:
    try:
        if recipe_path is not None and recipe_path.is_dir():  # "not found" would send them looking for a file
            raise WarmstartError(f"{recipe_path}: a directory, not a recipe file (give the .toml file)")
        recipe = load_recipe(recipe_path, overrides, base)
        check_installed(recipe.log.to)  # a tracker asked for and missing: before any command works (or pays)
        from .envs import built_in_options  # here: the environments are not needed to start the CLI

        built_in_options(recipe.env, str(recipe_path) if recipe_path is not None else "recipe")  # names the file
        return recipe
    except WarmstartError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("generate")
def generate_cmd(recipe: Path = RecipeArg, set_: list[str] = SetOption):
    """Teacher rollouts on the train tasks, verified."""
    _run_stages(_load(recipe, set_), ["generate"])


@app.command("estimate")
def estimate_cmd(recipe: Path = RecipeArg, set_: list[str] = SetOption):
    """The teacher's bill before the run: a pilot of the first tasks (paid, kept), the rest projected."""
    loaded = _load(recipe, set_)

    def estimate() -> None:
        from .runs.directory import RunDir
        from .stages import generate

        path = generate.run(loaded, pilot_only=True)
        RunDir(loaded).write_recipe()  # the pilot's records were asked under it (the stage is left undone)
        print(path)

    _run_reporting_errors(estimate)


@app.command("curate")
def curate_cmd(recipe: Path = RecipeArg, set_: list[str] = SetOption):
    """Keep verified, distinct, uncontaminated trajectories."""
    _run_stages(_load(recipe, set_), ["curate"])


@app.command("sft")
def sft_cmd(recipe: Path = RecipeArg, set_: list[str] = SetOption):
    """Fine-tune the student on curated trajectories (resumes from the newest checkpoint)."""
    _run_stages(_load(recipe, set_), ["sft"])


@app.command("grpo")
def grpo_cmd(recipe: Path = RecipeArg, set_: list[str] = SetOption):
    """RL (GRPO) on the environment's verifier, from the distilled student."""
    _run_stages(_load(recipe, set_), ["grpo"])


@app.command("eval")
def eval_cmd(recipe: Path = RecipeArg, set_: list[str] = SetOption):
    """pass@k of base, student and teacher on held-out tasks."""
    _run_stages(_load(recipe, set_), ["eval"])


@app.command("plan")
def plan_cmd(
    recipe: Path = RecipeArg,
    set_: list[str] = SetOption,
    stage: str = typer.Option("all", "--stage", help="sft, grpo or all."),
):
    """The estimated peak memory of sft and grpo on this machine's device, before anything loads."""
    loaded = _load(recipe, set_)
    if stage not in ("sft", "grpo", "all"):
        typer.echo(f"error: --stage {stage}: expected sft, grpo or all", err=True)
        raise typer.Exit(1)

    def plan() -> None:
        from .train import memory_plan

        plans = [memory_plan.plan_for(loaded, name) for name in (["sft", "grpo"] if stage == "all" else [stage])]
        print("\n\n".join(p.render() for p in plans))
        for p in plans:
            memory_plan.check(p)

    _run_reporting_errors(plan)


@app.command("run")
def run_cmd(
    recipe: Path = RecipeArg,
    rl: bool = typer.Option(False, "--rl", help="Also GRPO from the student, evaluated as 'student + GRPO'."),
    set_: list[str] = SetOption,
):
    """generate -> curate -> sft [-> grpo] -> eval; finished stages are skipped."""
    loaded = _load(recipe, set_)
    if not rl:
        _run_stages(loaded, ["generate", "curate", "sft", "eval"])
        return
    _run_stages(_with_grpo_row(loaded), ["generate", "curate", "sft", "grpo", "eval"])


def _with_grpo_row(recipe: Recipe) -> Recipe:
    """`recipe` with the GRPO model an eval row ("student + GRPO") where no row names it yet. A row of the
    user's under that name that is another policy is refused: replacing it would drop their row unseen."""
    grpo_row = PolicySpec.parse(f"run:{recipe.grpo.output}")
    policies = recipe.eval.policies
    if grpo_row in policies.values():
        return recipe
    if GRPO_ROW in policies:
        typer.echo(
            f'error: eval.policies row "{GRPO_ROW}" is {policies[GRPO_ROW]}, but --rl evaluates {grpo_row} under that '
            f"name; rename that row, or name {grpo_row} in eval.policies yourself",
            err=True,
        )
        raise typer.Exit(1)
    return with_section(recipe, "eval", policies={**policies, GRPO_ROW: grpo_row})


@app.command("demo")
def demo_cmd(
    dir: Optional[Path] = typer.Option(None, "--dir", help="Run directory (default: a fresh runs/demo-TIMESTAMP)."),
    kd: bool = typer.Option(
        False, "--kd", help="Instead: the distillation ablation (SFT vs sparse vs dense KD vs on-policy), ~19 min."
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Run the demo with seeds 0..N-1; report mean and spread."),
    set_: list[str] = SetOption,
):
    """The whole pump offline on the embedded default: reference teacher, tiny student, arithmetic, SFT then GRPO."""
    if kd and seeds > 1:
        typer.echo("error: --seeds runs the main demo; the --kd ablation takes one seed (--set run.seed=N)", err=True)
        raise typer.Exit(1)
    named = [text for text in set_ if text.split("=", 1)[0].strip() in DEMO_NAMES]
    if named:  # its rows, table and report are built from these names
        typer.echo(
            f"error: --set {named[0]}: the demo names its own data, models and eval rows; "
            "for names of your own, run a recipe (warmstart run)",
            err=True,
        )
        raise typer.Exit(1)
    base = copy.deepcopy(DEMO_RECIPE)
    name = "demo-kd" if kd else "demo-seeds" if seeds > 1 else "demo"
    base["run"]["dir"] = str(dir) if dir else time.strftime(f"runs/{name}-%Y%m%d-%H%M%S")
    if kd:
        base["sft"] = dict(KD_SFT)
    recipe = _load(None, set_, base)

    def run_demo() -> None:
        from .demos import kd_ablation, pump  # each writes the run's recipe itself, once a stage did work
        from .demos import seeds as seeded

        if seeds > 1:
            seeded.run(recipe, seeds)
        else:
            (kd_ablation if kd else pump).run(recipe)

    _run_reporting_errors(run_demo)


@app.command("study")
def study_cmd(
    dir: Optional[Path] = typer.Option(None, "--dir", help="Study directory (default: a fresh runs/study-TIMESTAMP)."),
    kd_seeds: int = typer.Option(3, "--kd-seeds", min=1, help="Seeds of the KD ablation (E4)."),
    set_: list[str] = SetOption,
):
    """The project's claims E1-E6 on the embedded default, each with its 95 % interval (hours on 2 cores)."""
    base = copy.deepcopy(DEMO_RECIPE)
    base["run"]["dir"] = str(dir) if dir else time.strftime("runs/study-%Y%m%d-%H%M%S")
    recipe = _load(None, set_, base)
    kd_recipe = _load(None, set_, {**base, "sft": dict(KD_SFT)})  # E4 as `demo --kd`: its SFT, then --set

    def run_study() -> None:
        from .demos import study

        print(study.run(recipe, kd_seeds, kd_recipe=kd_recipe))

    _run_reporting_errors(run_study)


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (run.dir of a recipe)."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write the page to this file instead (a run directory you cannot write to, say)."
    ),
):
    """Rebuild RUN_DIR/report.html: results with intervals, figures, the data funnel, failures."""

    def build() -> None:
        from .report.html import build_report

        if not (run_dir / "manifest.json").is_file():
            raise WarmstartError(f"{run_dir}: not a run directory (no manifest.json)")
        print(build_report(run_dir, out))

    _run_reporting_errors(build)


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (run.dir of a recipe)."),
    fmt: str = typer.Option(
        "jsonl", "--format", help="jsonl | parquet | hf (parquet and hf: pip install 'warmstart\\[datasets]')."
    ),
    data: str = typer.Option("train", "--data", help="The curated data set: RUN_DIR/curated/NAME.jsonl."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: RUN_DIR/export/FORMAT)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output directory."),
    think_in_content: bool = typer.Option(
        False,
        "--think-in-content",
        help="Reasoning as <think>...</think> in the content, for chat templates that ignore reasoning_content.",
    ),
):
    """Curated data as a dataset for TRL, axolotl and `datasets`, with a dataset card (docs/export.md)."""

    def export() -> None:
        from .export.exporter import export_run  # pyarrow and datasets load only for the formats that need them

        print(export_run(run_dir, fmt, data, out, force, think_in_content))

    _run_reporting_errors(export)


@app.command("serve")
def serve_cmd(
    model_dir: Path = typer.Argument(..., help="Model directory (save_pretrained) or .gguf file."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; one other than loopback needs --api-key."
    ),
    port: int = typer.Option(8000, "--port", help="Port; 0 picks a free one (printed)."),
    max_batch: int = typer.Option(32, "--max-batch", help="Most sequences generated together."),
    model_name: Optional[str] = typer.Option(
        None, "--model-name", help="Model id clients use (default: the directory name)."
    ),
    max_request_bytes: int = typer.Option(
        4 * 1024 * 1024, "--max-request-bytes", help="Largest request body accepted; a larger one is a 413."
    ),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps."),
    enable_lora: bool = typer.Option(
        False, "--enable-lora", help="LoRA adapters at runtime: /v1/load_lora_adapter, /v1/unload_lora_adapter."
    ),
    enable_weight_updates: bool = typer.Option(
        False, "--enable-weight-updates", help="New weights at runtime: /update_weights_from_disk, /get_model_info."
    ),
    api_key: Optional[str] = typer.Option(
        None,
        "--api-key",
        envvar="WARMSTART_API_KEY",
        show_envvar=True,
        help="Require `Authorization: Bearer KEY` (all but /health and /metrics).",
    ),
    request_timeout: Optional[float] = typer.Option(
        None,
        "--request-timeout",
        help="Seconds a request may take from when it is queued; one past it is ended with a 504.",
    ),
    max_connections: int = typer.Option(
        512, "--max-connections", help="Connections served at once; one more is answered 503 at once."
    ),
):
    """An OpenAI-compatible HTTP server (/v1/chat/completions) over a local transformers model."""

    def run_server() -> None:
        from .serve.server import ServeOptions, serve

        options = ServeOptions(
            enable_lora=enable_lora,
            enable_weight_updates=enable_weight_updates,
            api_key=api_key,
            request_timeout_s=request_timeout,
            max_request_bytes=max_request_bytes,
            max_connections=max_connections,
        )
        serve(model_dir, host, port, max_batch, model_name, options, device)

    _run_reporting_errors(run_server)


tasks_app = typer.Typer(no_args_is_help=True, help="Make task sets for the environments.")
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("mine-bugs")
def mine_bugs_cmd(
    path: Path = typer.Argument(
        ..., help="A pure-Python package's source tree with a pytest suite (or a git repository)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Task set directory (default: swe-tasks/NAME)."),
    name: Optional[str] = typer.Option(
        None, "--name", help="The repository's name in task ids (default: PATH's name)."
    ),
    python: str = typer.Option(
        sys.executable,
        "--python",
        help="Interpreter with pytest (and the package's dependencies) to run the suite in the sandbox.",
    ),
    max_failing: int = typer.Option(5, "--max-failing", min=1, help="Keep a mutation that fails 1 to N tests."),
    max_tasks: int = typer.Option(30, "--max-tasks", min=1, help="Stop after this many tasks."),
    max_mutations: int = typer.Option(200, "--max-mutations", min=1, help="Try at most this many mutations."),
    seed: int = typer.Option(0, "--seed", help="Order in which mutations are tried."),
    wall_s: float = typer.Option(60.0, "--wall-s", min=1.0, help="Time limit of one run of the suite."),
    workers: int = typer.Option(2, "--workers", min=1, help="Suite runs in parallel."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output directory."),
):
    """Mine bug-fix tasks for the `swe` environment: mutations of PATH's source its own tests catch (docs/swe.md)."""

    def mine() -> None:
        # Imported here, as the stages are: no other command needs the environments.
        from .envs.swe.mining import MineSettings, mine_to_directory

        def progress(tried: int, kept: int) -> None:
            if tried % 10 < workers:
                typer.echo(f"  {tried} mutations tried, {kept} kept")

        settings = MineSettings(max_failing, max_tasks, max_mutations, seed, wall_s, workers=workers)
        target = out or Path("swe-tasks") / (name or path.resolve().name)
        result = mine_to_directory(path, target, name, python, settings, force, progress)
        typer.echo(
            f"{result.name}: {len(result.tasks)} tasks from {result.tried} mutations "
            f"(acceptance {result.acceptance:.0%}), {result.tests} tests, {result.seconds:.1f} s; wrote {target}"
        )

    _run_reporting_errors(mine)


def main() -> None:
    app(prog_name="warmstart")


if __name__ == "__main__":
    sys.exit(main())
