"""The dataset card: a YAML header `datasets` and the Hub read (license, configs pointing at the data with
its digest, the column types), and the facts of the data: counts, drop reasons, decontamination,
teachers with their terms of use (or "not recorded"), cost."""

from __future__ import annotations

import json
import re

import yaml

from helpers import make_trajectory
from warmstart.export.card import frontmatter
from warmstart.export.exporter import export_run
from warmstart.export.schema import card_features
from warmstart.runs.directory import file_digest
from warmstart.runs.jsonl import read_records
from warmstart.types import Trajectory


def card(out) -> tuple[dict, str]:
    text = (out / "README.md").read_text(encoding="utf-8")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_the_header_points_load_dataset_at_the_data(arithmetic_run, tmp_path):
    out = export_run(arithmetic_run, "parquet", out=tmp_path / "p")
    header, _ = card(out)
    assert header["license"] == "unknown"
    (config,) = header["configs"]
    assert config["data_files"] == [{"split": "train", "path": "data.parquet"}]
    assert file_digest(out / "data.parquet") in config["description"]
    assert header["dataset_info"]["features"] == card_features()


def test_hf_cards_have_no_configs_for_load_dataset_refuses_that_layout(arithmetic_run, tmp_path):
    header, body = card(export_run(arithmetic_run, "hf", out=tmp_path / "hf"))
    assert "configs" not in header
    assert "load_from_disk" in body


def test_the_body_names_counts_drop_reasons_teacher_terms_and_cost(arithmetic_run, tmp_path):
    trajectories = read_records(arithmetic_run / "curated" / "train.jsonl", Trajectory)
    dropped = json.loads((arithmetic_run / "curated" / "train.dropped.json").read_text())
    assert dropped["dropped"], "the fixture's teacher is meant to fail some tasks"
    _, body = card(export_run(arithmetic_run, "jsonl", out=tmp_path / "j"))

    assert f"rows: {len(trajectories)}, from {len({t.task_id for t in trajectories})} tasks" in body
    assert f"curation kept {dropped['kept']} of {dropped['input']} trajectories" in body
    for reason, n in dropped["dropped"].items():
        assert f"| {reason} | {n} |" in body
    t = trajectories[0]
    terms = t.provenance.terms or "not recorded"
    assert f"| {t.provenance.provider} | {t.provenance.model} | {len(trajectories)} | {terms} |" in body
    assert "generate:teacher: no API requests" in body  # the reference teacher is local
    for name, source in dropped["contamination"]["sources"].items():  # curate checks the eval split's prompts
        assert f"| {name} | {source['items']} | {source['too_short']} | {source['dropped']} |" in body


def test_teachers_and_their_terms_per_provider_and_the_decontamination_report(copied_run, tmp_path):
    openai = make_trajectory("t/1").provenance.model_copy(
        update={"provider": "openai", "model": "gpt-4.1", "terms": "https://openai.com/policies/terms-of-use"}
    )
    records = [
        make_trajectory("t/1").model_copy(update={"provenance": openai}),
        make_trajectory("t/2").model_copy(update={"provenance": openai}),
        make_trajectory("t/3"),  # provider "reference", terms not recorded
    ]
    (copied_run / "curated" / "mixed.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    sources = {
        "eval split": {"items": 20, "too_short": 0, "dropped": 0, "examples": []},
        "gsm8k-test.parquet": {"items": 1319, "too_short": 3, "dropped": 2, "examples": ["t/8", "t/9"]},
    }
    contamination = {"ngram": 13, "sources": sources, "note": {"from": "a later curate"}}
    report = {
        "input": 5,
        "kept": 3,
        "dropped": {"contaminated (gsm8k-test.parquet)": 2},
        "contamination": contamination,
    }
    (copied_run / "curated" / "mixed.dropped.json").write_text(json.dumps(report))
    (copied_run / "costs.json").unlink()

    _, body = card(export_run(copied_run, "jsonl", data="mixed", out=tmp_path / "m"))

    assert "| openai | gpt-4.1 | 2 | https://openai.com/policies/terms-of-use |" in body
    assert "| reference | m | 1 | not recorded |" in body
    assert "| contaminated (gsm8k-test.parquet) | 2 |" in body
    decontamination = body.split("## Decontamination")[1].split("##")[0]
    assert "a run of 13 normalized words" in decontamination
    assert "| gsm8k-test.parquet | 1319 | 3 | 2 | t/8, t/9 |" in decontamination
    assert '- note: `{"from": "a later curate"}`' in decontamination  # a part of unknown shape, as it is
    assert "## Cost\n\nnot recorded" in body
    assert "rows with tool calls: 3; rows with reasoning: 3" in body


def test_frontmatter_is_yaml_that_reads_back_as_written():
    header = {
        "pretty_name": 'run "a": ünïcødé, #1 | yes',
        "plain": "data.jsonl",
        "keyword_like": ["yes", "no", "null", "true", "1e3", "-x", "0x1F"],
        "numbers": [1, 2.5, -3, True, False, None],
        "nested": [{"name": "a", "list": [{"name": "b", "dtype": "string"}]}, {"empty": [], "none": {}}],
    }
    text = frontmatter(header)
    assert text.startswith("---\n") and text.endswith("---\n")
    assert yaml.safe_load(text.strip("-\n")) == header
    assert re.search(r"^plain: data\.jsonl$", text, re.M)  # plain strings are written bare
