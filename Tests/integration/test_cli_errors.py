"""Exit statuses outside issuance policy: usage (64), configuration (78), unavailable ledger (69), locked (75)."""

import os
import sqlite3
from contextlib import closing

import pytest

from conftest import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    RefusalCheck,
    Station,
    assert_exit,
    assert_one_line_error,
    openssl_csr,
)

EXIT_TEMPFAIL = 75


def refused_sign(st: Station, tmp_path, status, *extra):
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-CFG-1")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    check = RefusalCheck(st, out)
    r = st.sign(csr, out_dir=out, extra=extra)
    assert_exit(r, status)
    assert_one_line_error(r)
    check.check(r, refused_event=False)
    return r


def test_unknown_profile_is_config_error(station: Station, tmp_path):
    refused_sign(station, tmp_path, EXIT_CONFIG, "--profile", "no-such-profile")


def test_profile_naming_unknown_ca_is_config_error(station: Station, tmp_path):
    station.add_profile("ghost", ca="no-such-ca")
    refused_sign(station, tmp_path, EXIT_CONFIG, "--profile", "ghost")


def test_unknown_top_level_key_in_station_toml_is_config_error(station: Station, tmp_path):
    station.toml_path.write_text("colour_of_the_station = \"red\"\n" + station.toml_path.read_text())
    station.config()  # still valid TOML, just an unknown key
    r = station.run("ledger", "list")
    assert_exit(r, EXIT_CONFIG)
    assert_one_line_error(r)
    refused_sign(station, tmp_path, EXIT_CONFIG)


def test_unknown_profile_key_is_config_error(station: Station, tmp_path):
    station.add_profile("typo", validty_days=30)
    refused_sign(station, tmp_path, EXIT_CONFIG, "--profile", "typo")


def test_unparsable_station_toml_is_config_error(station: Station):
    station.toml_path.write_text(station.toml_path.read_text() + "\n[profiles.broken\nca = \n")
    r = station.run("ledger", "list")
    assert_exit(r, EXIT_CONFIG)
    assert_one_line_error(r)


def test_missing_ledger_is_unavailable(station: Station):
    os.unlink(station.ledger_path)
    r = station.run("ledger", "list")
    assert_exit(r, EXIT_UNAVAILABLE)
    assert_one_line_error(r)


@pytest.mark.parametrize(
    "args",
    [["sign"], ["no-such-command"], ["init"], ["sign", "x.csr", "--no-such-flag"], ["issue", "DEV-1"]],
    ids=["sign-without-csr", "unknown-command", "init-without-dir", "unknown-flag", "issue-without-out"],
)
def test_usage_errors_exit_64(station: Station, args):
    before = station.records()
    r = station.run(*args)
    assert_exit(r, EXIT_USAGE)
    assert r.err.strip(), "a usage error explains itself on stderr"
    assert station.records() == before


def test_locked_ledger_is_temporary_failure(station: Station, tmp_path):
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-LOCKED-1")
    out = tmp_path / "out"
    out.mkdir()
    check = RefusalCheck(station, out)
    with closing(sqlite3.connect(str(station.ledger_path), timeout=1, isolation_level=None)) as c:
        c.execute("BEGIN EXCLUSIVE")
        try:
            r = station.sign(csr, out_dir=out)
        finally:
            c.execute("ROLLBACK")
    assert_exit(r, EXIT_TEMPFAIL)
    assert_one_line_error(r)
    check.check(r, refused_event=False)
