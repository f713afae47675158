"""The protocol-specific parts of the listeners: framing, interpretation, replies.

Each codec is pure (no I/O): :class:`services.ingest.server.Listener` does the rest.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from services.ingest import InputRefusedError
from services.ingest.hl7 import build_ack, parse_hl7
from services.ingest.hl7_syntax import Hl7Header, recover_header
from services.ingest.lines import PARSERS, LineKind, is_skippable, reply_line
from services.ingest.mllp import MllpDecoder, MllpEvent, MllpFrame, encode_frame
from services.ingest.server import Accepted, Frame, FramingFault, Refused

HL7_TOPICS = ("vitals", "nirs", "crrt", "labs", "context")

LINE_TOPICS: dict[LineKind, tuple[str, ...]] = {
    "nirs": ("nirs",),
    "crrt": ("crrt",),
    "context": ("context",),
}


class LineDecoder:
    r"""Lines ending in LF (CRLF accepted). ``seq`` is the line number on the connection;
    blank and ``#`` lines count but yield nothing; a line over the limit is a fault.

    >>> d = LineDecoder(max_line_bytes=8)
    >>> [(u.seq, u.payload) for u in d.feed(b"ab\r\n\n# c\ncd\nef") if isinstance(u, Frame)]
    [(1, b'ab'), (4, b'cd')]
    >>> [(u.seq, u.payload) for u in d.feed(b"g\n") if isinstance(u, Frame)]
    [(5, b'efg')]
    >>> fault = d.feed(b"0123456789\nok\n")[0]
    >>> fault.seq, fault.error.reason, fault.original
    (6, 'line_parse_error', b'01234567')
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._discarding: bytes | None = None  # beginning of an oversize line, kept
        self._seq = 0

    def feed(self, data: bytes) -> list[Frame | FramingFault]:
        units: list[Frame | FramingFault] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                # one byte of slack: the CR of a CRLF may arrive before its LF
                if self._discarding is None and len(self._buffer) > self._max + 1:
                    self._discarding = bytes(self._buffer[: self._max])
                if self._discarding is not None:
                    self._buffer.clear()
                return units
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._seq += 1
            if self._discarding is not None:
                units.append(self._fault(self._discarding))
                self._discarding = None
                continue
            line = line[:-1] if line.endswith(b"\r") else line
            if len(line) > self._max:
                units.append(self._fault(line[: self._max]))
            elif not is_skippable(line):
                units.append(Frame(line, self._seq))

    @property
    def in_frame(self) -> bool:
        return bool(self._buffer) or self._discarding is not None

    def close(self) -> list[FramingFault]:
        """End of stream: a last line without its LF is kept as a fault (no reply)."""
        rest = self._discarding if self._discarding is not None else bytes(self._buffer)
        self._buffer.clear()
        self._discarding = None
        if not rest.strip():
            return []
        self._seq += 1
        error = InputRefusedError("line_parse_error", "stream ended inside a line (no LF)")
        return [FramingFault(error, rest[: self._max], reply_expected=False, seq=self._seq)]

    def _fault(self, beginning: bytes) -> FramingFault:
        error = InputRefusedError("line_parse_error", f"line longer than {self._max} bytes")
        return FramingFault(error, beginning, reply_expected=True, seq=self._seq)


@dataclass(frozen=True)
class LineCodec:
    """NIRS, CRRT or context JSON lines (docs/protocols.md): one reply line per line."""

    kind: LineKind
    site_tz: tzinfo | None = None
    max_line_bytes: int = 4096

    @property
    def adapter(self) -> str:
        return self.kind

    def decoder(self, max_frame_bytes: int) -> LineDecoder:
        return LineDecoder(min(max_frame_bytes, self.max_line_bytes))

    def interpret(self, frame: Frame, received_at: datetime) -> Accepted | Refused:
        try:
            parse = PARSERS[self.kind]
            record = parse(frame.payload, received_at=received_at, site_tz=self.site_tz)
        except InputRefusedError as exc:
            return Refused(exc, reply_line(frame.seq, None, exc))
        key = record.dedup_key
        unavailable = InputRefusedError(
            "storage_unavailable", "not saved (Kafka did not acknowledge), resend"
        )
        return Accepted(
            records=(record.outbound,),
            reply=reply_line(frame.seq, record.sender_id, None),
            dedupe_key=None if key is None else "\x1f".join(str(k) for k in key),
            unavailable_reply=reply_line(frame.seq, record.sender_id, unavailable),
        )

    def refuse_fault(self, fault: FramingFault, received_at: datetime) -> bytes | None:
        return reply_line(max(fault.seq, 1), None, fault.error)


