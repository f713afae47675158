"""HL7 v2 syntax: character set, segments, fields, escapes and DTM timestamps (pure).

Follows HL7 v2.6 chapter 2 (Control): 2.5 message construction (segments end with
CR; tolerated here: LF and CRLF), 2.5.4 encoding characters from MSH-1/MSH-2 (any
characters, not only ``|^~\\&``), 2.7 escape sequences, 2A.22 DTM, 2.15.9.18 MSH-18
character set (table 0211).

Fields are kept in their escaped wire form and split lazily: a PCD-01 message has
dozens of OBX segments of which a handful of fields are read.

>>> msg = decode_message(b"MSH|^~\\\\&|APP|FAC|||20260101120000+0100||ORU^R01|42|P|2.6\\rPID|||7")
>>> msg.encoding.component, msg.segments[1].name, msg.text(msg.segments[1], 3)
('^', 'PID', '7')
>>> parse_dtm("20260101120000.5-0400", site_tz=UTC).isoformat()
'2026-01-01T16:00:00.500000+00:00'
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from services.ingest import InputRefusedError

__all__ = [
    "Encoding",
    "Hl7Header",
    "Hl7RefusedError",
    "RawMessage",
    "Segment",
    "decode_message",
    "dtm_offset",
    "escape",
    "parse_dtm",
    "recover_header",
    "split_lines",
]

_BOM = b"\xef\xbb\xbf"
_MLLP_EDGE = b"\x0b\x1c"
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_LINES = re.compile(rb"\r\n|\r|\n")
_TEXT_LINES = re.compile(r"\r\n|\r|\n")
_DTM = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,6})|(?<=\d{14})(?P<ms>\d{3}))?(?P<tz>[+-]\d{4})?$",
    re.ASCII,
)

# HL7 table 0211 -> Python codec. UTF-16/32 cannot be read by a byte-oriented parser.
_CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR14": "iso2022_jp_2",
    "ISO IR87": "iso2022_jp_2",
    "ISO IR159": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "CNS 11643-1992": "big5",
    "BIG-5": "big5",
}
_UNREADABLE_CHARSETS = ("UNICODE UTF-16", "UNICODE UTF-32")

# HL7 table 0357 (message error condition codes) used in ERR-3.
ERROR_TEXT = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "207": "Application internal error",
}


class Hl7RefusedError(InputRefusedError):
    """:class:`InputRefusedError` with the HL7 table 0357 error code and ERR-2 location.

    ``location`` is ``(segment id, segment sequence, field)`` when known.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        hl7_code: str = "207",
        location: tuple[str, int, int] | None = None,
    ) -> None:
        super().__init__(reason, message)
        self.hl7_code = hl7_code
        self.location = location


def _refuse(message: str, code: str = "100") -> Hl7RefusedError:
    return Hl7RefusedError("hl7_parse_error", message, hl7_code=code)


def _delimiter_ok(ch: str) -> bool:
    """Delimiters are printable, non-alphanumeric ASCII (v2.6 2.5.4)."""
    return 32 < ord(ch) < 127 and not ch.isalnum()


@dataclass(frozen=True)
class Encoding:
    """The delimiters of one message (MSH-1, MSH-2; v2.7 adds the truncation character)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def msh2(self) -> str:
        """MSH-2 as the sender wrote it."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    @classmethod
    def from_msh(cls, sep: str, msh2: str) -> Encoding:
        """Delimiters from MSH-1 and MSH-2 (v2.6 2.5.4); missing ones take their defaults."""
        chars = list(msh2[:5])
        defaults = ["^", "~", "\\", "&"]
        while len(chars) < 4:
            default = defaults[len(chars)]
            if default in chars or default == sep:
                raise _refuse(f"MSH-2 {msh2!r}: encoding characters missing")
            chars.append(default)
        used = [sep, *chars]
        if len(set(used)) != len(used) or not all(_delimiter_ok(c) for c in used):
            raise _refuse(
                f"MSH-1/MSH-2 {sep!r} {msh2!r}: delimiters must be distinct, "
                "non-alphanumeric characters"
            )
        return cls(sep, chars[0], chars[1], chars[2], chars[3], chars[4] if len(chars) > 4 else "")


