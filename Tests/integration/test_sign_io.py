"""`keyline sign` input and output: PEM/DER/stdin, stdout/--out/--out-dir, --chain, several CSRs in one call."""

from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from conftest import (
    EXIT_OK,
    EXIT_POLICY,
    Station,
    assert_exit,
    load_cert,
    openssl,
    openssl_csr,
    openssl_verify_client,
    pem_certs,
    public_key_pem_of_key,
)


def cn_of(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def leaf_pubkey_pem(cert) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_sign_prints_certificate_to_stdout(station: Station, tmp_path):
    csr, key = openssl_csr(tmp_path, "DEV-STDOUT-1")
    r = station.run("sign", csr)
    assert_exit(r, EXIT_OK)
    certs = pem_certs(r.stdout_bytes)
    assert len(certs) == 1
    assert cn_of(certs[0]) == "DEV-STDOUT-1"
    assert leaf_pubkey_pem(certs[0]) == public_key_pem_of_key(key)
    assert station.records_count() == 1


def test_sign_reads_pem_csr_from_stdin(station: Station, tmp_path):
    csr, key = openssl_csr(tmp_path, "DEV-STDIN-1")
    r = station.run("sign", "-", input=csr.read_bytes())
    assert_exit(r, EXIT_OK)
    certs = pem_certs(r.stdout_bytes)
    assert [cn_of(c) for c in certs] == ["DEV-STDIN-1"]


def test_sign_accepts_der_csr(station: Station, tmp_path):
    csr, key = openssl_csr(tmp_path, "DEV-DER-1")
    der = tmp_path / "csr.der"
    der.write_bytes(openssl("req", "-in", csr, "-outform", "DER").stdout_bytes)
    r = station.run("sign", der)
    assert_exit(r, EXIT_OK)
    (cert,) = pem_certs(r.stdout_bytes)
    assert cn_of(cert) == "DEV-DER-1"
    # and DER on stdin
    csr2, _ = openssl_csr(tmp_path, "DEV-DER-2")
    r = station.run("sign", "-", input=openssl("req", "-in", csr2, "-outform", "DER").stdout_bytes)
    assert_exit(r, EXIT_OK)
    assert [cn_of(c) for c in pem_certs(r.stdout_bytes)] == ["DEV-DER-2"]


def test_sign_out_file(station: Station, tmp_path):
    csr, key = openssl_csr(tmp_path, "DEV-OUTFILE-1")
    out = tmp_path / "leaf.pem"
    r = station.run("sign", csr, "--out", out)
    assert_exit(r, EXIT_OK)
    assert b"BEGIN CERTIFICATE" not in r.stdout_bytes, "with --out the certificate goes to the file"
    (cert,) = pem_certs(out.read_bytes())
    assert cn_of(cert) == "DEV-OUTFILE-1"
    openssl_verify_client(station.root_pem, station.ca_pem, out)


def test_sign_chain_appends_issuing_ca_then_root(station: Station, tmp_path):
    csr, _ = openssl_csr(tmp_path, "DEV-CHAIN-1")
    r = station.run("sign", csr, "--chain")
    assert_exit(r, EXIT_OK)
    certs = pem_certs(r.stdout_bytes)
    assert len(certs) == 3
    assert cn_of(certs[0]) == "DEV-CHAIN-1"
    assert certs[1:] == [station.ca_cert(), station.root_cert()]


def test_sign_several_csrs_goes_on_after_a_failure(station: Station, tmp_path):
    good1, _ = openssl_csr(tmp_path / "a", "DEV-MULTI-1")
    sha1, _ = openssl_csr(tmp_path / "b", "DEV-MULTI-SHA1", extra=["-sha1"])
    garbage = tmp_path / "garbage.csr"
    garbage.write_bytes(b"\x05this is not a CSR at all\x00\xff" * 8)
    good2, _ = openssl_csr(tmp_path / "c", "DEV-MULTI-2")
    out = tmp_path / "out"
    out.mkdir()
    refused_before = len(station.events("refused"))
    r = station.run("sign", good1, sha1, garbage, good2, "--out-dir", out)
    assert_exit(r, EXIT_POLICY)  # the status of the first failure (3), not the later 65
    assert sorted(p.name for p in out.iterdir()) == ["DEV-MULTI-1.pem", "DEV-MULTI-2.pem"]
    assert sorted(cn for (cn,) in station.query("SELECT cn FROM records")) == ["DEV-MULTI-1", "DEV-MULTI-2"]
    assert len(station.events("refused")) == refused_before + 2
    for name in ("DEV-MULTI-1.pem", "DEV-MULTI-2.pem"):
        openssl_verify_client(station.root_pem, station.ca_pem, out / name)
    errors = [l for l in r.err.splitlines() if l.startswith("keyline: error: ")]
    assert errors and errors[0].startswith("keyline: error: signature-algorithm: "), r
