"""What the backend takes (issue 3): the CA verification certificate, the CA registration with its JITP settings,
and the Device Import Manifest with its signed summary."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from conftest import (
    EXIT_CONFIG,
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_POLICY,
    EXIT_USAGE,
    JITP_PROFILE,
    RefusalCheck,
    Station,
    assert_exit,
    assert_one_line_error,
    cert_fingerprint,
    init_station,
    install_ca_by_hand,
    load_cert,
    make_importable_ca,
    make_issuing_ca,
    make_root,
    openssl,
    openssl_csr,
    pem_certs,
    ski_of,
    utcnow,
)

CSV_HEADER = ["identifier", "description", "tags", "product_prn", "cohort_prn", "certificates", "target"]
JITP_KEYS = {"description", "tags", "product_name", "cohort_prn", "target"}
FIELD = r'"(?:[^"]|"")*"'
RECORD = rf"{FIELD}(?:,{FIELD})*"
ALL_QUOTED = re.compile(rf"{RECORD}(?:\r?\n{RECORD})*(?:\r?\n)?")


def cn_of(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert len(cns) == 1
    return cns[0].value


def iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def sha256_upper(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest().upper()


def hexnorm(text: str) -> str:
    return text.replace(":", "").upper()


# --------------------------------------------------------------------------------------------------------------
# keyline ca verification-cert
# --------------------------------------------------------------------------------------------------------------


def test_verification_cert_verifies_and_is_an_event_not_a_device(station: Station, tmp_path):
    code = "5d3f0c2a9b7e4f61a8c2d9e0b1f3a5c7"
    records_before = station.records()
    events_before = station.events("verification-certificate")
    out = tmp_path / "v.pem"
    t0 = utcnow()
    r = station.run("ca", "verification-cert", code, "--out", out)
    t1 = utcnow()
    assert_exit(r, EXIT_OK)

    v = openssl("verify", "-CAfile", station.root_pem, "-untrusted", station.ca_pem, out, check=False)
    assert v.rc == 0 and f"{out}: OK" in v.out, v
    cert = load_cert(out)
    assert len(pem_certs(out.read_bytes())) == 1
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]), cert.subject
    ca = station.ca_cert()
    assert cert.issuer == ca.subject
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki == ski_of(ca), "signed by the issuing CA itself, found by its SKI"
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert not bc.ca, "a verification certificate is an end-entity certificate"
    except x509.ExtensionNotFound:
        pass
    # Short validity: at most the default 7 days from now (a few minutes' backdating for clock skew allowed).
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    assert na <= t1 + dt.timedelta(days=7, minutes=1), f"valid until {na}, more than 7 days"
    assert na >= t0 + dt.timedelta(days=6), f"valid until {na}: the backend's code lives about a week"
    assert nb <= t0 + dt.timedelta(seconds=1) and t0 - nb <= dt.timedelta(hours=1), f"notBefore {nb}"

    assert station.records() == records_before, "a verification certificate must never become a device record"
    new = [e for e in station.events("verification-certificate") if e not in events_before]
    assert len(new) == 1, f"expected one verification-certificate event, got {new}"
    seq, kind, record_seq, ev_cn, detail = new[0]
    assert record_seq is None
    assert ev_cn == code or code in detail, new[0]
    assert_exit(station.run("ledger", "verify"), EXIT_OK)
    r = station.run("ledger", "list", "--json")
    assert_exit(r, EXIT_OK)
    assert code not in r.out, "the verification certificate shows up as a device in ledger list"


def test_verification_cert_days_option(station: Station, tmp_path):
    out = tmp_path / "v2.pem"
    t0 = utcnow()
    assert_exit(station.run("ca", "verification-cert", "CODE-TWO-DAYS", "--days", "2", "--out", out), EXIT_OK)
    na = load_cert(out).not_valid_after_utc
    assert t0 + dt.timedelta(days=2) - dt.timedelta(minutes=5) <= na <= utcnow() + dt.timedelta(days=2, minutes=1), na


def test_verification_cert_accepts_64_character_code(station: Station, tmp_path):
    code = "c" * 64
    out = tmp_path / "v64.pem"
    assert_exit(station.run("ca", "verification-cert", code, "--out", out), EXIT_OK)
    assert cn_of(load_cert(out)) == code


@pytest.mark.parametrize("code", ["", "with space", "a" * 65], ids=["empty", "space", "65-chars"])
def test_verification_cert_refuses_bad_codes(station: Station, tmp_path, code):
    out_dir = tmp_path / "vout"
    out_dir.mkdir()
    check = RefusalCheck(station, out_dir)
    events_before = station.events("verification-certificate")
    r = station.run("ca", "verification-cert", code, "--out", out_dir / "v.pem")
    assert_exit(r, EXIT_POLICY)
    assert_one_line_error(r)
    check.check(r)
    assert station.events("verification-certificate") == events_before


# --------------------------------------------------------------------------------------------------------------
# keyline manifest jitp
# --------------------------------------------------------------------------------------------------------------


def verification_cert(st: Station, tmp_path: Path, code="VERIFY-CODE-01", ca=None) -> Path:
    out = tmp_path / f"{code}.pem"
    args = ["ca", "verification-cert", code, "--out", out] + (["--ca", ca] if ca else [])
    assert_exit(st.run(*args), EXIT_OK)
    return out


def decode_pem_b64(value: str) -> bytes:
    raw = base64.b64decode(value, validate=True)
    assert raw.startswith(b"-----BEGIN CERTIFICATE-----"), raw[:60]
    return raw


def test_manifest_jitp_json_has_exactly_the_backend_keys(station: Station, tmp_path):
    station.add_jitp_profile("line1")
    v = verification_cert(station, tmp_path)
    r = station.run("manifest", "jitp", "--profile", "line1", "--verification-cert", v)
    assert_exit(r, EXIT_OK)
    body = json.loads(r.out)
    assert set(body) == {"certificate", "verification_certificate", "description", "jitp"}, body.keys()
    assert body["jitp"] == {
        "description": JITP_PROFILE["jitp_description"],
        "tags": JITP_PROFILE["tags"],
        "product_name": JITP_PROFILE["product_name"],
        "cohort_prn": JITP_PROFILE["cohort_prn"],
        "target": JITP_PROFILE["target"],
    }
    assert isinstance(body["description"], str) and body["description"].strip()

    ca = station.ca_cert()
    assert pem_certs(decode_pem_b64(body["certificate"])) == [ca]
    assert pem_certs(decode_pem_b64(body["verification_certificate"])) == [load_cert(v)]

    # For people: the CA's serial in decimal (as the backend's console shows it), SKI and fingerprint.
    assert re.search(rf"(?<![0-9]){ca.serial_number}(?![0-9])", r.err), f"decimal serial {ca.serial_number}\n{r}"
    assert ski_of(ca).hex().upper() in hexnorm(r.err), r
    assert cert_fingerprint(ca) in hexnorm(r.err), r

    # --description sets the registration's own description.
    r = station.run("manifest", "jitp", "--profile", "line1", "--verification-cert", v,
                    "--description", "Factory A & B CA")
    assert_exit(r, EXIT_OK)
    assert json.loads(r.out)["description"] == "Factory A & B CA"


def test_manifest_jitp_omits_unset_optional_keys(station: Station, tmp_path):
    station.add_jitp_profile("bare", cohort_prn=None, target=None, product_prn=None, description_template=None)
    v = verification_cert(station, tmp_path)
    r = station.run("manifest", "jitp", "--profile", "bare", "--verification-cert", v)
    assert_exit(r, EXIT_OK)
    body = json.loads(r.out)
    assert set(body) == {"certificate", "verification_certificate", "description", "jitp"}, body.keys()
    assert body["jitp"] == {
        "description": JITP_PROFILE["jitp_description"],
        "tags": JITP_PROFILE["tags"],
        "product_name": JITP_PROFILE["product_name"],
    }


def test_manifest_jitp_cli_format(station: Station, tmp_path):
    station.add_jitp_profile("line1")
    v = verification_cert(station, tmp_path)
    r = station.run("manifest", "jitp", "--profile", "line1", "--verification-cert", v, "--format", "cli")
    assert_exit(r, EXIT_OK)
    words = shlex.split(r.out.replace("\\\n", " "))
    flags = {}
    for i, w in enumerate(words):
        if w.startswith("--jitp-"):
            assert i + 1 < len(words) and not words[i + 1].startswith("--"), f"{w} has no value\n{r}"
            flags[w] = words[i + 1]
    assert flags == {
        "--jitp-description": JITP_PROFILE["jitp_description"],
        "--jitp-tags": ",".join(JITP_PROFILE["tags"]),
        "--jitp-product-name": JITP_PROFILE["product_name"],
        "--jitp-cohort-prn": JITP_PROFILE["cohort_prn"],
        "--jitp-target": JITP_PROFILE["target"],
    }, r


def test_manifest_jitp_refuses_profile_without_product_name(station: Station, tmp_path):
    station.add_jitp_profile("noproduct", product_name=None)
    v = verification_cert(station, tmp_path)
    r = station.run("manifest", "jitp", "--profile", "noproduct", "--verification-cert", v)
    assert_exit(r, EXIT_CONFIG)
    reason = assert_one_line_error(r)
    assert "product_name" in reason, r
    assert not r.out.strip(), r


def test_manifest_jitp_refuses_verification_cert_of_another_ca(station: Station, tmp_path):
    station.add_jitp_profile("line1")
    other = init_station(tmp_path / "other")
    v = verification_cert(other, tmp_path, code="OTHER-CODE")
    r = station.run("manifest", "jitp", "--profile", "line1", "--verification-cert", v)
    assert r.rc != EXIT_OK, f"a verification certificate of another CA proves nothing\n{r}"
    assert_one_line_error(r)


def test_manifest_jitp_refuses_ca_expiring_within_min_validity(station: Station, tmp_path):
    # A CA imported with `ca import` whose notAfter is 100 days away.
    new = make_importable_ca(tmp_path / "soon-ca", "Soon Root", "Soon Issuing CA",
                             not_after=utcnow() + dt.timedelta(days=100))
    r = station.run("ca", "import", "--name", "soon", "--cert", new.cert_file, "--key", new.key_file,
                    "--chain", new.root_file, "--passphrase-file", new.passfile)
    assert_exit(r, EXIT_OK)
    station.add_jitp_profile("soon365", ca="soon")  # min_validity_days = 365 (add_profile's default)
    assert station.config()["profiles"]["soon365"]["min_validity_days"] == 365
    station.add_jitp_profile("soon30", ca="soon")
    station.set_toml_key("profiles.soon30", "min_validity_days", 30)
    v = verification_cert(station, tmp_path, ca="soon")

    r = station.run("manifest", "jitp", "--profile", "soon365", "--verification-cert", v)
    assert_exit(r, EXIT_POLICY)
    assert_one_line_error(r, rule="ca-validity")
    assert not r.out.strip(), r

    r = station.run("manifest", "jitp", "--profile", "soon30", "--verification-cert", v)
    assert_exit(r, EXIT_OK)
    assert pem_certs(decode_pem_b64(json.loads(r.out)["certificate"])) == [new.ca.cert]


def test_manifest_jitp_refuses_expired_ca(station: Station, tmp_path):
    now = utcnow()
    root = make_root("Expired Root")
    ca = make_issuing_ca(root, "Expired Issuing CA", not_before=now - dt.timedelta(days=400),
                         not_after=now - dt.timedelta(days=2))
    install_ca_by_hand(station, "expired", ca, root, profile=False)
    station.add_jitp_profile("old", ca="expired")
    station.set_toml_key("profiles.old", "min_validity_days", 0)
    r = station.run("manifest", "jitp", "--profile", "old")
    assert_exit(r, EXIT_POLICY)
    assert_one_line_error(r, rule="ca-validity")
    assert not r.out.strip(), r


# --------------------------------------------------------------------------------------------------------------
# keyline manifest devices
# --------------------------------------------------------------------------------------------------------------

LINE2 = dict(product_name="Sensor", tags=["factory-b"], cohort_prn=None, target=None,
             description_template="{{cn}} on line two", jitp_description="Line 2")


@dataclass
class Device:
    cn: str
    profile: str
    operator: str
    how: str  # sign or issue
    path: Path
    hardware_id: str | None = None
    work_order: str | None = None

    @property
    def cert(self) -> x509.Certificate:
        return load_cert(self.path)

    def description(self) -> str:
        if self.profile == "line1":
            return f"{JITP_PROFILE['product_name']} {self.cn} op={self.operator} {self.work_order or ''}"
        return f"{self.cn} on line two"


def work_order_supported(st: Station) -> bool:
    return all("--work-order" in st.run("help", cmd).out for cmd in ("sign", "issue"))


def populate(st: Station, tmp_path: Path, work_orders: bool = False) -> list[Device]:
    """line1 (every backend key) and line2 (no cohort, no target); devices of both, by `sign` and by `issue`,
    interleaved in the ledger."""
    st.add_jitp_profile("line1")
    st.add_jitp_profile("line2", **LINE2)
    devices: list[Device] = []
    out = tmp_path / "signed"

    def sign(cn, profile, operator, hardware_id=None, work_order=None):
        csr, _ = openssl_csr(tmp_path / "csr", cn)
        extra = ["--operator", operator]
        if hardware_id:
            extra += ["--hardware-id", hardware_id]
        if work_order:
            extra += ["--work-order", work_order]
        path = st.sign_ok(csr, out, profile=profile, extra=extra)
        devices.append(Device(cn, profile, operator, "sign", path, hardware_id, work_order))

    def issue(cns, profile, operator, work_order=None):
        d = tmp_path / f"issued-{cns[0]}"
        args = ["issue", *cns, "--profile", profile, "--out", d, "--operator", operator]
        if work_order:
            args += ["--work-order", work_order]
        assert_exit(st.run(*args), EXIT_OK)
        for cn in cns:
            devices.append(Device(cn, profile, operator, "issue", d / f"{cn}.pem", None, work_order))

    sign("A-0001", "line1", "alice", hardware_id="HW-A1", work_order="WO-1" if work_orders else None)
    sign("B-0001", "line2", "carol")
    sign("A-0002", "line1", "alice")
    issue(["A-0003", "A-0004"], "line1", "bob", work_order="WO-2" if work_orders else None)
    issue(["B-0002"], "line2", "carol")
    sign("A-0005", "line1", "dave", work_order="WO-2" if work_orders else None)
    return devices


def ledger_rows(st: Station) -> dict[str, dict]:
    cols = ["seq", "cn", "cert_sha256", "serial_hex", "profile", "created_at", "state"]
    return {r[1]: dict(zip(cols, r)) for r in st.query(f"SELECT {', '.join(cols)} FROM records")}


def read_csv(path: Path) -> list[list[str]]:
    raw = path.read_bytes().decode("utf-8")
    assert ALL_QUOTED.fullmatch(raw), f"not every field of {path.name} is quoted:\n{raw[:600]}"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    # Every record (not only the header) starts with a quote, and the QUOTE_ALL round trip gives the same rows.
    again = io.StringIO()
    csv.writer(again, quoting=csv.QUOTE_ALL).writerows(rows)
    assert list(csv.reader(io.StringIO(again.getvalue()))) == rows
    return rows


def assert_csv_devices(st: Station, path: Path, expected: list[Device]):
    rows = read_csv(path)
    assert rows and rows[0] == CSV_HEADER, rows[:1]
    body = rows[1:]
    assert all(len(r) == len(CSV_HEADER) for r in body), body
    ids = [r[0] for r in body]
    assert sorted(ids) == sorted(d.cn for d in expected), ids
    assert len(set(ids)) == len(ids), f"a device appears twice: {ids}"
    ledger = ledger_rows(st)
    by_cn = {d.cn: d for d in expected}
    profiles = st.config()["profiles"]
    for row in body:
        rec = dict(zip(CSV_HEADER, row))
        d = by_cn[rec["identifier"]]
        p = profiles[d.profile]
        certs = pem_certs(rec["certificates"].encode())
        assert len(certs) == 1, rec["certificates"]
        assert cn_of(certs[0]) == rec["identifier"]
        assert cert_fingerprint(certs[0]) == ledger[d.cn]["cert_sha256"]
        assert certs[0] == d.cert
        assert rec["tags"] == ",".join(p["tags"]), rec
        assert rec["product_prn"] == p["product_prn"], rec
        assert rec["cohort_prn"] == p.get("cohort_prn", ""), rec
        assert rec["target"] == p.get("target", ""), rec
        assert rec["description"] == d.description(), rec
    return body


def export(st: Station, out: Path, *args, fmt=None):
    argv = ["manifest", "devices", "--out", out, *args] + (["--format", fmt] if fmt else [])
    r = st.run(*argv)
    assert_exit(r, EXIT_OK)
    return r


def test_manifest_devices_csv_is_the_backend_import_manifest(station: Station, tmp_path):
    devices = populate(station, tmp_path)
    line1 = [d for d in devices if d.profile == "line1"]
    assert {d.how for d in line1} == {"sign", "issue"}
    m = tmp_path / "m.csv"
    export(station, m, "--profile", "line1")
    body = assert_csv_devices(station, m, line1)
    # Exact description text, HTML characters kept as they are (no Mustache HTML escaping).
    desc = {r[0]: r[1] for r in body}
    assert desc["A-0001"] == 'Gateway "GW-1" & <Co> A-0001 op=alice '
    assert desc["A-0003"] == 'Gateway "GW-1" & <Co> A-0003 op=bob '
    assert "&amp;" not in m.read_text() and "&quot;" not in m.read_text() and "&lt;" not in m.read_text()
    assert "B-0001" not in m.read_text() and "B-0002" not in m.read_text()

    # Without --profile: every profile's devices, each with its own profile's tags and PRNs.
    m_all = tmp_path / "all.csv"
    export(station, m_all)
    assert_csv_devices(station, m_all, devices)


def test_manifest_devices_json_and_jsonl_carry_audit_fields(station: Station, tmp_path):
    devices = populate(station, tmp_path)
    line1 = {d.cn: d for d in devices if d.profile == "line1"}
    m_csv, m_json, m_jsonl = tmp_path / "m.csv", tmp_path / "m.json", tmp_path / "m.jsonl"
    export(station, m_csv, "--profile", "line1")
    export(station, m_json, "--profile", "line1", fmt="json")
    export(station, m_jsonl, "--profile", "line1", fmt="jsonl")
    csv_rows = {r[0]: dict(zip(CSV_HEADER, r)) for r in read_csv(m_csv)[1:]}
    from_json = json.loads(m_json.read_text())
    assert isinstance(from_json, list)
    from_jsonl = [json.loads(line) for line in m_jsonl.read_text().splitlines() if line.strip()]
    ledger = ledger_rows(station)
    station_id = station.config()["station_id"]
    ca_ski = ski_of(station.ca_cert()).hex().upper()

    for name, items in (("json", from_json), ("jsonl", from_jsonl)):
        by_cn = {o["identifier"]: o for o in items}
        assert len(by_cn) == len(items) and set(by_cn) == set(line1), (name, list(by_cn))
        for cn, o in by_cn.items():
            d, row, rec = line1[cn], csv_rows[cn], ledger[cn]
            cert = d.cert
            # The backend's fields: the same as the CSV.
            assert o["description"] == row["description"], (name, o)
            tags = o["tags"] if isinstance(o["tags"], list) else o["tags"].split(",")
            assert ",".join(tags) == row["tags"], (name, o)
            assert o["product_prn"] == row["product_prn"], (name, o)
            assert (o.get("cohort_prn") or "") == row["cohort_prn"], (name, o)
            assert (o.get("target") or "") == row["target"], (name, o)
            pems = o["certificates"] if isinstance(o["certificates"], list) else [o["certificates"]]
            assert pem_certs("\n\n".join(pems).encode()) == pem_certs(row["certificates"].encode()) == [cert]
            # The audit fields.
            for key in ("seq", "serial", "fingerprint", "aki", "not_before", "not_after", "station_id", "operator",
                        "issued_at"):
                assert key in o, f"{name}: audit field {key!r} missing from {sorted(o)}"
            # hardware_id: present when the device has one (a device without one may leave it out or give null).
            assert o["seq"] == rec["seq"], (name, o)
            assert int(hexnorm(o["serial"]), 16) == cert.serial_number, (name, o)
            assert o["fingerprint"] == rec["cert_sha256"] == cert_fingerprint(cert), (name, o)
            assert hexnorm(o["aki"]) == ca_ski, (name, o)
            assert iso(o["not_before"]) == cert.not_valid_before_utc, (name, o)
            assert iso(o["not_after"]) == cert.not_valid_after_utc, (name, o)
            assert o["station_id"] == station_id, (name, o)
            assert o["operator"] == d.operator, (name, o)
            assert (o.get("hardware_id") or None) == d.hardware_id, (name, o)
            issued = iso(o["issued_at"]).timestamp()
            assert abs(issued - rec["created_at"] / 1000) < 0.002, (name, o["issued_at"], rec["created_at"])


def test_manifest_devices_filters(station: Station, tmp_path):
    devices = populate(station, tmp_path)
    ledger = ledger_rows(station)
    line1 = [d for d in devices if d.profile == "line1"]

    # --since-seq N: only records after N.
    n = ledger["A-0002"]["seq"]
    m = tmp_path / "since-seq.csv"
    export(station, m, "--profile", "line1", "--since-seq", n)
    assert_csv_devices(station, m, [d for d in line1 if ledger[d.cn]["seq"] > n])
    m = tmp_path / "since-seq-all.csv"
    export(station, m, "--since-seq", n)
    assert_csv_devices(station, m, [d for d in devices if ledger[d.cn]["seq"] > n])

    # --state: every record is issued here; no command makes delivered/failed/revoked ones yet.
    assert {r["state"] for r in ledger.values()} == {"issued"}
    m = tmp_path / "issued.csv"
    export(station, m, "--profile", "line1", "--state", "issued")
    assert_csv_devices(station, m, line1)
    for state in ("revoked", "failed", "delivered"):
        m = tmp_path / f"{state}.csv"
        export(station, m, "--profile", "line1", "--state", state)
        assert read_csv(m) == [CSV_HEADER], f"--state {state} selected rows"
    r = station.run("manifest", "devices", "--state", "bogus", "--out", tmp_path / "bogus.csv")
    assert_exit(r, EXIT_USAGE)
    assert not (tmp_path / "bogus.csv").exists()

    # --since TIME: only certificates issued at or after TIME.
    time.sleep(max(0.0, 1.05 - (time.time() % 1)))
    since = dt.datetime.fromtimestamp(int(time.time()), dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_exit(station.run("issue", "A-0006", "--profile", "line1", "--out", tmp_path / "late", "--operator", "eve"),
                EXIT_OK)
    m = tmp_path / "since.csv"
    export(station, m, "--profile", "line1", "--since", since)
    assert_csv_devices(station, m, [Device("A-0006", "line1", "eve", "issue", tmp_path / "late" / "A-0006.pem")])


def test_manifest_devices_export_is_recorded_and_summarized(station: Station, tmp_path):
    devices = populate(station, tmp_path)
    line1 = [d for d in devices if d.profile == "line1"]
    ledger = ledger_rows(station)
    before = station.events("exported")
    r = station.run("ledger", "verify", "--json")
    assert_exit(r, EXIT_OK)
    head = json.loads(r.out)
    m = tmp_path / "m.csv"
    export(station, m, "--profile", "line1")
    digest = sha256_upper(m)

    new = [e for e in station.events("exported") if e not in before]
    assert len(new) == 1, f"expected one exported event, got {new}"
    detail = new[0][4]
    assert re.search(rf"(?<![0-9]){len(line1)}(?![0-9])", detail), f"row count {len(line1)} missing: {detail}"
    assert digest in detail.upper(), f"SHA-256 {digest} missing: {detail}"

    summary = json.loads(Path(str(m) + ".summary.json").read_text())
    assert summary["rows"] == len(line1)
    assert summary["sha256"].upper() == digest
    seqs = sorted(ledger[d.cn]["seq"] for d in line1)
    assert summary["first_seq"] == seqs[0] and summary["last_seq"] == seqs[-1], summary
    assert summary["ledger_head_hash"] == head["head_hash"], summary
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


def test_manifest_verify_and_openssl_as_independent_judge(station: Station, tmp_path):
    populate(station, tmp_path)
    for fmt in ("csv", "json", "jsonl"):
        m = tmp_path / f"m.{fmt}"
        export(station, m, "--profile", "line1", fmt=fmt)
        r = station.run("manifest", "verify", m)
        assert_exit(r, EXIT_OK)
        j = openssl("dgst", "-sha256", "-verify", station.path / "station-signing.pem",
                    "-signature", f"{m}.sig", f"{m}.summary.json", check=False)
        assert j.rc == 0 and "Verified OK" in j.out, j
        summary = json.loads(Path(f"{m}.summary.json").read_text())
        assert summary["sha256"].upper() == sha256_upper(m)
    # Verification does not depend on the working directory or the station being selected by it.
    r = station.run("manifest", "verify", tmp_path / "m.csv", "--public-key", station.path / "station-signing.pem",
                    cwd=tmp_path)
    assert_exit(r, EXIT_OK)


def _edit_csv_byte(st, m, tmp_path):
    data = bytearray(m.read_bytes())
    i = data.index(b"op=alice")
    data[i] = ord("O")
    m.write_bytes(bytes(data))


def _edit_summary(st, m, tmp_path):
    p = Path(f"{m}.summary.json")
    p.write_bytes(re.sub(rb'("rows"\s*:\s*)(\d+)', lambda x: x.group(1) + str(int(x.group(2)) + 1).encode(),
                         p.read_bytes(), count=1))


def _edit_csv_and_summary(st, m, tmp_path):
    """A consistent forgery: the CSV edited and the summary's digest and size updated to match it."""
    _edit_csv_byte(st, m, tmp_path)
    p = Path(f"{m}.summary.json")
    s = json.loads(p.read_text())
    s["sha256"] = sha256_upper(m)
    s["bytes"] = m.stat().st_size
    p.write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")