@dataclass(frozen=True)
class Segment:
    """One segment: its id and its fields in wire form; ``fields[n]`` is SEG-n.

    For MSH, ``fields[1]`` is the field separator and ``fields[2]`` the encoding
    characters, so MSH-n is ``fields[n]`` too.
    """

    name: str
    fields: tuple[str, ...]
    index: int  # occurrence of this segment id in the message, 1-based (ERR-2 ERL.2)

    def raw(self, n: int) -> str:
        """SEG-n in wire form ('' when absent)."""
        return self.fields[n] if 0 < n < len(self.fields) else ""


@dataclass(frozen=True)
class RawMessage:
    """A decoded message: its delimiters, its segments and its character set."""

    encoding: Encoding
    segments: tuple[Segment, ...]
    codec: str
    warnings: tuple[str, ...] = field(default=())

    # -- field access, lazy splitting -------------------------------------------------

    def reps(self, value: str) -> list[str]:
        """Repetitions of a field in wire form."""
        return value.split(self.encoding.repetition) if value else []

    def comps(self, value: str) -> list[str]:
        """Components of a (repetition of a) field, in wire form."""
        return value.split(self.encoding.component)

    def comp(self, value: str, n: int) -> str:
        """Component n (1-based) of ``value`` in wire form, '' when absent."""
        if n == 1 and self.encoding.component not in value:
            return value
        parts = value.split(self.encoding.component)
        return parts[n - 1] if n <= len(parts) else ""

    def sub(self, value: str, n: int) -> str:
        """Subcomponent n (1-based) of a component in wire form."""
        parts = value.split(self.encoding.subcomponent)
        return parts[n - 1] if n <= len(parts) else ""

    def text(self, seg: Segment, n: int, comp: int = 1, rep: int = 1) -> str:
        """SEG-n.comp of repetition ``rep``, unescaped and stripped."""
        value = seg.raw(n)
        if not value:
            return ""
        if rep > 1 or self.encoding.repetition in value:
            reps = value.split(self.encoding.repetition)
            value = reps[rep - 1] if rep <= len(reps) else ""
        c = self.comp(value, comp)
        if self.encoding.subcomponent in c:
            c = self.sub(c, 1)
        return self.unescape(c).strip()

    def unescape(self, value: str) -> str:
        """Resolve escape sequences (v2.6 2.7): delimiters, ``\\Xhh..\\``; drop formatting."""
        esc = self.encoding.escape
        if esc not in value:
            return value
        out: list[str] = []
        i, n = 0, len(value)
        while i < n:
            ch = value[i]
            end = value.find(esc, i + 1) if ch == esc else -1
            if end < 0:
                out.append(ch)
                i += 1
                continue
            seq = value[i + 1 : end]
            replacement = self._escape_value(seq)
            if replacement is None:  # not an escape sequence: keep literally
                out.append(ch)
                i += 1
                continue
            out.append(replacement)
            i = end + 1
        return "".join(out)

    def _escape_value(self, seq: str) -> str | None:
        enc = self.encoding
        simple = {
            "F": enc.field,
            "S": enc.component,
            "T": enc.subcomponent,
            "R": enc.repetition,
            "E": enc.escape,
            "P": enc.truncation,
            "H": "",
            "N": "",
        }
        if seq in simple:
            return simple[seq]
        if seq.startswith("X") and len(seq) > 1:
            hexdigits = seq[1:]
            if len(hexdigits) % 2 or not all(c in "0123456789ABCDEFabcdef" for c in hexdigits):
                return None
            data = bytes.fromhex(hexdigits)
            try:
                return data.decode(self.codec)
            except (UnicodeDecodeError, LookupError):
                return data.decode("latin-1")
        if seq == ".br":
            return "\n"
        if (seq[:1] in ("C", "M", "Z") and seq[1:].isalnum()) or (seq[:1] == "." and seq[1:]):
            return ""  # charset switches, local escapes, formatting commands: dropped
        return None

    def find(self, name: str) -> Segment | None:
        """The first segment called ``name``."""
        return next((s for s in self.segments if s.name == name), None)


