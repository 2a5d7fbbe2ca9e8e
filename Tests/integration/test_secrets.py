"""The CA passphrase never leaves its file: not on stdout/stderr of any command (even failing, even --verbose),
not in the ledger, not in any other file of the station."""

import os

from conftest import (
    EXIT_CONFIG,
    EXIT_KEY_GUARD,
    EXIT_OK,
    EXIT_POLICY,
    Station,
    assert_exit,
    openssl_csr,
    run_keyline,
)


def forms(secret: bytes):
    return [secret, secret.hex().encode(), secret.hex().upper().encode()]


def test_passphrase_never_printed_or_stored(keyline_bin, tmp_path):
    results = []
    init = run_keyline(["init", tmp_path / "station"], cwd=tmp_path)
    assert_exit(init, EXIT_OK)
    results.append(init)
    st = Station(tmp_path / "station")
    pw = st.passphrase
    assert len(pw) >= 8

    def go(expect, *args, **kw):
        r = st.run(*args, **kw)
        assert_exit(r, expect)
        results.append(r)
        return r

    a, _ = openssl_csr(tmp_path / "csr", "DEV-SECRET-A")
    b, _ = openssl_csr(tmp_path / "csr", "DEV-SECRET-B")
    out = tmp_path / "out"
    out.mkdir()
    go(EXIT_OK, "sign", a)
    go(EXIT_OK, "sign", "--verbose", b, "--out-dir", out, "--chain")
    go(EXIT_OK, "issue", "--verbose", "DEV-SECRET-C", "--out", out)
    go(EXIT_OK, "issue", "--count", "3", "--cn-template", "SEC-{seq:06}", "--out", out / "batch")
    go(EXIT_POLICY, "sign", "--verbose", a)  # duplicate CN
    go(EXIT_CONFIG, "sign", "--verbose", b, "--profile", "no-such-profile")
    for args in (["ledger", "list"], ["ledger", "list", "--json"], ["ledger", "show", "DEV-SECRET-A", "--json"],
                 ["ledger", "verify"], ["ledger", "verify", "--json"], ["ca", "show"], ["ca", "show", "--json"]):
        go(EXIT_OK, *args)

    # failing key guard, loudly
    c, _ = openssl_csr(tmp_path / "csr", "DEV-SECRET-D")
    os.chmod(st.passphrase_file, 0o640)
    go(EXIT_KEY_GUARD, "sign", "--verbose", c)
    os.chmod(st.passphrase_file, 0o600)
    os.chmod(st.ca_key, 0o644)
    go(EXIT_KEY_GUARD, "sign", "--verbose", c)
    os.chmod(st.ca_key, 0o600)
    go(EXIT_OK, "sign", c)

    for r in results:
        for f in forms(pw):
            assert f not in r.stdout_bytes and f not in r.stderr_bytes, f"the passphrase was printed by\n{r}"

    assert pw not in st.ledger_bytes(), "the passphrase is in the ledger"
    for p in list(st.path.rglob("*")) + list(out.rglob("*")):
        if p.is_file() and p != st.passphrase_file:
            data = p.read_bytes()
            for f in forms(pw):
                assert f not in data, f"the passphrase is in {p}"


def test_wrong_passphrase_is_not_echoed(station: Station, tmp_path):
    wrong = b"Wr0ng-Passphrase-With-A-Distinctive-Tail-9731"
    real = station.passphrase
    station.passphrase_file.write_bytes(wrong + b"\n")
    os.chmod(station.passphrase_file, 0o600)
    csr, _ = openssl_csr(tmp_path, "DEV-WRONG-PW")
    r = station.run("sign", "--verbose", csr)
    assert_exit(r, EXIT_KEY_GUARD)
    for f in forms(wrong) + forms(real):
        assert f not in r.stdout_bytes + r.stderr_bytes, r
