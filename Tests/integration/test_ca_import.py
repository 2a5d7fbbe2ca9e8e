"""`keyline ca import`: the key formats openssl writes, the checks on the CA, and signing with what was imported."""

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import (
    EXIT_DATA,
    EXIT_KEY_GUARD,
    EXIT_OK,
    CAPair,
    Station,
    assert_exit,
    assert_one_line_error,
    encrypt_pkcs8_pbkdf2,
    key_pem,
    load_cert,
    make_issuing_ca,
    make_root,
    openssl,
    openssl_csr,
    openssl_verify_client,
    p256_key,
    ski_of,
    utcnow,
    write_secret,
)

PASSPHRASE = b"import-test-passphrase-5c1e9d"


class Material:
    """A CA to import: its certificate, its key file in some format, the root, and the passphrase file."""

    def __init__(self, d: Path, root: CAPair, ca: CAPair, key_file: Path, passfile: Path | None):
        self.dir, self.root, self.ca, self.key_file, self.passfile = d, root, ca, key_file, passfile
        self.cert_file = d / "ca.pem"
        self.cert_file.write_bytes(ca.pem)
        self.root_file = d / "root.pem"
        self.root_file.write_bytes(root.pem)


def material(tmp_path: Path, fmt: str, ca_kwargs=None, key_for_cert=None) -> Material:
    d = tmp_path / f"import-{fmt}"
    d.mkdir(parents=True)
    os.chmod(d, 0o700)
    passfile = d / "passphrase"
    write_secret(passfile, PASSPHRASE + b"\n")
    plain = d / "plain.pem"
    key_file = d / "key.pem"

    if fmt in ("sec1-ecparams", "sec1-ecparams-encrypted"):
        # openssl ecparam -genkey without -noout: an EC PARAMETERS block, then the SEC1 EC PRIVATE KEY.
        openssl("ecparam", "-genkey", "-name", "prime256v1", "-out", plain)
        os.chmod(plain, 0o600)
        pkcs8 = openssl("pkey", "-in", plain).stdout_bytes
        key = serialization.load_pem_private_key(pkcs8, None)
    else:
        key = p256_key()
        write_secret(plain, key_pem(key))

    if fmt == "pkcs8-pbkdf2":
        encrypt_pkcs8_pbkdf2(plain, key_file, passfile)
        text = openssl("asn1parse", "-in", key_file).out
        assert "PBES2" in text and "hmacWithSHA256" in text and "aes-256-cbc" in text
    elif fmt == "pkcs8-scrypt":
        openssl("pkcs8", "-topk8", "-scrypt", "-in", plain, "-out", key_file, "-passout", f"file:{passfile}")
        assert "scrypt" in openssl("asn1parse", "-in", key_file).out.lower()
    elif fmt == "legacy-pem":
        openssl("ec", "-aes256", "-in", plain, "-out", key_file, "-passout", f"file:{passfile}")
        assert b"Proc-Type: 4,ENCRYPTED" in key_file.read_bytes()
    elif fmt == "sec1-ecparams":
        key_file.write_bytes(plain.read_bytes())
        assert key_file.read_bytes().startswith(b"-----BEGIN EC PARAMETERS-----")
        passfile = None
    elif fmt == "sec1-ecparams-encrypted":
        text = plain.read_bytes()
        params = text[: text.index(b"-----BEGIN EC PRIVATE KEY-----")]
        enc = openssl("ec", "-aes256", "-in", plain, "-passout", f"file:{passfile}").stdout_bytes
        key_file.write_bytes(params + enc)
        assert b"EC PARAMETERS" in key_file.read_bytes() and b"Proc-Type: 4,ENCRYPTED" in key_file.read_bytes()
    elif fmt == "pkcs8-unencrypted":
        key_file.write_bytes(plain.read_bytes())
        assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        passfile = None
    else:
        raise AssertionError(fmt)
    os.chmod(key_file, 0o600)
    plain.unlink()

    root = make_root(f"Import Root {fmt}")
    ca = make_issuing_ca(root, f"Import CA {fmt}", key=key_for_cert or key, **(ca_kwargs or {}))
    return Material(d, root, ca, key_file, passfile)


