"""Shared fixtures and helpers for Keyline's integration tests.

The tests drive the real `keyline` binary (env KEYLINE_BIN, default <repo>/.build/debug/keyline) against real
peers: the openssl CLI, pkilint, SQLite. Every test makes its own station with `keyline init` in its tmp_path.
They assert the CLI contract (/work/cli-spec.md as copied into the repo's docs), never what the binary happens to do.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import tomllib
import warnings
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
KEYLINE_BIN = Path(os.environ.get("KEYLINE_BIN") or REPO / ".build" / "debug" / "keyline")

# Every subprocess is bounded. A debug build of keyline signs in well under a second; these leave ample room.
KEYLINE_TIMEOUT = 60
OPENSSL_TIMEOUT = 30
TLS_TIMEOUT = 15

# Exit statuses from the CLI contract.
EXIT_OK = 0
EXIT_POLICY = 3
EXIT_INTEGRITY = 4
EXIT_USAGE = 64
EXIT_DATA = 65
EXIT_UNAVAILABLE = 69
EXIT_KEY_GUARD = 77
EXIT_CONFIG = 78

DEFAULT_CN_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"

# Backend settings of a product line (Station.add_jitp_profile): two organizations' PRNs, RFC 4122 UUIDs.
ORG_A = "5b0f6c1e-2d3a-4f8b-9c7d-1e2f3a4b5c6d"
ORG_B = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
PRODUCT_PRN_A = f"prn:1:{ORG_A}:product:0d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
COHORT_PRN_A = f"prn:1:{ORG_A}:cohort:7e6d5c4b-3a2f-4e1d-9c0b-a1b2c3d4e5f6"
COHORT_PRN_B = f"prn:1:{ORG_B}:cohort:3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
JITP_PROFILE = {
    "product_name": 'Gateway "GW-1" & <Co>',
    "product_prn": PRODUCT_PRN_A,
    "cohort_prn": COHORT_PRN_A,
    "tags": ["factory-a", "line-1", "gw"],
    "target": "aarch64-unknown-linux-gnu",
    "jitp_description": "Provisioned from factory A, line 1 & 2",
    "description_template": "{{product_name}} {{cn}} op={{operator}} {{work_order}}",
}
ERROR_PREFIX = "keyline: error: "
PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)


# --------------------------------------------------------------------------------------------------------------
# Running things
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    args: list
    rc: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def out(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def both(self) -> str:
        return self.out + "\n" + self.err

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"$ {' '.join(map(str, self.args))}\n-> exit {self.rc}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def _clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLINE_")}
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


def run_keyline(args, *, cwd=None, station=None, input: bytes | None = None, timeout=KEYLINE_TIMEOUT, env=None) -> Result:
    """Runs the keyline binary; with `station`, it is selected by KEYLINE_STATION and the working directory."""
    extra = dict(env or {})
    if station is not None:
        extra["KEYLINE_STATION"] = str(station)
        cwd = cwd or station
    argv = [str(KEYLINE_BIN), *map(str, args)]
    p = subprocess.run(
        argv,
        cwd=str(cwd) if cwd else None,
        input=input if input is not None else b"",
        capture_output=True,
        timeout=timeout,
        env=_clean_env(extra),
    )
    return Result(argv, p.returncode, p.stdout, p.stderr)


def run(argv, *, input: bytes | None = None, timeout=OPENSSL_TIMEOUT, check=True, cwd=None) -> Result:
    """Runs a helper tool (openssl, pkilint) with a timeout; with `check`, a non-zero exit fails the test."""
    p = subprocess.run(
        [str(a) for a in argv],
        input=input if input is not None else b"",
        capture_output=True,
        timeout=timeout,
        cwd=str(cwd) if cwd else None,
        env=_clean_env(),
    )
    r = Result([str(a) for a in argv], p.returncode, p.stdout, p.stderr)
    if check and r.rc != 0:
        pytest.fail(f"helper command failed:\n{r}")
    return r


def openssl(*args, **kw) -> Result:
    return run(["openssl", *args], **kw)


def venv_tool(name: str) -> str:
    """A console script installed next to this Python (the test venv), else from PATH."""
    import sys

    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found (pip install pkilint into the test venv)")
    return found


# --------------------------------------------------------------------------------------------------------------
# Assertions shared by many tests
# --------------------------------------------------------------------------------------------------------------


def assert_one_line_error(r: Result, rule: str | None = None):
    """stderr is exactly one line `keyline: error: <reason>`; for policy refusals the reason starts with the rule."""
    lines = [l for l in r.err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected exactly one stderr line\n{r}"
    assert lines[0].startswith(ERROR_PREFIX), f"stderr line must start with {ERROR_PREFIX!r}\n{r}"
    reason = lines[0][len(ERROR_PREFIX):]
    assert reason.strip(), f"empty reason\n{r}"
    if rule is not None:
        assert re.match(rule + r": ", reason), f"reason must start with rule {rule!r}\n{r}"
    return reason


def assert_exit(r: Result, status: int):
    assert r.rc == status, f"expected exit {status}, got {r.rc}\n{r}"


def pem_certs(data: bytes) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(m.group(0)) for m in PEM_CERT_RE.finditer(data)]


def load_cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def cert_fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def spki_der(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ski_of(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------------------------------------------
# The station under test
# --------------------------------------------------------------------------------------------------------------


class Station:
    """A station directory made by `keyline init`, with helpers to drive it and to look into its ledger."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # --- layout
    @property
    def toml_path(self) -> Path:
        return self.path / "station.toml"

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.sqlite"

    @property
    def dev_dir(self) -> Path:
        return self.path / "ca" / "dev"

    @property
    def root_pem(self) -> Path:
        return self.dev_dir / "root.pem"

    @property
    def ca_pem(self) -> Path:
        return self.dev_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.dev_dir / "ca.key"

    @property
    def passphrase_file(self) -> Path:
        return self.path / "secrets" / "dev.passphrase"

    @property
    def passphrase(self) -> bytes:
        return self.passphrase_file.read_bytes().strip()

    def ca_cert(self) -> x509.Certificate:
        return load_cert(self.ca_pem)

    def root_cert(self) -> x509.Certificate:
        return load_cert(self.root_pem)

    def bundle(self) -> Path:
        """root + issuing CA in one file (for -CAfile of a TLS server trusting this station's leaves)."""
        p = self.path.parent / f"{self.path.name}-trust.pem"
        p.write_bytes(self.root_pem.read_bytes() + self.ca_pem.read_bytes())
        return p

    # --- running
    def run(self, *args, **kw) -> Result:
        return run_keyline(list(args), station=self.path, **kw)

    def sign(self, *csrs, out_dir=None, profile=None, extra=()) -> Result:
        args = ["sign", *csrs]
        if profile:
            args += ["--profile", profile]
        if out_dir:
            args += ["--out-dir", out_dir]
        return self.run(*args, *extra)

    def sign_ok(self, csr, out_dir, profile=None, extra=()) -> Path:
        """Signs one CSR into out_dir and returns the certificate's path (exactly one new file, <CN>.pem)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        before = set(out_dir.iterdir())
        r = self.sign(csr, out_dir=out_dir, profile=profile, extra=extra)
        assert_exit(r, EXIT_OK)
        new = sorted(set(out_dir.iterdir()) - before)
        assert len(new) == 1 and new[0].suffix == ".pem", f"expected one new <CN>.pem in {out_dir}, got {new}\n{r}"
        return new[0]

    # --- configuration
    def config(self) -> dict:
        with open(self.toml_path, "rb") as f:
            return tomllib.load(f)

    def append_toml(self, text: str):
        current = self.toml_path.read_text()
        if not current.endswith("\n"):
            current += "\n"
        self.toml_path.write_text(current + "\n" + text.strip("\n") + "\n")
        self.config()  # the edit must leave valid TOML

    def add_profile(self, name, ca="dev", key_types=("p256",), **extra):
        lines = [
            f"[profiles.{name}]",
            f'ca = "{ca}"',
            f"cn_pattern = '{DEFAULT_CN_PATTERN}'",
            "validity_days = 3650",
            "min_validity_days = 365",
            "key_types = [" + ", ".join(f'"{k}"' for k in key_types) + "]",
        ]
        for k, v in extra.items():
            lines.append(f"{k} = {toml_value(v)}")
        self.append_toml("\n".join(lines))

    def set_toml_key(self, table: str, key: str, value):
        """Sets `key = value` inside `[table]` of station.toml (replacing the key's line, else adding it under the
        header), leaving every other line as it was."""
        lines = self.toml_path.read_text().splitlines()
        header = f"[{table}]"
        starts = [i for i, l in enumerate(lines) if l.strip() == header]
        assert len(starts) == 1, f"{header} appears {len(starts)} times in station.toml"
        start = starts[0]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        line = f"{key} = {toml_value(value)}"
        for i in range(start + 1, end):
            if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
                lines[i] = line
                break
        else:
            lines.insert(start + 1, line)
        self.toml_path.write_text("\n".join(lines) + "\n")
        node = self.config()
        for part in table.split("."):
            node = node[part]
        assert node[key] == value, f"could not set {key} in {header}"

    def add_wide_profile(self, name="wide", key_types=("p256", "p384", "rsa2048")):
        """A second profile on the dev CA admitting more key types (by default every value the contract lists)."""
        self.add_profile(name, key_types=key_types)
        return name

    def add_p384_profile(self):
        return self.add_wide_profile("p384", key_types=("p256", "p384"))

    def add_rsa_profile(self):
        return self.add_wide_profile("rsa", key_types=("p256", "rsa2048"))

    def add_jitp_profile(self, name, ca="dev", **overrides):
        """A profile with every backend key set (JITP_PROFILE); `overrides` replace keys, a value None drops one."""
        keys = {**JITP_PROFILE, **overrides}
        self.add_profile(name, ca=ca, **{k: v for k, v in keys.items() if v is not None})
        return {k: v for k, v in keys.items() if v is not None}

    # --- ledger
    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(str(self.ledger_path), timeout=10)

    def query(self, sql, args=()):
        with closing(self.db()) as c:
            return c.execute(sql, args).fetchall()

    def records(self):
        return self.query("SELECT * FROM records ORDER BY seq")

    def records_count(self) -> int:
        return self.query("SELECT count(*) FROM records")[0][0]

    def events(self, kind=None):
        sql = "SELECT seq, kind, record_seq, cn, detail FROM events"
        if kind:
            return self.query(sql + " WHERE kind = ? ORDER BY seq", (kind,))
        return self.query(sql + " ORDER BY seq")

    def ledger_bytes(self) -> bytes:
        data = b""
        for suffix in ("", "-wal", "-journal"):
            p = Path(str(self.ledger_path) + suffix)
            if p.exists():
                data += p.read_bytes()
        return data


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session", autouse=True)
def keyline_bin(tmp_path_factory) -> Path:
    """The binary under test, copied once per session (with its sibling *.resources bundles) so that a rebuild
    running alongside the suite cannot swap it out halfway through."""
    global KEYLINE_BIN
    source = KEYLINE_BIN
    if not source.is_file() or not os.access(source, os.X_OK):
        pytest.fail(f"keyline binary not found at {source} (set KEYLINE_BIN or run swift build)", pytrace=False)
    d = tmp_path_factory.mktemp("bin")
    for res in source.parent.glob("*.resources"):
        shutil.copytree(res, d / res.name, symlinks=True)
    copy = d / source.name
    shutil.copy2(source, copy)
    KEYLINE_BIN = copy
    yield copy
    KEYLINE_BIN = source


def init_station(path: Path) -> Station:
    r = run_keyline(["init", path], cwd=path.parent)
    assert_exit(r, EXIT_OK)
    return Station(path)


@pytest.fixture
def station(keyline_bin, tmp_path) -> Station:
    return init_station(tmp_path / "station")


class RefusalCheck:
    """Captures the ledger before a refused command; `.check()` asserts the refusal left the records untouched,
    wrote no certificate, and (for policy/data refusals) appended exactly one `refused` event."""

    def __init__(self, station: Station, out_dir: Path | None = None):
        self.station = station
        self.out_dir = out_dir
        self.records_before = station.records()
        self.count_before = station.records_count()
        self.refused_before = station.events("refused")
        self.files_before = sorted(out_dir.rglob("*")) if out_dir and out_dir.exists() else []

    def check(self, r: Result, *, refused_event=True, cn=None):
        s = self.station
        assert s.records_count() == self.count_before, f"records table row count changed\n{r}"
        assert s.records() == self.records_before, f"records table changed\n{r}"
        if self.out_dir is not None:
            files = sorted(self.out_dir.rglob("*")) if self.out_dir.exists() else []
            assert files == self.files_before, f"a refused command wrote {set(files) - set(self.files_before)}\n{r}"
        if refused_event:
            new = [e for e in s.events("refused") if e not in self.refused_before]
            assert len(new) == 1, f"expected one new 'refused' event, got {new}\n{r}"
            seq, kind, record_seq, ev_cn, detail = new[0]
            assert record_seq is None, f"a refused event has record_seq NULL, got {record_seq}"
            if cn is not None:
                assert ev_cn == cn, f"refused event should carry the attempted CN {cn!r}, got {ev_cn!r}"
        assert b"-----BEGIN CERTIFICATE-----" not in r.stdout_bytes, f"a refused command printed a certificate\n{r}"


# --------------------------------------------------------------------------------------------------------------
# Keys, CSRs and CAs
# --------------------------------------------------------------------------------------------------------------

NEWKEY = {
    "p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "rsa2048": ["-newkey", "rsa:2048"],
    "rsa1024": ["-newkey", "rsa:1024"],
}


def openssl_csr(directory: Path, cn: str, kind: str = "p256", subj: str | None = None, extra=()) -> tuple[Path, Path]:
    """An ordinary CSR made by `openssl req` with a fresh key: returns (csr.pem, key.pem).

    `subj` overrides the subject (default `/CN=<cn>`)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", cn) + "-" + kind
    csr, key = directory / f"{stem}.csr", directory / f"{stem}.key"
    openssl("req", "-new", *NEWKEY[kind], "-nodes", "-keyout", key, "-out", csr, "-subj", subj or f"/CN={cn}", *extra)
    return csr, key


