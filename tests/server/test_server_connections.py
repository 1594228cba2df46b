"""`shiwu serve`'s connections on a real server process (issue 14): a request head that trickles
in is cut off, idle connections are closed, connections over the cap get 503 and the server
recovers, running out of file descriptors is logged once, not a flood."""

import json
import socket
import time

import httpx
import pytest

from support.raw_http import connect, new_log, read_reply, server_args, split_reply

from shiwu.server.process import ServerProcess

MAX_CONNECTIONS = 48
HEADER_TIMEOUT = 2


@pytest.fixture(scope="module")
def server():
    with ServerProcess(server_args("--header-timeout", str(HEADER_TIMEOUT), "--keep-alive-timeout", "2",
                                   "--max-connections", str(MAX_CONNECTIONS))) as process:
        yield process


@pytest.mark.slow
def test_a_request_head_that_trickles_in_is_cut_off(server):
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(server) as sock:
        started = time.monotonic()
        closed_after = None
        for byte in head:  # one byte every 0.2 s: each byte used to reset uvicorn's timer
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            time.sleep(0.2)
            sock.settimeout(0.001)
            try:
                reply = sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                continue
            except ConnectionResetError:
                reply = b""
            closed_after = time.monotonic() - started
            break
    assert closed_after is not None, "a head sent 1 byte every 0.2 s kept the connection open"
    assert closed_after < HEADER_TIMEOUT + 3
    if reply:
        status, headers, body = split_reply(reply)
        assert status == 408 and headers["content-type"] == "application/json"


@pytest.mark.slow
def test_idle_connections_are_closed(server):
    with connect(server) as sock:  # connects, never sends anything
        started = time.monotonic()
        assert read_reply(sock, HEADER_TIMEOUT + 5) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    with connect(server) as sock:  # one request, then idle on keep-alive
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        started = time.monotonic()
        reply = read_reply(sock, 10)
        assert reply.startswith(b"HTTP/1.1 200") and time.monotonic() - started < 5


@pytest.mark.slow
def test_connections_over_the_cap_get_503_and_the_server_recovers(server):
    socks = []
    try:
        for _ in range(MAX_CONNECTIONS + 12):
            socks.append(connect(server))
        replies = [read_reply(sock, 0.5) for sock in socks[MAX_CONNECTIONS - 4:]]
    finally:
        for sock in socks:
            sock.close()
    refused = [split_reply(r) for r in replies if r.startswith(b"HTTP/1.1 503")]
    assert len(refused) >= 8, [r[:60] for r in replies]
    status, headers, body = refused[0]
    assert headers["retry-after"] == "1" and headers["content-type"] == "application/json"
    assert "too many open connections" in json.loads(body)["detail"]
    time.sleep(0.3)
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


@pytest.mark.slow
def test_running_out_of_file_descriptors_is_logged_once_not_a_flood():
    # 160 descriptors: the process needs ~40 of its own; 300 connections exhaust the rest.
    with ServerProcess(server_args("--max-connections", "5000", "--header-timeout", "6"),
                       open_files=160) as server:
        start = len(server.log())
        socks = []
        try:
            for _ in range(300):
                socks.append(connect(server, timeout=2))
            time.sleep(3.5)  # the server retries accept() every second meanwhile
        finally:
            for sock in socks:
                sock.close()
        time.sleep(1.5)
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        log = new_log(server, start)
    assert "Traceback" not in log, log[-3000:]
    resource_lines = [line for line in log.splitlines() if "descriptors" in line]
    assert 1 <= len(resource_lines) <= 2, log[-3000:]
    assert "ulimit -n" in resource_lines[0]
