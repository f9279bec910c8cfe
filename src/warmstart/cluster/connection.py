"""Reaching the `[ray]` cluster: once per process, or one `error:` line naming the address.

An address that is a HOST:PORT is first tried with a plain TCP connection: `ray.init` itself waits a
minute or more on an address where nothing answers (measured with Ray 2.52: over 60 s for a GCS address,
30 s through Ray Client), and a typo deserves an answer in seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings

import ray

from ..config import RAY_ADDRESS, RayConfig
from ..errors import WarmstartError

log = logging.getLogger(__name__)
REACH_TIMEOUT_S = 5.0


def connect(cfg: RayConfig) -> None:
    """Connect this process to the cluster. A process already connected (a notebook, a test's cluster, an
    earlier stage of `warmstart run`) keeps its connection."""
    if ray.is_initialized():
        return
    local = cfg.address == "local"
    if not local:  # "auto" joins RAY_ADDRESS where it is set: checked as well
        given = os.environ.get("RAY_ADDRESS") if cfg.address == "auto" else cfg.address
        if given and given != "auto":
            check_reachable(given, "the RAY_ADDRESS environment variable" if cfg.address == "auto" else None)
    try:
        with warnings.catch_warnings():
            # Ray 2.52 warns that it will stop hiding GPUs from workers that asked for none; today's rule is
            # the one wanted (a local model's CPU worker must not take a GPU it was not given).
            warnings.simplefilter("ignore", FutureWarning)
            # No dashboard for a local instance: seconds of start-up and a web server nobody asked for.
            # "local", not None: None joins RAY_ADDRESS or a cluster already running on this machine.
            ray.init(address=cfg.address, **({"include_dashboard": False} if local else {}))
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


def check_reachable(address: str, source: str | None = None) -> None:
    """Refuse an address where nothing answers, in seconds. `source`: where an address the recipe did not
    give came from (RAY_ADDRESS, which `auto` joins); one not of the form HOST:PORT is left to Ray."""
    named = f"ray.address = {address!r}" if source is None else f"ray.address = 'auto' joins {address!r} ({source})"
    if not RAY_ADDRESS.fullmatch(address):
        if source is None:
            raise WarmstartError(f"{named}: not HOST:PORT or ray://HOST:PORT")
        return
    host, port = host_and_port(address)
    try:
        socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise WarmstartError(f"{named}: nothing answers at {host}:{port} ({reason})") from None
