"""HL7 v2 segments: read an SIU message into a ``ParsedSiu`` and build the ACK for it.

Only this module knows segment and field positions. python-hl7 splits the message into
segments and fields with the separators the sender declared in MSH-1/MSH-2; components,
repetitions and escape sequences are resolved here, *after* splitting, so an escaped
delimiter (``\\F\\``, ``\\S\\``...) can never cut a field in two.

Nothing here logs: a parsed message holds a patient's phone number, and the callers
decide what (ids and codes only) goes to the log.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import hl7 as hl7lib
import phonenumbers

SUPPORTED_TRIGGERS = frozenset({"S12", "S13", "S14", "S15", "S17", "S26"})
# Appointment.placer_id / filler_id hold this many characters.
MAX_ID_LENGTH = 128
# v2.3 to v2.8 share the SIU layout we read; v2.1/2.2 had no SIU worth the name.
_VERSION = re.compile(r"^2\.(3|4|5|6|7|8)(\.\d+)?$")
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?"
                  r"([+-]\d{4})?$")
# Equipment (XTN-3) and use (XTN-2) codes, standard and the site-local ones seen in
# real feeds (renalware's MOBILE/HOME/EMAIL in XTN-2).
_NOT_A_PHONE = {"NET", "INTERNET", "X.400", "FX", "EMAIL", "E-MAIL", "FAX", "BP"}
_MOBILE = {"CP", "MOBILE", "CELL", "PRS"}
# Line types some feeds write in XTN-2 where XTN-3 belongs: they type an entry as well.
_TYPED_USES = {"MOBILE", "CELL"}
_LANDLINE = {"PH", "HOME", "PRN", "WPN", "ORN", "VHN"}
_HL7_NULL = '""'
# AIG is the segment for general resources (rooms, devices, Epic's RESOURCE records);
# people come in AIP. An AIG resource is a Practitioner only when AIG-4 (resource type,
# a local code) names a person: one of these words in its text, or the code "P"
# (Ntierprise/Healthmatics). A word for a thing wins over a word for a person.
_PERSON_WORDS = {"PERSON", "PERSONNEL", "PRACTITIONER", "PROVIDER", "PHYSICIAN", "DOCTOR",
                 "NURSE", "CLINICIAN", "STAFF"}
_PERSON_CODES = {"P"}
_THING_WORDS = ("EQUIP", "ROOM", "LOCATION", "DEVICE", "MACHINE")
# The FHIR identifier system of the US National Provider Identifier (XCN-13 type "NPI").
_NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
# ISO 639-2 (and the odd English name) to the BCP 47 primary tags our templates use.
_LANGUAGES = {
    "eng": "en", "english": "en", "spa": "es", "spanish": "es", "por": "pt",
    "portuguese": "pt", "ara": "ar", "arabic": "ar", "fra": "fr", "fre": "fr", "french": "fr",
    "deu": "de", "ger": "de", "zho": "zh", "chi": "zh", "vie": "vi", "rus": "ru", "kor": "ko",
}
# MSH-18 names to Python codecs, for \X..\ escapes; unknown sets fall back to UTF-8.
_CHARSETS = {
    "": "ascii", "ASCII": "ascii", "8859/1": "latin-1", "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UNICODE": "utf-8",
}
_UNITS = {"S": 1, "SEC": 1, "SECONDS": 1, "M": 60, "MIN": 60, "MINS": 60, "MINUTES": 60,
          "MINUTE": 60, "H": 3600, "HR": 3600, "HOUR": 3600, "HOURS": 3600}


class Hl7Error(ValueError):
    """Base for problems with a message; ``str()`` is safe to log and to put in an ERR."""


class UnreadableMessage(Hl7Error):
    """Not even the MSH segment can be read: there is nothing to acknowledge."""


class UnusableMessage(Hl7Error):
    """MSH is fine but the content is not (truncated, no appointment id or time): AE."""

    def __init__(self, text: str, segment: str = "", code: str = "101") -> None:
        super().__init__(text)
        self.segment = segment
        # HL7 table 0357: 100 segment sequence, 101 required field missing, 102 data type.
        self.code = code


class UnsupportedMessage(Hl7Error):
    """A message type or version we do not take: AR, the sender should not resend it."""


@dataclass(frozen=True)
class Header:
    """What the ACK needs from MSH, readable even when the rest of the message is not."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_time: datetime | None
    message_type: str
    trigger: str
    control_id: str
    processing_id: str
    version: str
    charset: str

    @property
    def sender(self) -> str:
        """MSH-3^MSH-4 (first components), the namespace control ids are unique in."""
        comp = self.encoding_characters[:1] or "^"
        return (f"{self.sending_application.split(comp)[0]}"
                f"^{self.sending_facility.split(comp)[0]}")[:200]


