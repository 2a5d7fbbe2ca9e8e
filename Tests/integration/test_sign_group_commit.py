"""`keyline sign` with several CSRs: group commit.

The CSRs are signed in groups of --commit-group (default 64) with one ledger transaction per group. Each CSR is still
judged on its own (a refusal leaves its event and its exit status, the others are issued), and no certificate is
written before the transaction holding its record is durable.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from conftest import (
    EXIT_DATA,
    EXIT_OK,
    EXIT_POLICY,
    EXIT_USAGE,
    Station,
    assert_exit,
    cert_fingerprint,
    cn_attr,
    crypto_csr,
    load_cert,
    openssl,
    openssl_csr,
    openssl_csr_with_key,
)

EXIT_TEMPFAIL = 75


def mixed_batch(station: Station, d: Path) -> tuple[list[Path], set[str], dict[str, str]]:
    """CSRs in command-line order: (paths, CNs that must be issued, {path name: the refusal expected})."""
    d.mkdir(parents=True, exist_ok=True)
    taken, _ = openssl_csr(d / "before", "GRP-TAKEN")
    assert_exit(station.sign(taken, out_dir=d / "before-out"), EXIT_OK)
    garbage = d / "garbage.csr"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n")
    paths, expect_issued, refusals = [garbage], set(), {"garbage.csr": "65"}
    for i in range(1, 10):
        csr, key = openssl_csr(d, f"GRP-{i:03d}")
        paths.append(csr)
        expect_issued.add(f"GRP-{i:03d}")
        if i == 3:
            reuse = openssl_csr_with_key(d, "GRP-REUSED-KEY", key)  # GRP-003's key under another CN
            paths.append(reuse)
            refusals[reuse.name] = "unique-public-key"
        if i == 5:
            twice, _ = openssl_csr(d / "twice", "GRP-001")  # a CN given twice in the same run
            paths.append(twice)
            refusals[twice.name] = "unique-cn"
    again, _ = openssl_csr(d / "again", "GRP-TAKEN")
    spaced = crypto_csr(d / "spaced.csr", [cn_attr("GRP 010")])
    paths += [again, spaced]
    refusals[again.name] = "unique-cn"
    refusals[spaced.name] = "cn"
    return paths, expect_issued, refusals


@pytest.mark.parametrize("group", [None, "1", "4"])
def test_sign_many_judges_each_csr_and_commits_before_writing(station: Station, tmp_path, group):
    paths, expect_issued, refusals = mixed_batch(station, tmp_path / "csr")
    out = tmp_path / "out"
    records_before = station.records_count()
    refused_before = len(station.events("refused"))
    extra = () if group is None else ("--commit-group", group)
    r = station.sign(*paths, out_dir=out, extra=extra)
    # The first failure in command-line order decides the exit status: the malformed CSR comes first.
    assert_exit(r, EXIT_DATA)
    assert f"{len(expect_issued)} signed, {len(refusals)} refused" in r.err
    # One error line per refused CSR, naming its file and its rule.
    errors = [line for line in r.err.splitlines() if line.startswith("keyline: error:")]
    assert len(errors) == len(refusals), r
    for name, rule in refusals.items():
        line = next((e for e in errors if name in e), None)
        assert line is not None, f"no error names {name}\n{r}"
        if rule != "65":
            assert f"error: {rule}:" in line, line
    # Exactly the accepted CSRs have a certificate file, each the one its ledger record holds, valid under the CA.
    written = {p.stem for p in out.iterdir()}
    assert written == expect_issued
    assert station.records_count() == records_before + len(expect_issued)
    with sqlite3.connect(station.ledger_path) as db:
        by_cn = dict(db.execute("SELECT cn, cert_sha256 FROM records"))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(station.root_pem.read_bytes() + station.ca_pem.read_bytes())
    for cn in expect_issued:
        cert_path = out / f"{cn}.pem"
        assert cert_fingerprint(load_cert(cert_path)) == by_cn[cn]
        openssl("verify", "-x509_strict", "-CAfile", chain, cert_path)
    # Each refusal left exactly one event, and the chains verify.
    assert len(station.events("refused")) == refused_before + len(refusals)
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


def test_sign_group_that_cannot_commit_writes_nothing(station: Station, tmp_path):
    paths = [openssl_csr(tmp_path / "csr", f"LOCK-{i}")[0] for i in range(3)]
    out = tmp_path / "out"
    holder = sqlite3.connect(str(station.ledger_path), timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        r = station.sign(*paths, out_dir=out)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_exit(r, EXIT_TEMPFAIL)
    errors = [line for line in r.err.splitlines() if line.startswith("keyline: error:")]
    assert len(errors) == 3 and all("locked" in e for e in errors), r
    assert not out.exists() or list(out.iterdir()) == []
    assert station.records_count() == 0
    # Nothing was half-done: the same CSRs sign afterwards.
    assert_exit(station.sign(*paths, out_dir=out), EXIT_OK)
    assert {p.stem for p in out.iterdir()} == {"LOCK-0", "LOCK-1", "LOCK-2"}


@pytest.mark.parametrize("value", ["0", "1001", "many"])
def test_sign_commit_group_out_of_range_is_a_usage_error(station: Station, tmp_path, value):
    csr, _ = openssl_csr(tmp_path / "csr", "RANGE-1")
    r = station.sign(csr, out_dir=tmp_path / "out", extra=("--commit-group", value))
    assert_exit(r, EXIT_USAGE)
    assert "commit-group" in r.err
    assert station.records_count() == 0


def test_sign_timings_have_latency_and_read_time(station: Station, tmp_path):
    paths = [openssl_csr(tmp_path / "csr", f"TIME-{i}")[0] for i in range(5)]
    timings = tmp_path / "timings.txt"
    assert_exit(station.sign(*paths, out_dir=tmp_path / "out", extra=("--timings", timings, "--commit-group", "2")),
                EXIT_OK)
    rows = [tuple(map(int, line.split())) for line in timings.read_text().splitlines()]
    assert len(rows) == 5 and all(len(row) == 2 for row in rows)
    assert min(at for _, at in rows) == 0, "read times count from the first CSR read"
    assert all(latency > 0 for latency, _ in rows)
    # Groups of 2: the CSRs of a group were read before any of them was written.
    assert rows[0][1] <= rows[1][1] < rows[0][1] + rows[0][0]


@pytest.mark.parametrize("group", [None, "1"])
def test_sign_exit_status_is_the_first_failure_in_command_line_order(station: Station, tmp_path, group):
    """A group reads its files before it signs, so an unreadable file is reported before a refusal that comes
    earlier on the command line; the exit status still follows the command line."""
    extra = () if group is None else ("--commit-group", group)
    spaced = crypto_csr(tmp_path / "spaced.csr", [cn_attr("ORDER 1")])  # refused by policy: 3
    good, _ = openssl_csr(tmp_path / "csr", "ORDER-2")
    missing = tmp_path / "missing.csr"  # does not exist: 65
    r = station.sign(spaced, good, missing, out_dir=tmp_path / "out", extra=extra)
    assert_exit(r, EXIT_POLICY)
    assert "1 signed, 2 refused" in r.err
    again, _ = openssl_csr(tmp_path / "csr2", "ORDER-3")
    r = station.sign(missing, again, spaced, out_dir=tmp_path / "out", extra=extra)
    assert_exit(r, EXIT_DATA)
    assert {p.stem for p in (tmp_path / "out").iterdir()} == {"ORDER-2", "ORDER-3"}


@pytest.mark.parametrize("group", [None, "1"])
def test_sign_directory_signs_its_csr_files_in_name_order(station: Station, tmp_path, group):
    """A directory argument stands for every regular *.csr file directly in it (any case, symbolic links followed),
    in byte order of the names: a batch of thousands needs no command line of thousands of paths. Keys, hidden
    files, subdirectories and FIFOs are not CSRs, whatever their names."""
    d = tmp_path / "incoming"
    for cn in ("DIR-003", "DIR-001", "DIR-a", "DIR-002"):
        openssl_csr(d, cn)  # <CN>-p256.csr beside its <CN>-p256.key
    elsewhere = tmp_path / "elsewhere"
    upper, _ = openssl_csr(elsewhere, "DIR-004")
    upper.rename(d / "DIR-004-p256.CSR")
    linked, _ = openssl_csr(elsewhere, "DIR-B")
    (d / "DIR-B-p256.csr").symlink_to(linked)
    hidden, _ = openssl_csr(elsewhere, "DIR-HIDDEN")
    hidden.rename(d / ".DIR-HIDDEN.csr")
    openssl_csr(d / "nested.csr", "DIR-NESTED")  # a directory named like a CSR
    os.mkfifo(d / "pipe.csr")  # reading it would block
    (d / "README.txt").write_text("not a CSR\n")
    extra = () if group is None else ("--commit-group", group)
    r = station.sign(d, out_dir=tmp_path / "out", extra=extra)
    assert_exit(r, EXIT_OK)
    assert "6 signed, 0 refused" in r.err
    # Byte order of the file names: digits, then upper case, then lower case.
    assert [cn for (cn,) in station.query("SELECT cn FROM records ORDER BY seq")] == [
        "DIR-001", "DIR-002", "DIR-003", "DIR-004", "DIR-B", "DIR-a"]
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        f"{cn}.pem" for cn in ("DIR-001", "DIR-002", "DIR-003", "DIR-004", "DIR-B", "DIR-a")}


def test_sign_directory_without_csr_files_is_a_usage_error(station: Station, tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "notes.txt").write_text("no CSRs here\n")
    (d / "sub.csr").mkdir()
    r = station.sign(d, out_dir=tmp_path / "out")
    assert_exit(r, EXIT_USAGE)
    assert f"the directory {d} holds no *.csr files" in r.err
    assert station.records_count() == 0 and station.events("refused") == []


@pytest.mark.parametrize("as_directory", [True, False])
@pytest.mark.parametrize("option", ["--out", "--hardware-id"])
def test_sign_several_csrs_with_a_one_csr_option_is_a_usage_error(station: Station, tmp_path, option, as_directory):
    d = tmp_path / "two"
    paths = [openssl_csr(d, "OUT-1")[0], openssl_csr(d, "OUT-2")[0]]
    value = tmp_path / "one.pem" if option == "--out" else "HW-1"
    extra = (option, value) if option == "--out" else (option, value, "--out-dir", tmp_path / "out")
    r = station.sign(*([d] if as_directory else paths), extra=extra)
    assert_exit(r, EXIT_USAGE)
    assert f"{option} takes one CSR" in r.err
    assert station.records_count() == 0 and not (tmp_path / "one.pem").exists()
