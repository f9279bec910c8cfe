"""A rollout server that restarts while a batch is sampled (full-weights sync): it comes back with its
first weights under the same name, so its answers look right; the batch must not be trained on."""

from __future__ import annotations

import pytest

from warmstart.errors import WarmstartError
from warmstart.stages.grpo_server import ServerRollouts
from warmstart.train.weight_sync import WeightSync


class RestartingServer:
    """Serves weight version `version` until `restart()`, then its first weights again (version "0")."""

    base_url, base_name = "http://127.0.0.1:1/v1", "policy"

    def __init__(self):
        self.version, self.policy = "0", "policy"

    def weight_version(self) -> str:
        return self.version

    def restart(self) -> None:
        self.version = "0"

    def close(self) -> None:
        pass


def test_a_server_restarted_while_a_batch_was_sampled_stops_the_run_before_the_update():
    server = RestartingServer()
    sync = WeightSync(server, model=None, adapter=False, directory=None)
    sync.version, server.version = 3, "3"  # the trainer published version 3 and the server took it

    def collect_at(step: int, cursor: int):
        server.restart()  # mid-batch: the client's retries reach the restarted server
        return ([], cursor, {})

    rollouts = ServerRollouts(server, sync, collect_at, ahead=False)
    with pytest.raises(WarmstartError, match=r"serves weight version '0', the trainer is at 3"):
        rollouts.take(4, 0, last_step=8)


def test_a_batch_from_the_server_that_kept_its_weights_is_taken():
    server = RestartingServer()
    sync = WeightSync(server, model=None, adapter=False, directory=None)
    sync.version, server.version = 3, "3"
    rollouts = ServerRollouts(server, sync, lambda step, cursor: ([], cursor + 1, {}), ahead=False)
    assert rollouts.take(4, 0, last_step=8) == (([], 1, {}), 3)