@dataclass(frozen=True)
class Provider:
    """A resource person from AIP (or AIG): an identifier, and a name we may show."""

    identifier: str
    display_name: str | None


@dataclass
class ParsedSiu:
    """An SIU message reduced to what a video visit needs; no patient name, no address."""

    header: Header
    placer_id: str | None
    filler_id: str | None
    start: datetime | None
    end: datetime | None
    start_source: str | None
    patient_id: str | None
    phone: str | None
    phone_line_type: str | None
    language: str | None
    providers: list[Provider] = field(default_factory=list)
    department: str | None = None

    @property
    def trigger(self) -> str:
        return self.header.trigger


class _Reader:
    """Field access over a python-hl7 message with the sender's own delimiters."""

    def __init__(self, message: hl7lib.Message, charset: str) -> None:
        self.message = message
        seps = message.separators  # segment, field, repetition, component, subcomponent
        self.rep, self.comp, self.sub = seps[2], seps[3], seps[4]
        self.esc = message.esc
        self.codec = _CHARSETS.get(charset.upper().strip(), "utf-8")

    def segments(self, name: str) -> list:
        return [s for s in self.message if str(s[0]) == name]

    def first(self, name: str):
        found = self.segments(name)
        return found[0] if found else None

    @staticmethod
    def raw(segment, index: int) -> str:
        if segment is None or index >= len(segment):
            return ""
        return str(segment[index])

    def repetitions(self, segment, index: int) -> list[str]:
        raw = self.raw(segment, index)
        return raw.split(self.rep) if raw else []

    def component(self, value: str, index: int) -> str:
        """Component ``index`` (1-based) of one repetition, unescaped; first subcomponent."""
        parts = value.split(self.comp)
        if index > len(parts):
            return ""
        return self.unescape(parts[index - 1].split(self.sub)[0]).strip()

    def get(self, segment, index: int, component: int = 1) -> str:
        reps = self.repetitions(segment, index)
        return self.component(reps[0], component) if reps else ""

    def unescape(self, text: str) -> str:
        """Decode HL7 escapes; ``\\X..\\`` bytes are read in the MSH-18 character set."""
        if self.esc not in text:
            return text
        e = re.escape(self.esc)

        def one(match: re.Match) -> str:
            body = match.group(1)
            simple = {"F": self.message.separators[1], "S": self.comp, "T": self.sub,
                      "R": self.rep, "E": self.esc, ".br": "\n"}
            if body in simple:
                return simple[body]
            if body[:1] == "X" and re.fullmatch(r"X([0-9A-Fa-f]{2})+", body):
                return (bytes.fromhex(body[1:]).decode(self.codec, errors="replace")
                        .replace("\x00", ""))
            return ""  # formatting (\H\, \N\, \.sp\ ...) and unknown escapes carry no data

        return re.sub(f"{e}([^{e}]*){e}", one, text)


