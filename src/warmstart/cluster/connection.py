"""Reaching the `[ray]` cluster: once per process, or one `error:` line naming the address.

An address that is a HOST:PORT is first tried with a plain TCP connection: `ray.init` itself waits a
minute or more on an address where nothing answers (measured with Ray 2.52: over 60 s for a GCS address,
30 s through Ray Client), and a typo deserves an answer in seconds.
"""

from __future__ import annotations

import logging
import socket
import warnings

import ray

from ..config import RayConfig
from ..errors import WarmstartError

log = logging.getLogger(__name__)
REACH_TIMEOUT_S = 5.0


def connect(cfg: RayConfig) -> None:
    """Connect this process to the cluster. A process already connected (a notebook, a test's cluster, an
    earlier stage of `warmstart run`) keeps its connection."""
    if ray.is_initialized():
        return
    if cfg.address not in ("auto", "local"):
        check_reachable(cfg.address)
    local = cfg.address == "local"
    try:
        with warnings.catch_warnings():
            # Ray 2.52 warns that it will stop hiding GPUs from workers that asked for none; today's rule is
            # the one wanted (a local model's CPU worker must not take a GPU it was not given).
            warnings.simplefilter("ignore", FutureWarning)
            # No dashboard for a local instance: seconds of start-up and a web server nobody asked for.
            ray.init(address=None if local else cfg.address, **({"include_dashboard": False} if local else {}))
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WarmstartError(f"ray.address = {cfg.address!r}: cannot connect ({first})") from None
    resources = ray.cluster_resources()
    log.info(
        "ray: connected to %s (%g CPUs, %g GPUs)",
        cfg.address,
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )


def host_and_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host, int(port)


def check_reachable(address: str) -> None:
    host, port = host_and_port(address)
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise WarmstartError(f"ray.address = {address!r}: nothing answers at {host}:{port} ({reason})") from None