def import_args(name, m: Material, passfile=True, chain=True, extra=()):
    args = ["ca", "import", "--name", name, "--cert", m.cert_file, "--key", m.key_file]
    if chain:
        args += ["--chain", m.root_file]
    if passfile and m.passfile:
        args += ["--passphrase-file", m.passfile]
    return args + list(extra)


def sign_and_verify_with(st: Station, tmp_path, name, m: Material):
    st.add_profile(name, ca=name)
    csr, _ = openssl_csr(tmp_path / f"csr-{name}", f"DEV-IMPORTED-{name.upper()}", "p256")
    leaf_path = st.sign_ok(csr, tmp_path / f"out-{name}", profile=name)
    openssl_verify_client(m.root_file, m.cert_file, leaf_path)
    leaf = load_cert(leaf_path)
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski_of(m.ca.cert)
    return leaf_path


def assert_imported_layout(st: Station, name, m: Material):
    d = st.path / "ca" / name
    assert load_cert(d / "ca.pem") == m.ca.cert
    assert (d / "ca.key").is_file()
    assert stat.S_IMODE(os.lstat(d / "ca.key").st_mode) == 0o600
    chains = [p for p in (d / "root.pem", d / "chain.pem") if p.is_file()]
    assert chains, "the --chain root was not copied into ca/NAME/"
    assert load_cert(chains[0]) == m.root.cert
    section = st.config()["cas"][name]
    if m.passfile:
        assert os.path.isabs(section["passphrase_file"])
        assert os.path.realpath(section["passphrase_file"]) == str(m.passfile.resolve())


@pytest.mark.parametrize("fmt", ["pkcs8-pbkdf2", "pkcs8-scrypt", "legacy-pem", "sec1-ecparams-encrypted"])
def test_ca_import_encrypted_key_formats_and_sign(station: Station, tmp_path, fmt):
    m = material(tmp_path, fmt)
    name = fmt.replace("-", "")
    r = station.run(*import_args(name, m))
    assert_exit(r, EXIT_OK)
    assert "unencrypted" not in r.err.lower(), f"an encrypted key must not be reported as unencrypted\n{r}"
    assert_imported_layout(station, name, m)
    sign_and_verify_with(station, tmp_path, name, m)
    assert PASSPHRASE not in r.stdout_bytes + r.stderr_bytes


def test_ca_import_passphrase_file_stored_as_absolute_path(station: Station, tmp_path):
    m = material(tmp_path, "pkcs8-pbkdf2")
    rel = os.path.relpath(m.passfile, station.path)  # keyline runs with the station as its working directory
    assert not os.path.isabs(rel)
    args = ["ca", "import", "--name", "rel", "--cert", m.cert_file, "--key", m.key_file, "--chain", m.root_file,
            "--passphrase-file", rel]
    r = station.run(*args)
    assert_exit(r, EXIT_OK)
    stored = station.config()["cas"]["rel"]["passphrase_file"]
    assert os.path.isabs(stored), stored
    assert os.path.realpath(stored) == str(m.passfile.resolve())


def test_ca_import_sec1_with_ec_parameters_block(station: Station, tmp_path):
    m = material(tmp_path, "sec1-ecparams")
    before = station.toml_path.read_bytes()
    refused = station.run(*import_args("sec1", m))
    assert_exit(refused, EXIT_KEY_GUARD)  # it is unencrypted
    assert_one_line_error(refused)
    assert station.toml_path.read_bytes() == before
    r = station.run(*import_args("sec1", m, extra=["--allow-unencrypted-key"]))
    assert_exit(r, EXIT_OK)
    assert_imported_layout(station, "sec1", m)
    sign_and_verify_with(station, tmp_path, "sec1", m)


def test_ca_import_refuses_unencrypted_pkcs8_without_flag(station: Station, tmp_path):
    m = material(tmp_path, "pkcs8-unencrypted")
    before = station.toml_path.read_bytes()
    r = station.run(*import_args("plain", m))
    assert_exit(r, EXIT_KEY_GUARD)
    assert_one_line_error(r)
    assert station.toml_path.read_bytes() == before, "a refused import changed station.toml"
    assert "plain" not in station.config().get("cas", {})


