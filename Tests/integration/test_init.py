"""`keyline init`: the layout it makes, file modes, the dev CA, the encrypted key, refusing an existing station."""

import os
import re
import stat
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import (
    DEFAULT_CN_PATTERN,
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_USAGE,
    Station,
    assert_exit,
    assert_one_line_error,
    init_station,
    load_cert,
    openssl,
    public_key_pem_of_cert,
    run_keyline,
    ski_of,
)


def mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def snapshot(d):
    """Every path under d with its bytes, mode and mtime: a refused command must leave all of it as it was."""
    snap = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            snap[os.path.relpath(p, d)] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size, data)
    return snap


def test_init_creates_layout_and_config(station: Station):
    p = station.path
    for rel in ["station.toml", "ca/dev/root.pem", "ca/dev/ca.pem", "ca/dev/ca.key", "secrets/dev.passphrase",
                "ledger.sqlite"]:
        assert (p / rel).is_file(), f"keyline init did not create {rel}"
    text = station.toml_path.read_text()
    assert any(l.lstrip().startswith("#") for l in text.splitlines()), "station.toml should be commented"
    cfg = station.config()
    uuid.UUID(cfg["station_id"])  # a UUID
    assert cfg["ledger"] == "sqlite:ledger.sqlite"
    assert cfg["ca_expiry_warning_days"] == 30
    dev = cfg["cas"]["dev"]
    assert dev["cert"] == "ca/dev/ca.pem"
    assert dev["key"] == "ca/dev/ca.key"
    assert dev["chain"] == "ca/dev/root.pem"
    assert dev["passphrase_file"] == "secrets/dev.passphrase"
    assert dev["status"] == "active"
    assert dev.get("allow_unencrypted_key", False) is False
    prof = cfg["profiles"]["default"]
    assert prof["ca"] == "dev"
    assert prof["cn_pattern"] == DEFAULT_CN_PATTERN
    assert prof["validity_days"] == 3650
    assert prof["min_validity_days"] == 365
    assert prof["key_types"] == ["p256"]
    # an empty ledger
    assert station.records_count() == 0


def test_init_file_modes(station: Station):
    assert mode(station.ca_key) == 0o600
    assert mode(station.passphrase_file) == 0o600
    assert mode(station.path / "secrets") == 0o700
    for p in [station.ca_key, station.passphrase_file]:
        assert stat.S_ISREG(os.lstat(p).st_mode), f"{p} must be a regular file"
    assert len(station.passphrase) >= 16, "the random passphrase is suspiciously short"


def test_init_dev_ca_is_a_valid_issuing_intermediate(station: Station):
    root, ca = station.root_cert(), station.ca_cert()
    # root: self-signed P-256
    assert root.issuer == root.subject
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey) and root.public_key().curve.name == "secp256r1"
    root.verify_directly_issued_by(root)
    # issuing CA: CA:TRUE pathlen:0, keyCertSign + cRLSign, SKI, AKI = root's SKI
    ca.verify_directly_issued_by(root)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True and bc.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert ski_of(ca)
    aki = ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski_of(root)
    r = openssl("verify", "-x509_strict", "-CAfile", station.root_pem, station.ca_pem, check=False)
    assert r.rc == 0, f"dev CA does not verify strictly under the dev root\n{r}"


def test_init_discards_root_key(station: Station):
    holders = []
    for f in station.path.rglob("*"):
        if f.is_file() and b"PRIVATE KEY" in f.read_bytes():
            holders.append(f.relative_to(station.path).as_posix())
    # The issuing CA's key and the station's own manifest-signing key; never the root's.
    assert sorted(holders) == ["ca/dev/ca.key", "secrets/station-signing.key"], f"unexpected keys kept: {holders}"
    assert oct((station.path / "secrets/station-signing.key").stat().st_mode & 0o777) == "0o600"


def test_init_ca_key_is_pbes2_pbkdf2_sha256_aes256cbc(station: Station):
    pem = station.ca_key.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"), "ca.key must be encrypted PKCS#8"
    parsed = openssl("asn1parse", "-in", station.ca_key).out
    for needle in ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"]:
        assert needle in parsed, f"{needle} not found in asn1parse of ca.key:\n{parsed}"
    # The station's passphrase opens it, and it is the issuing CA's key.
    openssl("pkey", "-in", station.ca_key, "-passin", f"file:{station.passphrase_file}", "-noout")
    pub = openssl("pkey", "-in", station.ca_key, "-passin", f"file:{station.passphrase_file}", "-pubout").stdout_bytes
    assert pub == public_key_pem_of_cert(station.ca_pem)
    # ... and nothing else does.
    r = openssl("pkey", "-in", station.ca_key, "-passin", "pass:not-the-passphrase", "-noout", check=False)
    assert r.rc != 0


@pytest.mark.parametrize("existing", ["full-station", "station.toml", "ledger.sqlite"])
def test_init_refuses_existing_station(keyline_bin, tmp_path, existing):
    d = tmp_path / "st"
    if existing == "full-station":
        init_station(d)
    else:
        d.mkdir()
        (d / existing).write_bytes(b"# placeholder that must not be touched\n")
    before = snapshot(d)
    r = run_keyline(["init", d], cwd=tmp_path)
    assert_exit(r, EXIT_USAGE)
    reason = assert_one_line_error(r)
    assert "already a station" in reason
    assert snapshot(d) == before, "keyline init touched an existing station"


def test_init_cannot_write_exits_74(keyline_bin, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    r = run_keyline(["init", blocker / "station"], cwd=tmp_path)
    assert_exit(r, 74)
    assert_one_line_error(r)


def test_init_two_stations_are_independent(keyline_bin, tmp_path):
    a, b = init_station(tmp_path / "a"), init_station(tmp_path / "b")
    assert a.config()["station_id"] != b.config()["station_id"]
    assert a.passphrase != b.passphrase
    assert a.ca_pem.read_bytes() != b.ca_pem.read_bytes()


def test_station_selected_by_flag_env_and_cwd(station: Station, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_flag = run_keyline(["ledger", "verify", "--station", station.path], cwd=elsewhere)
    assert_exit(by_flag, EXIT_OK)
    assert re.search(r"ledger intact: 0 records", by_flag.out), by_flag
    by_env = run_keyline(["ledger", "verify"], cwd=elsewhere, env={"KEYLINE_STATION": str(station.path)})
    assert_exit(by_env, EXIT_OK)
    by_cwd = run_keyline(["ledger", "verify"], cwd=station.path)
    assert_exit(by_cwd, EXIT_OK)
    # Not a station at all: no station.toml -> configuration error.
    none = run_keyline(["ledger", "verify"], cwd=elsewhere)
    assert_exit(none, EXIT_CONFIG)
    assert_one_line_error(none)
