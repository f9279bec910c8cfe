"""What comes back from the workers: their answers (errors turned into what they were), the records of
several pieces merged once per (task, sample index), and their request tallies added up."""

from __future__ import annotations

import ray
from ray.exceptions import RayActorError, RayTaskError

from ..errors import WarmstartError, first_line
from ..types import Trajectory

WARMSTART_ERROR_LINE = f"{WarmstartError.__module__}.{WarmstartError.__name__}: "
TALLY_FIELDS = ("sent", "failed", "retried", "rejected", "cache_hits")


def gather(ref, where: str):
    """A worker's answer; an error it raised as that error (a WarmstartError stays one line); a worker that
    died past its restarts as one line."""
    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, WarmstartError):
            raise exc.cause from None
        if isinstance(exc.cause, RayActorError):  # an actor the worker called died (the budget's, say)
            raise WarmstartError(
                f"{where}: an actor of the cluster died under a worker ({first_line(exc.cause)})"
            ) from None
        raise
    except RayActorError as exc:
        raise WarmstartError(creation_error(exc) or f"{where}: a ray worker died past its restarts ({exc})") from None


def creation_error(exc: RayActorError) -> str | None:
    """The WarmstartError a worker's constructor raised (a model path absent on its node, say). Ray keeps
    only the text of a creation task's exception, its last line the exception's own."""
    last = (getattr(exc, "error_msg", "") or "").strip().splitlines()[-1:]
    return last[0].removeprefix(WARMSTART_ERROR_LINE) if last and last[0].startswith(WARMSTART_ERROR_LINE) else None


def piece_of(exc: Exception):
    """The `workers.Piece` a worker's failed rollout sent with its error (what had finished), or None. `gather`
    raises a WarmstartError as itself and anything else as Ray's wrapper, whose `cause` it is."""
    return getattr(exc, "piece", None) or getattr(getattr(exc, "cause", None), "piece", None)


def merge(answered: dict[tuple[str, int], Trajectory], trajectories: list[Trajectory]) -> None:
    """Each (task, sample index) once: the first record that came back for it."""
    for trajectory in trajectories:
        answered.setdefault(trajectory.key, trajectory)


def add_tally(total, part) -> None:
    """A worker's `RequestTally` since its last piece, added to the driver's."""
    if total is None or part is None:
        return
    for name in TALLY_FIELDS:
        setattr(total, name, getattr(total, name) + getattr(part, name))
