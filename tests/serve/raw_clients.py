"""Misbehaving clients on raw loopback sockets: ones that stop reading (a 1-byte receive buffer),
send bodies in pieces, or speak WebSocket by hand, which no well-behaved client library does."""

from __future__ import annotations

import base64
import os
import socket
import struct
from urllib.parse import urlsplit

__all__ = ["stalled_socket", "send_request_head", "read_response_head", "ws_handshake", "ws_text_frame"]


def stalled_socket(url: str) -> socket.socket:
    """A connected socket with the smallest receive buffer the kernel allows: once it is full the
    server's sends block, as they do for a client that has stopped reading."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    assert host == "127.0.0.1", "these clients only ever talk to loopback"
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.settimeout(30)
    s.connect((host, port))
    return s


def send_request_head(sock: socket.socket, method: str, path: str, headers: dict[str, str]) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(lines).encode("latin-1"))


def read_response_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body bytes read past the head so far)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        piece = sock.recv(4096)
        if not piece:
            raise ConnectionError(f"closed before a full response head: {buf!r}")
        buf += piece
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, rest


def ws_handshake(sock: socket.socket, path: str, headers: dict[str, str] | None = None) -> None:
    """Open a WebSocket on `sock` (asserts the 101)."""
    key = base64.b64encode(os.urandom(16)).decode()
    send_request_head(sock, "GET", path, {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
                                          "Sec-WebSocket-Version": "13", **(headers or {})})
    status, _, _ = read_response_head(sock)
    assert status == 101, f"handshake answered {status}"


def ws_text_frame(text: str) -> bytes:
    """One masked (as clients must) final text frame."""
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
