"""keyline-devsim (issue 4, first part): a simulated device speaking protocol v1 over a Unix socket, TCP and a
pseudo-terminal. Python plays the station: the certificate comes from the real `keyline sign`, and the device's
read-back must match the ledger's record."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tty
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import REPO, EXIT_OK, Station, assert_exit, openssl

DEVSIM = Path(os.environ.get("KEYLINE_DEVSIM_BIN") or REPO / ".build" / "debug" / "keyline-devsim")


class Wire:
    """The station's side of protocol v1 over a socket or a tty file descriptor."""

    def __init__(self, recv, send):
        self.recv, self.send_bytes, self.buf = recv, send, b""

    def _fill(self):
        chunk = self.recv()
        if not chunk:
            raise EOFError("device closed the connection")
        self.buf += chunk

    def line(self) -> str:
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("ascii")

    def payload(self, n: int, digest: str) -> bytes:
        while len(self.buf) < n + 1:
            self._fill()
        body, term, self.buf = self.buf[:n], self.buf[n:n + 1], self.buf[n + 1:]
        assert term == b"\n", "payload not followed by a line break"
        assert hashlib.sha256(body).hexdigest().upper() == digest.upper(), "payload checksum"
        return body

    def ask(self, text: str, payload: bytes | None = None) -> tuple[list[str], bytes | None]:
        data = text.encode()
        if payload is not None:
            data += b" +%d %s" % (len(payload), hashlib.sha256(payload).hexdigest().upper().encode())
        self.send_bytes(data + b"\n" + (payload + b"\n" if payload is not None else b""))
        words = self.line().split()
        if len(words) >= 2 and words[-2].startswith("+"):
            return words[:-2], self.payload(int(words[-2][1:]), words[-1])
        return words, None


def fields(words):
    return dict(w.split("=", 1) for w in words if "=" in w)


def start(tmp_path: Path, *args) -> tuple[subprocess.Popen, str]:
    if not DEVSIM.is_file():
        pytest.fail(f"{DEVSIM} not built (swift build)", pytrace=False)
    p = subprocess.Popen([str(DEVSIM), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    where = p.stdout.readline().decode().strip()
    assert where, p.stderr.read().decode()
    return p, where


def connect_unix(path: str) -> tuple[Wire, socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return Wire(lambda: s.recv(65536), s.sendall), s


def provision(st: Station, wire: Wire, tmp_path: Path, cn: str) -> tuple[bytes, list[str]]:
    """The station's exchange for a device that makes its key; returns the leaf DER and the read-back words."""
    assert wire.ask("HELLO keyline/1")[0] == ["OK", "HELLO", "keyline/1"]
    ident = fields(wire.ask("IDENTIFY")[0])
    assert ident["keygen"] == "yes"
    words, csr = wire.ask(f"CSR cn={cn}")
    assert words == ["OK", "CSR"] and csr.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    csr_path = tmp_path / f"{cn}.csr"
    csr_path.write_bytes(csr)
    out = tmp_path / f"{cn}.pem"
    assert_exit(st.run("sign", csr_path, "--out", out, "--chain", "--hardware-id", ident["hw"]), EXIT_OK)
    pem = out.read_bytes()
    assert wire.ask("STORE-CERT", pem)[0] == ["OK", "STORED"]
    leaf = x509.load_pem_x509_certificate(pem)
    return leaf.public_bytes(serialization.Encoding.DER), wire.ask("READBACK")[0]


def test_device_over_a_unix_socket_stores_what_the_station_issued(station: Station, tmp_path):
    devices = tmp_path / "devices"
    p, path = start(tmp_path, "--hardware-id", "HW-0009", "--dir", devices, "--listen", f"unix:{tmp_path / 'fx.sock'}")
    try:
        wire, s = connect_unix(path)
        der, readback = provision(station, wire, tmp_path, "SN-0009")
        got = fields(readback)
        record = station.query("SELECT cert_sha256, pubkey_sha256, hardware_id FROM records WHERE cn = 'SN-0009'")[0]
        assert got["cert"] == hashlib.sha256(der).hexdigest().upper() == record[0]
        assert got["pubkey"] == record[1] and record[2] == "HW-0009"
        stored = devices / "HW-0009" / "cert.pem"
        openssl("verify", "-x509_strict", "-CAfile", station.root_pem, "-untrusted", station.ca_pem, stored)
        assert wire.ask("LOCK")[0] == ["OK", "LOCKED"]
        assert wire.ask("STORE-CERT", stored.read_bytes())[0][:2] == ["ERR", "LOCKED"]
        s.close()
    finally:
        p.kill()
        p.wait()


def test_device_on_a_pseudo_terminal(station: Station, tmp_path):
    p, tty_path = start(tmp_path, "--hardware-id", "HW-PTY", "--dir", tmp_path / "devices", "--pty")
    try:
        fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        wire = Wire(lambda: os.read(fd, 65536), lambda b: os.write(fd, b))
        der, readback = provision(station, wire, tmp_path, "SN-PTY")
        assert fields(readback)["cert"] == hashlib.sha256(der).hexdigest().upper()
        assert wire.ask("PING")[0] == ["OK", "PONG"]
        os.close(fd)
    finally:
        p.kill()
        p.wait()


def test_misbehaving_devices(station: Station, tmp_path):
    # A wrong read-back: the station must not mark such a device delivered.
    p, path = start(tmp_path, "--hardware-id", "HW-BAD", "--listen", f"unix:{tmp_path / 'bad.sock'}", "--wrong-readback")
    try:
        wire, s = connect_unix(path)
        der, readback = provision(station, wire, tmp_path, "SN-BAD")
        assert fields(readback)["cert"] != hashlib.sha256(der).hexdigest().upper()
        s.close()
    finally:
        p.kill()
        p.wait()
    # Pulled mid-write: the connection drops at STORE-CERT and nothing is stored.
    devices = tmp_path / "devices"
    p, path = start(tmp_path, "--hardware-id", "HW-CUT", "--dir", devices, "--listen", f"unix:{tmp_path / 'cut.sock'}",
                    "--disconnect-mid-write")
    try:
        wire, s = connect_unix(path)
        with pytest.raises(EOFError):
            provision(station, wire, tmp_path, "SN-CUT")
        assert not (devices / "HW-CUT" / "cert.pem").exists()
        s.close()
    finally:
        p.kill()
        p.wait()


def test_device_over_tcp_without_key_generation(tmp_path):
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    p, where = start(tmp_path, "--hardware-id", "HW-NOKEY", "--listen", f"tcp:{port}", "--no-keygen")
    try:
        assert where == f"127.0.0.1:{port}"
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        wire = Wire(lambda: s.recv(65536), s.sendall)
        assert wire.ask("IDENTIFY")[0][:2] == ["ERR", "STATE"]  # HELLO comes first
        assert wire.ask("HELLO keyline/2")[0][:2] == ["ERR", "VERSION"]
        assert wire.ask("HELLO keyline/1")[0] == ["OK", "HELLO", "keyline/1"]
        assert fields(wire.ask("IDENTIFY")[0])["keygen"] == "no"
        assert wire.ask("CSR cn=SN-1")[0][:2] == ["ERR", "NOKEYGEN"]
        assert wire.ask("FLY")[0][:2] == ["ERR", "UNKNOWN"]
        s.close()
    finally:
        p.kill()
        p.wait()


def test_devsim_usage_errors(tmp_path):
    r = subprocess.run([str(DEVSIM), "--hardware-id", "x"], capture_output=True, timeout=30)
    assert r.returncode == 64 and b"exactly one of --listen" in r.stderr