def openssl_csr_with_key(directory: Path, cn: str, key: Path) -> Path:
    """A CSR for an existing key file (to reuse a public key under another CN)."""
    csr = directory / (re.sub(r"[^A-Za-z0-9._-]", "_", cn) + "-reuse.csr")
    openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={cn}")
    return csr


def p256_key():
    return ec.generate_private_key(ec.SECP256R1())


def cn_attr(value: str, validate=False) -> x509.NameAttribute:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.NameAttribute(NameOID.COMMON_NAME, value, _validate=validate)


def crypto_csr(path: Path, attributes, key=None, extensions=(), der=False) -> Path:
    """A CSR built with `cryptography`, for subjects openssl's -subj cannot express."""
    key = key or p256_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(list(attributes)))
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        csr = builder.sign(key, hashes.SHA256())
        data = csr.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_secret(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def encrypt_pkcs8_pbkdf2(plain_key_pem: Path, out: Path, passfile: Path):
    """Encrypted PKCS#8: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC (what `keyline init` writes too)."""
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256", "-in", plain_key_pem,
            "-out", out, "-passout", f"file:{passfile}")
    os.chmod(out, 0o600)


@dataclass
class CAPair:
    key: object
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_root(cn="Test Root", not_before=None, not_after=None, key=None) -> CAPair:
    key = key or p256_key()
    now = utcnow()
    not_before = not_before or now - dt.timedelta(days=2)
    not_after = not_after or now + dt.timedelta(days=365 * 30)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CAPair(key, cert)


