"""TRL's SFTTrainer trains on an export as it is: one optimizer step of the project's tiny student on the
calculator run (tool calls and reasoning), loss on the assistant's tokens only. And what TRL renders is
what warmstart's own SFT renders: tool-call arguments reach the chat template as objects (as JSON text,
the template would write them as a quoted string the student could not call a tool with), and the
reasoning is rendered where the chosen export puts it (the tiny template ignores `reasoning_content`)."""

from __future__ import annotations

import datasets
import pytest
import torch
from trl import SFTConfig, SFTTrainer

from helpers import tiny_model
from warmstart.export.exporter import export_run
from warmstart.lm.chat import render_for_training, template_messages
from warmstart.runs.jsonl import read_records
from warmstart.types import Trajectory


def one_step(dataset: datasets.Dataset, model, tokenizer, out) -> SFTTrainer:
    config = SFTConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        assistant_only_loss=True,  # the tiny template marks assistant turns with {% generation %}
        max_length=512,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return trainer


@pytest.mark.parametrize("think_in_content", [False, True])
def test_sft_trainer_takes_a_step_on_what_warmstart_itself_would_train_on(calculator_run, tmp_path, think_in_content):
    trajectories = read_records(calculator_run / "curated" / "train.jsonl", Trajectory)
    out = export_run(calculator_run, "parquet", out=tmp_path / "export", think_in_content=think_in_content)
    dataset = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    model, tokenizer = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]

    trainer = one_step(dataset, model, tokenizer, tmp_path / "trl")

    assert trainer.state.global_step == 1 and torch.isfinite(torch.tensor(trainer.state.log_history[-1]["train_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    tokenized = trainer.train_dataset
    assert len(tokenized) == len(trajectories)  # no example dropped or left without assistant tokens
    for example, t in zip(tokenized, trajectories):
        # The tiny template drops `reasoning_content`: with the default export, TRL trains on the turns
        # without the chain; --think-in-content keeps it, as warmstart's own SFT does.
        messages = t.messages if think_in_content else [m.model_copy(update={"reasoning": None}) for m in t.messages]
        own_text = tokenizer.apply_chat_template(template_messages(messages), tokenize=False)
        assert tokenizer.decode(example["input_ids"]) == own_text
        own = render_for_training(tokenizer, messages)
        own_targets = [i for i, m in zip(own.input_ids, own.loss_mask) if m]
        trl_targets = [i for i, label in zip(example["input_ids"], example["labels"]) if label != -100]
        assert tokenizer.decode(trl_targets) == tokenizer.decode(own_targets)
    assert any("<tool_call>" in tokenizer.decode(e["input_ids"]) for e in tokenized)
    assert any("<think>" in tokenizer.decode(e["input_ids"]) for e in tokenized) == think_in_content
