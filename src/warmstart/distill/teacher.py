"""A teacher that scores the student's own tokens (on-policy distillation).

Two kinds, one method: `logprobs(batch, lengths, chunks)` gives log q(token t + 1 | tokens up to t) for the
positions of a right-padded [B, L] batch of the student's sequences, as [B, L-1] (what
`lm.scoring.sequence_logprobs` gives for the student): a remote teacher every position, a local one the
policy's tokens where the batch carries GRPO's loss mask (the only ones the loss reads) and every position
otherwise.

    local    hf:PATH / run:NAME: the teacher's forward over the same ids, one chunk of rows at a time
             (GRPO's update chunks: its activations and [N, V] logits are one chunk's, not the batch's)
    remote   openai:MODEL@URL: a server's legacy completions endpoint with echo + logprobs, the token
             ids sent as the prompt (`warmstart serve`, vLLM); one request per sequence

Both need the student's tokenizer: a local teacher's vocabulary must equal it, and a server's text of
each scored token must be a text the student's tokenizer gives the id sent (checked on the first batch),
else the scores would be of other tokens.
"""

from __future__ import annotations

import torch

from ..config import PolicySpec
from ..errors import WarmstartError
from ..lm.device import resolve_device
from ..lm.models import load_model_and_tokenizer, vocabulary_mismatch
from ..lm.paths import resolve_model_path
from ..lm.scoring import chunked_sequence_logprobs
from ..lm.token_bytes import TokenBytes, token_text


class LocalTeacher:
    def __init__(self, path: str, key: str, student_tokenizer, device=None):
        path = resolve_model_path(path, key)
        mismatch = vocabulary_mismatch(path, student_tokenizer)
        if mismatch:
            raise WarmstartError(f"{key}: {mismatch}; on-policy distillation needs the student's tokenizer")
        self.model = load_model_and_tokenizer(path, key, device)[0].eval().requires_grad_(False)
        self.params = sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def logprobs(
        self, batch: dict[str, torch.Tensor], lengths: list[int], chunks: list[list[int]] | None = None
    ) -> torch.Tensor:
        """`chunks`: the rows run together (GRPO passes its update's chunks), each row's log-probs as in one
        pass over the batch to within rounding; rows in none read 0. None: the whole batch in one pass."""
        # The positions the loss reads: with the batch's loss mask (GRPO's), the policy's tokens, through
        # the same path and chunks as the student's old log-probs in the update (head at those positions,
        # a group's prompt run once), so a teacher equal to the student reads the same floats; without one,
        # every position of each row (not its padding). The other positions read 0.
        ids = batch["input_ids"]
        if "loss_mask" in batch:
            scored = batch["loss_mask"][:, 1:] > 0
        else:
            scored = (
                torch.arange(ids.shape[1] - 1, device=ids.device)
                < torch.tensor(lengths, device=ids.device)[:, None] - 1
            )
        rows = [list(range(ids.shape[0]))] if chunks is None else chunks
        return chunked_sequence_logprobs(self.model, ids, scored, lengths, rows)


class RemoteTeacher:
    def __init__(self, scorer, key: str, student_tokenizer):
        self.scorer, self.key, self.tokenizer = scorer, key, student_tokenizer
        self.checked, self.params = False, 0  # the remote model's size is unknown: no FLOPs counted for it

    def logprobs(
        self, batch: dict[str, torch.Tensor], lengths: list[int], chunks: list[list[int]] | None = None
    ) -> torch.Tensor:
        """Every row, one request each (`concurrency` in flight), whatever `chunks` are: what a request holds
        here is its row's ids and log-probs, and the forward's memory is the server's."""
        sequences = [row[:n] for row, n in zip(batch["input_ids"].tolist(), lengths)]
        scored = self.scorer.score(sequences)
        if not self.checked:
            self.check_tokens(sequences[0], scored[0].tokens)
            self.checked = True
        out = torch.zeros(
            batch["input_ids"].shape[0], batch["input_ids"].shape[1] - 1, device=batch["input_ids"].device
        )
        for row, s in enumerate(scored):
            # Past the first token every log-prob is a number: the scorer refuses a null there (openai_scoring).
            out[row, : len(s.logprobs) - 1] = torch.tensor(s.logprobs[1:])
        return out

    def check_tokens(self, ids: list[int], texts: list[str]) -> None:
        """Each scored token's text as the server gives it must be one the student's tokenizer reads for
        the id: its own bytes' text (`warmstart serve`, OpenAI's way), the text it decodes to alone (which
        strips SentencePiece's leading space: "▁x" reads "x") or its raw piece (vLLM's older way)."""
        own_bytes = TokenBytes(self.tokenizer)
        for token_id, text in zip(ids, texts):
            readings = (
                token_text(self.tokenizer, own_bytes, token_id)[0],
                self.tokenizer.decode([token_id]),
                self.tokenizer.convert_ids_to_tokens(token_id),
            )
            if text not in readings:
                raise WarmstartError(
                    f"{self.key}: the server reads token id {token_id} as {text!r}, the student as "
                    f"{readings[0]!r}: on-policy distillation needs the student's tokenizer on both sides"
                )


def make_teacher(spec: PolicySpec, key: str, recipe, student_tokenizer):
    """`spec`, resolved (`policies.spec.resolve`): hf:PATH or openai:MODEL@URL; nothing else can score tokens."""
    if spec.kind == "hf":
        return LocalTeacher(spec.name, key, student_tokenizer, resolve_device(recipe.run.device))
    if spec.kind == "openai":
        from ..policies.openai_scoring import connect_scorer  # the SDK loads only when a served teacher is used

        return RemoteTeacher(connect_scorer(spec, recipe.api, key), key, student_tokenizer)
    raise WarmstartError(
        f"{key}: {str(spec)!r} cannot score the student's tokens; expected a local model (hf:PATH, run:NAME) or openai:MODEL@URL serving prompt logprobs"
    )
