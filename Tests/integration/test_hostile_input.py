"""Hostile and malformed CSRs: exit 65 for data the station cannot read, exit 3 naming the rule for policy refusals.

Every refusal: exact exit status, a one-line `keyline: error: <reason>` on stderr, no certificate written,
the records table unchanged, and one new `refused` event (record_seq NULL, the attempted CN when known)."""

import random

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from conftest import (
    EXIT_DATA,
    EXIT_OK,
    EXIT_POLICY,
    RefusalCheck,
    Station,
    assert_exit,
    assert_one_line_error,
    cn_attr,
    crypto_csr,
    openssl,
    openssl_csr,
    openssl_csr_with_key,
)

CN_RULE = "cn(-pattern)?"  # the hard CN rules or the profile's cn_pattern; both are CN refusals


def refuse(st: Station, tmp_path, csr, status, rule=None, cn=None, profile=None, event=True):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    check = RefusalCheck(st, out)
    r = st.sign(csr, out_dir=out, profile=profile)
    assert_exit(r, status)
    reason = assert_one_line_error(r, rule)
    check.check(r, refused_event=event, cn=cn)
    return reason


# --------------------------------------------------------------------------------------------------------------
# 65: not a CSR the station can read
# --------------------------------------------------------------------------------------------------------------


def good_csr_bytes(tmp_path) -> tuple[bytes, bytes]:
    csr, _ = openssl_csr(tmp_path / "src", "DEV-GOOD-SOURCE", "p256")
    pem = csr.read_bytes()
    der = openssl("req", "-in", csr, "-outform", "DER").stdout_bytes
    return pem, der


def test_refuses_garbage_bytes(station: Station, tmp_path):
    rnd = random.Random(20240611)
    data = bytes([0x05]) + rnd.randbytes(511)  # 0x05 is no SEQUENCE tag
    p = tmp_path / "garbage.csr"
    p.write_bytes(data)
    refuse(station, tmp_path, p, EXIT_DATA)


def test_refuses_empty_input(station: Station, tmp_path):
    p = tmp_path / "empty.csr"
    p.write_bytes(b"")
    refuse(station, tmp_path, p, EXIT_DATA)


def test_refuses_truncated_pem(station: Station, tmp_path):
    pem, _ = good_csr_bytes(tmp_path)
    lines = pem.decode().splitlines()
    p = tmp_path / "truncated.pem"
    p.write_text("\n".join(lines[: max(2, len(lines) - 3)]) + "\n")  # END line and the tail of the body gone
    assert "-----END" not in p.read_text()
    refuse(station, tmp_path, p, EXIT_DATA)


def test_refuses_pem_with_corrupt_base64(station: Station, tmp_path):
    pem, _ = good_csr_bytes(tmp_path)
    lines = pem.decode().splitlines()
    lines[1] = "!!!!" + lines[1][4:]
    p = tmp_path / "corrupt.pem"
    p.write_text("\n".join(lines) + "\n")
    refuse(station, tmp_path, p, EXIT_DATA)