def normalise(text: str) -> str:
    """Segment ends to ``\\r``: files and HTTP bodies often arrive with LF or CRLF."""
    # NUL is never HL7 content, and PostgreSQL text cannot hold it (found by fuzzing).
    text = text.replace("\r\n", "\r").replace("\n", "\r").replace("\x00", "").lstrip("\ufeff")
    # MLLP framing bytes, if an interface engine left them on.
    return text.strip("\x0b\x1c\r ").strip() + "\r"


def decode_body(body: bytes) -> str:
    """The body as text: UTF-8 when it is, else Latin-1 (every byte is a character)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def _parse_message(text: str) -> hl7lib.Message:
    text = normalise(text)
    if not re.match(r"^MSH[^\w\r\s]", text) or len(text) < 8:
        raise UnreadableMessage("message does not start with an MSH segment")
    try:
        return hl7lib.parse(text)
    except Exception:  # python-hl7 raises several types for the same thing
        raise UnreadableMessage("MSH segment cannot be parsed") from None


def parse_dtm(value: str, zone: ZoneInfo) -> datetime | None:
    """An HL7 DTM/TS as an aware UTC datetime; without an offset it is wall-clock time in
    ``zone`` (DST applied for that date; a time in the spring-forward gap reads as if
    the clock had not yet changed). Date-only values are refused: a visit needs a time."""
    match = _DTM.match((value or "").strip())
    if not match or match.group(4) is None:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour),
                         int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return naive.replace(tzinfo=timezone(sign * delta)).astimezone(timezone.utc)
    return naive.replace(tzinfo=zone).astimezone(timezone.utc)


def _duration(amount: str, units: str) -> timedelta | None:
    try:
        number = float(amount)
    except (TypeError, ValueError):
        return None
    if number <= 0:
        return None
    return timedelta(seconds=number * _UNITS.get((units or "MIN").upper().strip(), 60))


def read_header(text: str) -> Header:
    """MSH only, for the ACK and the duplicate check; raises UnreadableMessage."""
    message = _parse_message(text)
    return _header(message)


def _header(message: hl7lib.Message) -> Header:
    msh = message[0]
    if str(msh[0]) != "MSH" or len(msh) < 3:
        raise UnreadableMessage("first segment is not MSH")
    charset = str(msh[18]) if len(msh) > 18 else ""
    reader = _Reader(message, charset.split(message.separators[2])[0])
    return Header(
        field_separator=str(msh[1]), encoding_characters=str(msh[2]),
        sending_application=reader.raw(msh, 3), sending_facility=reader.raw(msh, 4),
        receiving_application=reader.raw(msh, 5), receiving_facility=reader.raw(msh, 6),
        message_time=parse_dtm(reader.get(msh, 7), ZoneInfo("UTC")),
        message_type=reader.get(msh, 9, 1).upper(), trigger=reader.get(msh, 9, 2).upper(),
        control_id=reader.get(msh, 10), processing_id=reader.get(msh, 11),
        version=reader.get(msh, 12), charset=reader.get(msh, 18),
    )


def parse_siu(text: str, *, site_timezone: str, phone_region: str) -> ParsedSiu:
    """Read an SIU message; raises UnreadableMessage, UnsupportedMessage or UnusableMessage.

    ``site_timezone`` places times sent without an offset; ``phone_region`` reads phone
    numbers written without a country code."""
    message = _parse_message(text)
    header = _header(message)
    if header.message_type != "SIU" or header.trigger not in SUPPORTED_TRIGGERS:
        raise UnsupportedMessage(f"message type {header.message_type}^{header.trigger} "
                                 "is not accepted")
    if not _VERSION.match(header.version):
        raise UnsupportedMessage(f"HL7 version {header.version or '(none)'} is not accepted")
    if not header.control_id:
        raise UnusableMessage("MSH-10 message control id is missing", "MSH")
    reader = _Reader(message, header.charset)
    zone = ZoneInfo(site_timezone)
    sch = reader.first("SCH")
    if sch is None:
        raise UnusableMessage("SCH segment is missing", "SCH", "100")
    placer = reader.get(sch, 1) or None
    filler = reader.get(sch, 2) or None
    if not placer and not filler:
        raise UnusableMessage("SCH-1 and SCH-2 (appointment ids) are both empty", "SCH")
    if len(placer or "") > MAX_ID_LENGTH or len(filler or "") > MAX_ID_LENGTH:
        # Stored in 128-character columns: refused (AE) rather than failing in storage.
        raise UnusableMessage(f"SCH-1 or SCH-2 is longer than {MAX_ID_LENGTH} characters",
                              "SCH", "102")
    start, end, source = _times(reader, sch, zone)
    pid = reader.first("PID")
    phone, line_type = _phone(reader, pid, phone_region)
    return ParsedSiu(
        header=header, placer_id=placer, filler_id=filler, start=start, end=end,
        start_source=source, patient_id=_patient_id(reader, pid), phone=phone,
        phone_line_type=line_type, language=_language(reader, pid),
        providers=_providers(reader), department=_department(reader),
    )


def _times(reader: _Reader, sch, zone: ZoneInfo
           ) -> tuple[datetime | None, datetime | None, str | None]:
    """Start by precedence TQ1-7, SCH-11.4, AIS-4, AIL-6, AIP-6, AIG-8; the end from the
    same source when it has one, else a duration, else SCH-9/10."""
    tq1 = reader.first("TQ1")
    start = parse_dtm(reader.get(tq1, 7), zone) if tq1 is not None else None
    if start:
        return start, _end(start, parse_dtm(reader.get(tq1, 8), zone), None, reader, sch), "TQ1-7"
    start = parse_dtm(reader.get(sch, 11, 4), zone)
    if start:
        explicit = parse_dtm(reader.get(sch, 11, 5), zone)
        duration = _duration(reader.get(sch, 11, 3), "MIN")
        return start, _end(start, explicit, duration, reader, sch), "SCH-11.4"
    # (segment, start field, duration field)
    for name, start_at, duration_at in (("AIS", 4, 7), ("AIL", 6, 9), ("AIP", 6, 9),
                                        ("AIG", 8, 11)):
        for segment in reader.segments(name):
            start = parse_dtm(reader.get(segment, start_at), zone)
            if start:
                duration = _duration(reader.get(segment, duration_at),
                                     reader.get(segment, duration_at + 1))
                return start, _end(start, None, duration, reader, sch), f"{name}-{start_at}"
    return None, None, None


def _end(start: datetime, explicit: datetime | None, duration: timedelta | None,
         reader: _Reader, sch) -> datetime:
    if explicit and explicit > start:
        return explicit
    duration = duration or _duration(reader.get(sch, 9), reader.get(sch, 10, 1))
    return start + (duration or timedelta(minutes=30))


def _patient_id(reader: _Reader, pid) -> str | None:
    """PID-3's first identifier as ``authority|id`` (an id, never a name)."""
    for rep in reader.repetitions(pid, 3):
        value = reader.component(rep, 1)
        if value and value != _HL7_NULL:
            authority = reader.component(rep, 4) or reader.component(rep, 5)
            return f"{authority}|{value}" if authority else value
    return None