def _foreign_signature(st, m, tmp_path):
    """The summary re-signed by another station's signing key."""
    other = init_station(tmp_path / "other-station")
    key = other.path / "secrets" / "station-signing.key"
    openssl("dgst", "-sha256", "-sign", key, "-out", f"{m}.sig", f"{m}.summary.json")
    judge = openssl("dgst", "-sha256", "-verify", other.path / "station-signing.pem", "-signature", f"{m}.sig",
                    f"{m}.summary.json", check=False)
    assert judge.rc == 0, f"the foreign signature should at least be valid for the other station\n{judge}"


def _signature_of_other_export(st, m, tmp_path):
    other = tmp_path / "other.csv"
    export(st, other, "--profile", "line2")
    Path(f"{m}.sig").write_bytes(Path(f"{other}.sig").read_bytes())


TAMPERING = {
    "csv-one-byte": _edit_csv_byte,
    "summary-edited": _edit_summary,
    "csv-and-summary-digest": _edit_csv_and_summary,
    "signature-of-another-station": _foreign_signature,
    "signature-of-another-export": _signature_of_other_export,
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_manifest_verify_detects_tampering(station: Station, tmp_path, how):
    populate(station, tmp_path)
    m = tmp_path / "m.csv"
    export(station, m, "--profile", "line1")
    assert_exit(station.run("manifest", "verify", m), EXIT_OK)
    TAMPERING[how](station, m, tmp_path)
    r = station.run("manifest", "verify", m)
    assert_exit(r, EXIT_INTEGRITY)
    assert_one_line_error(r)
    assert "OK" not in r.out, r
    if how in ("summary-edited", "signature-of-another-station", "signature-of-another-export"):
        judge = openssl("dgst", "-sha256", "-verify", station.path / "station-signing.pem",
                        "-signature", f"{m}.sig", f"{m}.summary.json", check=False)
        assert judge.rc != 0, f"openssl agrees the signature is bad\n{judge}"


def test_manifest_devices_requires_product_prn(station: Station, tmp_path):
    station.add_jitp_profile("noprn", product_prn=None, cohort_prn=None)
    csr, _ = openssl_csr(tmp_path / "csr", "NP-0001")
    station.sign_ok(csr, tmp_path / "out", profile="noprn")
    before = station.events("exported")
    for args in (["--profile", "noprn"], []):
        m = tmp_path / "m.csv"
        r = station.run("manifest", "devices", "--out", m, *args)
        assert_exit(r, EXIT_CONFIG)
        reason = assert_one_line_error(r)
        assert "product_prn" in reason and "noprn" in reason, r
        assert not m.exists() and not Path(f"{m}.summary.json").exists() and not Path(f"{m}.sig").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("m.csv")], list(tmp_path.iterdir())
    assert station.events("exported") == before, "a refused export was recorded as an export"


