"""Keeping a rollout server on the trainer's policy (`grpo.rollout_server`): after each update the new
weights reach the server, and before each batch the server is checked to serve them.

- LoRA (`grpo.lora`): the adapter is saved (a few MB) and loaded under a new name per policy version,
  `NAME-vN`, through vLLM's /v1/load_lora_adapter; the previous one is unloaded and its files deleted.
  Requests then name the adapter, and an answer from another model is refused (policies/rollout_server.py).
- Full weights (small models): saved with save_pretrained and reloaded through SGLang's
  /update_weights_from_disk with `weight_version` N, which /get_model_info must then report.

The files go to `<run dir>/rollout-weights/<output>/vN`, so the server must see the trainer's file system
(the same machine, or a shared disk). Only the main process of a data-parallel run talks to the server;
the others learn the new policy name from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import WarmstartError
from ..policies.rollout_server import RolloutServer
from .distributed import SINGLE, World


class WeightSync:
    def __init__(self, server: RolloutServer, model, adapter: bool, directory: Path, world: World = SINGLE):
        self.server, self.model, self.adapter, self.directory, self.world = server, model, adapter, directory, world
        self.version: int | None = None

    def publish(self, version: int) -> None:
        """Make the model's current weights the server's policy `version` (every process calls it)."""
        policy = None
        if self.world.main:
            path = (self.directory / f"v{version}").resolve()
            shutil.rmtree(path, ignore_errors=True)  # a half-written one from a killed run
            self.model.save_pretrained(path)
            policy = self._load_adapter(version, path) if self.adapter else self._reload(version, path)
            if self.version is not None and self.version != version:
                shutil.rmtree(self.directory / f"v{self.version}", ignore_errors=True)
        self.server.policy = self.world.agree(policy)
        self.version = version

    def check(self) -> None:
        """Before a batch: the server still serves the version last published (main process)."""
        if not self.world.main or self.version is None:
            return
        if self.adapter:
            if self.server.policy not in self.server.served():
                raise WarmstartError(
                    f"grpo.rollout_server: {self.server.base_url} no longer serves adapter {self.server.policy!r} "
                    f"(policy version {self.version}); was the server restarted?"
                )
        elif (served := self.server.weight_version()) != str(self.version):
            raise WarmstartError(
                f"grpo.rollout_server: {self.server.base_url} serves weight version {served!r}, "
                f"the trainer is at {self.version}: a policy-version mismatch"
            )

    def _load_adapter(self, version: int, path: Path) -> str:
        name = f"{self.server.base_name}-v{version}"
        previous = self.server.policy if self.server.policy != self.server.base_name else None
        if name in self.server.served():  # left by a run that stopped at this version: replaced
            self.server.unload_adapter(name)
            previous = None if previous == name else previous
        self.server.load_adapter(name, str(path))
        if previous is not None:
            self.server.unload_adapter(previous)
        return name

    def _reload(self, version: int, path: Path) -> str:
        self.server.update_weights(str(path), str(version))
        if (served := self.server.weight_version()) != str(version):
            raise WarmstartError(
                f"grpo.rollout_server: {self.server.base_url} took the weights of version {version} but reports "
                f"weight version {served!r}; it does not serve what it was sent"
            )
        return self.server.base_name