def _ca_key_usage():
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )


def make_issuing_ca(root: CAPair, cn="Test Issuing CA", not_before=None, not_after=None, key=None,
                    ca=True, key_usage=True, ski=True) -> CAPair:
    """An issuing intermediate like the backend wants: CA:TRUE pathlen:0, keyCertSign+cRLSign, SKI, AKI."""
    key = key or p256_key()
    now = utcnow()
    not_before = not_before or now - dt.timedelta(days=1)
    not_after = not_after or now + dt.timedelta(days=365 * 20)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), critical=False)
    )
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    if key_usage:
        b = b.add_extension(_ca_key_usage(), critical=True)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return CAPair(key, b.sign(root.key, hashes.SHA256()))


def install_ca_by_hand(st: Station, name: str, ca: CAPair, root: CAPair, passphrase: bytes = b"hand-made-passphrase-0123456789",
                      status: str = "active", profile: bool = True):
    """Writes ca/NAME/{ca.pem,ca.key,root.pem} and secrets/NAME.passphrase, appends [cas.NAME] (with `status`) and,
    unless `profile=False`, a profile NAME using it."""
    d = st.path / "ca" / name
    d.mkdir(parents=True)
    os.chmod(d, 0o700)
    (d / "ca.pem").write_bytes(ca.pem)
    (d / "root.pem").write_bytes(root.pem)
    passfile = st.path / "secrets" / f"{name}.passphrase"
    write_secret(passfile, passphrase + b"\n")
    plain = d / "plain.tmp"
    write_secret(plain, key_pem(ca.key))
    encrypt_pkcs8_pbkdf2(plain, d / "ca.key", passfile)
    plain.unlink()
    st.append_toml(
        "\n".join([
            f"[cas.{name}]",
            f'cert = "ca/{name}/ca.pem"',
            f'key = "ca/{name}/ca.key"',
            f'chain = "ca/{name}/root.pem"',
            f'passphrase_file = "secrets/{name}.passphrase"',
            f'status = "{status}"',
        ])
    )
    if profile:
        st.add_profile(name, ca=name)
    return d



