"""HL7 v2 core: real vendor messages, vendor-style fixtures, refusals and ACKs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas.codes import CodeSystem, Quantity
from schemas.context import ContextEvent
from schemas.observations import LabResults, Measurement, ObservationMessage, VitalSigns
from services.ingest import InputRefusedError
from services.ingest.hl7 import Hl7Message, Hl7RefusedError, build_ack, parse_hl7, recover_header

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "hl7"
PHILIPS = SHARED / "philips-pic-ix-pocd-ig"
DRAEGER = SHARED / "draeger-ihe-pcd-acm"
FIXTURES = ROOT / "tests" / "data" / "hl7"
RECEIVED = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def parse(raw: bytes, site_tz: ZoneInfo | None = None) -> Hl7Message:
    return parse_hl7(raw, received_at=RECEIVED, site_tz=site_tz or BERLIN)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def refused(raw: bytes) -> InputRefusedError:
    with pytest.raises(InputRefusedError) as info:
        parse(raw)
    return info.value


def only(message: Hl7Message, topic: str) -> ObservationMessage:
    found = [r for r in message.records if r.topic == topic]
    assert len(found) == 1, [r.topic for r in message.records]
    payload = found[0].payload
    assert isinstance(payload, ObservationMessage)
    return payload


def by_code(payload: ObservationMessage, code: str) -> Measurement:
    return next(m for m in payload.measurements if m.code == code)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- real vendor messages ---------------------------------------------------------------


def test_philips_pic_ix_numerics_end_to_end() -> None:
    m = parse((PHILIPS / "pic_ix_example_numerics_ORU_R01.hl7").read_bytes())
    assert (m.message_type, m.control_id) == ("ORU^R01", "HP0425230332.872USDANRMMD1NBR488")
    assert [r.topic for r in m.records] == ["vitals"]
    record = m.records[0]
    vitals = record.payload
    assert isinstance(vitals, VitalSigns)
    assert (record.key, vitals.patient_id, vitals.bed, vitals.care_unit) == (
        "12345",
        "12345",
        "Bed1",
        "My Unit",
    )
    hr = vitals.latest(Quantity.HEART_RATE)
    assert hr is not None
    assert (hr.value, hr.unit, hr.code_system, hr.code) == (60.0, "/min", CodeSystem.MDC, "147842")
    assert hr.containment == "1.2.1.1"
    assert hr.observed_at == datetime(2021, 4, 26, 3, 3, 31, 496000, tzinfo=UTC)  # OBR-7 -0400
    assert hr.device_id == "XW25200213"  # OBX-18 of the containing VMD row
    assert vitals.source.device_id == (
        "7f2586c7-0506-46cd-a612-d8e75b838faa-IntelliVue MX500 - 866064"  # the MDS row
    )
    assert vitals.source.message_control_id == m.control_id
    assert vitals.received_at == RECEIVED
    rhythm = by_code(vitals, "184327")  # unknown code: kept, flagged, warned
    assert (rhythm.quantity, rhythm.value_text) == (None, "MDC_ECG_PACED_RHY")
    assert any("184327" in w for w in m.warnings)
    assert m.header.sending_application == " SendingApplication"
    assert (m.header.processing_id, m.header.version_id, m.header.accept_ack_type) == (
        "D",
        "2.6",
        "AL",
    )


def test_philips_truncated_waveform_file_is_refused_clearly() -> None:
    raw = (PHILIPS / "pic_ix_example_full_with_truncated_waveform.txt").read_bytes()
    error = refused(raw)
    assert error.reason == "invalid_message"
    assert "OBX 11" in str(error)
    assert "'- 5' is not a number" in str(error)
    assert isinstance(error, Hl7RefusedError)
    assert (error.hl7_code, error.location) == ("102", ("OBX", 7, 5))


@pytest.mark.parametrize("name", ["PCD04_alarm.txt", "PCD04_watchdog.txt"])
def test_draeger_pcd04_alarms_are_refused_as_unsupported(name: str) -> None:
    error = refused((DRAEGER / name).read_bytes())
    assert error.reason == "unsupported_message_type"
    assert "ORU^R40" in str(error)


@pytest.mark.parametrize("name", ["ACK_watchdog.txt", "PCD05_alarm.txt"])
def test_draeger_ack_and_pcd05_are_unsupported(name: str) -> None:
    error = refused((DRAEGER / name).read_bytes())
    assert error.reason == "unsupported_message_type"


# -- vendor-style fixtures --------------------------------------------------------------


def test_ge_style_crlf_obx14_without_offset_takes_msh7_offset() -> None:
    m = parse(fixture("ge_style_oru_r01.hl7"))
    vitals = only(m, "vitals")
    assert vitals.patient_id == "MRN0042"  # MR preferred over the first (VN) repetition
    assert (vitals.bed, vitals.care_unit) == ("07", "MICU")
    hr = vitals.latest(Quantity.HEART_RATE)
    assert hr is not None
    assert hr.observed_at == utc(2026, 3, 1, 9, 44, 55)
    nbp = [vitals.value_of(q) for q in (Quantity.NBP_SYS, Quantity.NBP_DIA, Quantity.NBP_MEAN)]
    assert nbp == [118.0, 64.0, 82.0]
    assert by_code(vitals, "150301").observed_at == utc(2026, 3, 1, 9, 40, 12)
    assert vitals.value_of(Quantity.TEMPERATURE) == 38.5  # 101.3 degF
    assert vitals.value_of(Quantity.SPO2) == 96.0
    assert vitals.value_of(Quantity.RESP_RATE) == 22.0
    pvc = by_code(vitals, "148065")
    assert (pvc.quantity, pvc.value, pvc.code_label) == (None, 3.0, "MDC_ECG_V_P_C_CNT")
    assert by_code(vitals, "184327").value_text == "Sinus rhythm"  # CWE value
    assert {x.device_id for x in vitals.measurements} == {"0080F4FFFE001122"}  # from the MDS
    assert vitals.source.device_id == "0080F4FFFE001122"
    assert sum("kept flagged" in w for w in m.warnings) == 2


def test_mindray_style_mdc_units_and_site_zone_without_any_offset() -> None:
    m = parse(fixture("mindray_style_oru_r01.hl7"))
    vitals = only(m, "vitals")
    assert vitals.patient_id == "4711"
    assert vitals.value_of(Quantity.ABP_MEAN) == 61.0
    assert vitals.value_of(Quantity.PULSE_RATE) == 101.0
    assert vitals.value_of(Quantity.TEMPERATURE) == 38.9
    hr = vitals.latest(Quantity.HEART_RATE)
    assert hr is not None
    assert hr.unit == "/min"
    assert hr.observed_at == utc(2026, 3, 1, 8, 45)  # OBR-7 09:45 Europe/Berlin
    later = parse(fixture("mindray_style_oru_r01.hl7"), site_tz=ZoneInfo("America/New_York"))
    assert only(later, "vitals").measurements[0].observed_at == utc(2026, 3, 1, 14, 45)
    assert Quantity.CVP not in {x.quantity for x in vitals.measurements}  # empty OBX-5
    assert any("OBX 9" in w and "no value" in w for w in m.warnings)


def test_nihon_kohden_style_kpa_sn_artefact_and_utf8() -> None:
    m = parse(fixture("nihon_kohden_style_oru_r01.hl7"))
    vitals = only(m, "vitals")
    assert vitals.value_of(Quantity.ABP_SYS) == pytest.approx(120.01, abs=0.01)  # 16 kPa
    assert vitals.value_of(Quantity.ETCO2) == pytest.approx(39.75, abs=0.01)  # MDC kPa code
    assert vitals.value_of(Quantity.TEMPERATURE) == 37.2  # SN =^37.2
    spo2 = by_code(vitals, "150456")
    assert (spo2.value, spo2.artefact) == (0.0, True)  # kept, flagged
    assert vitals.latest(Quantity.SPO2) is None
    assert Quantity.RESP_RATE not in {x.quantity for x in vitals.measurements}  # status X
    assert by_code(vitals, "0").value_text == "Ödem re. Unterarm, Kanüle gespült"
    assert spo2.observed_at == utc(2026, 3, 1, 9, 44, 58)  # OBX-14 +0900


def test_draeger_style_device_ids_inherit_from_the_vmd_and_escapes() -> None:
    m = parse(fixture("draeger_style_oru_r01.hl7"))
    vitals = only(m, "vitals")
    hr = vitals.latest(Quantity.HEART_RATE)
    assert hr is not None
    assert hr.device_id == "urn:uuid:0a7e3f52-10fa-11ea-bab1-0050b612afeb"
    assert vitals.source.device_id == "urn:uuid:f9bd67ba-10f9-11ea-bab1-0050b612afeb"
    assert by_code(vitals, "68162").value_text == "Lead II & III ^ aVF, 0.5|40 Hz OK"


def test_custom_encoding_characters_and_escapes() -> None:
    m = parse(fixture("custom_delimiters_oru_r01.hl7"))
    assert m.header.encoding.msh2 == "$*%!"
    vitals = only(m, "vitals")
    assert vitals.patient_id == "A-100"  # the MR repetition, not the first
    assert (vitals.bed, vitals.care_unit) == ("12", "SICU")
    assert vitals.value_of(Quantity.SPO2) == 97.0
    assert vitals.measurements[0].observed_at == utc(2026, 3, 1, 15, 59, 30)  # MSH-7 -0500
    assert by_code(vitals, "0").value_text == "pump # line $ A ! B % * Hi,"


def test_lab_oru_loinc_conversions_status_and_unknowns() -> None:
    m = parse(fixture("lab_oru_r01.hl7"))
    labs = only(m, "labs")
    assert isinstance(labs, LabResults)
    assert len(m.records) == 1  # unknown codes stay on the labs message
    assert (labs.order_id, labs.result_status) == ("FL456", "P")  # NSE is preliminary
    assert labs.value_of(Quantity.LACTATE) == 4.2
    assert labs.value_of(Quantity.CREATININE) == 2.0  # 176.84 umol/L
    assert labs.value_of(Quantity.PLATELETS) == 85.0  # 10*9/L
    assert labs.value_of(Quantity.PAO2) == pytest.approx(63.76, abs=0.01)  # 8.5 kPa
    assert labs.value_of(Quantity.FIO2) == 40.0  # 0.4
    assert labs.value_of(Quantity.NSE) == 42.0  # ug/L
    sodium = by_code(labs, "2951-2")
    assert (sodium.quantity, sodium.code_system, sodium.value) == (None, CodeSystem.LOINC, 138.0)
    bilirubin = by_code(labs, "1975-2")
    assert (bilirubin.quantity, bilirubin.value_text) == (None, "<0.2")  # SN comparator
    assert labs.measurements[0].observed_at == utc(2026, 3, 1, 9, 55)  # OBR-7


def test_lab_all_final_and_corrected_status() -> None:
    raw = fixture("lab_oru_r01.hl7").replace(b"|H|||P", b"|H|||C")
    assert only(parse(raw), "labs").result_status == "C"
    raw = raw.replace(b"|H|||C", b"|H|||F")
    assert only(parse(raw), "labs").result_status == "F"


def test_unknown_code_in_a_device_message_goes_to_vitals_and_nirs_routing() -> None:
    raw = (
        b"MSH|^~\\&|DEV|ICU|||20260301120000+0000||ORU^R01|n1|P|2.6\r"
        b"PID|||p7^^^^MR\rOBR|1|||x|||20260301120000\r"
        b"OBX|1|NM|VIGIL-RSO2-L^rSO2 left^99VIGIL|1.1.1.1|64|%^%^UCUM|||||F\r"
        b"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|%^%^UCUM|||||F\r"
        b"OBX|3|NM|999999^MDC_NOT_KNOWN^MDC|1.2.1.2|5|{x}|||||F\r"
    )
    m = parse(raw)
    assert sorted(r.topic for r in m.records) == ["nirs", "vitals"]
    assert only(m, "nirs").value_of(Quantity.RSO2_LEFT) == 64.0
    assert by_code(only(m, "vitals"), "999999").quantity is None


def test_alternate_identifier_resolves_a_local_primary_code() -> None:
    raw = (
        b"MSH|^~\\&|GW|ICU|||20260301120000+0000||ORU^R01|a1|P|2.6\r"
        b"PID|||p7^^^^MR\rOBR|1|||x|||20260301120000\r"
        b"OBX|1|NM|0002-4182^HR^MDIL^147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|77|bpm|||||F\r"
        b"OBX|2|NM|0002-5000^SpO2^MDIL^^MDC_PULS_OXIM_SAT_O2^|1.1.1.2|98|%|||||F\r"
    )
    vitals = only(parse(raw), "vitals")
    assert vitals.value_of(Quantity.HEART_RATE) == 77.0
    assert vitals.value_of(Quantity.SPO2) == 98.0
    assert {x.code_system for x in vitals.measurements} == {CodeSystem.MDC}


def test_time_fallbacks_obr8_then_msh7_with_a_warning() -> None:
    raw = (
        b"MSH|^~\\&|GW|ICU|||20260301120000+0000||ORU^R01|t1|P|2.6\r"
        b"PID|||p7^^^^MR\rOBR|1|||x||||20260301115500+0000\r"
        b"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|77|bpm|||||F\r"
        b"OBR|2|||x\r"
        b"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|98|%|||||F|||20260301115900\r"
        b"OBX|3|NM|151562^MDC_RESP_RATE^MDC|1.1.1.3|14|/min|||||F\r"
    )
    m = parse(raw)
    vitals = only(m, "vitals")
    assert by_code(vitals, "147842").observed_at == utc(2026, 3, 1, 11, 55)  # OBR-8
    assert by_code(vitals, "150456").observed_at == utc(2026, 3, 1, 11, 59)  # OBX-14
    assert by_code(vitals, "151562").observed_at == utc(2026, 3, 1, 12, 0)  # MSH-7
    assert any("OBR-8" in w for w in m.warnings)
    assert any("MSH-7" in w for w in m.warnings)


def test_deleted_and_wrong_results_are_skipped() -> None:
    raw = (
        b"MSH|^~\\&|GW|ICU|||20260301120000+0000||ORU^R01|t1|P|2.6\r"
        b"PID|||p7^^^^MR\rOBR|1|||x|||20260301120000\r"
        b"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|77|bpm|||||W\r"
        b"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|98|%|||||F\r"
    )
    m = parse(raw)
    assert [x.quantity for x in only(m, "vitals").measurements] == [Quantity.SPO2]
    assert any("status W" in w for w in m.warnings)


def test_latin1_fallback_without_msh18_warns() -> None:
    text = fixture("nihon_kohden_style_oru_r01.hl7").decode().replace("UNICODE UTF-8", "")
    m = parse(text.encode("latin-1"))
    assert by_code(only(m, "vitals"), "0").value_text == "Ödem re. Unterarm, Kanüle gespült"
    assert any("ISO 8859-1" in w for w in m.warnings)
    declared = text.replace("||AL|NE||", "||AL|NE||8859/1").encode("latin-1")
    m = parse(declared)
    assert by_code(only(m, "vitals"), "0").value_text.startswith("Ödem")
    assert not any("8859" in w for w in m.warnings)


def test_bom_whitespace_lf_and_mllp_leftovers_are_tolerated() -> None:
    raw = fixture("mindray_style_oru_r01.hl7").replace(b"\r", b"\n")
    m = parse(b"\xef\xbb\xbf  \n" + raw + b"\n\n\x1c\r")
    assert only(m, "vitals").value_of(Quantity.HEART_RATE) == 102.0


# -- ADT ----------------------------------------------------------------------------


def context_of(name: str) -> Any:
    m = parse(fixture(name))
    assert [r.topic for r in m.records] == ["context"]
    assert m.records[0].key == "MRN0042"
    payload = m.records[0].payload
    assert isinstance(payload, ContextEvent)
    return payload.root


def test_adt_a01_admission() -> None:
    event = context_of("adt_a01.hl7")
    assert event.kind == "admission"
    assert event.observed_at == utc(2026, 3, 1, 6, 55)  # EVN-6
    assert (event.bed, event.care_unit, event.site) == ("07", "MICU", "HOSP")
    assert event.sex == "female"
    assert event.age_years == pytest.approx(68.04, abs=0.01)


def test_adt_a02_transfer_takes_evn2_without_offset_from_msh7() -> None:
    event = context_of("adt_a02.hl7")
    assert event.kind == "transfer"
    assert (event.bed, event.care_unit) == ("02", "SICU")
    assert event.observed_at == utc(2026, 3, 2, 7, 55)


@pytest.mark.parametrize(
    ("code", "disposition"),
    [("01", "home"), ("20", "death"), ("02", "transfer"), ("WARD", "ward"), ("99", "unknown")],
)
def test_adt_a03_discharge_disposition(code: str, disposition: str) -> None:
    raw = fixture("adt_a03.hl7").replace(b"||01\r", f"||{code}\r".encode())
    m = parse(raw)
    event = m.records[0].payload.root  # type: ignore[attr-defined]
    assert (event.kind, event.disposition) == ("discharge", disposition)
    assert event.observed_at == utc(2026, 3, 5, 15)  # MSH-7, no EVN
    assert any("EVN" in w for w in m.warnings)


def test_adt_other_events_are_unsupported_event_codes() -> None:
    error = refused(fixture("adt_a01.hl7").replace(b"ADT^A01^ADT_A01", b"ADT^A08^ADT_A01"))
    assert error.reason == "unsupported_message_type"
    assert isinstance(error, Hl7RefusedError)
    assert error.hl7_code == "201"


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "hl7_parse_error"),
        (b"hello world", "hl7_parse_error"),
        (b"MSH|^~", "hl7_parse_error"),
        (b"MSH|^^\\&|A", "hl7_parse_error"),  # repeated delimiter
        (b"MSH|^~\\&|A\rP\x00D|||1", "hl7_parse_error"),
        (b"MSH|^~\\&|A|||||||c|P|2.6\rthis is not a segment", "hl7_parse_error"),
        (b"MSH|^~\\&|A|||||QRY^A19|c|P|2.6", "unsupported_message_type"),
        (b"MSH|^~\\&|A||||||c|P|2.6", "unsupported_message_type"),
    ],
)
def test_refusal_reasons(raw: bytes, reason: str) -> None:
    assert refused(raw).reason == reason


def test_truncated_message_without_pid_has_no_patient_identity() -> None:
    raw = fixture("ge_style_oru_r01.hl7").split(b"\r\nPID")[0]
    assert refused(raw).reason == "no_patient_identity"


@pytest.mark.parametrize(
    "pid3",
    [b"", b'""', b"^^^HOSP^MR", b"bad id with spaces^^^^MR", b"x" * 65],
)
def test_unusable_patient_identifiers(pid3: bytes) -> None:
    raw = fixture("mindray_style_oru_r01.hl7").replace(b"4711^^^^PI", pid3)
    error = refused(raw)
    assert error.reason == "no_patient_identity"
    assert isinstance(error, Hl7RefusedError)
    assert error.location == ("PID", 1, 3)


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (b"|20260301104455\r", b"|2026030110445\r", "OBX-14"),  # odd digit count
        (b"|20260301104455\r", b"|20260230104455\r", "OBX-14"),  # 30 February
        (b"|20260301104455\r", b"|20260301104455+2500\r", "OBX-14"),  # offset
        (b"|||20260301104459\r", b"|||yesterday\r", "OBR-7"),
    ],
)
def test_bad_observation_times_are_invalid_messages(old: bytes, new: bytes, where: str) -> None:
    raw = fixture("ge_style_oru_r01.hl7").replace(b"\r\n", b"\r")
    mutated = raw.replace(old, new, 1)
    assert mutated != raw
    error = refused(mutated)
    assert error.reason == "invalid_message"
    assert where in str(error)


def test_two_messages_in_one_frame_are_refused() -> None:
    raw = fixture("mindray_style_oru_r01.hl7")
    assert refused(raw + raw).reason == "hl7_parse_error"


def test_utf16_charset_is_refused() -> None:
    raw = fixture("mindray_style_oru_r01.hl7").replace(b"UNICODE UTF-8", b"UNICODE UTF-16")
    assert refused(raw).reason == "hl7_parse_error"


def test_naive_received_at_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_hl7(b"MSH|", received_at=datetime(2026, 1, 1), site_tz=UTC)


# -- ACK ----------------------------------------------------------------------------

NOW = datetime(2026, 3, 6, 12, 0, 1, tzinfo=UTC)


def segments(ack: bytes) -> dict[str, list[str]]:
    assert ack.endswith(b"\r")
    assert b"\n" not in ack
    lines = ack.decode().rstrip("\r").split("\r")
    return {line[:3]: line.split("|") for line in lines}


def test_ack_aa_swaps_applications_and_echoes_the_control_id() -> None:
    m = parse(fixture("ge_style_oru_r01.hl7"))
    ack = segments(build_ack("AA", header=m.header, raw=None, now=NOW, control_id="ACK1"))
    assert set(ack) == {"MSH", "MSA"}
    msh = ack["MSH"]
    assert msh[1] == "^~\\&"
    assert msh[2:6] == ["VIGIL", "ICU", "CARESCAPE^0080F4FFFE001122^EUI-64", "GE Healthcare"]
    assert msh[6] == "20260306120001+0000"
    assert msh[8:12] == ["ACK^R01^ACK", "ACK1", "P", "2.6"]
    assert ack["MSA"] == ["MSA", "AA", "GE20260301104500001"]


def test_nak_carries_err_with_table_0357_code_location_and_diagnostic() -> None:
    raw = fixture("mindray_style_oru_r01.hl7").replace(b"4711^^^^PI", b"")
    with pytest.raises(InputRefusedError) as info:
        parse(raw)
    ack = segments(
        build_ack(
            "AE", header=recover_header(raw), raw=raw, now=NOW, control_id="N1", error=info.value
        )
    )
    assert ack["MSA"] == ["MSA", "AE", "MR1709286310"]
    err = ack["ERR"]
    assert err[2] == "PID^1^3"
    assert err[3] == "101^Required field missing^HL70357"
    assert err[4] == "E"
    assert err[5] == "no_patient_identity^^99VIGIL"
    assert "PID-3" in err[7]


def test_nak_for_unparseable_bytes_recovers_what_it_can() -> None:
    raw = b"\x0bgarbage\rMSH|^~\\&|MON|WARD|VIG|HOSP|2026||ORU^R01|77|P|2.3\rOBX|\xff\x00"
    with pytest.raises(InputRefusedError) as info:
        parse(raw)
    ack = segments(
        build_ack("AR", header=None, raw=raw, now=NOW, control_id="N2", error=info.value)
    )
    assert ack["MSH"][2:6] == ["VIG", "HOSP", "MON", "WARD"]
    assert ack["MSH"][8] == "ACK^R01^ACK"
    assert ack["MSA"][:3] == ["MSA", "AR", "77"]
    assert ack["MSA"][3]  # v2.3 receivers read MSA-3
    assert ack["ERR"][1].startswith("^^^100&Segment sequence error&HL70357")  # ERR-1 (ELD)


def test_nak_without_any_header_and_a_plain_refusal() -> None:
    error = InputRefusedError("kafka_unavailable", "could not save|the message\r\x0b")
    ack = build_ack("CE", header=None, raw=b"nothing", now=NOW, control_id="N3", error=error)
    seg = segments(ack)
    assert seg["MSH"][8:12] == ["ACK", "N3", "P", "2.6"]
    assert seg["ERR"][3] == "207^Application internal error^HL70357"
    assert seg["ERR"][7] == "could not save\\F\\the message "
    assert b"\x0b" not in ack
    assert b"\x1c" not in ack


def test_ack_uses_the_senders_encoding_characters() -> None:
    m = parse(fixture("custom_delimiters_oru_r01.hl7"))
    error = Hl7RefusedError("invalid_message", "bad $ value", hl7_code="102")
    ack = build_ack("AE", header=m.header, raw=None, now=NOW, control_id="C1", error=error)
    lines = ack.decode().split("\r")
    assert lines[0].startswith("MSH#$*%!###ACME Monitor#ICU 5#")
    assert lines[0].split("#")[8] == "ACK$R01$ACK"
    assert lines[1] == "MSA#AE#ACME-77"
    assert "102$Data type error$HL70357" in lines[2]
    assert "bad %S% value" in lines[2]


def test_ack_code_must_be_valid() -> None:
    with pytest.raises(ValueError, match="ACK code"):
        build_ack("OK", header=None, raw=None, now=NOW, control_id="x")


def test_ack_keeps_the_declared_character_set() -> None:
    raw = (PHILIPS / "pic_ix_example_numerics_ORU_R01.hl7").read_bytes()
    m = parse(raw)
    msh = segments(build_ack("AA", header=m.header, raw=raw, now=NOW, control_id="x"))["MSH"]
    assert msh[17] == "8859/1"
    assert msh[10] == "D"


def test_two_patients_in_one_oru_give_one_record_each() -> None:
    raw = (
        b"MSH|^~\\&|GW|ICU|||20260301120000+0000||ORU^R01|m1|P|2.6\r"
        b"PID|||p1^^^^MR\rPV1||I|ICU^^01\rOBR|1|||x|||20260301120000\r"
        b"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|71|bpm|||||F|||||||own-id\r"
        b"PID|||p2^^^^MR\rPV1||I|ICU^^02\rOBR|1|||x|||20260301120000\r"
        b"OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|72|bpm|||||F\r"
        b"OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|99|%||QUES|||F\r"
    )
    m = parse(raw)
    assert [(r.key, r.payload.bed) for r in m.records] == [("p1", "01"), ("p2", "02")]  # type: ignore[attr-defined]
    first, second = (r.payload for r in m.records)
    assert isinstance(first, VitalSigns)
    assert isinstance(second, VitalSigns)
    assert first.measurements[0].device_id == "own-id"  # OBX-18 on the metric itself
    assert first.source.device_id == "own-id"
    assert second.value_of(Quantity.HEART_RATE) == 72.0
    assert by_code(second, "150456").artefact  # OBX-8 measurement status questionable
    assert second.source.device_id == "GW"  # no device id at all: the sending application


def test_oru_with_no_values_publishes_nothing_but_parses() -> None:
    raw = (
        b"MSH|^~\\&|GW|ICU|||20260301120000+0000||ORU^R01|m2|P|2.6\r"
        b"PID|||p1^^^^MR\rOBR|1|||x|||20260301120000\r"
        b"OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||dev\r"
    )
    m = parse(raw)
    assert m.records == ()
    assert any("nothing to publish" in w for w in m.warnings)


def test_a_bad_msh7_is_a_warning_when_the_observations_have_their_own_times() -> None:
    raw = fixture("ge_style_oru_r01.hl7").replace(b"|20260301104500+0100|", b"|20261340|", 1)
    message = parse(raw)
    assert any("MSH-7" in w for w in message.warnings)
    assert message.sent_at is None
    assert only(message, "vitals").measurements  # nothing lost


def test_milliseconds_without_a_dot_in_msh7_are_read() -> None:
    raw = fixture("ge_style_oru_r01.hl7").replace(
        b"|20260301104500+0100|", b"|20260301104500250+0100|", 1
    )
    sent_at = parse(raw).sent_at
    assert sent_at is not None
    assert sent_at.isoformat() == "2026-03-01T09:45:00.250000+00:00"


def test_a_non_numeric_nm_value_is_kept_as_text_not_a_refusal() -> None:
    raw = fixture("ge_style_oru_r01.hl7").replace(b"\r\n", b"\r")
    mutated = raw.replace(b"|88|", b"|8 8|", 1)
    assert mutated != raw
    message = parse(mutated)
    kept = [m for m in only(message, "vitals").measurements if m.value_text == "8 8"]
    assert len(kept) == 1
    assert kept[0].quantity is None  # a numeric quantity with a text value: flagged unknown
    assert any("not a number" in w for w in message.warnings)
    # the other observations of the message are all still there
    assert len(only(message, "vitals").measurements) == len(only(parse(raw), "vitals").measurements)


def test_a_ward_and_bed_in_subcomponents_of_pv1_3_give_the_bed() -> None:
    raw = fixture("ge_style_oru_r01.hl7").replace(b"\r\n", b"\r")
    pv1 = next(line for line in raw.split(b"\r") if line.startswith(b"PV1"))
    mutated = raw.replace(pv1, b"PV1||I|^^ICU&07")
    message = parse(mutated)
    vitals = only(message, "vitals")
    assert (vitals.bed, vitals.care_unit) == ("07", "ICU")
    assert any("PV1-3.3" in w for w in message.warnings)


def test_a_metric_with_status_x_and_a_value_is_skipped_with_a_warning() -> None:
    raw = (
        b"MSH|^~\\&|MON|ICU|||20260306115900+0000||ORU^R01|x1|P|2.6\r"
        b"PID|||p1^^^^MR\rOBR|1|||x|||20260306115800+0000\r"
        b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|127|262688^MDC_DIM_PERCENT^MDC|||||X\r"
        b"OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|80|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R"
    )
    message = parse(raw)
    assert [m.code for m in only(message, "vitals").measurements] == ["147842"]
    assert any("status X" in w for w in message.warnings)


def test_an_mds_row_with_a_one_level_containment_gives_its_device_id() -> None:
    raw = (
        b"MSH|^~\\&|MON|ICU|||20260306115900+0000||ORU^R01|x2|P|2.6\r"
        b"PID|||p1^^^^MR\rOBR|1|||x|||20260306115800+0000\r"
        b"OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1|||||||X|||||||AABBCCDDEEFF0011^EUI-64\r"
        b"OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.0.0.1|80|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R"
    )
    (heart_rate,) = only(parse(raw), "vitals").measurements
    assert heart_rate.device_id == "AABBCCDDEEFF0011"


def test_unknown_codes_of_a_device_message_without_mdc_codes_stay_on_vitals() -> None:
    raw = (
        b"MSH|^~\\&|MON|ICU|||20260306115900+0000||ORU^R01|x3|P|2.6\r"
        b"PID|||p1^^^^MR\rOBR|1|||x|||20260306115800+0000\r"
        b"OBX|1|NM|0002-4bb8^SpO2^MDIL|1|97|%|||||R\r"
        b"OBX|2|NM|ACVPU^Alertness^99VENDOR|2|1||||||R"
    )
    message = parse(raw)
    assert [r.topic for r in message.records] == ["vitals"]
    spo2, vendor = only(message, "vitals").measurements
    assert (spo2.quantity, spo2.code, spo2.value) == (Quantity.SPO2, "150456", 97.0)  # MDIL hex
    assert vendor.quantity is None
