"""hl7feed/hl7.py over every shared fixture (copied to tests/data/hl7) plus edge cases."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hl7feed import hl7

DATA = Path(__file__).resolve().parent.parent / "data" / "hl7"
CHICAGO = "America/Chicago"


def _text(name: str) -> str:
    return (DATA / name).read_bytes().decode("utf-8")


def _parse(name: str, region: str = "US", text: str | None = None) -> hl7.ParsedSiu:
    return hl7.parse_siu(text if text is not None else _text(name), site_timezone=CHICAGO,
                         phone_region=region)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# file, region, trigger, placer, filler, start (UTC), end (UTC), start source, patient,
# phone, line type, language, department
FIXTURES = [
    ("siu_s12_fhirconverter_v28.hl7", "US", "S12", "12345", "36996",
     _utc(2021, 9, 24, 7, 15), _utc(2021, 9, 24, 8, 5), "TQ1-7", "test1|PATID1234",
     None, None, "ar", "055 - GH Clinic"),
    ("siu_s14_fhirconverter_v28.hl7", "US", "S14", "12345", "36996",
     _utc(2021, 9, 24, 7, 15), _utc(2021, 9, 24, 8, 5), "TQ1-7", "test1|PATID1234",
     None, None, "ar", "055 - GH Clinic"),
    ("siu_s15_fhirconverter_v28.hl7", "US", "S15", "12345", "36996",
     _utc(2021, 9, 24, 7, 15), _utc(2021, 9, 24, 8, 5), "TQ1-7", "test1|PATID1234",
     None, None, "ar", "055 - GH Clinic"),
    ("siu_s17_fhirconverter_v28.hl7", "US", "S17", "12345", "36996",
     _utc(2021, 9, 24, 7, 15), _utc(2021, 9, 24, 8, 5), "TQ1-7", "test1|PATID1234",
     None, None, "ar", "055 - GH Clinic"),
    ("siu_s26_fhirconverter_v28.hl7", "US", "S26", "12345", "36996",
     _utc(2021, 9, 24, 7, 15), _utc(2021, 9, 24, 8, 5), "TQ1-7", "test1|PATID1234",
     None, None, "ar", "055 - GH Clinic"),
    # 12:00 Chicago on 6 Nov 2024 is CST (-6), DST having ended on 3 Nov.
    ("siu_s12_renalware_v24.hl7", "GB", "S12", "149549015", None,
     _utc(2024, 11, 6, 18, 0), _utc(2024, 11, 6, 18, 30), "SCH-11.4", "RNJ 5C4 MRN|10769857",
     None, None, None, "RNJ Renal OPD - RNJ ROYALLONDON"),
    ("siu_s13_renalware_v24.hl7", "GB", "S13", "149549023", None,
     _utc(2024, 11, 6, 17, 30), _utc(2024, 11, 6, 18, 0), "SCH-11.4", "RNJ 5C4 MRN|10769861",
     None, None, None, "RNJ Renal OPD - RNJ ROYALLONDON"),
    ("siu_s15_renalware_v24.hl7", "GB", "S15", "149549027", None,
     _utc(2024, 11, 13, 16, 0), _utc(2024, 11, 13, 17, 0), "SCH-11.4", "Dover|10769859",
     "+447898989898", "mobile", None, "RNJ Renal SBH - RNJ BARTS"),
    ("siu_s12_rethinkhealth_epiclike_v251.hl7", "US", "S12", None, "120152985",
     _utc(2021, 9, 17, 14, 45), _utc(2021, 9, 17, 15, 25), "SCH-11.4", "EPI|E2180692",
     "+15155555552", "unknown", None, "SUSSEX FASTCARE MEIJER"),
    ("siu_s12_rethinkhealth_customdelims_v23.hl7", "US", "S12", "1209", "13030",
     _utc(2019, 4, 23, 19, 0), _utc(2019, 4, 23, 19, 15), "SCH-11.4", "150",
     None, None, None, "Healthmatics Clinic"),
    ("siu_s12_hl7objectparser_v251.hl7", "FR", "S12", None, "49849903800",
     _utc(2016, 12, 31, 17, 0), _utc(2016, 12, 31, 17, 30), "SCH-11.4", "ODS|123456",
     "+33100000000", "unknown", None, None),
    ("siu_s26_hl7objectparser_v251.hl7", "FR", "S26", None, "49849903800",
     _utc(2016, 12, 31, 17, 0), _utc(2016, 12, 31, 17, 30), "SCH-11.4", "ODS|123456",
     "+33100000000", "unknown", None, None),
    # Trailing space in SCH-11.4; SCH-9/10 give 20 minutes.
    ("siu_s14_corepoint_v23.hl7", "US", "S14", "00331839401", None,
     _utc(2008, 3, 6, 16, 0), _utc(2008, 3, 6, 16, 20), "SCH-11.4", "489671",
     "+18327958259", "unknown", None, "HHR"),
]


@pytest.mark.parametrize(("name", "region", "trigger", "placer", "filler", "start", "end",
                          "source", "patient", "phone", "line_type", "language",
                          "department"), FIXTURES, ids=[f[0] for f in FIXTURES])
def test_every_fixture_is_read(name, region, trigger, placer, filler, start, end, source,
                               patient, phone, line_type, language, department):
    parsed = _parse(name, region)

    assert parsed.trigger == trigger
    assert (parsed.placer_id, parsed.filler_id) == (placer, filler)
    assert (parsed.start, parsed.end, parsed.start_source) == (start, end, source)
    assert parsed.patient_id == patient
    assert (parsed.phone, parsed.phone_line_type) == (phone, line_type)
    assert parsed.language == language
    assert parsed.department == department


def test_every_shared_fixture_is_covered():
    covered = {f[0] for f in FIXTURES} | {"siu_s12_gmed_fragment_v231.hl7"}

    assert covered == {p.name for p in DATA.glob("*.hl7")}


def test_fragment_without_sch_is_unusable():
    with pytest.raises(hl7.UnusableMessage) as caught:
        _parse("siu_s12_gmed_fragment_v231.hl7")

    assert caught.value.segment == "SCH"


def test_custom_delimiters_come_from_msh():
    parsed = _parse("siu_s12_rethinkhealth_customdelims_v23.hl7")

    assert parsed.header.sender == "Ntierprise^Ntierprise Clinic"
    assert parsed.header.control_id == "8907-45"
    assert [p.identifier for p in parsed.providers] == ["JPULLEN1", "PULLEN"]


def test_providers_come_from_aip_and_personal_aig_not_equipment():
    parsed = _parse("siu_s12_fhirconverter_v28.hl7")

    assert [(p.identifier, p.display_name) for p in parsed.providers] == [("1210", "Robert GE")]


def test_epic_style_aig_resource_is_not_a_provider_and_z_segments_are_ignored():
    # AIG-4 2^RESOURCE: Epic's non-person resource (here the FastCare clinic itself).
    parsed = _parse("siu_s12_rethinkhealth_epiclike_v251.hl7")

    assert parsed.providers == []
    assert parsed.header.sender == "^APPT_NEW"


def test_epic_style_aig_person_is_a_provider():
    name = "siu_s12_rethinkhealth_epiclike_v251.hl7"
    text = with_field(name, "AIG", 4, "1^PERSON")

    parsed = _parse(name, text=text)

    assert [(p.identifier, p.display_name) for p in parsed.providers] == [
        ("EPC|102204", "FASTCARE, MEIJER SUSSEX")]


AIP_ONLY = [("1210", "Robert GE")]


@pytest.mark.parametrize(("aig3", "aig4", "expected"), [
    ("5001^EVIS X12 Video Colonoscope^L^5002^Video", "101^Equipment^L", AIP_ONLY),
    ("5001^EVIS X12 Video Colonoscope^L^5002^Video", "D^Device^L", AIP_ONLY),
    ("5001^EVIS X12 Video Colonoscope^L^5002^Video", "2^RESOURCE", AIP_ONLY),
    ("5001^EVIS X12 Video Colonoscope^L^5002^Video", "", AIP_ONLY),
    ("R12^Video room 12^L", "RM^Exam room^L", AIP_ONLY),
    ("R12^Video room 12^L", "1^PERSON^^^Room", AIP_ONLY),
    ("4455^Chen, Dana^L", "1^PERSON", AIP_ONLY + [("L|4455", "Chen, Dana")]),
    ("4455^Chen, Dana^L", "NRS^Nurse^L", AIP_ONLY + [("L|4455", "Chen, Dana")]),
    ("4455^Chen, Dana^L", "P", AIP_ONLY + [("L|4455", "Chen, Dana")]),
])
def test_only_an_aig_resource_whose_type_names_a_person_is_a_provider(aig3, aig4, expected):
    name = "siu_s12_fhirconverter_v28.hl7"
    text = with_field(name, "AIG", 4, aig4, text=with_field(name, "AIG", 3, aig3))

    parsed = _parse(name, text=text)

    assert [(p.identifier, p.display_name) for p in parsed.providers] == expected


# FHIR-Converter's own SCH-12 XCN: NPI typed in XCN-13, a local namespace in XCN-9.
CONVERTER_NPI = ("9941339109^Smith&Mr.&Smith^Adam^Mellie^Jr^Dr^MD^^NPIID&2.16.840.1.113883.4.6"
                 "&ISO^L^^^NPI^^^^^^20100115^20200115^GP")


@pytest.mark.parametrize(("aip3", "expected"), [
    (CONVERTER_NPI, ("http://hl7.org/fhir/sid/us-npi|9941339109", "Adam Smith")),
    ("1234567893^GE^Robert^C^^^^^^^^^NPI", ("http://hl7.org/fhir/sid/us-npi|1234567893",
                                            "Robert GE")),
    ("1234567893^GE^Robert^C^^^^^CMS^^^^npi", ("http://hl7.org/fhir/sid/us-npi|1234567893",
                                               "Robert GE")),
    ("1210^GE^Robert^C^^^^^EPI^^^^PRN", ("EPI|1210", "Robert GE")),
    ("1210^GE^Robert^C", ("1210", "Robert GE")),
])
def test_an_xcn_typed_npi_gets_the_us_npi_system(aip3, expected):
    name = "siu_s12_fhirconverter_v28.hl7"
    text = with_field(name, "AIP", 3, aip3)

    parsed = _parse(name, text=text)

    assert [(p.identifier, p.display_name) for p in parsed.providers] == [expected]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_segment_endings_are_normalised(ending):
    text = _text("siu_s12_renalware_v24.hl7").replace("\r", ending)

    parsed = _parse("", "GB", text=text)

    assert parsed.placer_id == "149549015"


MINIMAL = ("MSH|^~\\&|EPIC|CLINIC|VV|VV|20250310120000||SIU^S12|C1|P|2.5.1\r"
           "SCH|P1|F1|||||||||^^30^{start}\r"
           "PID|1||MRN1^^^EPI||Doe^Jane||||||||{phones}||{lang}\r")


def _minimal(start: str = "20250310093000", phones: str = "", lang: str = "",
             region: str = "US") -> hl7.ParsedSiu:
    return hl7.parse_siu(MINIMAL.format(start=start, phones=phones, lang=lang),
                         site_timezone=CHICAGO, phone_region=region)


@pytest.mark.parametrize(("local", "expected"), [
    ("20250308120000", _utc(2025, 3, 8, 18, 0)),   # CST, before the change
    ("20250310120000", _utc(2025, 3, 10, 17, 0)),  # CDT, after 9 March
    ("20251103120000", _utc(2025, 11, 3, 18, 0)),  # CST again
    ("20250310120000-0500", _utc(2025, 3, 10, 17, 0)),
    ("202503101200+0000", _utc(2025, 3, 10, 12, 0)),
])
def test_times_without_offset_are_site_time_dst_aware(local, expected):
    assert _minimal(start=local).start == expected


@pytest.mark.parametrize(("phones", "expected"), [
    ("", (None, None)),
    ('""', (None, None)),
    ("^NET^Internet^jane@example.org", (None, None)),
    ("(608)555-0123^PRN^FX", (None, None)),
    ("(608)555-0123", ("+16085550123", "unknown")),
    ("^PRN^PH^^1^608^5550100~^PRN^CP^^^608^5550123", ("+16085550123", "mobile")),
    ("(608)555-0100^PRN^CP^^^^^^^^^6085550123", ("+16085550123", "mobile")),
    ('""~(608)555-0199^ORN^PH', (None, None)),
    ("^PRN^PH^^1^608^5550100~^WPN^PH^^1^608^5550101", (None, None)),
    ("(608)555-0100^PRN~(608)555-0199^ORN^PH", (None, None)),
    ("(608)555-0199^ORN^PH~(608)555-0100^PRN^CP^^^^^^^^^123", (None, None)),
    ("(123) 123-1234^PRN^PH", (None, None)),
    ("(608)555-0123^PRN", ("+16085550123", "unknown")),
    ('(608)555-0123^WPN^""', ("+16085550123", "unknown")),
    ("(608)555-0100^PRN~(608)555-0123^PRN^CP", ("+16085550123", "mobile")),
    ("(608)555-0100^PRN~^NET^Internet^jane@example.org", ("+16085550100", "unknown")),
])
def test_phone_rules(phones, expected):
    parsed = _minimal(phones=phones)

    assert (parsed.phone, parsed.phone_line_type) == expected


def with_field(name: str, segment: str, position: int, value: str, *,
               text: str | None = None) -> str:
    """A shared fixture (or ``text``, an edited one) with one field of its first
    ``segment`` replaced (``|`` files)."""
    lines = (text if text is not None else _text(name)).split("\r")
    index = next(i for i, line in enumerate(lines) if line.startswith(segment + "|"))
    fields = lines[index].split("|")
    fields += [""] * (position + 1 - len(fields))
    fields[position - 1 if segment == "MSH" else position] = value
    lines[index] = "|".join(fields)
    return "\r".join(lines)


@pytest.mark.parametrize(("name", "region", "pid13", "expected"), [
    # Corepoint's legacy number, given the use code a feed adds without an equipment type.
    ("siu_s14_corepoint_v23.hl7", "US", "(832)795-8259^PRN", ("+18327958259", "unknown")),
    ("siu_s14_corepoint_v23.hl7", "US", "(832)795-8259^WPN", ("+18327958259", "unknown")),
    # Renalware's feed without its MOBILE entry: HOME alone says where, not what rings.
    ("siu_s12_renalware_v24.hl7", "GB", "02011110111^HOME~testrenal@test.co^EMAIL",
     ("+442011110111", "unknown")),
])
def test_an_entry_with_only_a_use_code_is_of_unknown_line_type(name, region, pid13,
                                                                expected):
    text = with_field(name, "PID", 13, pid13)

    parsed = _parse(name, region, text=text)

    assert (parsed.phone, parsed.phone_line_type) == expected


def test_an_untyped_home_number_beside_a_typed_entry_is_a_landline_and_not_kept():
    # Renalware as sent: its feed marks mobiles (MOBILE, here too short to be valid), so
    # the HOME number it left unmarked is the house phone, and nobody texts that.
    parsed = _parse("siu_s12_renalware_v24.hl7", "GB")

    assert (parsed.phone, parsed.phone_line_type) == (None, None)


@pytest.mark.parametrize("pid13", [
    "(832)795-8259^PRN^PH",
    "(832)795-8259^PRN^PH^^1^832^7958259~(713)555-0100^WPN^PH",
    '(832)795-8259^ORN^PH~""~^NET^Internet^patient@example.org',
])
def test_landlines_only_give_no_phone(pid13):
    text = with_field("siu_s14_corepoint_v23.hl7", "PID", 13, pid13)

    parsed = _parse("siu_s14_corepoint_v23.hl7", text=text)

    assert (parsed.phone, parsed.phone_line_type) == (None, None)


@pytest.mark.parametrize(("lang", "expected"), [
    ("spa^Spanish^HL70296", "es"), ("por", "pt"), ("en", "en"), ("", None), ('""', None)])
def test_language_from_pid_15(lang, expected):
    assert _minimal(lang=lang).language == expected


def test_escapes_are_decoded_after_splitting():
    text = MINIMAL.format(start="20250310093000", phones="", lang="").replace(
        "SCH|P1|", "SCH|P\\F\\1\\X41\\|")

    parsed = hl7.parse_siu(text, site_timezone=CHICAGO, phone_region="US")

    assert parsed.placer_id == "P|1A"


@pytest.mark.parametrize(("text", "error"), [
    ("", hl7.UnreadableMessage),
    ("garbage", hl7.UnreadableMessage),
    ("PID|1\rMSH|^~\\&|", hl7.UnreadableMessage),
    ("MSH|^~\\&|A|B|C|D|20250101||ADT^A01|1|P|2.5\r", hl7.UnsupportedMessage),
    ("MSH|^~\\&|A|B|C|D|20250101||SIU^S12|1|P|3.0\r", hl7.UnsupportedMessage),
    ("MSH|^~\\&|A|B|C|D|20250101||SIU^S12|1|P|2.5\rSCH|\r", hl7.UnusableMessage),
])
def test_bad_messages_raise_the_right_error(text, error):
    with pytest.raises(error):
        hl7.parse_siu(text, site_timezone=CHICAGO, phone_region="US")


def test_ack_swaps_sender_and_receiver_and_echoes_the_control_id():
    header = hl7.read_header(_text("siu_s12_renalware_v24.hl7"))

    reply = hl7.ack(header, "AA")

    msh, msa = reply.rstrip("\r").split("\r")
    fields = msh.split("|")
    assert fields[2:6] == ["RENALWARE", "MSE", "BLT_TIE", "BLT"]
    assert fields[8] == "ACK^S12^ACK"
    assert fields[9] != "Q166323123117" and fields[9]
    assert fields[11] == "2.4"
    assert msa == "MSA|AA|Q166323123117"


def test_ack_error_has_an_err_segment_in_the_senders_delimiters():
    header = hl7.read_header(_text("siu_s12_rethinkhealth_customdelims_v23.hl7"))

    reply = hl7.ack(header, "AE", error="SCH segment is missing", error_code="100",
                    segment="SCH")

    segments = reply.rstrip("\r").split("\r")
    assert segments[0].startswith("MSH$%!?^$Healthmatics EHR$")
    assert segments[1].startswith("MSA$AE$8907-45")
    assert segments[2].startswith("ERR$SCH%1%%100$SCH%1$100%")


def test_parse_dtm_refuses_a_date_without_time():
    assert hl7.parse_dtm("20250310", ZoneInfo(CHICAGO)) is None