class Hl7FrameDecoder:
    """MLLP frames as listener frames; an oversize frame is a fault its sender waits on."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._mllp = MllpDecoder(max_frame_bytes)

    @property
    def in_frame(self) -> bool:
        return self._mllp.in_frame

    def close(self) -> list[FramingFault]:
        return [f for f in self._units(self._mllp.close()) if isinstance(f, FramingFault)]

    def feed(self, data: bytes) -> list[Frame | FramingFault]:
        return self._units(self._mllp.feed(data))

    def _units(self, events: list[MllpEvent]) -> list[Frame | FramingFault]:
        units: list[Frame | FramingFault] = []
        for event in events:
            if isinstance(event, MllpFrame):
                units.append(Frame(event.payload))
                continue
            reason = "too_large" if event.kind == "oversize_frame" else "mllp_framing_error"
            error = InputRefusedError(reason, event.message)
            units.append(FramingFault(error, event.preview, event.kind == "oversize_frame"))
        return units


_REJECT_REASONS = frozenset({"unsupported_message_type", "too_large", "storage_unavailable"})


@dataclass(frozen=True)
class Hl7Codec:
    """HL7 v2 over MLLP: PCD-01 and lab ORU^R01, ADT A01/A02/A03 (services.ingest.hl7).

    Replies follow HL7 v2.6 section 2.9: enhanced mode (MSH-15 AL/ER/SU, as IHE PCD-01
    senders use) gets commit acks CA/CE/CR, original mode AA/AE/AR. Content errors are
    AE/CE; unsupported types, oversize frames and storage outages are AR/CR (the sender
    may resend the latter). A message is de-duplicated on sending application, facility
    and MSH-10.
    """

    site_tz: tzinfo = UTC
    adapter: str = "hl7"

    def decoder(self, max_frame_bytes: int) -> Hl7FrameDecoder:
        return Hl7FrameDecoder(max_frame_bytes)

    def interpret(self, frame: Frame, received_at: datetime) -> Accepted | Refused:
        try:
            message = parse_hl7(frame.payload, received_at=received_at, site_tz=self.site_tz)
        except InputRefusedError as exc:
            return Refused(exc, self._nak(None, frame.payload, exc, received_at))
        header = message.header
        unavailable = InputRefusedError(
            "storage_unavailable", "message not saved (storage unavailable), resend it"
        )
        return Accepted(
            records=message.records,
            reply=self._ack(_ack_code(header, "accept"), header, frame.payload, received_at),
            # Without an MSH-10 there is nothing to recognise a resend by: no de-duplication.
            dedupe_key="|".join(
                (header.sending_application, header.sending_facility, message.control_id)
            )
            if message.control_id
            else None,
            unavailable_reply=self._nak(header, frame.payload, unavailable, received_at),
        )

    def refuse_fault(self, fault: FramingFault, received_at: datetime) -> bytes | None:
        return self._nak(None, fault.original, fault.error, received_at)

    def _nak(
        self,
        header: Hl7Header | None,
        raw: bytes,
        error: InputRefusedError,
        now: datetime,
    ) -> bytes:
        header = header or recover_header(raw)
        kind = "reject" if error.reason in _REJECT_REASONS else "error"
        return self._ack(_ack_code(header, kind), header, raw, now, error)

    def _ack(
        self,
        code: str,
        header: Hl7Header | None,
        raw: bytes,
        now: datetime,
        error: InputRefusedError | None = None,
    ) -> bytes:
        control_id = uuid.uuid4().hex[:20]  # the ACK's own MSH-10
        ack = build_ack(code, header=header, raw=raw, now=now, error=error, control_id=control_id)
        return encode_frame(ack)


def _ack_code(header: Hl7Header | None, kind: str) -> str:
    """AA/AE/AR in original mode, CA/CE/CR in enhanced mode (MSH-15 set)."""
    enhanced = header is not None and header.accept_ack_type.upper() in {"AL", "ER", "SU"}
    letter = {"accept": "A", "error": "E", "reject": "R"}[kind]
    return ("C" if enhanced else "A") + letter
