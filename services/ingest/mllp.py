"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, HL7 v2.6 / IHE ITI TF-2 appendix C).

A frame is ``<VT 0x0B> payload <FS 0x1C><CR 0x0D>``. :class:`MllpDecoder` is incremental
and pure: feed it whatever the socket returned, get back complete frames and framing
errors; chunk boundaries never change the frames.

>>> d = MllpDecoder(max_frame_bytes=64)
>>> d.feed(b"\\x0bMSH|a\\x1c") + d.feed(b"\\x0d\\x0bMSH|b\\x1c\\x0d")
[MllpFrame(payload=b'MSH|a'), MllpFrame(payload=b'MSH|b')]
>>> encode_frame(b"MSH|x")
b'\\x0bMSH|x\\x1c\\r'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_VT, _FS, _CR = 0x0B, 0x1C, 0x0D
_PREVIEW = 64  # bytes kept in an error report
_WHITESPACE = frozenset(b" \t\r\n\x00")


@dataclass(frozen=True)
class MllpFrame:
    """A complete frame's payload (without the block characters)."""

    payload: bytes


ErrorKind = Literal["oversize_frame", "outside_frame", "unterminated_frame"]


@dataclass(frozen=True)
class MllpError:
    """A framing problem, reported once; ``preview`` holds the first bytes concerned.

    - ``oversize_frame``: a frame exceeded ``max_frame_bytes``; it is discarded up to
      its end block (or the next start block). The preview is its first
      ``max_frame_bytes`` bytes (for the dead letter and the NAK's header), whatever
      the chunking.
    - ``outside_frame``: non-whitespace bytes between frames, skipped (up to 64 reported).
    - ``unterminated_frame``: a start block inside a frame, or :meth:`MllpDecoder.close`
      inside a frame; the partial frame is discarded.
    """

    kind: ErrorKind
    message: str
    preview: bytes


MllpEvent = MllpFrame | MllpError


def encode_frame(payload: bytes) -> bytes:
    """``payload`` framed for MLLP; refuses payloads containing VT or FS (unframeable)."""
    if START_BLOCK in payload or b"\x1c" in payload:
        raise ValueError("an MLLP payload cannot contain 0x0B or 0x1C")
    return START_BLOCK + payload + END_BLOCK


class MllpDecoder:
    """Incremental MLLP decoder: :meth:`feed` bytes, get :data:`MllpEvent` s.

    Tolerated: whitespace between frames (silently), an FS not followed by CR (the frame
    still ends there). Frames larger than ``max_frame_bytes`` are never buffered whole.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self._state: Literal["outside", "frame", "discard"] = "outside"
        self._buffer = bytearray()
        self._pending_fs = False  # saw FS at the end of the last chunk, inside a frame
        self._garbage = bytearray()  # outside-frame bytes of the current run, <= _PREVIEW
        self._garbage_reported = False

    @property
    def in_frame(self) -> bool:
        """Whether a frame has started and not ended (bytes are buffered or discarded)."""
        return self._state != "outside"

    def feed(self, data: bytes) -> list[MllpEvent]:
        """Consume ``data``; return the frames completed and errors found, in order."""
        events: list[MllpEvent] = []
        view = bytes(data)
        i, n = 0, len(view)
        while i < n:
            if self._pending_fs:
                self._pending_fs = False
                self._end_frame(events)
                if view[i] == _CR:
                    i += 1
                continue
            if self._state == "outside":
                i = self._outside(view, i, events)
            else:
                i = self._inside(view, i, events)
        return events

    def close(self) -> list[MllpEvent]:
        """End of stream: report an unfinished frame or unreported stray bytes."""
        events: list[MllpEvent] = []
        if self._pending_fs:
            self._pending_fs = False
            self._end_frame(events)
        elif self._state == "frame":
            events.append(
                MllpError(
                    "unterminated_frame",
                    f"stream ended inside a frame ({len(self._buffer)} bytes discarded)",
                    bytes(self._buffer[:_PREVIEW]),
                )
            )
        self._flush_garbage(events)
        self._state = "outside"
        self._buffer.clear()
        return events

    # -- states ------------------------------------------------------------------------

    def _outside(self, view: bytes, i: int, events: list[MllpEvent]) -> int:
        start = view.find(START_BLOCK, i)
        stop = len(view) if start < 0 else start
        for b in view[i:stop]:
            if b in _WHITESPACE and not self._garbage:
                continue
            if len(self._garbage) < _PREVIEW:
                self._garbage.append(b)
                if len(self._garbage) == _PREVIEW:
                    self._report_garbage(events)
        if start < 0:
            return len(view)
        self._flush_garbage(events)
        self._state = "frame"
        self._buffer.clear()
        return start + 1

    def _inside(self, view: bytes, i: int, events: list[MllpEvent]) -> int:
        fs = view.find(b"\x1c", i)
        vt = view.find(START_BLOCK, i)
        end = len(view) if fs < 0 else fs
        if 0 <= vt < end:  # a new start block before this frame ended
            self._take(view[i:vt], events)
            if self._state == "frame":
                events.append(
                    MllpError(
                        "unterminated_frame",
                        f"start block inside a frame: {len(self._buffer)} bytes discarded",
                        bytes(self._buffer[:_PREVIEW]),
                    )
                )
            self._state = "frame"
            self._buffer.clear()
            return vt + 1
        self._take(view[i:end], events)
        if fs < 0:
            return len(view)
        if fs + 1 < len(view):
            self._end_frame(events)
            return fs + 2 if view[fs + 1] == _CR else fs + 1
        self._pending_fs = True
        return fs + 1

    def _take(self, chunk: bytes, events: list[MllpEvent]) -> None:
        if self._state == "discard" or not chunk:
            return
        if len(self._buffer) + len(chunk) > self.max_frame_bytes:
            # the frame's first max_frame_bytes bytes are kept whole (for the dead letter
            # and to recover the header of the NAK), whatever the chunking
            keep = self.max_frame_bytes
            preview = bytes(self._buffer[:keep]) + chunk[: max(0, keep - len(self._buffer))]
            events.append(
                MllpError(
                    "oversize_frame",
                    f"frame larger than {self.max_frame_bytes} bytes: discarded",
                    preview,
                )
            )
            self._state = "discard"
            self._buffer.clear()
            return
        self._buffer.extend(chunk)

    def _end_frame(self, events: list[MllpEvent]) -> None:
        if self._state == "frame":
            events.append(MllpFrame(bytes(self._buffer)))
        self._state = "outside"
        self._buffer.clear()

    def _report_garbage(self, events: list[MllpEvent]) -> None:
        if not self._garbage_reported:
            self._garbage_reported = True
            events.append(
                MllpError(
                    "outside_frame",
                    "bytes outside an MLLP frame (no 0x0B start block): skipped",
                    bytes(self._garbage),
                )
            )

    def _flush_garbage(self, events: list[MllpEvent]) -> None:
        if self._garbage:
            self._report_garbage(events)
        self._garbage.clear()
        self._garbage_reported = False
