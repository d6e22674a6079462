"""The load benchmark's clients: the plain-socket participant reads responses as
``http.client`` does, and both kinds drive a real server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from survey_helpers import ServerProcess, free_port

from benchmarks.survey_load import SocketParticipant, make_study, measure


def _serve_raw(replies: list[list[bytes]]) -> tuple[int, list[bytes]]:
    """A one-connection server that answers each request with its chunks (sent apart, so
    the client must put them together); returns (port, what it received)."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            for chunks in replies:
                got.append(conn.recv(65536))
                for chunk in chunks:
                    conn.sendall(chunk)
                    time.sleep(0.02)

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1], got


def test_the_socket_client_reads_split_and_back_to_back_responses():
    first = (b"HTTP/1.1 303 SEE OTHER\r\nLocation: /trial\r\n"
             b"Set-Cookie: hrbench_survey=abc; HttpOnly; Path=/\r\nContent-Length: 5\r\n\r\nhello")
    second = b"HTTP/1.1 409 CONFLICT\r\nContent-Length: 2\r\n\r\nnoXX"  # XX: a next response's start
    port, got = _serve_raw([[first[:10], first[10:50], first[50:-2], first[-2:]], [second]])
    p = SocketParticipant(port, timeout=5)
    assert p.request("POST", "/trial", {"csrf_token": "t", "choice": "left"}) == (
        303, {"location": "/trial", "set-cookie": "hrbench_survey=abc; HttpOnly; Path=/",
              "content-length": "5"}, "hello")
    assert p.cookie == "hrbench_survey=abc"
    status, _, body = p.request("GET", "/done")
    assert (status, body, p.buf) == (409, "no", b"XX")
    p.close()
    post = got[0].decode()
    assert post.startswith(f"POST /trial HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n")
    assert "Content-Length: 24\r\n" in post
    assert post.endswith("\r\n\r\ncsrf_token=t&choice=left")
    assert "Cookie: hrbench_survey=abc\r\n" in got[1].decode()


def test_the_socket_client_knows_responses_without_a_body_and_refuses_garbage():
    port, _ = _serve_raw([[b"HTTP/1.1 204 No Content\r\n\r\n"],
                          [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"],  # HEAD
                          [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]])
    p = SocketParticipant(port, timeout=5)
    assert p.request("POST", "/x", {"a": "1"})[0::2] == (204, "")
    assert p.request("HEAD", "/")[0::2] == (200, "")
    with pytest.raises(ValueError, match="Content-Length"):
        p.request("GET", "/")
    assert p.sock is None  # closed: what is left of that response is not read as the next
    port, _ = _serve_raw([[b"SSH-2.0-OpenSSH\r\n\r\n"]])
    with pytest.raises(ValueError, match="not an HTTP status line"):
        SocketParticipant(port, timeout=5).request("GET", "/")


def test_both_kinds_of_load_client_answer_through_a_real_server(tmp_path):
    server = ServerProcess(make_study(tmp_path), extra=("--no-start-limit",)).start()
    try:
        for client in ("socket", "http.client"):
            row = measure(server.port, "vote", 2, 1.0, client=client)
            assert row["ok"] > 0 and row["errors"] == 0, (client, row)
    finally:
        server.stop()


def test_clients_that_cannot_reach_the_server_count_errors_and_go_on():
    row = measure(free_port(), "vote", 2, 0.3)  # nothing listens there
    assert row["ok"] == 0 and row["errors"] > 2
