"""QA's ledger beyond reconcile (issue 5): rework and scrap (revoke, --reissue, the revocations export), signed
checkpoints that make truncation of the newest records detectable, stats and search."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from conftest import (
    EXIT_DATA,
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_POLICY,
    EXIT_USAGE,
    RefusalCheck,
    Station,
    assert_exit,
    assert_one_line_error,
    cert_fingerprint,
    load_cert,
    openssl,
    openssl_csr,
)


def issue(st: Station, out: Path, *cns, extra=()):
    assert_exit(st.run("issue", *cns, "--out", out, *extra), EXIT_OK)


def record(st: Station, cn: str):
    r = st.run("ledger", "show", cn, "--json")
    assert_exit(r, EXIT_OK)
    return json.loads(r.out)


def drop_triggers(st: Station):
    with closing(sqlite3.connect(st.ledger_path)) as db:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        db.commit()


# --- revoke ----------------------------------------------------------------------------------------------------

def test_revoke_marks_the_record_and_leaves_an_event(station: Station, tmp_path):
    issue(station, tmp_path / "b", "dev-1", "dev-2")
    r = station.run("ledger", "revoke", "dev-1", "--reason", "rework", "--note", "RMA 4471, board replaced",
                    "--operator", "qa-anna")
    assert_exit(r, EXIT_OK)
    shown = record(station, "dev-1")
    assert shown["record"]["state"] == "revoked"
    revoked = [e for e in shown["events"] if e["kind"] == "revoked"]
    assert len(revoked) == 1
    assert revoked[0]["detail"] == "reason rework; note: RMA 4471, board replaced"
    assert revoked[0]["operator"] == "qa-anna"
    assert record(station, "dev-2")["record"]["state"] == "issued"
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


@pytest.mark.parametrize("args, status, fragment", [
    (["dev-1", "--reason", "lost"], EXIT_USAGE, "--reason must be one of rework, scrap, compromised, superseded"),
    (["dev-1", "--reason", "scrap", "--note", "two\nlines"], EXIT_USAGE, "one line"),
    (["nobody", "--reason", "scrap"], EXIT_DATA, "no certificate for CN 'nobody'"),
])
def test_revoke_refusals_change_nothing(station: Station, tmp_path, args, status, fragment):
    issue(station, tmp_path / "b", "dev-1")
    before = station.records()
    events_before = station.events()
    r = station.run("ledger", "revoke", *args)
    assert_exit(r, status)
    assert_one_line_error(r)
    assert fragment in r.err
    assert station.records() == before and station.events() == events_before


def test_revoked_is_final(station: Station, tmp_path):
    issue(station, tmp_path / "b", "dev-1")
    assert_exit(station.run("ledger", "revoke", "dev-1", "--reason", "scrap"), EXIT_OK)
    before, events_before = station.records(), station.events()
    r = station.run("ledger", "revoke", "dev-1", "--reason", "compromised")
    assert_exit(r, EXIT_DATA)
    assert_one_line_error(r)
    assert "is revoked and cannot become revoked" in r.err
    assert station.records() == before and station.events() == events_before


# --- re-issue --------------------------------------------------------------------------------------------------

def test_reissue_after_rework_is_explicit_and_recorded(station: Station, tmp_path):
    first_csr, _ = openssl_csr(tmp_path, "dev-7")
    first = station.sign_ok(first_csr, tmp_path / "out1")
    # Not revoked yet: --reissue is refused and says how to revoke.
    (tmp_path / "k2").mkdir()
    second_csr, _ = openssl_csr(tmp_path / "k2", "dev-7")
    check = RefusalCheck(station)
    r = station.sign(second_csr, out_dir=tmp_path / "out2", extra=["--reissue"])
    check.check(r)
    assert r.rc == EXIT_POLICY and "reissue" in r.err and "keyline ledger revoke dev-7" in r.err
    assert_exit(station.run("ledger", "revoke", "dev-7", "--reason", "rework"), EXIT_OK)
    # Revoked, but without --reissue: refused, with the hint.
    check = RefusalCheck(station)
    r = station.sign(second_csr, out_dir=tmp_path / "out2")
    check.check(r)
    assert r.rc == EXIT_POLICY and "unique-cn" in r.err and "--reissue" in r.err
    # With --reissue: a new record that names the one it replaces.
    second = station.sign_ok(second_csr, tmp_path / "out3", extra=["--reissue"])
    rows = station.query("SELECT seq, state, reissue_of, cert_sha256 FROM records WHERE cn = 'dev-7' ORDER BY seq")
    assert [(s, st, ro) for s, st, ro, _ in rows] == [(1, "revoked", None), (2, "issued", 1)]
    assert rows[0][3] == cert_fingerprint(load_cert(first))
    assert rows[1][3] == cert_fingerprint(load_cert(second))
    issued = station.events("issued")
    assert issued[-1][2] == 2 and "re-issue of seq 1" in issued[-1][4]
    shown = record(station, "dev-7")
    assert shown["record"]["seq"] == 2 and shown["record"]["state"] == "issued"
    assert shown["record"]["reissue_of"] == 1
    assert [(e["seq"], e["state"]) for e in shown["earlier"]] == [(1, "revoked")]
    human = station.run("ledger", "show", "dev-7")
    assert "re-issue of  seq 1" in human.out and "earlier      seq 1 (revoked" in human.out
    assert_exit(station.run("ledger", "verify"), EXIT_OK)
    # The chain covers the link: moving it to another record is detected.
    drop_triggers(station)
    with closing(station.db()) as db:
        db.execute("UPDATE records SET reissue_of = NULL WHERE seq = 2")
        db.commit()
    r = station.run("ledger", "verify")
    assert_exit(r, EXIT_INTEGRITY)
    assert "record seq 2" in r.err


def test_reissue_of_a_cn_never_issued_is_refused(station: Station, tmp_path):
    csr, _ = openssl_csr(tmp_path, "fresh-1")
    check = RefusalCheck(station)
    r = station.sign(csr, out_dir=tmp_path / "out", extra=["--reissue"])
    check.check(r)
    assert r.rc == EXIT_POLICY and "never issued" in r.err


def test_issue_reissue_for_station_made_keys(station: Station, tmp_path):
    issue(station, tmp_path / "b1", "gw-1", "gw-2")
    assert_exit(station.run("ledger", "revoke", "gw-1", "--reason", "rework"), EXIT_OK)
    r = station.run("issue", "gw-1", "--out", tmp_path / "b2")
    assert r.rc == EXIT_POLICY and "--reissue" in r.err
    issue(station, tmp_path / "b2", "gw-1", extra=["--reissue"])
    new_cert = load_cert(tmp_path / "b2" / "gw-1.pem")
    assert record(station, "gw-1")["record"]["fingerprint"] == cert_fingerprint(new_cert)
    # index.csv lists the new certificate, not the revoked one the run found in the ledger first.
    rows = (tmp_path / "b2" / "index.csv").read_text().splitlines()
    assert len(rows) == 2
    cn, serial, fingerprint = rows[1].split(",")[:3]
    assert (cn, int(serial, 16), fingerprint) == ("gw-1", new_cert.serial_number, cert_fingerprint(new_cert))
    # gw-2 is not revoked: --reissue refuses it, naming the revoke command.
    r = station.run("issue", "gw-2", "--out", tmp_path / "b3", "--reissue")
    assert r.rc == EXIT_POLICY and "revoke it first" in r.err


# --- revocations export ------------------------------------------------------------------------------------------

def test_manifest_revocations_lists_what_to_deactivate(station: Station, tmp_path):
    issue(station, tmp_path / "b", "r-1", "r-2", "r-3")
    assert_exit(station.run("ledger", "revoke", "r-1", "--reason", "scrap", "--note", "dropped"), EXIT_OK)
    assert_exit(station.run("ledger", "revoke", "r-3", "--reason", "compromised"), EXIT_OK)
    r = station.run("manifest", "revocations")
    assert_exit(r, EXIT_OK)
    assert r.out.splitlines()[0] == '"identifier","fingerprint","serial","ca","reason","note","revoked_at","ledger_seq","event_seq"'
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [x["identifier"] for x in rows] == ["r-1", "r-3"]
    assert rows[0]["reason"] == "scrap" and rows[0]["note"] == "dropped"
    assert rows[1]["reason"] == "compromised" and rows[1]["note"] == ""
    assert rows[0]["fingerprint"] == cert_fingerprint(load_cert(tmp_path / "b" / "r-1.pem"))
    assert rows[0]["serial"] == record(station, "r-1")["record"]["serial"]
    # --since after both: none; JSON to a file that is never replaced
    r = station.run("manifest", "revocations", "--since", "2999-01-01")
    assert_exit(r, EXIT_OK)
    assert list(csv.DictReader(io.StringIO(r.out))) == []
    out = tmp_path / "rev.json"
    assert_exit(station.run("manifest", "revocations", "--format", "json", "--out", out), EXIT_OK)
    revocations = json.loads(out.read_text())["revocations"]
    assert [x["identifier"] for x in revocations] == ["r-1", "r-3"]
    assert revocations[1]["note"] is None and revocations[0]["note"] == "dropped"
    r = station.run("manifest", "revocations", "--out", out)
    assert r.rc == 74 and "already exists" in r.err


# --- checkpoints -------------------------------------------------------------------------------------------------

def test_truncating_the_newest_records_after_a_checkpoint_is_detected(station: Station, tmp_path):
    issue(station, tmp_path / "b", *[f"t-{i}" for i in range(10)])
    cp = tmp_path / "qa" / "line.checkpoint"
    cp.parent.mkdir()
    assert_exit(station.run("ledger", "checkpoint", "--out", cp), EXIT_OK)
    text = cp.read_text()
    assert text.startswith("keyline-checkpoint v1\n") and "records_seq: 10\n" in text
    # The station key's signature checks with openssl too.
    body, sig = text.split("signature: ")
    (tmp_path / "body").write_text(body)
    import base64
    (tmp_path / "sig").write_bytes(base64.b64decode(sig.strip()))
    openssl("dgst", "-sha256", "-verify", station.path / "station-signing.pem", "-signature", tmp_path / "sig",
            tmp_path / "body")
    # More issuance after the checkpoint is fine.
    issue(station, tmp_path / "b2", "t-10")
    r = station.run("ledger", "verify", "--checkpoint", cp, "--public-key", station.path / "station-signing.pem")
    assert_exit(r, EXIT_OK)
    assert "checkpoint holds" in r.out and "1 records" in r.out
    # Someone removes the newest four records (t-7 … t-10), triggers first: the chain alone still verifies...
    drop_triggers(station)
    with closing(station.db()) as db:
        db.execute("DELETE FROM records WHERE seq > 7")
        db.commit()
    assert_exit(station.run("ledger", "verify"), EXIT_OK)
    # ...but the checkpoint shows the loss and how much.
    r = station.run("ledger", "verify", "--checkpoint", cp)
    assert_exit(r, EXIT_INTEGRITY)
    assert_one_line_error(r)
    assert "missing 3 record(s)" in r.err
    j = json.loads(station.run("ledger", "verify", "--checkpoint", cp, "--json").out)
    assert j["intact"] is False and j["checkpoint"]["missing_records"] == 3


def test_rewritten_history_and_edited_or_foreign_checkpoints_fail(station: Station, tmp_path):
    issue(station, tmp_path / "b", "c-1", "c-2")
    cp = tmp_path / "c.checkpoint"
    assert_exit(station.run("ledger", "checkpoint", "--out", cp), EXIT_OK)
    # An edited checkpoint: the signature fails.
    edited = tmp_path / "edited.checkpoint"
    edited.write_text(cp.read_text().replace("records_seq: 2", "records_seq: 1"))
    r = station.run("ledger", "verify", "--checkpoint", edited)
    assert_exit(r, EXIT_INTEGRITY)
    assert "signature does not verify" in r.err
    # Another key: fails.
    other = Station(tmp_path / "other")
    from conftest import init_station
    other = init_station(tmp_path / "other")
    r = station.run("ledger", "verify", "--checkpoint", cp, "--public-key", other.path / "station-signing.pem")
    assert_exit(r, EXIT_INTEGRITY)
    # Not a checkpoint at all: bad data.
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    r = station.run("ledger", "verify", "--checkpoint", junk)
    assert_exit(r, EXIT_DATA)
    # A station's checkpoint on another station: refused as data.
    r = other.run("ledger", "verify", "--checkpoint", cp, "--public-key", station.path / "station-signing.pem")
    assert_exit(r, EXIT_DATA)
    assert "not of this station" in r.err
    # Last record replaced wholesale (content and hash recomputed elsewhere): the checkpoint's hash differs.
    drop_triggers(station)
    with closing(station.db()) as db:
        db.execute("UPDATE records SET hash = '" + "A" * 64 + "' WHERE seq = 2")
        db.commit()
    r = station.run("ledger", "verify", "--checkpoint", cp)
    assert_exit(r, EXIT_INTEGRITY)


def test_every_manifest_export_carries_a_checkpoint(station: Station, tmp_path):
    station.add_jitp_profile("gw")
    issue(station, tmp_path / "b", "m-1", "m-2", extra=["--profile", "gw"])
    out = tmp_path / "devices.csv"
    assert_exit(station.run("manifest", "devices", "--out", out), EXIT_OK)
    cp = Path(str(out) + ".checkpoint")
    assert "records_seq: 2\n" in cp.read_text()
    assert_exit(station.run("ledger", "verify", "--checkpoint", cp), EXIT_OK)
    assert len(station.events("checkpoint")) == 1


# --- stats and search ------------------------------------------------------------------------------------------------

def test_stats_counts_by_every_dimension(station: Station, tmp_path):
    station.add_profile("line2")
    issue(station, tmp_path / "a", "s-1", "s-2", "s-3", extra=["--work-order", "WO-1"])
    issue(station, tmp_path / "b", "s-4", extra=["--profile", "line2"])
    assert_exit(station.run("ledger", "revoke", "s-2", "--reason", "scrap"), EXIT_OK)
    csr, _ = openssl_csr(tmp_path, "s-1")
    assert station.sign(csr, out_dir=tmp_path / "c").rc == EXIT_POLICY  # unique-cn
    (tmp_path / "x").mkdir()
    bad, _ = openssl_csr(tmp_path / "x", "bad name")
    assert station.sign(bad, out_dir=tmp_path / "c").rc == EXIT_POLICY  # cn-pattern
    r = station.run("ledger", "stats", "--json")
    assert_exit(r, EXIT_OK)
    s = json.loads(r.out)
    assert s["records"] == 4
    assert s["by_state"] == {"issued": 3, "delivered": 0, "failed": 0, "revoked": 1}
    assert s["by_profile"] == {"default": 3, "line2": 1}
    assert s["by_ca"] == {"dev": 4}
    assert s["by_work_order"] == {"WO-1": 3, "(none)": 1}
    assert sum(s["by_day"].values()) == 4 and s["rate"]["last_24h"] == 4
    assert s["refusals"] == 2
    assert s["refusals_by_rule"].get("unique-cn") == 1 and sum(s["refusals_by_rule"].values()) == 2
    assert [c["name"] for c in s["cas"]] == ["dev"] and s["cas"][0]["days_left"] > 365
    human = station.run("ledger", "stats")
    assert_exit(human, EXIT_OK)
    assert "by work order" in human.out and "WO-1" in human.out


def test_search_filters(station: Station, tmp_path):
    issue(station, tmp_path / "a", "q-1", "q-2", "z-1", extra=["--work-order", "WO-9"])
    issue(station, tmp_path / "b", "q-3")
    def cns(*args):
        r = station.run("ledger", "search", *args, "--json")
        assert_exit(r, EXIT_OK)
        return [x["cn"] for x in json.loads(r.out)["records"]]
    assert cns("--cn-prefix", "q-") == ["q-1", "q-2", "q-3"]
    assert cns("--work-order", "WO-9") == ["q-1", "q-2", "z-1"]
    q2 = record(station, "q-2")["record"]
    assert cns("--serial", q2["serial"].lower()) == ["q-2"]
    fp = q2["fingerprint"]
    assert cns("--fingerprint", ":".join(fp[i:i + 2] for i in range(0, 64, 2))) == ["q-2"]
    assert_exit(station.run("ledger", "revoke", "z-1", "--reason", "scrap"), EXIT_OK)
    assert cns("--state", "revoked") == ["z-1"]
    assert cns("--since", "2000-01-01", "--until", "2999-01-01", "--profile", "default", "--limit", "2") == ["q-1", "q-2"]
    assert cns("--until", "2000-01-01") == []
    for bad in (["--fingerprint", "abc"], ["--since", "yesterday"], ["--state", "lost"]):
        r = station.run("ledger", "search", *bad)
        assert_exit(r, EXIT_USAGE)
        assert_one_line_error(r)


def test_a_record_deleted_in_the_middle_is_counted_missing(station: Station, tmp_path):
    issue(station, tmp_path / "b", *[f"m-{i}" for i in range(10)])
    cp = tmp_path / "c.checkpoint"
    assert_exit(station.run("ledger", "checkpoint", "--out", cp), EXIT_OK)
    drop_triggers(station)
    with closing(station.db()) as db:
        db.execute("DELETE FROM records WHERE seq IN (5, 10)")
        db.commit()
    r = station.run("ledger", "verify", "--checkpoint", cp, "--json")
    assert_exit(r, EXIT_INTEGRITY)
    j = json.loads(r.out)
    assert j["intact"] is False and j["checkpoint"]["holds"] is False
    assert j["checkpoint"]["missing_records"] == 2
    human = station.run("ledger", "verify", "--checkpoint", cp)
    assert_exit(human, EXIT_INTEGRITY)
    assert "checkpoint FAILS: the ledger is missing 2 record(s)" in human.out
    assert "checkpoint holds" not in human.out


def test_a_checkpoint_survives_a_crlf_conversion(station: Station, tmp_path):
    issue(station, tmp_path / "b", "w-1")
    cp = tmp_path / "c.checkpoint"
    assert_exit(station.run("ledger", "checkpoint", "--out", cp), EXIT_OK)
    crlf = tmp_path / "crlf.checkpoint"
    crlf.write_bytes(cp.read_bytes().replace(b"\n", b"\r\n"))
    assert_exit(station.run("ledger", "verify", "--checkpoint", crlf), EXIT_OK)
    # Written first, recorded second: the event exists and follows the heads the file signed.
    events = station.events("checkpoint")
    assert len(events) == 1 and "events_seq: %d\n" % (events[0][0] - 1) in cp.read_text()


def test_station_id_with_a_line_break_is_a_configuration_error(station: Station, tmp_path):
    text = station.toml_path.read_text()
    station.toml_path.write_text(text.replace('station_id = "', 'station_id = "line-1\\nsignature: x', 1))
    r = station.run("ledger", "checkpoint")
    assert r.rc == 78
    assert_one_line_error(r)
    assert "station_id" in r.err


def test_issue_reissue_refuses_the_old_output_directory(station: Station, tmp_path):
    issue(station, tmp_path / "b1", "gw-9")
    assert_exit(station.run("ledger", "revoke", "gw-9", "--reason", "rework"), EXIT_OK)
    r = station.run("issue", "gw-9", "--reissue", "--out", tmp_path / "b1")
    assert_exit(r, EXIT_USAGE)
    assert_one_line_error(r)
    assert "fresh --out" in r.err
    assert station.records_count() == 1
