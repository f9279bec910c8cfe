"""The run directory: every stage reads and writes files here (layout in DESIGN.md).

`manifest.json` records, per stage, a fingerprint of its config and inputs, its outputs and timings.
A stage whose fingerprint matches a finished entry and whose outputs exist is skipped: a rerun of a
finished stage does no work.
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib.metadata import version
from pathlib import Path

from .config import Recipe, recipe_toml
from .costs import write_costs
from .jsonl import write_json_atomic


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fingerprint(config: dict, inputs: list[Path]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path in inputs:
        h.update(str(path).encode())
        h.update(file_digest(path).encode() if Path(path).is_file() else b"<dir>")
    return h.hexdigest()[:16]


class RunDir:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.root = Path(recipe.run.dir)
        self.root.mkdir(parents=True, exist_ok=True)

    def trajectories(self, name: str) -> Path:
        return self.root / "trajectories" / f"{name}.jsonl"

    def curated(self, name: str) -> Path:
        return self.root / "curated" / f"{name}.jsonl"

    def dropped(self, name: str) -> Path:
        return self.root / "curated" / f"{name}.dropped.json"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    def checkpoints(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    @property
    def eval_results(self) -> Path:
        return self.root / "eval" / "results.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"stages": {}}
        return json.loads(self.manifest_path.read_text())

    def write_recipe(self) -> None:
        (self.root / "recipe.toml").write_text(recipe_toml(self.recipe))

    def is_done(self, stage: str, print_: str, outputs: list[Path]) -> bool:
        entry = self.manifest()["stages"].get(stage)
        return bool(entry) and entry["fingerprint"] == print_ and all(Path(p).exists() for p in outputs)

    def mark_done(self, stage: str, print_: str, outputs: list[Path], started: float, extra: dict | None = None) -> None:
        manifest = self.manifest()
        manifest["stages"][stage] = {
            "fingerprint": print_,
            "outputs": [str(Path(p).relative_to(self.root)) for p in outputs],
            "seconds": round(time.time() - started, 3),
            "finished": time.time(),
            "versions": {name: version(name) for name in ("warmstart", "torch", "transformers")},
            **(extra or {}),
        }
        write_json_atomic(self.manifest_path, manifest)
        write_costs(self.root, manifest)  # costs.json follows the manifest: money and seconds per stage
