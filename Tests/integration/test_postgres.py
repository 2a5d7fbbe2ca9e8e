"""Many stations, one organization (issue 6): the real keyline against a real PostgreSQL server (the private
cluster Scripts/test starts; its URL is in KEYLINE_TEST_POSTGRES). Each test gets a database of its own."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import EXIT_OK, EXIT_POLICY, EXIT_CONFIG, Station, assert_exit, init_station, openssl

BASE = os.environ.get("KEYLINE_TEST_POSTGRES")


@pytest.fixture
def database() -> str:
    """A fresh database on the test server; its URL."""
    if not BASE:
        pytest.fail("KEYLINE_TEST_POSTGRES is not set: run the suite through Scripts/test, which starts PostgreSQL",
                    pytrace=False)
    name = "kl_" + uuid.uuid4().hex[:12]
    server, _ = BASE.rsplit("/", 1)
    subprocess.run(["psql", BASE, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"{server}/{name}"


def pg_station(path: Path, url: str) -> Station:
    st = init_station(path)
    text = st.toml_path.read_text().replace('ledger = "sqlite:ledger.sqlite"',
                                            f'ledger = "{url}"\nledger_sslmode = "disable"')
    assert url in text
    st.toml_path.write_text(text)
    return st


def make_csr(path: Path, cn: str) -> Path:
    key, csr = path / f"{cn}.key", path / f"{cn}.csr"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
            "-subj", f"/CN={cn}", "-out", csr)
    return csr


def test_migrate_is_explicit_and_stations_share_uniqueness(tmp_path: Path, database: str):
    a = pg_station(tmp_path / "a", database)
    r = a.run("ledger", "list")
    assert r.rc == EXIT_CONFIG and "run 'keyline ledger migrate'" in r.err, r
    r = a.run("ledger", "migrate")
    assert_exit(r, EXIT_OK)
    assert "is at v2: v1, v2" in r.out
    assert_exit(a.run("ledger", "migrate"), EXIT_OK)  # again: nothing to do
    b = pg_station(tmp_path / "b", database)
    csrs = tmp_path / "csrs"
    csrs.mkdir()
    assert_exit(a.sign(str(make_csr(csrs, "dev-1")), out_dir=str(tmp_path / "out-a")), EXIT_OK)
    r = b.sign(str(make_csr(csrs, "dev-1b")), out_dir=str(tmp_path / "out-b"))
    assert_exit(r, EXIT_OK)
    # Station b cannot issue a CN station a issued, whatever the key.
    other = tmp_path / "other"
    other.mkdir()
    r = b.sign(str(make_csr(other, "dev-1")), out_dir=str(tmp_path / "out-b"))
    assert r.rc == EXIT_POLICY and "unique-cn" in r.err and a.config()["station_id"] in r.err, r
    for st, cns in ((a, ["dev-1"]), (b, ["dev-1b"])):
        r = st.run("ledger", "list", "--json")
        assert_exit(r, EXIT_OK)
        assert [x["cn"] for x in json.loads(r.out)["records"]] == cns
        r = st.run("ledger", "verify")
        assert_exit(r, EXIT_OK)
        assert "ledger intact: 1 records" in r.out


def test_four_stations_one_overlapping_list(tmp_path: Path, database: str):
    """Four station processes sign the same 24 CSRs at once: every CN is issued exactly once in total."""
    stations = [pg_station(tmp_path / f"s{i}", database) for i in range(4)]
    assert_exit(stations[0].run("ledger", "migrate"), EXIT_OK)
    csrs = tmp_path / "csrs"
    csrs.mkdir()
    files = [str(make_csr(csrs, f"SN-{i:03d}")) for i in range(24)]

    def sign(i):
        order = files[i * 6:] + files[:i * 6]  # each starts at another place in the list
        return stations[i].sign(*order, out_dir=str(tmp_path / f"out-{i}"))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(sign, range(4)))
    issued = []
    for i, (st, r) in enumerate(zip(stations, results)):
        assert r.rc in (EXIT_OK, EXIT_POLICY), r
        for line in r.err.splitlines():
            assert "unique-cn" in line or "unique-public-key" in line or not line.startswith("keyline: error"), r
        lr = st.run("ledger", "list", "--json")
        assert_exit(lr, EXIT_OK)
        mine = [x["cn"] for x in json.loads(lr.out)["records"]]
        assert [x["seq"] for x in json.loads(lr.out)["records"]] == list(range(1, len(mine) + 1))
        issued += mine
        assert_exit(st.run("ledger", "verify"), EXIT_OK)
        # What a station wrote out is what its ledger holds.
        assert sorted(p.stem for p in (tmp_path / f"out-{i}").glob("*.pem")) == sorted(mine)
    assert sorted(issued) == sorted(f"SN-{i:03d}" for i in range(24))


def test_unreachable_database_is_a_clear_refusal(tmp_path: Path):
    st = pg_station(tmp_path / "s", "postgres://keyline@127.0.0.1:1/nowhere")
    csr = make_csr(tmp_path, "dev-9")
    r = st.sign(str(csr), out_dir=str(tmp_path / "out"))
    assert r.rc == 69, r
    assert "127.0.0.1:1/nowhere does not answer" in r.err and "issuance is refused until it is back" in r.err
    assert r.err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("line, message", [
    ('ledger = "postgres://line1:secret@db/keyline"', "never in station.toml"),
    ('ledger = "postgres://line1@db/keyline"\nledger_sslmode = "maybe"', "ledger_sslmode 'maybe' must be one of"),
    ('ledger = "sqlite:ledger.sqlite"\nledger_sslmode = "disable"', "are for a postgres:// ledger"),
])
def test_ledger_settings_errors(station: Station, line: str, message: str):
    text = station.toml_path.read_text().replace('ledger = "sqlite:ledger.sqlite"', line)
    station.toml_path.write_text(text)
    r = station.run("config", "check")
    assert r.rc == EXIT_CONFIG and message in r.err, r
    assert "secret" not in r.err


def test_outage_fails_devices_cleanly_and_the_daemon_resumes(tmp_path: Path):
    """PostgreSQL stops in the middle of a line run: devices FAIL with the operator's message and an ALARM, nothing
    is issued; it starts again and the same daemon process goes on issuing."""
    import shutil
    import tempfile
    import time
    from test_line import DEVSIM, configure_line, start_daemon

    repo = Path(__file__).resolve().parents[2]
    cluster = Path(tempfile.mkdtemp(prefix="kl-pg-"))
    short = Path(tempfile.mkdtemp(prefix="kl-"))
    ctl = [str(repo / "Scripts" / "pg-cluster")]
    try:
        url = subprocess.run(ctl + ["start", str(cluster)], check=True, capture_output=True, text=True).stdout.strip()
        st = pg_station(tmp_path / "s", url)
        assert_exit(st.run("ledger", "migrate"), EXIT_OK)
        sock = short / "f"
        configure_line(st, {"fx": f'transport = "socket"\naddress = "unix:{sock}"'},
                       daemon_extra="alarm_refusals = 2")
        d = start_daemon(st)
        results = []
        try:
            def device(hw):
                p = subprocess.Popen([str(DEVSIM), "--hardware-id", hw, "--listen", f"unix:{sock}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                p.stdout.readline()
                n = len(d.devices())
                deadline = time.time() + 40
                while len(d.devices()) == n and time.time() < deadline:
                    time.sleep(0.05)
                p.kill()
                p.wait()
                results.append(d.devices()[-1])

            device("UP-1")
            subprocess.run(ctl + ["stop", str(cluster)], check=True)
            device("DOWN-1")
            device("DOWN-2")
            subprocess.run(ctl + ["start", str(cluster)], check=True, capture_output=True)
            device("UP-2")
        finally:
            code, out, err = d.stop()
        assert code == 0, err
        assert [(r["hardware_id"], r["result"]) for r in results] == [
            ("UP-1", "pass"), ("DOWN-1", "fail"), ("DOWN-2", "fail"), ("UP-2", "pass")], results
        for r in results[1:3]:
            assert "does not answer" in r["reason"] and "issuance is refused until it is back" in r["reason"], r
        assert any(e.get("event") == "alarm" for e in d.entries()), "no ALARM when refusals spiked"
        lr = st.run("ledger", "list", "--json")
        assert_exit(lr, EXIT_OK)
        assert [(x["cn"], x["state"]) for x in json.loads(lr.out)["records"]] == [
            ("SN-UP-1", "delivered"), ("SN-UP-2", "delivered")]
        assert_exit(st.run("ledger", "verify"), EXIT_OK)
    finally:
        subprocess.run(ctl + ["stop", str(cluster)], capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(short, ignore_errors=True)