@dataclass
class ImportableCA:
    """An issuing CA made elsewhere, as files for `keyline ca import`."""
    root: CAPair
    ca: CAPair
    cert_file: Path
    key_file: Path
    root_file: Path
    passfile: Path


def make_importable_ca(d: Path, root_cn="Other Root", ca_cn="Other Issuing CA", passphrase=b"importable-passphrase-7f3a91c2e4",
                       **ca_kwargs) -> ImportableCA:
    """In directory d: an issuing CA (CA:TRUE pathlen:0 critical, keyCertSign+cRLSign, SKI, AKI) under its own root,
    its key as encrypted PKCS#8 (PBKDF2, AES-256-CBC) with a 0600 passphrase file. `ca_kwargs` go to
    make_issuing_ca (not_before, not_after, ...)."""
    d.mkdir(parents=True, mode=0o700)
    root = make_root(root_cn)
    ca = make_issuing_ca(root, ca_cn, **ca_kwargs)
    passfile = d / "passphrase"
    write_secret(passfile, passphrase + b"\n")
    plain = d / "plain.pem"
    write_secret(plain, key_pem(ca.key))
    key_file = d / "ca.key"
    encrypt_pkcs8_pbkdf2(plain, key_file, passfile)
    plain.unlink()
    (d / "ca.pem").write_bytes(ca.pem)
    (d / "root.pem").write_bytes(root.pem)
    return ImportableCA(root, ca, d / "ca.pem", key_file, d / "root.pem", passfile)