def escape(text: str, enc: Encoding) -> str:
    """``text`` with the delimiters escaped (v2.6 2.7), for writing a field value.

    >>> escape("a|b^c\\\\d", Encoding())
    'a\\\\F\\\\b\\\\S\\\\c\\\\E\\\\d'
    """
    mapping = {
        enc.escape: "E",
        enc.field: "F",
        enc.component: "S",
        enc.subcomponent: "T",
        enc.repetition: "R",
    }
    if enc.truncation:
        mapping[enc.truncation] = "P"
    out = []
    for ch in text:
        if ch in mapping:
            out.append(f"{enc.escape}{mapping[ch]}{enc.escape}")
        elif ch in "\r\n\t":
            out.append(" ")
        elif ord(ch) < 32 or ord(ch) == 127:
            continue
        else:
            out.append(ch)
    return "".join(out)


def split_lines(raw: bytes) -> list[bytes]:
    """Segments of a message at CR, LF or CRLF (v2.6 2.5.1 says CR; we tolerate both)."""
    return _LINES.split(raw)


def _strip_edges(raw: bytes) -> bytes:
    raw = raw.strip(b" \t\r\n\x00" + _MLLP_EDGE)
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :].lstrip(b" \t\r\n")
    return raw


def _charset_names(raw_msh: bytes, sep: int) -> list[str]:
    parts = raw_msh.split(bytes([sep]))
    if len(parts) <= 17:  # parts[1] is MSH-2, parts[17] is MSH-18
        return []
    rep = parts[1][1:2].decode("latin-1") or "~"
    value = parts[17].decode("ascii", errors="replace")
    return [r.strip().upper() for r in value.split(rep) if r.strip()]


def _decode(raw: bytes, names: Sequence[str]) -> tuple[str, str, list[str]]:
    """Decode with MSH-18 (table 0211); default UTF-8, then latin-1 with a warning."""
    warnings: list[str] = []
    codec = "utf-8"
    for name in names:
        if name in _UNREADABLE_CHARSETS:
            raise _refuse(f"MSH-18 character set {name!r} is not supported", "203")
    known = [_CHARSETS[n] for n in names if n in _CHARSETS]
    if any(c == "iso2022_jp_2" for c in known):
        codec = "iso2022_jp_2"
    elif known:
        codec = known[0]
    elif names:
        warnings.append(f"MSH-18 character set {names[0]!r} unknown: read as UTF-8")
    try:
        return raw.decode(codec), codec, warnings
    except UnicodeDecodeError:
        warnings.append(
            f"message is not valid {codec} (MSH-18 {names[0] if names else 'absent'}):"
            " read as ISO 8859-1"
        )
        return raw.decode("latin-1"), "latin-1", warnings


