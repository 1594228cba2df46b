"""Talking HTTP to a real server by hand: raw sockets for what an HTTP client will not send
(trickled heads, bodies cut off, invalid requests), the API key these tests share and the
arguments of the small server they start."""

import socket
import time

KEY = "密钥"  # the README's own example: it must work
AUTH = [(b"X-API-Key", KEY.encode("utf-8"))]


def connect(server, timeout=10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    return sock


def read_reply(sock, limit=8.0) -> bytes:
    """Everything the server sends until it closes, or ``limit`` seconds."""
    sock.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def split_reply(reply: bytes):
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def raw_upload_head(length: int | None, content_type="image/jpeg") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{size}"
            f"X-API-Key: ").encode() + KEY.encode() + b"\r\n\r\n"


def server_args(*extra):
    return ["--backend", "torch", "--threads", "1", "--max-batch-size", "4", "--max-wait-ms", "2",
            "--warmup-seconds", "0", "--no-access-log", *extra]


def new_log(server, since: int) -> str:
    return server.log()[since:]
