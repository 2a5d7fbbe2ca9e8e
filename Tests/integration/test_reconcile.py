"""QA's reconcile (issue 5): a backend export made from a real station's ledger, with each kind of anomaly planted,
sorted into exactly the right categories with the right exit status; streaming formats; reports QA can file."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import (
    COHORT_PRN_A,
    EXIT_DATA,
    EXIT_OK,
    EXIT_USAGE,
    JITP_PROFILE,
    PRODUCT_PRN_A,
    Station,
    assert_exit,
    assert_one_line_error,
    make_issuing_ca,
    make_root,
    p256_key,
    utcnow,
)

EXIT_DIFFERENCES = 5
EXIT_ALARM = 6
CSV_HEADER = ["identifier", "description", "tags", "product_prn", "cohort_prn", "certificates", "target"]
OTHER_COHORT_A = COHORT_PRN_A[:-12] + "000000000abc"
CATEGORIES = [
    "not_issued_here", "certificate_mismatch", "revoked_but_active", "attribute_mismatch", "duplicate_identifier",
    "missing_in_backend",
]


def issue_line(st: Station, tmp_path: Path, n=12, prefix="SN-", work_order=None, profile="line") -> list[str]:
    if profile not in st.config().get("profiles", {}):
        st.add_jitp_profile(profile)
    args = ["issue", "--count", str(n), "--cn-template", prefix + "{seq:04}", "--out", tmp_path / f"batch-{prefix}",
            "--profile", profile]
    if work_order:
        args += ["--work-order", work_order]
    assert_exit(st.run(*args), EXIT_OK)
    return [f"{prefix}{i:04d}" for i in range(1, n + 1)]


def export_csv(st: Station, path: Path, *extra) -> list[dict]:
    assert_exit(st.run("manifest", "devices", "--out", path, *extra), EXIT_OK)
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_HEADER, quoting=csv.QUOTE_ALL)
        w.writeheader()
        w.writerows(rows)


def reconcile(st: Station, export: Path, *extra):
    r = st.run("ledger", "reconcile", export, "--json", *extra)
    doc = json.loads(r.out)
    found = {c: sorted({f["identifier"] for f in doc["findings"] if f["category"] == c}) for c in CATEGORIES}
    return r, doc, found


def dev_ca_key(st: Station):
    return serialization.load_pem_private_key(st.ca_key.read_bytes(), password=st.passphrase)


def leaf(cn: str, issuer_cert: x509.Certificate, issuer_key) -> str:
    """A device certificate like ours, signed by `issuer_key`, that the station never issued."""
    key = p256_key()
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


@pytest.fixture
def line(station: Station, tmp_path):
    """A station with 12 devices issued under a JITP profile and the clean export of them."""
    cns = issue_line(station, tmp_path)
    clean = tmp_path / "clean.csv"
    rows = export_csv(station, clean)
    assert [r["identifier"] for r in rows] == cns
    return station, cns, rows, clean


def test_clean_export_is_all_matched_and_exits_0(line, tmp_path):
    st, cns, rows, clean = line
    r, doc, found = reconcile(st, clean)
    assert_exit(r, EXIT_OK)
    assert doc["summary"]["matched"] == len(cns)
    assert doc["summary"]["export_rows"] == len(cns)
    assert doc["findings"] == []
    assert all(v == 0 for v in doc["summary"]["counts"].values())
    assert doc["exit_status"] == 0
    human = st.run("ledger", "reconcile", clean)
    assert_exit(human, EXIT_OK)
    assert human.out.startswith("PASS")


def test_every_planted_anomaly_lands_in_its_category(line, tmp_path):
    st, cns, rows, clean = line
    by_cn = {r["identifier"]: dict(r) for r in rows}
    # removed from the backend
    by_cn.pop("SN-0001")
    # an unknown identifier with a certificate from a foreign CA
    root = make_root("Foreign Root")
    foreign = make_issuing_ca(root, "Foreign Issuing CA")
    by_cn["ROGUE-1"] = {**rows[1], "identifier": "ROGUE-1", "certificates": leaf("ROGUE-1", foreign.cert, foreign.key)}
    # an unknown certificate under our own CA: a new identifier, and a known one holding a second certificate
    ca_key = dev_ca_key(st)
    by_cn["GHOST-1"] = {**rows[1], "identifier": "GHOST-1", "certificates": leaf("GHOST-1", st.ca_cert(), ca_key)}
    by_cn["SN-0010"]["certificates"] = leaf("SN-0010", st.ca_cert(), ca_key)
    # a swapped certificate
    by_cn["SN-0003"]["certificates"] = by_cn["SN-0004"]["certificates"]
    # a wrong cohort
    by_cn["SN-0005"]["cohort_prn"] = OTHER_COHORT_A
    # revoked here, present there
    assert_exit(st.run("ledger", "revoke", "SN-0006", "--reason", "scrap"), EXIT_OK)
    # a duplicate row
    export_rows = list(by_cn.values()) + [dict(by_cn["SN-0007"])]
    planted_export = tmp_path / "backend.csv"
    write_csv(planted_export, export_rows)

    r, doc, found = reconcile(st, planted_export)
    assert_exit(r, EXIT_ALARM)
    assert found == {
        "not_issued_here": ["GHOST-1", "ROGUE-1", "SN-0010"],
        "certificate_mismatch": ["SN-0003"],
        "revoked_but_active": ["SN-0006"],
        "attribute_mismatch": ["SN-0005"],
        "duplicate_identifier": ["SN-0007"],
        "missing_in_backend": ["SN-0001"],
    }, r
    s = doc["summary"]
    # SN-0002, 0004, 0008, 0009, 0011, 0012: SN-0007 is a duplicate, so not counted as matched
    assert s["matched"] == 6
    assert s["counts"] == {"not_issued_here": 3, "certificate_mismatch": 1, "revoked_but_active": 1,
                           "attribute_mismatch": 1, "duplicate_identifier": 1, "missing_in_backend": 1}
    details = {(f["category"], f["identifier"]): f for f in doc["findings"]}
    assert "may have leaked" in details[("not_issued_here", "GHOST-1")]["detail"]
    assert "may have leaked" in details[("not_issued_here", "SN-0010")]["detail"]
    assert "Foreign Issuing CA" in details[("not_issued_here", "ROGUE-1")]["detail"]
    assert "may have leaked" not in details[("not_issued_here", "ROGUE-1")]["detail"]
    assert "SN-0004" in details[("certificate_mismatch", "SN-0003")]["detail"]
    assert OTHER_COHORT_A in details[("attribute_mismatch", "SN-0005")]["detail"]
    assert "scrap" in details[("revoked_but_active", "SN-0006")]["detail"]
    missing = details[("missing_in_backend", "SN-0001")]
    assert missing["age_days"] == 0 and missing["ledger_seq"] == 1 and missing["row"] is None
    # The alarm comes first in the machine output and on the console.
    assert doc["findings"][0]["category"] == "not_issued_here"
    human = st.run("ledger", "reconcile", planted_export)
    assert_exit(human, EXIT_ALARM)
    assert human.out.splitlines()[0].startswith("ALARM")
    assert "NEVER ISSUED HERE" in human.out.split("matched")[0]
    # The run is on the record.
    events = st.events("reconciled")
    assert len(events) == 2 and "exit 6" in events[-1][4]


def test_differences_without_alarm_exit_5(line, tmp_path):
    st, cns, rows, clean = line
    export = tmp_path / "short.csv"
    write_csv(export, rows[1:])
    r, doc, found = reconcile(st, export)
    assert_exit(r, EXIT_DIFFERENCES)
    assert found["missing_in_backend"] == ["SN-0001"]
    assert sum(doc["summary"]["counts"].values()) == 1


def test_tags_and_product_differences(line, tmp_path):
    st, cns, rows, clean = line
    changed = [dict(r) for r in rows]
    changed[0]["tags"] = "factory-a,line-1"  # one tag fewer
    changed[1]["product_prn"] = PRODUCT_PRN_A[:-12] + "00000000ffff"
    changed[2]["tags"] = ",".join(reversed(JITP_PROFILE["tags"]))  # same set, another order: not a difference
    export = tmp_path / "attrs.csv"
    write_csv(export, changed)
    r, doc, found = reconcile(st, export)
    assert_exit(r, EXIT_DIFFERENCES)
    assert found["attribute_mismatch"] == ["SN-0001", "SN-0002"]
    details = {f["identifier"]: f["detail"] for f in doc["findings"]}
    assert details["SN-0001"].startswith("tags:")
    assert details["SN-0002"].startswith("product:")


def test_json_export_with_fingerprints_and_product_name(line, tmp_path):
    """The JSON form: a list of devices with product_name and fingerprints instead of PEM."""
    st, cns, rows, clean = line
    devices = []
    for row in rows:
        der = x509.load_pem_x509_certificate(row["certificates"].encode()).public_bytes(serialization.Encoding.DER)
        fp = hashlib.sha256(der).hexdigest()
        devices.append({
            "identifier": row["identifier"], "product_name": JITP_PROFILE["product_name"],
            "cohort_prn": row["cohort_prn"], "tags": row["tags"].split(","),
            # colon-separated lower case, as some consoles print them
            "certificates": [":".join(fp[i:i + 2] for i in range(0, 64, 2))],
        })
    export = tmp_path / "backend.json"
    export.write_text(json.dumps(devices, indent=2))
    r, doc, found = reconcile(st, export)
    assert_exit(r, EXIT_OK)
    assert doc["summary"]["matched"] == len(cns) and doc["summary"]["format"] == "json"

    # A quarantined device whose certificate was revoked here is as it should be; an active one is not.
    assert_exit(st.run("ledger", "revoke", "SN-0002", "--reason", "compromised"), EXIT_OK)
    assert_exit(st.run("ledger", "revoke", "SN-0003", "--reason", "compromised"), EXIT_OK)
    devices[1]["quarantined"] = True
    devices[4]["product_name"] = "Another product"
    lines = tmp_path / "backend.jsonl"
    lines.write_text("\n".join(json.dumps(d) for d in devices) + "\n")
    r, doc, found = reconcile(st, lines)
    assert_exit(r, EXIT_DIFFERENCES)
    assert found["revoked_but_active"] == ["SN-0003"]
    assert found["attribute_mismatch"] == ["SN-0005"]
    assert doc["summary"]["matched"] == len(cns) - 2


def test_scope_by_profile_and_work_order(station: Station, tmp_path):
    a = issue_line(station, tmp_path, n=4, prefix="A-", work_order="WO-1", profile="line")
    b = issue_line(station, tmp_path, n=3, prefix="B-", work_order="WO-2", profile="line2")
    export = tmp_path / "wo1.csv"
    rows = export_csv(station, export, "--work-order", "WO-1")
    assert [r["identifier"] for r in rows] == a
    # Without a scope, the WO-2 devices are missing from this export; with it, all is matched.
    r, doc, found = reconcile(station, export)
    assert_exit(r, EXIT_DIFFERENCES)
    assert found["missing_in_backend"] == b
    r, doc, found = reconcile(station, export, "--work-order", "WO-1")
    assert_exit(r, EXIT_OK)
    assert doc["summary"]["ledger_records_in_scope"] == 4
    r, doc, found = reconcile(station, export, "--profile", "line2")
    # the export's devices are known but outside the scope; line2's are missing
    assert_exit(r, EXIT_DIFFERENCES)
    assert doc["summary"]["out_of_scope"] == 4 and found["missing_in_backend"] == b


def test_csv_report_lists_every_finding(line, tmp_path):
    st, cns, rows, clean = line
    export = tmp_path / "short.csv"
    write_csv(export, rows[3:])
    report = tmp_path / "qa" / "run.csv"
    report.parent.mkdir()
    r = st.run("ledger", "reconcile", export, "--report", report)
    assert_exit(r, EXIT_DIFFERENCES)
    with open(report, newline="") as f:
        got = list(csv.DictReader(f))
    assert [g["identifier"] for g in got] == ["SN-0001", "SN-0002", "SN-0003"]
    assert {g["category"] for g in got} == {"missing_in_backend"}
    assert list(got[0].keys()) == ["category", "identifier", "row", "ledger_seq", "age_days", "detail"]


def chromium() -> str | None:
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


def test_html_report_renders_in_chromium(line, tmp_path):
    """The HTML report as a browser shows it: headless Chromium renders it, and the rendered DOM carries the verdict,
    the counts and every finding (names with markup in them escaped, not interpreted)."""
    browser = chromium()
    if browser is None:
        pytest.fail("chromium-headless-shell is not installed (Scripts/test installs it)")
    st, cns, rows, clean = line
    evil = "<b>X</b>&1"
    planted = [dict(r) for r in rows[1:]]
    root = make_root("Foreign Root")
    foreign = make_issuing_ca(root, "Foreign <Issuing> CA")
    planted.append({**rows[1], "identifier": evil, "certificates": leaf("evil", foreign.cert, foreign.key)})
    export = tmp_path / "backend.csv"
    write_csv(export, planted)
    report = tmp_path / "run.html"
    assert_exit(st.run("ledger", "reconcile", export, "--report", report), EXIT_ALARM)
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", report.as_uri()],
        capture_output=True, timeout=120, check=True).stdout.decode()
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.verdict = ""
            self.identifiers = []
            self.counts = {}
            self._in = None
            self._row = None
            self._cells = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("id") == "verdict":
                self._in = "verdict"
            elif tag == "td" and a.get("class") == "identifier":
                self._in = "identifier"
            elif tag == "tr" and "data-category" in a:
                self._row = a["data-category"]
                self._cells = []
            elif tag == "td" and self._row:
                self._in = "cell"
                self._cells.append("")

        def handle_endtag(self, tag):
            if tag == "tr" and self._row:
                self.counts[self._row] = int(self._cells[-1])
                self._row = None
            if tag in ("p", "td"):
                self._in = None

        def handle_data(self, data):
            if self._in == "verdict":
                self.verdict += data
            elif self._in == "identifier":
                self.identifiers.append(data)
            elif self._in == "cell":
                self._cells[-1] += data

    p = Cells()
    p.feed(dom)
    assert p.verdict == "ALARM"
    assert p.counts["not_issued_here"] == 1 and p.counts["missing_in_backend"] == 1
    assert p.counts["matched"] == len(cns) - 1
    assert evil in p.identifiers and "SN-0001" in p.identifiers
    assert "<b>X</b>" not in dom.split("<body>")[1].replace("&lt;b&gt;X&lt;/b&gt;", "")


@pytest.mark.parametrize("content, fragment", [
    ('"identifier","description"\n"a","b"\n', "no 'certificates' column"),
    ('"identifier","certificates"\n"a","-----BEGIN CERTIFICATE-----\nAAA\n"\n', "END"),
    ('"identifier","certificates"\n"a","not-a-fingerprint"\n', "neither a PEM certificate nor a SHA-256"),
    ('"identifier","certificates"\n"a","unterminated\n', "never closes"),
    ("", "empty"),
])
def test_unreadable_csv_export_exits_65(station: Station, tmp_path, content, fragment):
    export = tmp_path / "bad.csv"
    export.write_text(content)
    r = station.run("ledger", "reconcile", export)
    assert_exit(r, EXIT_DATA)
    assert_one_line_error(r)
    assert fragment in r.err


@pytest.mark.parametrize("content, fragment", [
    ('[{"identifier": "a"}, 7]', "unexpected '7'"),
    ('[{"identifier": "a", "certificates": []', "ends inside"),
    ('[{"certificates": []}]', "missing 'identifier'"),
])
def test_unreadable_json_export_exits_65(station: Station, tmp_path, content, fragment):
    export = tmp_path / "bad.json"
    export.write_text(content)
    r = station.run("ledger", "reconcile", export)
    assert_exit(r, EXIT_DATA)
    assert_one_line_error(r)
    assert fragment in r.err


def test_reconcile_usage_errors(station: Station, tmp_path):
    export = tmp_path / "x.csv"
    export.write_text('"identifier","certificates"\n')
    for args in (["--report", tmp_path / "r.pdf"], ["--format", "xml"]):
        r = station.run("ledger", "reconcile", export, *args)
        assert_exit(r, EXIT_USAGE)
        assert_one_line_error(r)
    r = station.run("ledger", "reconcile", tmp_path / "absent.csv")
    assert r.rc == 74 and "cannot read" in r.err


def test_revoked_device_listed_without_certificates_is_still_active_there(line, tmp_path):
    st, cns, rows, clean = line
    assert_exit(st.run("ledger", "revoke", "SN-0002", "--reason", "scrap"), EXIT_OK)
    devices = [{"identifier": r["identifier"], "status": "active"} for r in rows]
    export = tmp_path / "api.json"
    export.write_text(json.dumps(devices))
    r, doc, found = reconcile(st, export)
    assert_exit(r, EXIT_DIFFERENCES)
    assert found["revoked_but_active"] == ["SN-0002"]
    assert doc["summary"]["matched"] == len(cns) - 1


def test_quarantined_column_counts_even_when_status_is_empty(line, tmp_path):
    st, cns, rows, clean = line
    assert_exit(st.run("ledger", "revoke", "SN-0001", "--reason", "compromised"), EXIT_OK)
    export = tmp_path / "with-status.csv"
    with open(export, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_HEADER + ["status", "quarantined"], quoting=csv.QUOTE_ALL)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "status": "", "quarantined": "true" if r["identifier"] == "SN-0001" else "false"})
    r, doc, found = reconcile(st, export)
    assert_exit(r, EXIT_OK)
    assert doc["summary"]["matched"] == len(cns)


def test_reissued_device_outside_the_work_order_still_answers_for_its_revoked_certificate(station: Station, tmp_path):
    cns = issue_line(station, tmp_path, n=3, work_order="WO-7")
    export = tmp_path / "wo7.csv"
    rows = export_csv(station, export, "--work-order", "WO-7")
    # SN-0002 is reworked: revoked and re-issued without a work order; the backend still has the old certificate.
    assert_exit(station.run("ledger", "revoke", "SN-0002", "--reason", "rework"), EXIT_OK)
    assert_exit(station.run("issue", "SN-0002", "--reissue", "--profile", "line", "--out", tmp_path / "rework"),
                EXIT_OK)
    r, doc, found = reconcile(station, export, "--work-order", "WO-7")
    assert_exit(r, EXIT_DIFFERENCES)
    assert found["revoked_but_active"] == ["SN-0002"]
    assert doc["summary"]["out_of_scope"] == 0
    # The old record is accounted for by that finding, not counted as absent from the backend.
    assert doc["summary"]["revoked_absent"] == 0
    assert "rework" in [f for f in doc["findings"] if f["identifier"] == "SN-0002"][0]["detail"]


def test_a_filed_report_is_never_replaced(line, tmp_path):
    st, cns, rows, clean = line
    report = tmp_path / "run.csv"
    report.write_text("filed earlier\n")
    r = st.run("ledger", "reconcile", clean, "--report", report)
    assert r.rc == 74
    assert_one_line_error(r)
    assert report.read_text() == "filed earlier\n"


def test_a_repeated_row_is_examined_in_full_whatever_the_order(line, tmp_path):
    """A second row for a known device carrying a certificate under our CA that the ledger lacks is the alarm,
    whether it comes first or second."""
    st, cns, rows, clean = line
    forged = {**rows[4], "certificates": leaf("SN-0005", st.ca_cert(), dev_ca_key(st))}
    for order in ("genuine-first", "forged-first"):
        pair = [rows[4], forged] if order == "genuine-first" else [forged, rows[4]]
        export = tmp_path / f"{order}.csv"
        write_csv(export, rows[:4] + pair + rows[5:])
        r, doc, found = reconcile(st, export)
        assert_exit(r, EXIT_ALARM)
        assert found["not_issued_here"] == ["SN-0005"], order
        assert doc["summary"]["matched"] == len(cns) - 1
        repeat = [f for f in doc["findings"] if f["identifier"] == "SN-0005" and "repeats" in f["detail"]]
        assert len(repeat) == 1 and "(first at row" in repeat[0]["detail"]


def test_identifiers_are_trimmed_and_a_known_certificate_under_another_name_is_a_mismatch(line, tmp_path):
    st, cns, rows, clean = line
    devices = []
    for r in rows:
        devices.append({"identifier": r["identifier"] + "\n", "certificates": [r["certificates"]]})
    devices[2]["identifier"] = "renamed-3"
    export = tmp_path / "api.json"
    export.write_text(json.dumps(devices))
    r, doc, found = reconcile(st, export)
    assert_exit(r, EXIT_DIFFERENCES)
    assert found["certificate_mismatch"] == ["renamed-3"]
    assert "SN-0003" in doc["findings"][0]["detail"]
    # SN-0003's certificate is in the backend (under another name): not reported missing, not an alarm.
    assert found["missing_in_backend"] == [] and found["not_issued_here"] == []
    assert doc["summary"]["matched"] == len(cns) - 1


def test_byte_order_mark_and_escaped_pem_are_read(line, tmp_path):
    st, cns, rows, clean = line
    export = tmp_path / "excel.csv"
    text = clean.read_text()
    escaped = text.replace(rows[0]["certificates"], rows[0]["certificates"].replace("\n", "\\n"))
    export.write_bytes(b"\xef\xbb\xbf" + escaped.encode())
    r, doc, found = reconcile(st, export)
    assert_exit(r, EXIT_OK)
    assert doc["summary"]["matched"] == len(cns)
    # Junk inside a PEM is refused, not skipped over into a wrong fingerprint.
    bad = tmp_path / "junk.csv"
    bad.write_text(text.replace(rows[0]["certificates"], rows[0]["certificates"].replace("\n", "\n%%\n", 1)))
    r = st.run("ledger", "reconcile", bad)
    assert_exit(r, EXIT_DATA)
    assert "not valid base64" in r.err
