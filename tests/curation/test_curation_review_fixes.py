"""Defects a review of curation found, each pinned: few-shot prompts, text inside tool-call arguments,
unspaced scripts, Alpaca benchmark files, word order at a threshold of 1, and a leaked item hiding as a
template in a small run."""

from __future__ import annotations

import json

from warmstart.config import CurateConfig
from warmstart.curation.benchmarks import read_texts
from warmstart.curation.contamination import Source, find_contamination
from warmstart.curation.text import prompt_messages, searched_texts, words
from warmstart.stages.curate import curate
from warmstart.types import Message, Provenance, ToolCall, ToolFunction, Trajectory, Verdict

PROVENANCE = Provenance(provider="reference", model="m", created=0.0)


def trajectory(task_id: str, prompt: list[Message] | str, answer: str = "Answer: 1", sample: int = 0) -> Trajectory:
    messages = [Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
    return Trajectory(
        task_id=task_id,
        sample_index=sample,
        policy="reference",
        messages=[*messages, Message(role="assistant", content=answer)],
        verdict=Verdict(reward=1.0, passed=True),
        provenance=PROVENANCE,
        finish_reason="stop",
    )


def kept_ids(trajectories: list[Trajectory], **cfg) -> list[str]:
    kept, _ = curate(trajectories, None, CurateConfig(**cfg))
    return [t.task_id for t in kept]


def padding(count: int = 40) -> list[list[str]]:
    """Unrelated trajectories' texts: a corpus large enough that no shared n-gram is a template by its size."""
    return [[f"What is {i}+{i * 3}? Think carefully and answer."] for i in range(count)]


def test_few_shot_tasks_that_share_their_shots_are_distinct_prompts():
    shot = [
        Message(role="user", content="What is 1+1? End with 'Answer: <integer>'."),
        Message(role="assistant", content="Answer: 2"),
    ]
    pairs = [(37, 45), (12, 80), (66, 7), (23, 19)]
    few_shot = [
        trajectory(
            f"fewshot/{a}+{b}", [*shot, Message(role="user", content=f"What is {a}+{b}? End with 'Answer: <integer>'.")]
        )
        for a, b in pairs
    ]
    assert kept_ids(few_shot) == [t.task_id for t in few_shot]  # were all near-duplicates of the first
    greeting = [
        Message(role="user", content="Hi! Can you help me with homework?"),
        Message(role="assistant", content="Sure."),
    ]
    chats = [
        trajectory(f"chat/{a}", [*greeting, Message(role="user", content=f"What is {a} times {b}?")]) for a, b in pairs
    ]
    assert kept_ids(chats) == [t.task_id for t in chats]
    # The prompt is everything up to the last user turn: the policy's replies and tool results come after it.
    assert prompt_messages(chats[0].messages) == chats[0].messages[:3]


def test_text_inside_tool_call_arguments_is_searched_as_text():
    item = (
        "def count_upper_vowels(s: str) -> int:\n"
        '    """Given a string s, count the number of uppercase\n'
        "    vowels that appear at even indices of the string.\n"
        "    For example: count_upper_vowels('aBCdEf') returns 1\n"
        '    """'
    )
    solution = item + "\n    return sum(1 for i in range(0, len(s), 2) if s[i] in 'AEIOU')\n"
    arguments = json.dumps({"path": "solution.py", "content": solution})
    call = ToolCall(id="c1", function=ToolFunction(name="write_file", arguments=arguments))
    via_tool = trajectory(
        "via-tool",
        [
            Message(role="user", content="Fix the failing test in the repository."),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", tool_call_id="c1", content="wrote solution.py"),
        ],
        answer="Done.",
    )
    found, _ = find_contamination([Source("humaneval", [item])], [searched_texts(via_tool.messages), *padding()], 13)
    assert found[0] == "humaneval"
    assert "n" not in words(searched_texts(via_tool.messages)[1])  # no JSON escape read as a word
    # Arguments that are not JSON are searched as written.
    raw = ToolCall(id="c2", function=ToolFunction(name="shell", arguments="cat solution.py"))
    assert searched_texts([Message(role="assistant", tool_calls=[raw])]) == ["shell\ncat solution.py"]


def test_unspaced_scripts_are_compared_character_by_character():
    item = "小明有15个苹果，他给了小红4个，又买了7个，然后吃掉了2个，请问小明现在有多少个苹果？"
    one_char_added = item.replace("现在有", "现在还有")
    with_lead_in = "请解答下面的题目" + item
    short = "一个数加上5等于12这个数是多少"
    assert words(short)[:4] == ["一", "个", "数", "加"]
    for copy in (one_char_added, with_lead_in):
        found, _ = find_contamination([Source("bench", [item])], [[copy], *padding()], 13)
        assert found[0] == "bench", copy
    found, _ = find_contamination([Source("bench", [short])], [["请回答" + short + "谢谢"], *padding()], 13)
    assert found[0] == "bench"
    assert words("ที่นี่") == ["ที่", "นี่"]  # a Thai letter keeps its vowel and tone marks


def test_an_alpaca_item_is_its_instruction_and_input(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    items = [
        {"instruction": "Rewrite the sentence in the passive voice.", "input": "The dog chased the cat", "output": "x"},
        {"instruction": "Name three primary colours and say why they are called primary.", "input": "", "output": "y"},
    ]
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    assert read_texts(path, None) == [
        "Rewrite the sentence in the passive voice.\nThe dog chased the cat",
        "Name three primary colours and say why they are called primary.",
    ]
    assert read_texts(path, "input") == ["The dog chased the cat"]  # a field named is read alone


def test_at_threshold_one_only_the_same_words_in_the_same_order_are_near_duplicates():
    pairs = [
        (
            "Alice has 5 apples and Bob has 3 apples. How many more apples does Alice have than Bob?",
            "Bob has 5 apples and Alice has 3 apples. How many more apples does Alice have than Bob?",
        ),
        (
            "Write a function f(a, b) that returns True when a is a prefix of b.",
            "Write a function f(a, b) that returns True when b is a prefix of a.",
        ),
    ]
    for first, second in pairs:
        assert kept_ids([trajectory("t1", first), trajectory("t2", second)], near_dup_threshold=1.0) == ["t1", "t2"]
    copy = "alice has 5 apples, and Bob has 3 apples. how many MORE apples does Alice have than Bob"
    assert kept_ids([trajectory("t1", pairs[0][0]), trajectory("t2", copy)], near_dup_threshold=1.0) == ["t1"]


def test_a_leaked_item_does_not_hide_as_a_template_in_a_small_run():
    item = (
        "A baker makes 24 loaves every morning and sells two thirds of them before noon; in the afternoon she "
        "sells half of what is left and gives the rest to the shelter down the street. How many loaves does "
        "the shelter get each week?"
    )
    leak = "Solve: " + " ".join(item.split()[:26]) + " and how many are sold in total?"
    others = [
        f"Tom reads {i} pages on Monday and {i + 3} pages on Tuesday. How many pages did he read?" for i in range(9)
    ]
    # Copied by a fifth of the tasks (a template's share, were it counted by shape): a 26-word verbatim run
    # holding the item's numbers is still a copy.
    texts = [[leak]] * 3 + [[other] for other in others[:7]]
    found, _ = find_contamination([Source("bench", [item])], texts, 13)
    assert found == ["bench"] * 3 + [None] * 7
    # One leaked task among ten, however many samples each has: a task counts once toward a template (its
    # 8 samples of 80 were a tenth). 20 copied words: fewer than 2n, found by the item's own 13-grams.
    short_leak = "Solve: " + " ".join(item.split()[:20]) + " and how many are sold in total?"
    for samples in (1, 4, 8):
        texts = [[short_leak]] * samples + [[other] for other in others for _ in range(samples)]
        tasks = ["leaked"] * samples + [f"task{j}" for j in range(len(others)) for _ in range(samples)]
        found, _ = find_contamination([Source("bench", [item])], texts, 13, tasks)
        assert found == ["bench"] * samples + [None] * len(others) * samples, samples


def test_a_fixed_instruction_with_identifiers_in_every_prompt_is_no_leak_beside_a_one_task_eval_split():
    """An environment's long fixed instruction (its tool names: identifiers) in the one eval prompt and in
    every train prompt: a template, not a 2n-word copy of the eval item, however small the eval split."""
    instruction = (
        "Use the tools list_files, read_file, edit_file and run to change the repository until its tests pass; "
        "run python -m pytest to check your work, and reply with a short summary of what you changed and why "
        "it fixes the failing tests"
    )
    item = f"The function parse_date in dates.py returns the wrong month. {instruction}"
    texts = [
        [f"The function {name} in mod{j}.py raises on empty input. {instruction}"] for j, name in enumerate("abcde")
    ]
    found, _ = find_contamination([Source("eval", [item])], texts, 13)
    assert found == [None] * 5