def test_ca_import_unencrypted_pkcs8_with_flag_warns_on_every_command(station: Station, tmp_path):
    m = material(tmp_path, "pkcs8-unencrypted")
    r = station.run(*import_args("plain", m, extra=["--allow-unencrypted-key"]))
    assert_exit(r, EXIT_OK)
    assert station.config()["cas"]["plain"]["allow_unencrypted_key"] is True
    assert_imported_layout(station, "plain", m)
    sign_and_verify_with(station, tmp_path, "plain", m)
    for args in (["ledger", "verify"], ["ca", "show"], ["ledger", "list"]):
        r = station.run(*args)
        assert_exit(r, EXIT_OK)
        assert "unencrypted" in r.err.lower(), f"expected a warning about the unencrypted CA key\n{r}"


# --------------------------------------------------------------------------------------------------------------
# Refused imports: station.toml and ca/ untouched
# --------------------------------------------------------------------------------------------------------------


def refused_import(st: Station, args, status):
    before = st.toml_path.read_bytes()
    ca_dirs = sorted(p.name for p in (st.path / "ca").iterdir())
    r = st.run(*args)
    assert_exit(r, status)
    assert_one_line_error(r)
    assert st.toml_path.read_bytes() == before, "a refused import changed station.toml"
    assert sorted(p.name for p in (st.path / "ca").iterdir()) == ca_dirs, "a refused import left files in ca/"
    assert PASSPHRASE not in r.stdout_bytes + r.stderr_bytes
    return r


def test_ca_import_refuses_key_not_matching_cert(station: Station, tmp_path):
    m = material(tmp_path, "pkcs8-pbkdf2", key_for_cert=p256_key())
    refused_import(station, import_args("mismatch", m), EXIT_KEY_GUARD)


def test_ca_import_refuses_wrong_passphrase(station: Station, tmp_path):
    m = material(tmp_path, "pkcs8-pbkdf2")
    write_secret(m.passfile, b"wrong-passphrase-for-import\n")
    refused_import(station, import_args("wrongpass", m), EXIT_KEY_GUARD)


def test_ca_import_refuses_group_readable_passphrase_file(station: Station, tmp_path):
    m = material(tmp_path, "pkcs8-pbkdf2")
    os.chmod(m.passfile, 0o640)
    refused_import(station, import_args("loosepass", m), EXIT_KEY_GUARD)


@pytest.mark.parametrize(
    "ca_kwargs",
    [dict(ca=False), dict(key_usage=False), dict(ski=False)],
    ids=["not-ca-true", "no-keycertsign", "no-ski"],
)
def test_ca_import_refuses_cert_that_is_not_a_ca(station: Station, tmp_path, ca_kwargs):
    m = material(tmp_path, "pkcs8-pbkdf2", ca_kwargs=ca_kwargs)
    refused_import(station, import_args("notaca", m), EXIT_DATA)


def test_ca_import_refuses_garbage_cert(station: Station, tmp_path):
    m = material(tmp_path, "pkcs8-pbkdf2")
    m.cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    refused_import(station, import_args("garbage", m), EXIT_DATA)


def test_ca_import_refuses_expired_ca(station: Station, tmp_path):
    now = utcnow()
    m = material(tmp_path, "pkcs8-pbkdf2", ca_kwargs=dict(not_before=now - dt.timedelta(days=800),
                                                           not_after=now - dt.timedelta(days=1)))
    refused_import(station, import_args("expired", m), EXIT_KEY_GUARD)


def test_ca_import_refuses_not_yet_valid_ca(station: Station, tmp_path):
    now = utcnow()
    m = material(tmp_path, "pkcs8-pbkdf2", ca_kwargs=dict(not_before=now + dt.timedelta(days=2)))
    refused_import(station, import_args("future", m), EXIT_KEY_GUARD)


def test_ca_show_warns_when_ca_expires_soon(station: Station, tmp_path):
    import json

    now = utcnow()
    m = material(tmp_path, "pkcs8-pbkdf2", ca_kwargs=dict(not_after=now + dt.timedelta(days=10, hours=12)))
    assert_exit(station.run(*import_args("soon", m)), EXIT_OK)
    r = station.run("ca", "show", "--json")
    assert_exit(r, EXIT_OK)
    cas = {c["name"]: c for c in json.loads(r.out)["cas"]}
    assert cas["soon"]["days_left"] in (10, 11)
    assert cas["soon"].get("warning"), f"days_left < ca_expiry_warning_days must carry a warning: {cas['soon']}"
    assert not cas["dev"].get("warning"), f"the dev CA is far from expiry: {cas['dev']}"
