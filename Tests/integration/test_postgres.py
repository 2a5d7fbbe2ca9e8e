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


def psql(url: str, sql: str) -> str:
    return subprocess.run(["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], check=True,
                          capture_output=True, text=True).stdout


def test_ledger_copy_moves_a_sqlite_station_with_its_chain(tmp_path: Path, database: str):
    """An existing SQLite station moves to PostgreSQL: same records, events and hashes; it carries on from there."""
    st = init_station(tmp_path / "s")
    csrs = tmp_path / "csrs"
    csrs.mkdir()
    for i in range(6):
        assert_exit(st.sign(str(make_csr(csrs, f"SN-{i}")), out_dir=str(tmp_path / "out")), EXIT_OK)
    assert_exit(st.run("ledger", "revoke", "SN-2", "--reason", "scrap"), EXIT_OK)
    before = st.run("ledger", "verify", "--json")
    assert_exit(before, EXIT_OK)
    records_before = json.loads(st.run("ledger", "list", "--json").out)["records"]
    source = f"sqlite:{st.ledger_path}"
    copy = ["ledger", "copy", "--from", source, "--to", database, "--sslmode", "disable"]

    r = st.run(*copy)  # the schema is not there yet
    assert r.rc == EXIT_CONFIG and "run 'keyline ledger migrate'" in r.err, r
    owner = pg_station(tmp_path / "owner", database)
    assert_exit(owner.run("ledger", "migrate"), EXIT_OK)

    r = st.run(*copy)
    assert_exit(r, EXIT_OK)
    sid = st.config()["station_id"]
    assert f"copied station {sid}: 6 records and " in r.out, r
    assert "verified: chain intact; records to seq 6" in r.out and "the same as the source" in r.out, r

    # The station now runs on PostgreSQL: the same chain head, the same records, and it continues at seq 7.
    text = st.toml_path.read_text().replace('ledger = "sqlite:ledger.sqlite"',
                                            f'ledger = "{database}"\nledger_sslmode = "disable"')
    st.toml_path.write_text(text)
    after = st.run("ledger", "verify", "--json")
    assert_exit(after, EXIT_OK)
    b, a = json.loads(before.out), json.loads(after.out)
    assert (a["head_seq"], a["head_hash"], a["records"], a["events"]) == \
        (b["head_seq"], b["head_hash"], b["records"], b["events"])
    assert json.loads(st.run("ledger", "list", "--json").out)["records"] == records_before
    assert_exit(st.sign(str(make_csr(csrs, "SN-NEW")), out_dir=str(tmp_path / "out")), EXIT_OK)
    assert [x["seq"] for x in json.loads(st.run("ledger", "search", "--cn-prefix", "SN-NEW", "--json").out)["records"]] == [7]
    assert_exit(st.run("ledger", "verify"), EXIT_OK)

    # A second copy into the same chain is refused, and changes nothing.
    r = st.run(*copy)
    assert r.rc == 65 and "copied only into an empty chain" in r.err, r
    assert r.err.count("\n") == 1
    assert psql(database, "SELECT count(*) FROM keyline.records").strip() == "7"


def test_ledger_copy_refusals(tmp_path: Path, database: str):
    owner = pg_station(tmp_path / "owner", database)
    assert_exit(owner.run("ledger", "migrate"), EXIT_OK)
    st = init_station(tmp_path / "s")
    csrs = tmp_path / "csrs"
    csrs.mkdir()
    for i in range(3):
        assert_exit(st.sign(str(make_csr(csrs, f"SN-{i}")), out_dir=str(tmp_path / "out")), EXIT_OK)
    # Another station already issued SN-1 in the organization's ledger.
    other = tmp_path / "other"
    other.mkdir()
    assert_exit(owner.sign(str(make_csr(other, "SN-1")), out_dir=str(tmp_path / "out-o")), EXIT_OK)
    base = ["ledger", "copy", "--to", database, "--sslmode", "disable"]
    r = st.run(*base, "--from", f"sqlite:{st.ledger_path}")
    assert r.rc == 65 and "(cn)=(SN-1)" in r.err and "nothing was copied" in r.err, r
    sid = st.config()["station_id"]
    assert psql(database, f"SELECT count(*) FROM keyline.records WHERE chain = '{sid}'").strip() == "0"
    assert psql(database, "SELECT count(*) FROM keyline.stations").strip() == "1", "no row for the refused station"

    r = st.run(*base, "--from", str(st.ledger_path))  # not sqlite:PATH
    assert r.rc == 64 and "--from must be sqlite:PATH" in r.err, r
    r = st.run(*base, "--from", f"sqlite:{tmp_path / 'missing.sqlite'}")
    assert r.rc == 69 and "ledger not found" in r.err, r
    assert not (tmp_path / "missing.sqlite").exists()
    for url in ("postgres://u:s3cr3tPW@h/db", "postgres://u:s3cr3tPW@/db", "postgres://:s3cr3tPW@h"):
        r = st.run("ledger", "copy", "--from", f"sqlite:{st.ledger_path}", "--to", url)
        assert r.rc == EXIT_CONFIG and "must not carry a password" in r.err, r
        assert "s3cr3tPW" not in r.both, r
    r = st.run(*base, "--from", f"sqlite:{st.ledger_path}", "--station-id", "line-9")
    assert r.rc == 64 and f"belong to {sid}" in r.err, r

    # A tampered source is refused before anything is written.
    db = st.db()
    db.execute("DROP TRIGGER IF EXISTS records_no_rewrite")
    db.execute("UPDATE records SET cn = 'SN-X' WHERE seq = 2")
    db.commit()
    db.close()
    r = st.run(*base, "--from", f"sqlite:{st.ledger_path}")
    assert r.rc == 4 and "does not verify (first problem at record seq 2)" in r.err, r


def test_qa_role_reads_and_verifies_every_station_but_cannot_issue(tmp_path: Path, database: str):
    stations = [pg_station(tmp_path / f"s{i}", database) for i in range(2)]
    assert_exit(stations[0].run("ledger", "migrate"), EXIT_OK)
    csrs = tmp_path / "csrs"
    csrs.mkdir()
    for i, st in enumerate(stations):
        for j in range(2 + i):
            assert_exit(st.sign(str(make_csr(csrs, f"SN-{i}-{j}")), out_dir=str(tmp_path / f"out-{i}")), EXIT_OK)
    qa_role = "qa_" + uuid.uuid4().hex[:8]
    psql(database, f"CREATE ROLE {qa_role} LOGIN IN ROLE keyline_qa")
    qa = pg_station(tmp_path / "qa", database.replace("//keyline@", f"//{qa_role}@"))
    assert qa_role in qa.toml_path.read_text()
    ids = [st.config()["station_id"] for st in stations]
    text = qa.toml_path.read_text().replace(f'station_id = "{qa.config()["station_id"]}"', f'station_id = "{ids[1]}"')
    qa.toml_path.write_text(text)

    r = qa.run("ledger", "verify", "--all-stations", "--json")
    assert_exit(r, EXIT_OK)
    report = json.loads(r.out)
    assert report["intact"] and [(s["station_id"], s["records"]) for s in report["stations"]] == \
        sorted([(ids[0], 2), (ids[1], 3)])
    r = qa.run("ledger", "list", "--json")
    assert_exit(r, EXIT_OK)
    assert [x["cn"] for x in json.loads(r.out)["records"]] == ["SN-1-0", "SN-1-1", "SN-1-2"]
    assert_exit(qa.run("ledger", "stats"), EXIT_OK)
    assert_exit(qa.run("ledger", "show", "SN-1-0"), EXIT_OK)
    # The QA role cannot issue: nothing is written.
    r = qa.sign(str(make_csr(tmp_path, "SN-QA")), out_dir=str(tmp_path / "out-qa"))
    assert r.rc != EXIT_OK and "permission denied" in r.err, r
    assert psql(database, "SELECT count(*) FROM keyline.records").strip() == "5"
    # An unknown station is named with the ones there are.
    qa.toml_path.write_text(text.replace(f'station_id = "{ids[1]}"', 'station_id = "line-9"'))
    r = qa.run("ledger", "list")
    assert r.rc == EXIT_CONFIG and "station 'line-9' has no chain" in r.err and ids[0] in r.err, r

    qa.toml_path.write_text(text)

    # A chain edited behind the triggers' back is found, and named.
    psql(database, "ALTER TABLE keyline.records DISABLE TRIGGER records_no_rewrite; "
                   f"UPDATE keyline.records SET cn = 'SN-EDIT' WHERE chain = '{ids[0]}' AND seq = 1")
    r = qa.run("ledger", "verify", "--all-stations")
    assert r.rc == 4 and f"station {ids[0]}: TAMPERED" in r.out and f"station {ids[1]}: intact" in r.out, r
    assert f"failed for station(s) {ids[0]}" in r.err


def test_backup_with_pg_dump_restores_every_chain(tmp_path: Path, database: str):
    """The backup recipe of docs/operations.md: pg_dump of the keyline schema, restored into a new database,
    verifies station by station with the same heads."""
    stations = [pg_station(tmp_path / f"s{i}", database) for i in range(2)]
    assert_exit(stations[0].run("ledger", "migrate"), EXIT_OK)
    csrs = tmp_path / "csrs"
    csrs.mkdir()
    for i, st in enumerate(stations):
        for j in range(3):
            assert_exit(st.sign(str(make_csr(csrs, f"SN-{i}-{j}")), out_dir=str(tmp_path / f"out-{i}")), EXIT_OK)
    before = json.loads(stations[0].run("ledger", "verify", "--all-stations", "--json").out)
    dump = tmp_path / "keyline.dump"
    subprocess.run(["pg_dump", "--format=custom", "--schema=keyline", f"--file={dump}", database], check=True,
                   capture_output=True)
    restored = database.rsplit("/", 1)[0] + "/kl_r_" + uuid.uuid4().hex[:10]
    psql(BASE, f"CREATE DATABASE {restored.rsplit('/', 1)[1]}")
    subprocess.run(["pg_restore", "--exit-on-error", f"--dbname={restored}", str(dump)], check=True,
                   capture_output=True)
    st = stations[1]
    st.toml_path.write_text(st.toml_path.read_text().replace(database, restored))
    r = st.run("ledger", "verify", "--all-stations", "--json")
    assert_exit(r, EXIT_OK)
    after = json.loads(r.out)
    assert after == before and after["intact"] and len(after["stations"]) == 2
    # The append-only triggers came back with it.
    with pytest.raises(subprocess.CalledProcessError) as refused:
        psql(restored, "DELETE FROM keyline.records")
    assert "append-only" in refused.value.stderr
    # The restored ledger still refuses what the original would: a CN station 0 issued.
    other = tmp_path / "other"
    other.mkdir()
    r = st.sign(str(make_csr(other, "SN-0-1")), out_dir=str(tmp_path / "out-x"))
    assert r.rc == EXIT_POLICY and "unique-cn" in r.err, r


def make_tls_material(d: Path) -> tuple[Path, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost (the server's), and an unrelated CA."""
    d.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-keyout", d / f"{name}.key", "-subj", f"/CN=Keyline test {name}", "-out", d / f"{name}.pem")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            d / "server.key", "-subj", "/CN=localhost", "-out", d / "server.csr")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", d / "san.ext", "-out", d / "server.crt")
    return d / "ca.pem", d / "other-ca.pem"


def test_tls_modes_against_a_server_that_requires_tls(tmp_path: Path):
    """ledger_sslmode as documented, against a cluster that refuses plain TCP: verify-full (the default) with the
    server's CA works, with another CA it is refused naming TLS, require works, disable is refused by the server."""
    import tempfile

    repo = Path(__file__).resolve().parents[2]
    certs = Path(tempfile.mkdtemp(prefix="kl-tls-"))
    ca, other_ca = make_tls_material(certs)
    os.chmod(certs, 0o755)
    cluster = Path(tempfile.mkdtemp(prefix="kl-pg-"))
    ctl = [str(repo / "Scripts" / "pg-cluster")]
    env = {**os.environ, "PG_CLUSTER_TLS": str(certs)}
    try:
        url = subprocess.run(ctl + ["start", str(cluster)], check=True, capture_output=True, text=True,
                             env=env).stdout.strip()
        st = init_station(tmp_path / "s")
        plain = st.toml_path.read_text()

        def configure(mode: str | None, ca_file: Path | None):
            lines = [f'ledger = "{url}"']
            if mode:
                lines.append(f'ledger_sslmode = "{mode}"')
            if ca_file:
                lines.append(f'ledger_ca_file = "{ca_file}"')
            st.toml_path.write_text(plain.replace('ledger = "sqlite:ledger.sqlite"', "\n".join(lines)))

        csrs = tmp_path / "csrs"
        csrs.mkdir()
        # verify-full is the default: no ledger_sslmode line at all.
        configure(None, ca)
        assert_exit(st.run("ledger", "migrate"), EXIT_OK)
        assert_exit(st.sign(str(make_csr(csrs, "TLS-1")), out_dir=str(tmp_path / "out")), EXIT_OK)
        # The server's certificate signed by another CA: refused, and the error says it is about TLS.
        configure("verify-full", other_ca)
        r = st.sign(str(make_csr(csrs, "TLS-2")), out_dir=str(tmp_path / "out"))
        assert r.rc == 69 and "TLS: the server's certificate does not verify against ledger_ca_file" in r.err, r
        assert r.err.count("\n") == 1
        # require: encrypted, the certificate not checked.
        configure("require", None)
        assert_exit(st.sign(str(make_csr(csrs, "TLS-3")), out_dir=str(tmp_path / "out")), EXIT_OK)
        # disable: the server refuses a connection without TLS.
        configure("disable", None)
        r = st.sign(str(make_csr(csrs, "TLS-4")), out_dir=str(tmp_path / "out"))
        assert r.rc == 69 and "refused the connection" in r.err and "no encryption" in r.err, r
        configure("require", None)
        r = st.run("ledger", "list", "--json")
        assert_exit(r, EXIT_OK)
        assert [x["cn"] for x in json.loads(r.out)["records"]] == ["TLS-1", "TLS-3"]
    finally:
        subprocess.run(ctl + ["stop", str(cluster)], capture_output=True)
        import shutil
        shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(certs, ignore_errors=True)