def test_refuses_truncated_der(station: Station, tmp_path):
    _, der = good_csr_bytes(tmp_path)
    p = tmp_path / "truncated.der"
    p.write_bytes(der[: len(der) // 2])
    refuse(station, tmp_path, p, EXIT_DATA)


def test_refuses_certificate_instead_of_csr(station: Station, tmp_path):
    refuse(station, tmp_path, station.ca_pem, EXIT_DATA)


# --------------------------------------------------------------------------------------------------------------
# 3: proof of possession, key type, signature algorithm
# --------------------------------------------------------------------------------------------------------------


def test_refuses_csr_whose_signature_does_not_verify(station: Station, tmp_path):
    _, der = good_csr_bytes(tmp_path)
    bad = bytearray(der)
    bad[-1] ^= 0x01  # last octet of the ECDSA signature's s: still well-formed DER, no longer a valid signature
    p = tmp_path / "bad-signature.der"
    p.write_bytes(bytes(bad))
    parsed = x509.load_der_x509_csr(bytes(bad))  # still a well-formed CSR ...
    assert parsed.is_signature_valid is False  # ... whose signature does not verify
    assert x509.load_der_x509_csr(der).is_signature_valid
    refuse(station, tmp_path, p, EXIT_POLICY, rule="proof-of-possession")


def test_refuses_rsa_1024(station: Station, tmp_path):
    profile = station.add_rsa_profile()  # RSA is allowed, but never below 2048 bits
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-RSA1024", "rsa1024")
    reason = refuse(station, tmp_path, csr, EXIT_POLICY, rule="key-type", profile=profile)
    assert "RSA-1024" in reason


def test_refuses_sha1_signed_csr(station: Station, tmp_path):
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-SHA1", "p256", extra=["-sha1"])
    assert "ecdsa-with-SHA1" in openssl("req", "-in", csr, "-noout", "-text").out
    refuse(station, tmp_path, csr, EXIT_POLICY, rule="signature-algorithm")


def test_refuses_p384_under_p256_only_profile(station: Station, tmp_path):
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-P384-DEFAULT", "p384")
    refuse(station, tmp_path, csr, EXIT_POLICY, rule="key-type")


# --------------------------------------------------------------------------------------------------------------
# 3: the CN
# --------------------------------------------------------------------------------------------------------------


def test_refuses_csr_without_cn(station: Station, tmp_path):
    csr = crypto_csr(tmp_path / "no-cn.csr", [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])
    refuse(station, tmp_path, csr, EXIT_POLICY, rule=CN_RULE)


def test_refuses_empty_cn(station: Station, tmp_path):
    csr = crypto_csr(tmp_path / "empty-cn.csr", [cn_attr("")])
    refuse(station, tmp_path, csr, EXIT_POLICY, rule=CN_RULE)


def test_refuses_cn_of_65_characters(station: Station, tmp_path):
    cn = "A" * 65
    csr = crypto_csr(tmp_path / "cn65.csr", [cn_attr(cn)])
    refuse(station, tmp_path, csr, EXIT_POLICY, rule=CN_RULE, cn=cn)


def test_accepts_cn_of_64_characters(station: Station, tmp_path):
    cn = "B" * 64
    csr = crypto_csr(tmp_path / "cn64.csr", [cn_attr(cn)])
    leaf = station.sign_ok(csr, tmp_path / "out")
    assert leaf.name == cn + ".pem"


def test_refuses_two_cns(station: Station, tmp_path):
    csr = crypto_csr(tmp_path / "two-cn.csr", [cn_attr("DEV-TWIN-A", True), cn_attr("DEV-TWIN-B", True)])
    refuse(station, tmp_path, csr, EXIT_POLICY, rule=CN_RULE)


@pytest.mark.parametrize(
    "cn",
    ["DEV\x01CTRL", "DEV-NL\n", "DEV\x7fDEL", "DEV/../../etc/passwd", "dev/slash", "DEV-*", "*"],
    ids=["control-0x01", "newline", "del-0x7f", "path-traversal", "slash", "star", "lone-star"],
)
def test_refuses_cn_with_forbidden_characters(station: Station, tmp_path, cn):
    csr = crypto_csr(tmp_path / "bad-cn.csr", [cn_attr(cn)])
    refuse(station, tmp_path, csr, EXIT_POLICY, rule=CN_RULE, cn=cn)
    # nothing was written outside the output directory either
    assert not (tmp_path / "etc").exists() and not list(tmp_path.glob("**/passwd*"))


# --------------------------------------------------------------------------------------------------------------
# 3: uniqueness across the ledger
# --------------------------------------------------------------------------------------------------------------


def test_refuses_duplicate_cn(station: Station, tmp_path):
    first, _ = openssl_csr(tmp_path / "a", "DEV-DUP-1", "p256")
    station.sign_ok(first, tmp_path / "first")
    again, _ = openssl_csr(tmp_path / "b", "DEV-DUP-1", "p256")  # a new key, the same CN
    refuse(station, tmp_path, again, EXIT_POLICY, rule="unique-cn", cn="DEV-DUP-1")


def test_refuses_reused_public_key_with_different_cn(station: Station, tmp_path):
    first, key = openssl_csr(tmp_path / "a", "DEV-KEY-1", "p256")
    station.sign_ok(first, tmp_path / "first")
    reuse = openssl_csr_with_key(tmp_path / "a", "DEV-KEY-2", key)
    refuse(station, tmp_path, reuse, EXIT_POLICY, rule="unique-public-key", cn="DEV-KEY-2")


def test_refuses_same_csr_twice(station: Station, tmp_path):
    csr, _ = openssl_csr(tmp_path / "a", "DEV-TWICE-1", "p256")
    station.sign_ok(csr, tmp_path / "first")
    refuse(station, tmp_path, csr, EXIT_POLICY, rule="unique-(cn|public-key)", cn="DEV-TWICE-1")