def test_manifest_devices_default_output_in_exports(station: Station, tmp_path):
    devices = populate(station, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = station.run("manifest", "devices", "--profile", "line1", cwd=elsewhere)
    assert_exit(r, EXIT_OK)
    assert list(elsewhere.iterdir()) == [], "the default output path is relative to the station, not the cwd"
    exports = station.path / "exports"
    made = sorted(p.name for p in exports.iterdir())
    csvs = [n for n in made if n.endswith(".csv")]
    assert len(csvs) == 1, made
    assert set(made) == {csvs[0], csvs[0] + ".summary.json", csvs[0] + ".sig", csvs[0] + ".checkpoint"}, made
    assert_csv_devices(station, exports / csvs[0], [d for d in devices if d.profile == "line1"])
    assert_exit(station.run("manifest", "verify", exports / csvs[0]), EXIT_OK)


def test_manifest_devices_template_file_and_certificate_fields(station: Station, tmp_path):
    (station.path / "templates").mkdir()
    (station.path / "templates" / "line3.mustache").write_text(
        "{{cn}}|{{serial}}|{{fingerprint}}|{{not_after}}|{{station_id}}|{{profile}}|{{hardware_id}}|{{product_name}}\n")
    station.add_jitp_profile("line3", description_template="@templates/line3.mustache")
    csr, _ = openssl_csr(tmp_path / "csr", "T-0001")
    leaf = load_cert(station.sign_ok(csr, tmp_path / "out", profile="line3", extra=["--hardware-id", "HW-T1"]))
    m = tmp_path / "m.csv"
    export(station, m, "--profile", "line3")
    rows = read_csv(m)
    assert len(rows) == 2
    parts = dict(zip(CSV_HEADER, rows[1]))["description"].split("|")
    assert len(parts) == 8, parts
    cn, serial, fp, not_after, station_id, profile, hw, product = parts
    rec = ledger_rows(station)["T-0001"]
    assert cn == "T-0001"
    assert int(hexnorm(serial), 16) == leaf.serial_number or serial == str(leaf.serial_number), serial
    assert fp == rec["cert_sha256"] == cert_fingerprint(leaf)
    assert iso(not_after) == leaf.not_valid_after_utc, not_after
    assert station_id == station.config()["station_id"]
    assert profile == "line3" and hw == "HW-T1" and product == JITP_PROFILE["product_name"]


def test_manifest_devices_work_order(station: Station, tmp_path):
    if not work_order_supported(station):
        pytest.skip("sign/issue have no --work-order option in this build")
    devices = populate(station, tmp_path, work_orders=True)
    wo2 = [d for d in devices if d.work_order == "WO-2"]
    assert {d.cn for d in wo2} == {"A-0003", "A-0004", "A-0005"}
    m = tmp_path / "wo2.csv"
    export(station, m, "--work-order", "WO-2")
    body = assert_csv_devices(station, m, wo2)
    assert {r[1] for r in body} == {d.description() for d in wo2}
    assert all(r[1].endswith(" WO-2") for r in body), body
    m = tmp_path / "wo2.jsonl"
    export(station, m, "--work-order", "WO-2", fmt="jsonl")
    items = [json.loads(line) for line in m.read_text().splitlines() if line.strip()]
    assert sorted(o["identifier"] for o in items) == sorted(d.cn for d in wo2)
    assert all(o.get("work_order") == "WO-2" for o in items), items
    m = tmp_path / "wo1.csv"
    export(station, m, "--work-order", "WO-1", "--profile", "line1")
    assert_csv_devices(station, m, [d for d in devices if d.work_order == "WO-1"])
    m = tmp_path / "none.csv"
    export(station, m, "--work-order", "WO-404")
    assert read_csv(m) == [CSV_HEADER]
