"""Property tests: whatever bytes arrive, ``hl7feed.hl7`` answers with a result or one of its
documented exceptions (``Hl7Error``: unreadable, unusable, unsupported), never a crash.

Every shared fixture in tests/data/hl7 is the seed; hypothesis mutates it the ways
interface engines and attackers do: flipped bytes, truncation, shuffled segments, swapped
delimiters, huge fields, bad escapes, invalid UTF-8, MSH cut short. Derandomized, so a
run is repeatable and quick.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from hl7feed import hl7

DATA = Path(__file__).resolve().parent.parent / "data" / "hl7"
FIXTURES = sorted(path.read_bytes() for path in DATA.glob("*.hl7"))
FUZZ = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BAD_ESCAPES = [b"\\X\\", b"\\XZZ\\", b"\\X0\\", b"\\XFFFE\\", b"\\XC3\\", b"\\X", b"\\",
               b"\\\\", b"\\H\\\\N\\", b"\\.sp5\\", b"\\Cxxyy\\", b"\\M\\", b"\\Z123\\",
               b"\\X" + b"41" * 5000 + b"\\", b"\\E\\\\F\\\\S\\\\R\\\\T\\"]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1",
                b"\xf0\x28\x8c\xbc", b"\xed\xa0\x80", b"\x00", b"\x0b", b"\x1c\x0d", b"\xef\xbb\xbf"]


# (segment, field) the intake stores or keys on: control id, sender, appointment ids,
# patient id, phone, language, provider, department.
STORED_FIELDS = [(b"MSH", 3), (b"MSH", 4), (b"MSH", 10), (b"SCH", 1), (b"SCH", 2),
                 (b"PID", 3), (b"PID", 13), (b"PID", 15), (b"AIP", 3), (b"AIL", 3),
                 (b"RGS", 3), (b"AIG", 3)]


def _segments(body: bytes) -> list[bytes]:
    return [s for s in body.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r") if s]


@st.composite
def mutations(draw, body: bytes, only: str | None = None) -> bytes:
    """One of the ways a message gets damaged (or the ``only`` one), applied to ``body``."""
    kind = only or draw(st.sampled_from(["flip", "truncate", "shuffle", "drop", "duplicate",
                                 "delimiters", "huge", "escape", "utf8", "msh", "insert",
                                 "field", "stored", "stored", "stored"]))
    size = len(body)
    if kind == "flip":
        at = draw(st.integers(0, size - 1))
        return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1:]
    if kind == "truncate":
        return body[:draw(st.integers(0, size))]
    segments = _segments(body)
    if kind == "shuffle":
        return b"\r".join(draw(st.permutations(segments))) + b"\r"
    if kind == "drop" and len(segments) > 1:
        del segments[draw(st.integers(0, len(segments) - 1))]
        return b"\r".join(segments) + b"\r"
    if kind == "duplicate":
        at = draw(st.integers(0, len(segments) - 1))
        segments.insert(at, segments[at])
        return b"\r".join(segments) + b"\r"
    if kind == "delimiters":
        # Swap two of the declared separators everywhere, or change one in MSH only.
        declared = body[3:8]
        a, b = draw(st.sampled_from(list(declared) + [ord("|"), ord("^"), ord("\r")])), \
            draw(st.sampled_from(list(declared) + [ord("#"), ord(" "), 0, ord("\n")]))
        if draw(st.booleans()):
            return body.replace(bytes([a]), b"\x01").replace(bytes([b]), bytes([a])) \
                .replace(b"\x01", bytes([b]))
        at = draw(st.integers(3, 7))
        return body[:at] + bytes([b]) + body[at + 1:]
    if kind == "huge":
        at = draw(st.integers(0, size))
        filler = draw(st.sampled_from([b"A", b"^", b"~", b"|", b"\\", b"9", b"&"]))
        return body[:at] + filler * draw(st.integers(1000, 100_000)) + body[at:]
    if kind == "escape":
        at = draw(st.integers(0, size))
        return body[:at] + draw(st.sampled_from(BAD_ESCAPES)) + body[at:]
    if kind == "utf8":
        at = draw(st.integers(0, size))
        return body[:at] + draw(st.sampled_from(INVALID_UTF8)) + body[at:]
    if kind in ("field", "stored"):
        # Replace one field's value, any field or one the intake keeps in the database.
        at = draw(st.integers(0, len(segments) - 1))
        if kind == "stored":
            name, index = draw(st.sampled_from(STORED_FIELDS))
            at = next((i for i, seg in enumerate(segments) if seg[:3] == name), at)
        separator = body[3:4] or b"|"
        fields = segments[at].split(separator)
        if kind == "field" or segments[at][:3] != name:
            index = draw(st.integers(1, max(1, len(fields) - 1)))
        elif name == "MSH":
            index -= 1  # MSH-1 is the separator itself: MSH-n is at list index n - 1
        value = draw(st.one_of(
            st.text(alphabet="AZ09-.", max_size=12).map(lambda t: t.encode() + b"\x00B"),
            st.sampled_from(BAD_ESCAPES + INVALID_UTF8),
            st.binary(max_size=40),
            st.integers(100, 3000).map(lambda n: b"Z" * n),
            st.sampled_from([b"\"\"", b"^^^^", b"~~~", b"&&&", b"20250230250000",
                             b"99999999999999+9999", b"-1", b"NaN", b"1e308"])))
        fields += [b""] * (index + 1 - len(fields))
        fields[index] = value
        segments[at] = separator.join(fields)
        return b"\r".join(segments) + b"\r"
    if kind == "msh":
        msh, rest = segments[0], segments[1:]
        fields = msh.split(msh[3:4] or b"|")
        keep = draw(st.integers(1, max(1, len(fields) - 1)))
        blank = draw(st.sets(st.integers(2, max(2, len(fields) - 1)), max_size=4))
        fields = [b"" if i in blank else f for i, f in enumerate(fields[:keep + 1])]
        return b"\r".join([(msh[3:4] or b"|").join(fields), *rest]) + b"\r"
    at = draw(st.integers(0, size))
    return body[:at] + draw(st.binary(max_size=64)) + body[at:]


@st.composite
def damaged(draw) -> bytes:
    body = draw(st.sampled_from(FIXTURES))
    for _ in range(draw(st.integers(1, 3))):
        if not body:
            break
        body = draw(mutations(body))
    return body


@st.composite
def odd_stored_values(draw) -> bytes:
    """A fixture with one or two of the values the intake stores replaced by odd ones."""
    body = draw(st.sampled_from(FIXTURES))
    for _ in range(draw(st.integers(1, 2))):
        body = draw(mutations(body, only="stored"))
    return body


def _exercise(body: bytes, region: str = "US") -> None:
    """What the intake does with a body, minus the database: every step either works or
    raises hl7.Hl7Error; a readable header always yields a readable ACK."""
    text = hl7.decode_body(body)
    try:
        header = hl7.read_header(text)
    except hl7.UnreadableMessage:
        header = None
    for code in ("AA", "AE", "AR"):
        reply = hl7.ack(header, code, error="field <x> missing | ^~\\&", segment="SCH",
                        error_code="101")
        assert reply.startswith("MSH") and "\rMSA" in reply
        assert hl7.read_header(reply).message_type == "ACK"
    try:
        parsed = hl7.parse_siu(text, site_timezone="America/Chicago", phone_region=region)
    except hl7.Hl7Error as exc:
        assert str(exc)  # safe to put in an ERR segment: never empty
        return
    assert parsed.placer_id or parsed.filler_id
    assert parsed.phone is None or parsed.phone.startswith("+")


@FUZZ
@given(damaged(), st.sampled_from(["US", "GB"]))
def test_damaged_fixtures_never_crash_the_parser(body, region):
    _exercise(body, region)


@FUZZ
@given(odd_stored_values(), st.sampled_from(["US", "GB"]))
def test_odd_stored_values_never_crash_the_parser(body, region):
    _exercise(body, region)


@FUZZ
@given(st.binary(max_size=2048))
@example(b"")
@example(b"MSH")
@example(b"MSH|")
@example(b"MSH|^~\\&")
@example(b"MSH\r")
@example(b"MSH||||||||||||")
@example(b"MSH|^~\\&|\xff\xfe|\rSCH|")
def test_random_bytes_never_crash_the_parser(body):
    _exercise(body)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_random_text_after_a_valid_msh_never_crashes(tail):
    body = ("MSH|^~\\&|EPIC|CLINIC|VV|VV|20250310080000||SIU^S12|C1|P|2.5.1\r" + tail)
    _exercise(body.encode("utf-8", errors="surrogatepass"))


@pytest.mark.parametrize("path", sorted(DATA.glob("*.hl7")), ids=lambda p: p.name)
def test_every_fixture_survives_every_truncation_point_of_its_msh(path):
    body = path.read_bytes()
    end = body.find(b"\r") if b"\r" in body else len(body)

    for cut in range(0, end + 1):
        _exercise(body[:cut])


# Regressions from fuzzing on PostgreSQL (NUL cannot be stored; ids over 128 characters
# overflowed their column): both now read cleanly or refuse with AE.
def test_nul_characters_raw_or_escaped_never_reach_parsed_values():
    text = ("MSH|^~\\&|EPIC|CLINIC|VV|VV|20250310080000||SIU^S12|C\x001|P|2.5.1\r"
            "SCH|P\\X00\\1|F\x001|||||||30|MIN|^^30^20250310093000\r"
            "PID|1||MRN\x001^^^EPI||||||||||(608)555-0123^PRN^CP||sp\\X00\\a\r")

    parsed = hl7.parse_siu(text, site_timezone="America/Chicago", phone_region="US")

    assert (parsed.header.control_id, parsed.placer_id, parsed.filler_id) == ("C1", "P1", "F1")
    assert (parsed.patient_id, parsed.language) == ("EPI|MRN1", "es")


def test_appointment_ids_longer_than_stored_are_unusable():
    text = ("MSH|^~\\&|EPIC|CLINIC|VV|VV|20250310080000||SIU^S12|C1|P|2.5.1\r"
            f"SCH|{'P' * 129}|F1|||||||30|MIN|^^30^20250310093000\r")

    with pytest.raises(hl7.UnusableMessage, match="longer than 128"):
        hl7.parse_siu(text, site_timezone="America/Chicago", phone_region="US")


# Regression from fuzzing: a sender whose MSH-1 repeats in MSH-2 (or uses letters) got an
# ACK in those same delimiters, which nobody could read back.
@pytest.mark.parametrize("body", [b"MSH\\XFFFE\\", b"MSH\\X\\$%!?^$A$B$C$D$2019$$SIU%S12$C1$P$2.3",
                                  b"MSH|^|\\&|A|B|||SIU^S12|C1|P|2.5.1"])
def test_ack_to_colliding_delimiters_uses_the_standard_ones(body):
    header = hl7.read_header(hl7.decode_body(body))

    reply = hl7.ack(header, "AE", error="bad | delimiters", segment="MSH")

    assert reply.startswith("MSH|^~\\&|")
    echoed = hl7.read_header(reply)
    assert (echoed.message_type, echoed.field_separator) == ("ACK", "|")
    assert next(s for s in reply.split("\r") if s.startswith("MSA")).split("|")[1] == "AE"


def test_ack_keeps_a_senders_own_distinct_delimiters():
    body = (DATA / "siu_s12_rethinkhealth_customdelims_v23.hl7").read_bytes()

    reply = hl7.ack(hl7.read_header(hl7.decode_body(body)), "AA")

    assert reply.startswith("MSH$%!?^$")
