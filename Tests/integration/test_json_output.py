"""Machine-readable output: `ledger list --json`, `ledger show CN --json|--pem`, `ca show --json`."""

import hashlib
import json

import pytest
from cryptography.x509.oid import NameOID

from conftest import (
    EXIT_DATA,
    EXIT_OK,
    Station,
    assert_exit,
    assert_one_line_error,
    cert_fingerprint,
    load_cert,
    openssl_csr,
    pem_certs,
    ski_of,
    spki_der,
    utcnow,
)

RECORD_FIELDS = {
    "seq", "cn", "serial", "fingerprint", "public_key_sha256", "ca", "ca_fingerprint", "profile", "station_id",
    "operator", "key_origin", "hardware_id", "not_before", "not_after", "state", "created_at",
}
CA_FIELDS = {"name", "status", "subject", "ski", "fingerprint", "not_before", "not_after", "days_left"}


@pytest.fixture
def populated(station: Station, tmp_path):
    """Two device CSRs (one with operator and hardware id, one under a second profile) and one station-made key."""
    station.add_wide_profile(key_types=("p256", "p384"))
    a, _ = openssl_csr(tmp_path / "csr", "DEV-JSON-A")
    b, _ = openssl_csr(tmp_path / "csr", "DEV-JSON-B", "p384")
    out = tmp_path / "out"
    station.sign_ok(a, out, extra=["--operator", "alice", "--hardware-id", "HW-0042"])
    station.sign_ok(b, out, profile="wide")
    r = station.run("issue", "DEV-JSON-C", "--out", out)
    assert_exit(r, EXIT_OK)
    return station, out


def list_json(st: Station, *args):
    r = st.run("ledger", "list", "--json", *args)
    assert_exit(r, EXIT_OK)
    data = json.loads(r.out)
    assert set(data) >= {"records"}
    return data["records"]


def test_ledger_list_json_fields_and_values(populated):
    st, out = populated
    records = list_json(st)
    assert [r["cn"] for r in records] == ["DEV-JSON-A", "DEV-JSON-B", "DEV-JSON-C"]
    station_id = st.config()["station_id"]
    ca_fp = cert_fingerprint(st.ca_cert())
    for rec in records:
        missing = RECORD_FIELDS - set(rec)
        assert not missing, f"ledger list --json record lacks {missing}: {rec}"
        cert = load_cert(out / f"{rec['cn']}.pem")
        assert int(str(rec["serial"]).replace(":", ""), 16) == cert.serial_number
        assert rec["fingerprint"] == cert_fingerprint(cert)
        assert len(rec["fingerprint"]) == 64
        assert rec["public_key_sha256"].upper() == hashlib.sha256(spki_der(cert.public_key())).hexdigest().upper()
        assert rec["ca"] == "dev"
        assert rec["ca_fingerprint"].upper() == ca_fp
        assert rec["station_id"] == station_id
        assert rec["state"] == "issued"
        assert isinstance(rec["seq"], int)
    a, b, c = records
    assert a["profile"] == "default" and b["profile"] == "wide" and c["profile"] == "default"
    assert a["operator"] == "alice" and a["hardware_id"] == "HW-0042"
    assert a["key_origin"] == "device" and b["key_origin"] == "device" and c["key_origin"] == "station"


def test_ledger_list_filters(populated):
    st, _ = populated
    assert [r["cn"] for r in list_json(st, "--limit", "2")] == ["DEV-JSON-A", "DEV-JSON-B"]
    assert [r["cn"] for r in list_json(st, "--profile", "wide")] == ["DEV-JSON-B"]
    assert len(list_json(st, "--state", "issued")) == 3
    assert list_json(st, "--state", "revoked") == []


def test_ledger_show_json(populated):
    st, out = populated
    listed = {r["cn"]: r for r in list_json(st)}
    r = st.run("ledger", "show", "DEV-JSON-A", "--json")
    assert_exit(r, EXIT_OK)
    data = json.loads(r.out)
    rec = data["record"]
    for k, v in listed["DEV-JSON-A"].items():
        assert rec.get(k) == v, f"ledger show disagrees with ledger list on {k}: {rec.get(k)!r} != {v!r}"
    events = data["events"]
    assert events, "the record's events are shown"
    for e in events:
        assert {"seq", "kind", "detail", "at"} <= set(e), e
    assert "issued" in [e["kind"] for e in events]


def test_ledger_show_pem_prints_the_certificate(populated):
    st, out = populated
    r = st.run("ledger", "show", "DEV-JSON-B", "--pem")
    assert_exit(r, EXIT_OK)
    assert pem_certs(r.stdout_bytes) == [load_cert(out / "DEV-JSON-B.pem")]


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_ledger_show_unknown_cn_is_data_error(station: Station, json_flag):
    r = station.run("ledger", "show", "NO-SUCH-DEVICE", *json_flag)
    assert_exit(r, EXIT_DATA)
    assert_one_line_error(r)


def test_ca_show_json(station: Station):
    r = station.run("ca", "show", "--json")
    assert_exit(r, EXIT_OK)
    cas = json.loads(r.out)["cas"]
    assert [c["name"] for c in cas] == ["dev"]
    dev = cas[0]
    missing = CA_FIELDS - set(dev)
    assert not missing, f"ca show --json lacks {missing}: {dev}"
    ca = station.ca_cert()
    assert dev["status"] == "active"
    assert dev["fingerprint"] == cert_fingerprint(ca), "fingerprint: SHA-256 upper-case hex"
    assert dev["ski"].replace(":", "").lower() == ski_of(ca).hex()
    cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn in dev["subject"]
    expected_days = (ca.not_valid_after_utc - utcnow()).days
    assert abs(dev["days_left"] - expected_days) <= 1
    assert not dev.get("warning")
