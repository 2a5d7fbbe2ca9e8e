"""Every certificate the station issues: strict openssl verification, pkilint, a real mutual-TLS handshake,
and the exact content the contract promises."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, SignatureAlgorithmOID

from conftest import (
    EXIT_OK,
    Station,
    assert_exit,
    assert_mtls_accepts,
    assert_mtls_rejects,
    cn_attr,
    crypto_csr,
    init_station,
    load_cert,
    openssl_csr,
    openssl_verify_client,
    pkilint_clean,
    public_key_pem_of_cert,
    public_key_pem_of_key,
    ski_of,
    spki_der,
    utcnow,
)

KINDS = ["p256", "p384", "rsa2048", "station-made"]


def issue_leaf(st: Station, tmp_path, kind: str, cn: str | None = None):
    """Issues one leaf of the given kind; returns (leaf.pem, leaf.key)."""
    cn = cn or f"DEV-{kind.upper()}-0001"
    out = tmp_path / "out"
    if kind == "station-made":
        r = st.run("issue", cn, "--out", out)
        assert_exit(r, EXIT_OK)
        return out / f"{cn}.pem", out / f"{cn}.key"
    csr, key = openssl_csr(tmp_path / "csr", cn, kind)
    # P-384 and RSA each under a profile admitting just that extra key type, so one cannot mask the other
    profile = {"p256": None, "p384": st.add_p384_profile, "rsa2048": st.add_rsa_profile}[kind]
    profile = profile() if profile else None
    leaf = st.sign_ok(csr, out, profile=profile)
    assert leaf.name == f"{cn}.pem", "--out-dir writes DIR/<CN>.pem"
    return leaf, key


@pytest.mark.parametrize("kind", KINDS)
def test_issued_certificate_passes_openssl_strict_and_pkilint(station: Station, tmp_path, kind):
    leaf, key = issue_leaf(station, tmp_path, kind)
    openssl_verify_client(station.root_pem, station.ca_pem, leaf)
    pkilint_clean(station.ca_pem, leaf)
    assert public_key_pem_of_cert(leaf) == public_key_pem_of_key(key), "certificate is not for the CSR's key"


@pytest.mark.parametrize("kind", KINDS)
def test_issued_certificate_completes_mutual_tls(station: Station, tmp_path, tls_server_identity, kind):
    leaf, key = issue_leaf(station, tmp_path, kind)
    assert_mtls_accepts(tls_server_identity, station.bundle(), leaf, key)


def test_mutual_tls_rejects_client_cert_from_foreign_ca(station: Station, keyline_bin, tmp_path, tls_server_identity):
    # A perfectly good leaf, but from another station's CA: a server trusting only our station must refuse it.
    foreign = init_station(tmp_path / "foreign-station")
    leaf, key = issue_leaf(foreign, tmp_path / "foreign", "p256", cn="DEV-FOREIGN-1")
    h = assert_mtls_rejects(tls_server_identity, station.bundle(), leaf, key)
    assert "verify error" in h.server_out or "unable to get local issuer" in h.server_out, h
    # Control: the same server setup accepts our own station's leaf, so the refusal above is about the CA.
    own_leaf, own_key = issue_leaf(station, tmp_path / "own", "p256", cn="DEV-OWN-1")
    assert_mtls_accepts(tls_server_identity, station.bundle(), own_leaf, own_key)


def test_mutual_tls_requires_a_client_certificate(station: Station, tls_server_identity):
    h = assert_mtls_rejects(tls_server_identity, station.bundle(), None, None)
    assert "did not return a certificate" in h.server_out or "certificate required" in (h.server_out + h.client_out), h


# --------------------------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------------------------

EXPECTED_EXTENSIONS = {
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
}
TOLERANCE = dt.timedelta(seconds=5)


def assert_leaf_content(leaf: x509.Certificate, ca: x509.Certificate, cn: str, t0, t1, validity_days=3650,
                        extra_subject=None):
    assert leaf.version == x509.Version.v3
    n = leaf.serial_number
    assert n > 0, "serial must be positive"
    assert n.bit_length() // 8 + 1 <= 20, f"serial {n:x} takes more than 20 octets in DER"

    exts = {e.oid: e for e in leaf.extensions}
    assert set(exts) == EXPECTED_EXTENSIONS, f"leaf extensions {sorted(o.dotted_string for o in exts)}"
    ku = exts[ExtensionOID.KEY_USAGE]
    assert ku.critical, "keyUsage must be critical"
    v = ku.value
    assert v.digital_signature
    assert not any([v.content_commitment, v.key_encipherment, v.data_encipherment, v.key_agreement,
                    v.key_cert_sign, v.crl_sign]), f"keyUsage must be digitalSignature only: {v}"
    assert list(exts[ExtensionOID.EXTENDED_KEY_USAGE].value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert exts[ExtensionOID.SUBJECT_KEY_IDENTIFIER].value.digest
    aki = exts[ExtensionOID.AUTHORITY_KEY_IDENTIFIER].value
    assert aki.key_identifier == ski_of(ca), "AKI keyid must equal the issuing CA's SKI"
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None, "AKI is keyid only"
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.BasicConstraints)

    got = sorted((a.oid.dotted_string, a.value) for a in leaf.subject)
    want = [(NameOID.COMMON_NAME.dotted_string, cn)] + [(o.dotted_string, val) for o, val in (extra_subject or [])]
    assert got == sorted(want), f"subject is {leaf.subject.rfc4514_string()}"
    assert len(leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)) == 1
    assert leaf.issuer == ca.subject

    nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    assert t0 - dt.timedelta(minutes=5) - TOLERANCE <= nb <= t1 - dt.timedelta(minutes=5) + TOLERANCE, \
        f"notBefore {nb} is not now-5min (command ran {t0}..{t1})"
    want_lo = min(t0 + dt.timedelta(days=validity_days), ca.not_valid_after_utc)
    want_hi = min(t1 + dt.timedelta(days=validity_days), ca.not_valid_after_utc)
    assert want_lo - TOLERANCE <= na <= want_hi + TOLERANCE, f"notAfter {na}, expected ~{want_lo}"

    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    leaf.verify_directly_issued_by(ca)


def test_certificate_content_is_exactly_the_profile(station: Station, tmp_path):
    # The CSR asks for more subject than a CN; only the CN may be taken.
    csr, key = openssl_csr(tmp_path / "csr", "DEV-CONTENT-1", "p256", subj="/C=XX/O=Evil Corp/OU=Ops/CN=DEV-CONTENT-1")
    t0 = utcnow()
    leaf_path = station.sign_ok(csr, tmp_path / "out")
    t1 = utcnow()
    leaf = load_cert(leaf_path)
    assert_leaf_content(leaf, station.ca_cert(), "DEV-CONTENT-1", t0, t1)
    assert public_key_pem_of_cert(leaf_path) == public_key_pem_of_key(key)


def test_certificate_subject_has_profile_organization(station: Station, tmp_path):
    station.add_profile("org", subject_organization="Acme Devices", subject_organizational_unit="Line 7")
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-ORG-1", "p256")
    t0 = utcnow()
    leaf_path = station.sign_ok(csr, tmp_path / "out", profile="org")
    t1 = utcnow()
    assert_leaf_content(load_cert(leaf_path), station.ca_cert(), "DEV-ORG-1", t0, t1,
                        extra_subject=[(NameOID.ORGANIZATION_NAME, "Acme Devices"),
                                       (NameOID.ORGANIZATIONAL_UNIT_NAME, "Line 7")])


def test_ca_true_request_is_issued_without_ca_true(station: Station, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    ku = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                       encipher_only=False, decipher_only=False)
    csr = crypto_csr(
        tmp_path / "ca-true.csr", [cn_attr("DEV-WANTS-CA-1", validate=True)], key=key,
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True), (ku, True),
                    (x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False),
                    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]), False)],
    )
    t0 = utcnow()
    leaf_path = station.sign_ok(csr, tmp_path / "out")
    t1 = utcnow()
    leaf = load_cert(leaf_path)
    assert_leaf_content(leaf, station.ca_cert(), "DEV-WANTS-CA-1", t0, t1)
    assert spki_der(leaf.public_key()) == spki_der(key.public_key())
    openssl_verify_client(station.root_pem, station.ca_pem, leaf_path)


def test_profile_with_every_listed_key_type_issues_each(station: Station, tmp_path):
    wide = station.add_wide_profile()  # key_types = ["p256", "p384", "rsa2048"]
    c256, _ = openssl_csr(tmp_path / "csr", "DEV-WIDE-P256", "p256")
    c384, _ = openssl_csr(tmp_path / "csr", "DEV-P384-KEY", "p384")
    crsa, _ = openssl_csr(tmp_path / "csr", "DEV-RSA-KEY", "rsa2048")
    station.sign_ok(c256, tmp_path / "out", profile=wide)
    l384 = load_cert(station.sign_ok(c384, tmp_path / "out", profile=wide))
    lrsa = load_cert(station.sign_ok(crsa, tmp_path / "out", profile=wide))
    assert isinstance(l384.public_key(), ec.EllipticCurvePublicKey) and l384.public_key().curve.name == "secp384r1"
    assert isinstance(lrsa.public_key(), rsa.RSAPublicKey) and lrsa.public_key().key_size == 2048
    # the dev CA is P-256, so the signature stays ECDSA-SHA256
    for leaf in (l384, lrsa):
        assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