def decode_message(raw: bytes) -> RawMessage:
    """Tokenise one message: charset, delimiters, segments. Raises :class:`Hl7RefusedError`.

    Tolerated: a UTF-8 BOM, surrounding whitespace and stray MLLP block characters,
    empty lines, CR / LF / CRLF segment terminators.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise _refuse("HL7 input must be bytes")
    raw = _strip_edges(bytes(raw))
    if not raw:
        raise _refuse("empty message")
    if b"\x00" in raw:
        raise _refuse("NUL bytes in message (UTF-16/32 is not supported)")
    if not raw.startswith(b"MSH") or len(raw) < 8:
        head = raw[:20].decode("latin-1").translate({c: "." for c in range(32)})
        raise _refuse(f"message does not start with an MSH segment: {head!r}")
    sep_byte = raw[3]
    if not _delimiter_ok(chr(sep_byte)):
        raise _refuse(f"MSH-1 field separator {chr(sep_byte)!r} is not allowed")
    text, codec, warnings = _decode(raw, _charset_names(split_lines(raw)[0], sep_byte))
    lines = _TEXT_LINES.split(text)
    sep = chr(sep_byte)
    msh2 = lines[0].split(sep)[1] if sep in lines[0][4:] else lines[0][4:]
    if not msh2:
        raise _refuse("MSH-2 encoding characters missing")
    enc = Encoding.from_msh(sep, msh2)
    segments: list[Segment] = []
    seen: dict[str, int] = {}
    for line in lines:
        line = line.strip("\x0b\x1c")
        if not line.strip():
            continue
        parts = line.split(sep)
        name = parts[0].strip()
        if not _SEGMENT_ID.match(name):
            preview = line[:20].translate({c: "." for c in range(32)})
            raise _refuse(f"segment {len(segments) + 1}: invalid segment id in {preview!r}")
        if name == "MSH":
            if segments:
                raise _refuse(f"segment {len(segments) + 1}: a second MSH (one message per frame)")
            fields = ("MSH", sep, *parts[1:])
        else:
            fields = (name, *parts[1:])
        seen[name] = seen.get(name, 0) + 1
        segments.append(Segment(name, fields, seen[name]))
    return RawMessage(enc, tuple(segments), codec, tuple(warnings))


# -- header ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hl7Header:
    """What an acknowledgement needs from MSH (v2.6 2.15.9). Fields in wire form.

    Application and facility fields (HD) are kept exactly as sent, in the sender's
    encoding characters, so an ACK can echo them swapped.
    """

    encoding: Encoding
    sending_application: str = ""  # MSH-3
    sending_facility: str = ""  # MSH-4
    receiving_application: str = ""  # MSH-5
    receiving_facility: str = ""  # MSH-6
    message_datetime: str = ""  # MSH-7
    message_type: str = ""  # MSH-9.1^MSH-9.2, e.g. ORU^R01
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11
    version_id: str = ""  # MSH-12
    accept_ack_type: str = ""  # MSH-15
    application_ack_type: str = ""  # MSH-16
    character_set: str = ""  # MSH-18

    @property
    def trigger_event(self) -> str:
        """MSH-9.2, e.g. R01."""
        return self.message_type.partition(self.encoding.component)[2]


def header_of(msg: RawMessage) -> Hl7Header:
    """The :class:`Hl7Header` of a tokenised message."""
    msh = msg.segments[0]
    enc = msg.encoding
    mtype = msg.reps(msh.raw(9))
    first = mtype[0] if mtype else ""
    code, trigger = msg.comp(first, 1).strip(), msg.comp(first, 2).strip()
    return Hl7Header(
        encoding=enc,
        sending_application=msh.raw(3),
        sending_facility=msh.raw(4),
        receiving_application=msh.raw(5),
        receiving_facility=msh.raw(6),
        message_datetime=msg.text(msh, 7),
        message_type=f"{code}{enc.component}{trigger}" if trigger else code,
        control_id=msg.text(msh, 10),
        processing_id=msg.text(msh, 11),
        version_id=msg.text(msh, 12),
        accept_ack_type=msg.text(msh, 15),
        application_ack_type=msg.text(msh, 16),
        character_set=msg.text(msh, 18),
    )


def recover_header(raw: bytes | None) -> Hl7Header | None:
    """Best effort: the MSH fields of bytes that may not parse as a whole (for a NAK).

    >>> h = recover_header(b"\\x0bjunk\\rMSH|^~\\\\&|A|B|C|D|x||ORU^R01|9|P|2.5\\rPID|||\\xff")
    >>> (h.sending_application, h.control_id, h.version_id)
    ('A', '9', '2.5')
    >>> recover_header(b"garbage") is None
    True
    """
    if not raw:
        return None
    at = bytes(raw).find(b"MSH")
    if at < 0 or len(raw) < at + 8:
        return None
    line = split_lines(bytes(raw)[at:])[0]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("latin-1")
    if len(text) < 4 or not _delimiter_ok(text[3]):
        return None
    sep = text[3]
    parts = text.split(sep)
    msh2 = parts[1] if len(parts) > 1 else ""
    try:
        enc = Encoding.from_msh(sep, msh2)
    except InputRefusedError:
        enc = Encoding()
    fields = ("MSH", sep, *parts[1:])
    msg = RawMessage(enc, (Segment("MSH", fields, 1),), "latin-1")
    return header_of(msg)


# -- timestamps -----------------------------------------------------------------------


def dtm_offset(value: str) -> tzinfo | None:
    """The UTC offset written in a DTM, if any (for MSH-7's offset rule)."""
    match = _DTM.match(value.strip())
    if match is None or match["tz"] is None:
        return None
    return _offset(match["tz"])


def _offset(tz: str) -> timezone:
    sign = -1 if tz[0] == "-" else 1
    hours, minutes = int(tz[1:3]), int(tz[3:5])
    if hours > 14 or minutes > 59:
        raise ValueError(f"UTC offset {tz!r} out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_dtm(value: str, *, default_tz: tzinfo | None = None, site_tz: tzinfo) -> datetime:
    """HL7 DTM ``YYYY[MM[DD[HH[MM[SS[.S{1,4}]]]]]][+/-ZZZZ]`` (v2.6 2A.22) as UTC.

    Without an offset, ``default_tz`` (the offset of MSH-7) applies, else ``site_tz``.
    Tolerated: a TS precision component after ``^``, up to 6 fraction digits, and
    milliseconds written without the dot (``YYYYMMDDHHMMSSmmm``, seen from gateways).
    Raises ``ValueError`` for anything else.

    >>> parse_dtm("20260124131540250+0800", site_tz=UTC).isoformat()
    '2026-01-24T05:15:40.250000+00:00'

    >>> parse_dtm("20210425230331.496-0400", site_tz=UTC).isoformat()
    '2021-04-26T03:03:31.496000+00:00'
    >>> parse_dtm("202104252303", default_tz=timezone(timedelta(hours=2)), site_tz=UTC).hour
    21
    >>> parse_dtm("20211340", site_tz=UTC)
    Traceback (most recent call last):
    ...
    ValueError: '20211340' is not a valid HL7 date/time: month must be in 1..12
    """
    text = value.strip()
    match = _DTM.match(text)
    if match is None:
        raise ValueError(f"{value!r} is not an HL7 date/time (YYYYMMDDHHMMSS[.S][+/-ZZZZ])")
    if match["f"] is not None and match["s"] is None:
        raise ValueError(f"{value!r}: fractional seconds need seconds")
    try:
        tz = _offset(match["tz"]) if match["tz"] else (default_tz or site_tz)
        fraction = match["f"] or match["ms"] or ""
        naive = datetime(  # noqa: DTZ001 - zone attached below (fold-aware for zoneinfo)
            int(match["y"]),
            int(match["mo"] or 1),
            int(match["d"] or 1),
            int(match["h"] or 0),
            int(match["mi"] or 0),
            int(match["s"] or 0),
            int((fraction + "000000")[:6]),
        )
        if naive.year < 1800:
            raise ValueError(f"year {naive.year} out of range")
        return naive.replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value!r} is not a valid HL7 date/time: {exc}") from None


def format_dtm(moment: datetime) -> str:
    """A DTM with seconds and UTC offset, for MSH-7 of our own messages.

    >>> format_dtm(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    '20260102030405+0000'
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.strftime("%Y%m%d%H%M%S%z")


def iter_segments(msg: RawMessage, *names: str) -> Iterator[Segment]:
    """Segments whose id is one of ``names``, in order."""
    return (s for s in msg.segments if s.name in names)