def _phone(reader: _Reader, pid, region: str) -> tuple[str | None, str | None]:
    """The number to text, in E.164, from PID-13 only: mobile entries first, then entries
    of unknown line type. Landlines are never texted, so never kept: a PID-13 of landlines
    only gives no phone at all. E-mail, fax and the HL7 null are skipped.

    XTN-2 says what a number is for (home, work), not what rings: an entry with a use code
    and no equipment type (XTN-3) is of unknown line type, and texted. Only when another
    entry of the field is typed has the sender shown that it marks its mobiles, and then a
    home or work number it left untyped is taken for a landline."""
    entries: list[tuple[int, str, str, str]] = []
    for position, rep in enumerate(reader.repetitions(pid, 13)):
        if not rep or rep == _HL7_NULL:
            continue
        use = _code(reader.component(rep, 2))
        equipment = _code(reader.component(rep, 3))
        legacy = reader.component(rep, 1)
        if use in _NOT_A_PHONE or equipment in _NOT_A_PHONE or "@" in legacy:
            continue
        built = reader.component(rep, 12)
        if not built:
            parts = [reader.component(rep, i) for i in (5, 6, 7)]
            built = "".join(parts) if parts[1] or parts[2] else ""
            if built and parts[0]:
                built = "+" + parts[0].lstrip("+") + parts[1] + parts[2]
        built = built or legacy
        if not built or built == _HL7_NULL:
            continue
        entries.append((position, built, use, equipment))
    candidates: list[tuple[int, int, str, str]] = []
    for position, number, use, equipment in entries:
        typed_beside = any(other != position and (other_equipment or other_use in _TYPED_USES)
                           for other, _number, other_use, other_equipment in entries)
        if equipment in _MOBILE or use in _MOBILE:
            line_type, rank = "mobile", 0
        elif equipment in _LANDLINE or (not equipment and use in _LANDLINE and typed_beside):
            continue  # a landline: nothing to text, so nothing to keep
        else:
            line_type, rank = "unknown", 1
        candidates.append((rank, position, number, line_type))
    for _rank, _position, number, line_type in sorted(candidates):
        try:
            parsed = phonenumbers.parse(number, region.upper())
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return (phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
                    line_type)
    return None, None


