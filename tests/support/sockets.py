"""Minimal senders for the ingestion listeners: an MLLP client and a line client."""

from __future__ import annotations

import socket

VT, END = b"\x0b", b"\x1c\x0d"


class MllpClient:
    """One connection to an MLLP listener; sends frames, reads ACK frames."""

    def __init__(self, port: int, timeout_s: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> bytes:
        """Send one framed message and return the reply's payload."""
        self.send_raw(VT + payload + END)
        return self.read_reply()

    def read_reply(self) -> bytes:
        while END not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed without a reply (buffer {self._buffer!r})")
            self._buffer += chunk
        frame, _, self._buffer = self._buffer.partition(END)
        assert frame.startswith(VT), frame
        return frame[1:]

    def close(self) -> None:
        self.sock.close()


class LineClient:
    """One connection to a line listener; sends lines, reads reply lines."""

    def __init__(self, port: int, timeout_s: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._buffer = b""

    def send_lines(self, lines: list[bytes]) -> None:
        self.sock.sendall(b"".join(line + b"\n" for line in lines))

    def read_replies(self, count: int) -> list[str]:
        while self._buffer.count(b"\n") < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {self._buffer!r}")
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n", count)
        return [line.decode() for line in lines]

    def close(self) -> None:
        self.sock.close()


def ack_code(reply: bytes) -> str:
    """MSA-1 of an HL7 ACK payload."""
    for segment in reply.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            text = segment.decode("latin-1")  # MSA-1 is ASCII whatever the charset
            return text.split(text[3])[1]
    raise AssertionError(f"no MSA segment in {reply!r}")
