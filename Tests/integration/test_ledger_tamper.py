"""The hash-chained ledger: `keyline ledger verify` finds every kind of tampering and names where it is.

An attacker with the SQLite file drops the guarding triggers first; each tampering runs on a fresh copy."""

import json
import re
import sqlite3
from contextlib import closing

import pytest

from conftest import EXIT_INTEGRITY, EXIT_OK, Station, assert_exit, copy_station

CNS = [f"DEV-LEDGER-{i}" for i in range(1, 6)]
TRIGGERS = ["records_no_delete", "records_no_rewrite", "events_no_delete", "events_no_update"]


@pytest.fixture
def five(station: Station, tmp_path) -> Station:
    r = station.run("issue", *CNS, "--out", tmp_path / "issued")
    assert_exit(r, EXIT_OK)
    rows = station.query("SELECT seq, cn FROM records ORDER BY seq")
    assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5], rows
    assert sorted(cn for _, cn in rows) == sorted(CNS)
    return station


def tamper(st: Station, dest, *statements, fn=None) -> Station:
    copy = copy_station(st, dest)
    with closing(sqlite3.connect(str(copy.ledger_path))) as c:
        for t in TRIGGERS:
            c.execute(f"DROP TRIGGER IF EXISTS {t}")
        for sql in statements:
            c.execute(sql)
        if fn:
            fn(c)
        c.commit()
    return copy


def verify_fails(st: Station, *, record_seq=None, event_seq=None, also=()):
    r = st.run("ledger", "verify")
    assert_exit(r, EXIT_INTEGRITY)
    text = r.both
    named_records = sorted({int(n) for n in re.findall(r"record seq (\d+)", text)})
    named_events = sorted({int(n) for n in re.findall(r"event seq (\d+)", text)})
    if record_seq is not None:
        assert f"record seq {record_seq}" in text, f"expected 'record seq {record_seq}' to be named\n{r}"
        assert named_records[0] == record_seq, f"records before seq {record_seq} are intact, got {named_records}\n{r}"
    for seq in also:
        assert f"record seq {seq}" in text, f"expected 'record seq {seq}' to be named too\n{r}"
    if event_seq is not None:
        assert f"event seq {event_seq}" in text, f"expected 'event seq {event_seq}' to be named\n{r}"
        assert named_events[0] == event_seq, f"events before seq {event_seq} are intact, got {named_events}\n{r}"

    j = st.run("ledger", "verify", "--json")
    assert_exit(j, EXIT_INTEGRITY)
    report = json.loads(j.out)
    assert report["intact"] is False
    assert report["problems"], "problems must list what is wrong"
    if record_seq is not None:
        assert report["first_bad_record_seq"] == record_seq, report
    if event_seq is not None:
        assert report["first_bad_event_seq"] == event_seq, report
    return r


def test_untouched_ledger_verifies(five: Station):
    r = five.run("ledger", "verify")
    assert_exit(r, EXIT_OK)
    n_events = five.query("SELECT count(*) FROM events")[0][0]
    assert re.search(rf"ledger intact: 5 records, {n_events} events, head \S+", r.out), r
    j = five.run("ledger", "verify", "--json")
    assert_exit(j, EXIT_OK)
    report = json.loads(j.out)
    head_hash = five.query("SELECT hash FROM records WHERE seq = 5")[0][0]
    assert report == {**report, "intact": True, "records": 5, "events": n_events, "first_bad_record_seq": None,
                      "first_bad_event_seq": None, "problems": [], "head_seq": 5, "head_hash": head_hash}


def test_detects_edited_record_cn(five: Station, tmp_path):
    copy = tamper(five, tmp_path / "edited", "UPDATE records SET cn = 'EVIL-CLONE' WHERE seq = 3")
    verify_fails(copy, record_seq=3)


def test_detects_deleted_record(five: Station, tmp_path):
    copy = tamper(five, tmp_path / "deleted", "DELETE FROM records WHERE seq = 2")
    verify_fails(copy, record_seq=2)


def test_detects_swapped_records(five: Station, tmp_path):
    def swap(c: sqlite3.Connection):
        cur = c.execute("SELECT * FROM records WHERE seq IN (2, 4) ORDER BY seq")
        cols = [d[0] for d in cur.description]
        r2, r4 = cur.fetchall()
        c.execute("DELETE FROM records WHERE seq IN (2, 4)")
        placeholders = ", ".join("?" for _ in cols)
        for seq, content in ((2, r4), (4, r2)):
            row = [seq if col == "seq" else v for col, v in zip(cols, content)]
            c.execute(f"INSERT INTO records ({', '.join(cols)}) VALUES ({placeholders})", row)

    copy = tamper(five, tmp_path / "swapped", fn=swap)
    assert copy.query("SELECT cn FROM records WHERE seq = 2") == five.query("SELECT cn FROM records WHERE seq = 4")
    verify_fails(copy, record_seq=2, also=[4])


def test_detects_state_change_without_event(five: Station, tmp_path):
    assert five.query("SELECT state FROM records WHERE seq = 3") == [("issued",)]
    copy = tamper(five, tmp_path / "state", "UPDATE records SET state = 'revoked' WHERE seq = 3")
    verify_fails(copy, record_seq=3)


def test_detects_edited_event_detail(five: Station, tmp_path):
    (event_seq,) = five.query("SELECT min(seq) FROM events WHERE record_seq = 3")[0]
    assert event_seq is not None, "issuing record 3 must have left an event"
    copy = tamper(five, tmp_path / "event", f"UPDATE events SET detail = 'nothing to see here' WHERE seq = {event_seq}")
    verify_fails(copy, event_seq=event_seq)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE records SET cn = 'EVIL' WHERE seq = 1",
        "UPDATE records SET cert_der = x'00' WHERE seq = 2",
        "UPDATE records SET hash = 'ab' WHERE seq = 5",
        "DELETE FROM records WHERE seq = 5",
        "UPDATE events SET detail = 'x' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 1",
    ],
    ids=["records-update-cn", "records-update-der", "records-update-hash", "records-delete", "events-update",
         "events-delete"],
)
def test_triggers_refuse_rewriting_history(five: Station, sql):
    before = (five.query("SELECT * FROM records ORDER BY seq"), five.query("SELECT * FROM events ORDER BY seq"))
    with closing(sqlite3.connect(str(five.ledger_path))) as c:
        with pytest.raises(sqlite3.DatabaseError, match="keyline ledger"):
            c.execute(sql)
            c.commit()
        c.rollback()
    after = (five.query("SELECT * FROM records ORDER BY seq"), five.query("SELECT * FROM events ORDER BY seq"))
    assert after == before
    assert_exit(five.run("ledger", "verify"), EXIT_OK)
