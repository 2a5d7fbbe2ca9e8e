"""`keyline issue`: station-made keys in bulk, the files it writes, resuming a batch, keys never in the ledger."""

import csv
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import (
    EXIT_KEY_GUARD,
    EXIT_OK,
    EXIT_POLICY,
    RefusalCheck,
    Station,
    assert_exit,
    assert_one_line_error,
    b64decode_pem,
    cert_fingerprint,
    load_cert,
    openssl_verify_client,
    pem_body,
    pem_certs,
    public_key_pem_of_cert,
    public_key_pem_of_key,
    ski_of,
    write_secret,
)

COUNT = 20
CNS = [f"SN-{i:06d}" for i in range(1, COUNT + 1)]
INDEX_HEADER = ["cn", "serial", "fingerprint", "not_after", "key_file", "cert_file"]


def batch(st: Station, out: Path):
    return st.run("issue", "--count", str(COUNT), "--cn-template", "SN-{seq:06}", "--out", out)


def read_index(out: Path):
    with open(out / "index.csv", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def resolve(out: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else out / p


@pytest.fixture
def issued(station: Station, tmp_path):
    out = tmp_path / "batch"
    r = batch(station, out)
    assert_exit(r, EXIT_OK)
    return station, out


def test_batch_issue_writes_key_cert_chain_and_index(issued):
    st, out = issued
    ca, root = st.ca_cert(), st.root_cert()
    expected = {f"{cn}{ext}" for cn in CNS for ext in (".key", ".pem", ".chain.pem")} | {"index.csv"}
    assert {p.name for p in out.iterdir()} == expected

    for cn in CNS:
        key, pem, chain = out / f"{cn}.key", out / f"{cn}.pem", out / f"{cn}.chain.pem"
        assert stat.S_IMODE(os.lstat(key).st_mode) == 0o600, f"{key} must be 0600"
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----"), "station keys are PKCS#8 PEM"
        priv = serialization.load_pem_private_key(key.read_bytes(), None)
        assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp256r1"
        assert public_key_pem_of_key(key) == public_key_pem_of_cert(pem), f"{cn}: key does not match certificate"
        leaf = load_cert(pem)
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        # The SKI is taken from the key's SubjectPublicKeyInfo made once per key: pyca/cryptography's RFC 5280
        # method 1 must agree.
        assert ski_of(leaf) == x509.SubjectKeyIdentifier.from_public_key(leaf.public_key()).digest, cn
        assert pem_certs(chain.read_bytes()) == [leaf, ca, root], f"{cn}.chain.pem must be leaf + issuing CA + root"

    openssl_verify_client(st.root_pem, st.ca_pem, out / f"{CNS[0]}.pem")

    header, rows = read_index(out)
    assert header == INDEX_HEADER
    assert len(rows) == COUNT
    assert sorted(r[0] for r in rows) == CNS
    for cn, serial, fingerprint, not_after, key_file, cert_file in rows:
        leaf = load_cert(out / f"{cn}.pem")
        assert int(serial, 16) == leaf.serial_number
        assert fingerprint == cert_fingerprint(leaf), "fingerprint: SHA-256 of the DER, upper-case hex"
        assert not_after.strip()
        assert resolve(out, key_file).resolve() == (out / f"{cn}.key").resolve()
        assert resolve(out, cert_file).resolve() == (out / f"{cn}.pem").resolve()

    rows = st.query("SELECT cn, key_origin FROM records ORDER BY seq")
    assert sorted(cn for cn, _ in rows) == CNS
    assert {origin for _, origin in rows} == {"station"}


def test_batch_issue_rerun_resumes_without_issuing_again(issued):
    st, out = issued
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "index.csv"}
    index_before = read_index(out)
    records_before = st.records()
    r = batch(st, out)
    assert_exit(r, EXIT_OK)
    assert st.records_count() == COUNT
    assert st.records() == records_before, "a resumed batch must not issue again"
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "index.csv"}
    assert after == before, "a resumed batch rewrote keys or certificates"
    assert read_index(out) == index_before, "a resumed batch lists the same certificates"
    assert_exit(st.run("ledger", "verify"), EXIT_OK)


def test_batch_issue_private_keys_never_reach_the_ledger(issued):
    st, out = issued
    ledger = st.ledger_bytes()
    assert ledger, "ledger file is empty"
    for cn in CNS:
        pem = (out / f"{cn}.key").read_bytes()
        body = pem_body(pem)
        der = b64decode_pem(pem)
        priv = serialization.load_pem_private_key(pem, None)
        scalar = priv.private_numbers().private_value.to_bytes(32, "big")
        assert body not in ledger
        for line in pem.splitlines():
            if not line.startswith(b"-----"):
                assert line not in ledger, f"a line of {cn}.key is in the ledger"
        assert der not in ledger and scalar not in ledger, f"{cn}'s private key is in the ledger"
        assert scalar.hex().encode() not in ledger.lower()
    # The certificates themselves are in the ledger (cert_der), so the check above is looking at the right file.
    assert load_cert(out / f"{CNS[0]}.pem").public_bytes(serialization.Encoding.DER) in ledger


def test_issue_named_cns(station: Station, tmp_path):
    out = tmp_path / "named"
    r = station.run("issue", "DEV-NAMED-A", "DEV-NAMED-B", "--out", out)
    assert_exit(r, EXIT_OK)
    header, rows = read_index(out)
    assert header == INDEX_HEADER
    assert sorted(r[0] for r in rows) == ["DEV-NAMED-A", "DEV-NAMED-B"]
    for cn in ("DEV-NAMED-A", "DEV-NAMED-B"):
        assert public_key_pem_of_key(out / f"{cn}.key") == public_key_pem_of_cert(out / f"{cn}.pem")
    assert station.records_count() == 2


def test_issue_refuses_the_first_bad_cn_before_making_anything(station: Station, tmp_path):
    """The CNs are checked against the profile's rule beside the CA key's opening; the first refused one, in the
    order given, stops the batch before any key is made: one refused event with that CN, no record, no file."""
    out = tmp_path / "o"
    check = RefusalCheck(station, out)
    r = station.run("issue", "GOOD-0001", "bad cn", "BAD/2", "--out", out)
    assert_exit(r, EXIT_POLICY)
    assert_one_line_error(r, rule="cn")
    assert "white space" in r.err, r
    check.check(r, refused_event=True, cn="bad cn")


def test_issue_reports_a_wrong_passphrase_before_a_bad_cn(station: Station, tmp_path):
    """A CA key that does not open is reported, not the CN checked beside it: one refused event (the key guard's,
    without a CN) and the output directory is not even made."""
    write_secret(station.passphrase_file, b"not-the-passphrase-0815\n")
    out = tmp_path / "o"
    check = RefusalCheck(station, out)
    r = station.run("issue", "bad cn", "GOOD-0002", "--out", out)
    assert_exit(r, EXIT_KEY_GUARD)
    assert_one_line_error(r)
    assert "bad cn" not in r.err, r
    check.check(r, refused_event=True)
    assert station.events("refused")[-1][3] is None, station.events("refused")
    assert not out.exists()