# --------------------------------------------------------------------------------------------------------------
# Mutual TLS against openssl s_server
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TLSServerIdentity:
    ca_pem: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_server_identity(tmp_path_factory) -> TLSServerIdentity:
    """A throwaway server CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls-server")
    openssl("req", "-x509", *NEWKEY["p256"], "-nodes", "-keyout", d / "sca.key", "-out", d / "sca.pem",
            "-subj", "/CN=Throwaway Test Server CA", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", *NEWKEY["p256"], "-nodes", "-keyout", d / "srv.key", "-out", d / "srv.csr",
            "-subj", "/CN=localhost")
    (d / "srv.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
    )
    openssl("x509", "-req", "-in", d / "srv.csr", "-CA", d / "sca.pem", "-CAkey", d / "sca.key",
            "-CAcreateserial", "-out", d / "srv.pem", "-days", "2", "-extfile", d / "srv.ext")
    return TLSServerIdentity(d / "sca.pem", d / "srv.pem", d / "srv.key")


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Handshake:
    server_out: str
    client_out: str
    client_rc: int
    message: str

    def __str__(self):
        return f"--- s_server\n{self.server_out[-4000:]}\n--- s_client (exit {self.client_rc})\n{self.client_out[-2500:]}"


def mtls_handshake(server: TLSServerIdentity, trust_bundle: Path, client_cert: Path | None, client_key: Path | None) -> Handshake:
    """One mutual-TLS connection: s_server requires and verifies a client certificate against trust_bundle;
    s_client presents client_cert/client_key, verifies the server, sends one line and closes."""
    message = f"PING-keyline-{os.getpid()}-{time.monotonic_ns()}"
    port = free_port()
    server_proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(server.cert), "-key", str(server.key),
         "-CAfile", str(trust_bundle), "-Verify", "1", "-verify_return_error", "-naccept", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_clean_env(),
    )
    out_lines: list[str] = []
    accepting = threading.Event()

    def reader():
        for raw in server_proc.stdout:
            line = raw.decode("utf-8", "replace")
            out_lines.append(line)
            if line.strip() == "ACCEPT":
                accepting.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        if not accepting.wait(TLS_TIMEOUT):
            pytest.fail("openssl s_server did not start listening:\n" + "".join(out_lines))
        argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(server.ca_pem),
                "-verify_return_error"]
        if client_cert:
            argv += ["-cert", str(client_cert), "-key", str(client_key)]
        client = subprocess.run(argv, input=(message + "\n").encode(), capture_output=True, timeout=TLS_TIMEOUT,
                                env=_clean_env())
        try:
            server_proc.wait(TLS_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if server_proc.poll() is None:
            server_proc.terminate()
            try:
                server_proc.wait(5)
            except subprocess.TimeoutExpired:
                server_proc.kill()
                server_proc.wait(5)
        t.join(5)
    return Handshake("".join(out_lines), (client.stdout + client.stderr).decode("utf-8", "replace"),
                     client.returncode, message)


def assert_mtls_accepts(server, trust_bundle, leaf: Path, key: Path):
    cert = load_cert(leaf)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    h = mtls_handshake(server, trust_bundle, leaf, key)
    # The server really verified the client: the depth-0 verify callback for the leaf returned 1, it printed the
    # client's subject, the handshake finished, and the client's line arrived over the verified session.
    assert re.search(rf"depth=0 [^\n]*CN = {re.escape(cn)}\s*\nverify return:1", h.server_out), h
    assert re.search(rf"subject=[^\n]*CN = {re.escape(cn)}", h.server_out), h
    assert "verify error" not in h.server_out, h
    assert "1 server accepts that finished" in h.server_out, h
    assert h.message in h.server_out, h
    assert h.client_rc == 0, h
    # The certificate s_server received is the one we issued.
    got = pem_certs(h.server_out.encode())
    assert cert in got, h


def assert_mtls_rejects(server, trust_bundle, leaf: Path | None, key: Path | None):
    h = mtls_handshake(server, trust_bundle, leaf, key)
    assert h.message not in h.server_out, f"server accepted data from an unverified client\n{h}"
    assert "1 server accepts that finished" not in h.server_out, h
    return h


# --------------------------------------------------------------------------------------------------------------
# Verifying issued certificates with openssl and pkilint
# --------------------------------------------------------------------------------------------------------------


def openssl_verify_client(root: Path, ca: Path, leaf: Path):
    r = openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", root, "-untrusted", ca, leaf, check=False)
    assert r.rc == 0 and f"{leaf}: OK" in r.out, f"openssl verify failed\n{r}"


def pkilint_clean(ca: Path, leaf: Path):
    r = run([venv_tool("lint_pkix_cert"), "lint", "-s", "WARNING", leaf], check=False, timeout=120)
    assert r.rc == 0 and not r.out.strip(), f"pkilint lint_pkix_cert reported findings\n{r}"
    r = run([venv_tool("lint_pkix_signer_signee_cert_chain"), "lint", "-s", "WARNING", ca, leaf], check=False,
            timeout=120)
    assert r.rc == 0 and not r.out.strip(), f"pkilint lint_pkix_signer_signee_cert_chain reported findings\n{r}"


def public_key_pem_of_cert(cert: Path) -> bytes:
    return openssl("x509", "-in", cert, "-noout", "-pubkey").stdout_bytes


def public_key_pem_of_key(key: Path) -> bytes:
    return openssl("pkey", "-in", key, "-pubout").stdout_bytes


def copy_station(st: Station, dest: Path) -> Station:
    shutil.copytree(st.path, dest, symlinks=True)
    return Station(dest)


def pem_body(pem: bytes) -> bytes:
    """The base64 body of the first PEM block, without line breaks."""
    lines = pem.decode().strip().splitlines()
    return "".join(l for l in lines if not l.startswith("-----")).encode()


def b64decode_pem(pem: bytes) -> bytes:
    return base64.b64decode(pem_body(pem))