def _code(value: str) -> str:
    """A code component upper-cased, the HL7 null read as absent."""
    return "" if value == _HL7_NULL else value.upper()


def _language(reader: _Reader, pid) -> str | None:
    """PID-15.1 as a BCP 47 primary tag where we know it; raw code (short) otherwise."""
    code = reader.get(pid, 15, 1) if pid is not None else ""
    if not code or code == _HL7_NULL:
        return None
    lowered = code.lower()
    return _LANGUAGES.get(lowered, lowered.split("-")[0] if len(lowered) <= 16 else None)


def _providers(reader: _Reader) -> list[Provider]:
    """AIP-3 people, and AIG-3 resources that carry an id and a name and whose AIG-4
    says they are a person; identifiers are ``authority|id`` like the patient's, and
    ``http://hl7.org/fhir/sid/us-npi|id`` for an AIP-3 whose XCN-13 type is NPI."""
    found: dict[str, Provider] = {}
    for segment in reader.segments("AIP"):
        for rep in reader.repetitions(segment, 3):
            ident = reader.component(rep, 1)
            if not ident or ident == _HL7_NULL:
                continue
            # An NPI's system is fixed, whatever XCN-9 names (often nothing, or "CMS").
            npi = reader.component(rep, 13).upper() == "NPI"
            authority = _NPI_SYSTEM if npi else reader.component(rep, 9)
            name = " ".join(p for p in (reader.component(rep, 3), reader.component(rep, 2)) if p)
            key = f"{authority}|{ident}" if authority else ident
            found.setdefault(key, Provider(key, name or None))
    for segment in reader.segments("AIG"):
        if not _is_person(reader, segment):
            continue
        for rep in reader.repetitions(segment, 3):
            ident, text = reader.component(rep, 1), reader.component(rep, 2)
            if ident and text and ident != _HL7_NULL:
                authority = reader.component(rep, 3)
                key = f"{authority}|{ident}" if authority else ident
                found.setdefault(key, Provider(key, text))
    return list(found.values())


def _is_person(reader: _Reader, aig) -> bool:
    """AIG-4 (identifier, text and their alternates) names a person, not a thing."""
    codes = [reader.component(r, i).upper() for r in reader.repetitions(aig, 4)
             for i in (1, 4)]
    texts = [reader.component(r, i).upper() for r in reader.repetitions(aig, 4)
             for i in (1, 2, 4, 5)]
    if any(thing in text for text in texts for thing in _THING_WORDS):
        return False
    words = {word for text in texts for word in re.split(r"[^A-Z]+", text)}
    return bool(words & _PERSON_WORDS) or any(code in _PERSON_CODES for code in codes)


