"""Order and atomicity: reserve -> sign -> commit durably -> only then write.

When the commit fails (disk full, database locked) no certificate file is written and the exit status says which;
when writing fails after the commit, the certificate is in the ledger and can be exported again; an interrupted
batch resumes without losing a key or issuing a CN twice.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from conftest import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    KEYLINE_TIMEOUT,
    assert_exit,
    assert_one_line_error,
    cert_fingerprint,
    init_station,
    load_cert,
    openssl,
    openssl_csr,
    run_keyline,
    spki_der,
)

EXIT_IOERR = 74
EXIT_TEMPFAIL = 75


@pytest.fixture
def tiny_fs(tmp_path):
    """A 512 KiB tmpfs (needs root, as in CI): a disk that really fills up."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(directory: Path, leave: int):
    """Fills the file system holding `directory` until about `leave` bytes remain."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
        f.flush()
        os.fsync(f.fileno())


def test_disk_full_writes_no_certificate_and_exits_74(tiny_fs, tmp_path):
    station = init_station(tiny_fs / "station")
    csr, _ = openssl_csr(tmp_path / "csr", "dev-full")
    out = tmp_path / "out"
    out.mkdir()
    # Room for SQLite's 32 KiB shared-memory index, not for the write-ahead log frames of a commit.
    fill(tiny_fs, leave=36 * 1024)
    r = station.sign(csr, out_dir=out)
    assert_exit(r, EXIT_IOERR)
    reason = assert_one_line_error(r)
    assert "disk full" in reason or "I/O" in reason or "disk I/O" in reason, r
    assert list(out.iterdir()) == [], "no certificate may leave the station when its commit failed"
    assert b"BEGIN CERTIFICATE" not in r.stdout_bytes
    (tiny_fs / "filler").unlink()
    assert station.records_count() == 0
    # With room again, the same CSR signs and the ledger is intact.
    assert_exit(station.sign(csr, out_dir=out), EXIT_OK)
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


def test_locked_database_is_a_temporary_failure(station, tmp_path):
    csr, _ = openssl_csr(tmp_path / "csr", "dev-locked")
    out = tmp_path / "out"
    out.mkdir()
    holder = sqlite3.connect(str(station.ledger_path), timeout=1, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        r = station.sign(csr, out_dir=out)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_exit(r, EXIT_TEMPFAIL)
    assert "locked" in assert_one_line_error(r)
    assert list(out.iterdir()) == []
    assert station.records_count() == 0
    assert_exit(station.sign(csr, out_dir=out), EXIT_OK)


def test_write_failure_after_commit_says_the_certificate_is_in_the_ledger(station, tmp_path):
    csr, _ = openssl_csr(tmp_path / "csr", "dev-unwritable")
    r = station.run("sign", csr, "--out", "/proc/keyline-cannot-write-here.pem")
    assert_exit(r, EXIT_IOERR)
    reason = assert_one_line_error(r)
    assert "IS in the ledger" in reason and "ledger show dev-unwritable --pem" in reason, r
    assert station.records_count() == 1
    again = station.run("ledger", "show", "dev-unwritable", "--pem")
    assert_exit(again, EXIT_OK)
    cert_path = tmp_path / "again.pem"
    cert_path.write_bytes(again.stdout_bytes)
    assert load_cert(cert_path).subject.rfc4514_string() == "CN=dev-unwritable"


def test_missing_ledger_is_unavailable(station, tmp_path):
    station.ledger_path.unlink()
    r = station.run("ledger", "list")
    assert_exit(r, EXIT_UNAVAILABLE)
    assert "ledger not found" in assert_one_line_error(r)


def start_batch_until(station, args, records: int) -> subprocess.Popen:
    """Starts `keyline issue` in the background and returns once the ledger holds `records` (or the batch ended)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLINE_")}
    env["KEYLINE_STATION"] = str(station.path)
    from conftest import KEYLINE_BIN  # the per-session copy

    p = subprocess.Popen([str(KEYLINE_BIN), *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + KEYLINE_TIMEOUT
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if station.records_count() >= records:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.01)
    return p


def test_killed_batch_resumes_without_losing_keys_or_doubling_cns(station, tmp_path):
    out = tmp_path / "batch"
    args = ["issue", "--count", "600", "--cn-template", "K-{seq:04}", "--chunk", "50", "--out", out]
    # Kill it once at least two chunks are committed, mid-run.
    p = start_batch_until(station, args, 100)
    if p.poll() is not None:
        pytest.fail("the batch finished before it could be interrupted; make it larger")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    committed = station.records_count()
    assert 0 < committed < 600

    r = station.run(*args)
    assert_exit(r, EXIT_OK)
    assert "resuming" in r.err
    assert station.records_count() == 600
    assert not list(out.glob("*.partial")), "staged keys must be completed or replaced"
    rows = (out / "index.csv").read_text().splitlines()
    assert len(rows) == 601
    # Every certificate's key is on disk and matches; no CN was issued twice.
    cns = [row.split(",")[0] for row in rows[1:]]
    assert len(set(cns)) == 600
    for cn in cns:  # every one: chunks are written while the next commits, so a kill can split any of them
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key((out / f"{cn}.key").read_bytes(), None)
        cert = load_cert(out / f"{cn}.pem")
        assert spki_der(key.public_key()) == spki_der(cert.public_key()), cn
        assert oct((out / f"{cn}.key").stat().st_mode & 0o777) == "0o600"
    # index.csv describes each certificate on disk, whether this run or the killed one issued it.
    for row in rows[1:]:
        cn, serial, fingerprint = row.split(",")[:3]
        cert = load_cert(out / f"{cn}.pem")
        assert (int(serial, 16), fingerprint) == (cert.serial_number, cert_fingerprint(cert)), cn
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


def test_batch_failing_mid_run_leaves_only_keys_of_committed_chunks(station, tmp_path):
    """The next chunk's keys are staged while a chunk commits; when that commit fails, neither chunk leaves a key."""
    out = tmp_path / "batch"
    # Large enough that the batch is still running when the test takes the lock (after its first commit).
    args = ["issue", "--count", "4000", "--cn-template", "L-{seq:04}", "--chunk", "1000", "--out", out]
    # Chunks of at most 1,000 ramp up and down (ChunkPlan): 250, 500, 834, 833, 833, 500, 250.
    commits = [250, 500, 834, 833, 833, 500, 250]
    p = start_batch_until(station, args, 250)
    if p.poll() is not None:
        pytest.fail("the batch finished before the ledger could be locked; make it larger")
    # Take the write lock between two commits and keep it until the batch gives up (its busy timeout is 5 s).
    holder = sqlite3.connect(str(station.ledger_path), timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        _, err = p.communicate(timeout=KEYLINE_TIMEOUT)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert p.returncode == EXIT_TEMPFAIL, err.decode()
    assert "locked" in err.decode()
    committed = station.records_count()
    assert 250 <= committed < 4000
    assert committed in {sum(commits[:n]) for n in range(1, len(commits))}, f"{committed}: chunks commit whole"
    in_ledger = {row[0] for row in sqlite3.connect(str(station.ledger_path)).execute("SELECT cn FROM records")}
    on_disk = {f.name.split(".")[0] for f in out.iterdir() if f.name.endswith((".key", ".key.partial"))}
    # The chunk that failed and the one staged behind it took their keys back.
    assert on_disk == in_ledger
    assert not list(out.glob("*.partial"))

    r = station.run(*args)
    assert_exit(r, EXIT_OK)
    assert station.records_count() == 4000
    assert len(list(out.glob("*.key"))) == 4000
    # index.csv: the chunks committed before the lock (found in the ledger) and those of the rerun, in order.
    rows = (out / "index.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == [f"L-{i:04d}" for i in range(1, 4001)]
    for row in rows[:: 7]:
        cn, serial, fingerprint = row.split(",")[:3]
        cert = load_cert(out / f"{cn}.pem")
        assert (int(serial, 16), fingerprint) == (cert.serial_number, cert_fingerprint(cert)), cn
    assert_exit(station.run("ledger", "verify"), EXIT_OK)
