"""Where the server listens: an IPv6 host is served, and a port taken while the model loaded (after
`check_port` found it free) is the one `error:` line `serve` promises, not a traceback."""

from __future__ import annotations

import json
import logging
import socket
import struct
import time

import pytest
from serve_helpers import http, in_process_server

from warmstart.errors import WarmstartError
from warmstart.serve import server


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_host_is_served(served_model):
    # check_port probed ::1 as IPv6 and accepted it, then the server bound it as IPv4: a traceback, after the
    # model had loaded.
    with in_process_server(served_model, host="::1") as (host, port):
        status, _, data = http("GET", f"http://[{host}]:{port}/health")
    assert status == 200 and json.loads(data)["status"] == "ok"


def test_a_port_taken_while_the_model_loaded_is_one_error(model_dir, monkeypatch):
    # socketserver closes the server from its own __init__ when the bind fails, before `refused` was set:
    # an AttributeError took the OSError's place, and `serve` printed a traceback.
    monkeypatch.setattr(server, "check_port", lambda host, port: None)  # the port is taken after the check
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WarmstartError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.serve(model_dir, "127.0.0.1", port, 4, None, device="cpu")


RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def reset_connections(address: tuple[str, int]) -> None:
    """Clients that reset their connection: one after a request line that does not parse (a TLS client on
    the plain port, a scanner), one kept alive after an answer and reset while idle (a load balancer)."""
    for first in (b"\x16\x03\x01\x02\x00\x01 garbage\r\n\r\n", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(address) as connection:
            connection.sendall(first)
            if first.startswith(b"GET"):
                connection.recv(65536)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)


def test_a_reset_client_is_one_log_line_not_a_traceback(served_model, capfd, caplog):
    # socketserver's own handle_error printed "Exception occurred during processing of request" and a
    # 30-line traceback for each of these connections.
    caplog.set_level(logging.INFO, logger="warmstart.serve.server")
    with in_process_server(served_model) as address:
        for _ in range(3):
            reset_connections(address)
        time.sleep(0.5)  # the connections' threads log after the reset reaches them
    assert "Traceback" not in capfd.readouterr().err
    went_away = [r for r in caplog.records if "went away" in r.getMessage()]
    assert went_away and all(r.exc_info is None for r in went_away)