def _department(reader: _Reader) -> str | None:
    """RGS-3's name, else AIL-3's description (PL-9), else its point of care and
    facility: what the patient's text may say about where the visit is booked."""
    for segment in reader.segments("RGS"):
        name = reader.get(segment, 3, 2) or reader.get(segment, 3, 5)
        if name:
            return name[:200]
    for segment in reader.segments("AIL"):
        description = reader.get(segment, 3, 9)
        if description:
            return description[:200]
        parts = [reader.get(segment, 3, 1), reader.get(segment, 3, 4)]
        text = " - ".join(dict.fromkeys(p for p in parts if p))
        if text:
            return text[:200]
    return None


def ack(header: Header | None, code: str, *, error: str | None = None,
        error_code: str = "207", segment: str = "", now: datetime | None = None) -> str:
    """An original-mode ACK: ``ACK^<trigger>^ACK``, sender and receiver swapped, a new
    MSH-10, MSA-2 = the inbound MSH-10; an ERR segment for AE and AR.

    ``error`` must be free of PHI (it comes from our own messages, never from the body).
    """
    now = now or datetime.now(timezone.utc)
    fs = header.field_separator if header else "|"
    enc = header.encoding_characters if header and len(header.encoding_characters) >= 4 \
        else "^~\\&"
    own = _usable_delimiters(fs, enc)
    if not own:
        # The sender's delimiters collide (found by fuzzing: "MSH\\X..."): an ACK in them
        # could not be read back, so answer in the standard ones, values escaped.
        fs, enc = "|", "^~\\&"
    comp = enc[0]
    version = header.version if header and header.version else "2.5.1"

    def echo(value: str) -> str:
        return value if own else _escape(value, fs, enc)

    msh = [
        "MSH", enc,
        echo(header.receiving_application) if header else "",
        echo(header.receiving_facility) if header else "",
        echo(header.sending_application) if header else "",
        echo(header.sending_facility) if header else "",
        now.strftime("%Y%m%d%H%M%S") + "+0000", "",
        f"ACK{comp}{header.trigger if header else ''}{comp}ACK",
        "ACK" + secrets.token_hex(8).upper(),
        (header.processing_id if header and header.processing_id else "P"), version,
    ]
    safe = _escape(error or "", fs, enc) if error else ""
    lines = [fs.join(msh), fs.join(["MSA", code, header.control_id if header else ""]
                                   + ([safe] if safe else []))]
    if code != "AA":
        severity = "E"
        old_style = not re.match(r"^2\.[5-9]", version)
        location = f"{segment}{comp}1" if segment else ""
        erl = f"{segment}{comp}1{comp}{comp}{error_code}" if old_style and segment else ""
        text = {"100": "Segment sequence error", "101": "Required field missing",
                "102": "Data type error", "200": "Unsupported message type",
                "203": "Unsupported version id", "207": "Application internal error"}
        cwe = f"{error_code}{comp}{text.get(error_code, 'Application error')}{comp}HL70357"
        lines.append(fs.join(["ERR", erl, location, cwe, severity, "", "", "", safe]))
    return "\r".join(lines) + "\r"


def _usable_delimiters(fs: str, enc: str) -> bool:
    """A field separator and four encoding characters that are distinct punctuation."""
    chars = fs + enc[:4]
    return (len(fs) == 1 and len(enc) >= 4 and len(set(chars)) == 5
            and not any(c.isalnum() or c.isspace() for c in chars))


def _escape(text: str, fs: str, enc: str) -> str:
    comp, rep, esc, sub = enc[0], enc[1], enc[2], enc[3]
    out = text.replace(esc, f"{esc}E{esc}")
    for char, code in ((fs, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")
