"""The key guard (exit 77): the CA key and its passphrase are used only when they are safe and right.

Each refusal: exit 77, one stderr line, no certificate written, records table unchanged, passphrase not echoed."""

import datetime as dt
import os

import pytest

from conftest import (
    EXIT_KEY_GUARD,
    EXIT_OK,
    RefusalCheck,
    Station,
    assert_exit,
    assert_one_line_error,
    encrypt_pkcs8_pbkdf2,
    install_ca_by_hand,
    key_pem,
    load_cert,
    make_issuing_ca,
    make_root,
    openssl_csr,
    openssl_verify_client,
    p256_key,
    utcnow,
    write_secret,
)


def refuse_77(st: Station, tmp_path, profile=None, secrets=()):
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-GUARD-1", "p256")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    check = RefusalCheck(st, out)
    r = st.sign(csr, out_dir=out, profile=profile)
    assert_exit(r, EXIT_KEY_GUARD)
    assert_one_line_error(r)
    # The issue asks every refusal, key-guard ones included, to leave an audit event.
    check.check(r, refused_event=True)
    for s in secrets:
        assert s not in r.stdout_bytes + r.stderr_bytes, "a passphrase was echoed"
    return r


def test_signs_with_untouched_dev_ca(station: Station, tmp_path):
    """Control for the refusals below: the same CSR signs fine before the key is tampered with."""
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-GUARD-1", "p256")
    leaf = station.sign_ok(csr, tmp_path / "out")
    openssl_verify_client(station.root_pem, station.ca_pem, leaf)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660], ids=["group-readable", "world-readable", "group-writable"])
def test_refuses_ca_key_readable_by_others(station: Station, tmp_path, mode):
    os.chmod(station.ca_key, mode)
    refuse_77(station, tmp_path, secrets=[station.passphrase])


def test_refuses_symlinked_ca_key(station: Station, tmp_path):
    real = station.dev_dir / "real-ca.key"
    os.rename(station.ca_key, real)
    os.symlink(real.name, station.ca_key)
    assert os.stat(station.ca_key).st_mode & 0o777 == 0o600
    refuse_77(station, tmp_path, secrets=[station.passphrase])


def test_refuses_ca_key_that_is_not_a_regular_file(station: Station, tmp_path):
    os.rename(station.ca_key, station.dev_dir / "moved.key")
    os.mkdir(station.ca_key, 0o700)
    refuse_77(station, tmp_path)


def test_refuses_ca_key_in_world_writable_dir(station: Station, tmp_path):
    os.chmod(station.dev_dir, 0o777)
    refuse_77(station, tmp_path, secrets=[station.passphrase])


def test_refuses_group_readable_passphrase_file(station: Station, tmp_path):
    os.chmod(station.passphrase_file, 0o640)
    refuse_77(station, tmp_path, secrets=[station.passphrase])


def test_refuses_symlinked_passphrase_file(station: Station, tmp_path):
    real = station.path / "secrets" / "real.passphrase"
    os.rename(station.passphrase_file, real)
    os.symlink(real.name, station.passphrase_file)
    refuse_77(station, tmp_path, secrets=[real.read_bytes().strip()])


def test_refuses_wrong_passphrase(station: Station, tmp_path):
    real = station.passphrase
    write_secret(station.passphrase_file, b"definitely-not-the-passphrase-4711\n")
    assert os.stat(station.passphrase_file).st_mode & 0o777 == 0o600
    refuse_77(station, tmp_path, secrets=[real, b"definitely-not-the-passphrase-4711"])


def test_refuses_key_that_does_not_match_ca(station: Station, tmp_path):
    other = tmp_path / "other-plain.key"
    write_secret(other, key_pem(p256_key()))
    os.unlink(station.ca_key)
    encrypt_pkcs8_pbkdf2(other, station.ca_key, station.passphrase_file)  # right passphrase, wrong key
    assert os.stat(station.ca_key).st_mode & 0o777 == 0o600
    refuse_77(station, tmp_path, secrets=[station.passphrase])


# --------------------------------------------------------------------------------------------------------------
# CAs outside their validity, configured by hand (ca import refuses them, see test_ca_import.py)
# --------------------------------------------------------------------------------------------------------------


def test_hand_written_ca_section_signs(station: Station, tmp_path):
    """Control: a CA installed by hand the same way as the refused ones below is usable."""
    root = make_root("Hand Root")
    ca = make_issuing_ca(root, "Hand CA")
    d = install_ca_by_hand(station, "hand", ca, root)
    (tmp_path / "root.pem").write_bytes(root.pem)
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-HAND-1", "p256")
    leaf = station.sign_ok(csr, tmp_path / "out", profile="hand")
    openssl_verify_client(tmp_path / "root.pem", d / "ca.pem", leaf)
    assert load_cert(leaf).issuer == ca.cert.subject


def test_refuses_expired_ca(station: Station, tmp_path):
    now = utcnow()
    root = make_root("Old Root", not_before=now - dt.timedelta(days=4000))
    ca = make_issuing_ca(root, "Expired CA", not_before=now - dt.timedelta(days=3000),
                         not_after=now - dt.timedelta(days=1))
    install_ca_by_hand(station, "expired", ca, root)
    refuse_77(station, tmp_path, profile="expired")


def test_refuses_not_yet_valid_ca(station: Station, tmp_path):
    now = utcnow()
    root = make_root("Future Root")
    ca = make_issuing_ca(root, "Future CA", not_before=now + dt.timedelta(days=1),
                         not_after=now + dt.timedelta(days=365 * 20))
    install_ca_by_hand(station, "future", ca, root)
    refuse_77(station, tmp_path, profile="future")
