"""Device attributes fixed at issuance (ledger migration v2) and the fixes from the manifest review: what a device is
assigned (rendered description, tags, product and cohort PRNs, target) is decided by `sign`/`issue`, stored under
the hash chain, and exported unchanged after the profile changes or disappears; exports never overwrite; a lost
station signing key is not silently replaced; per-CA systemd credentials; `config check` on a CA that can no
longer issue; error messages that list what is allowed; null for unset JSON values."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import struct
from contextlib import closing
from pathlib import Path

import pytest

from conftest import (
    EXIT_CONFIG,
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_KEY_GUARD,
    EXIT_POLICY,
    JITP_PROFILE,
    ORG_A,
    Station,
    assert_exit,
    assert_one_line_error,
    copy_station,
    install_ca_by_hand,
    load_cert,
    make_issuing_ca,
    make_root,
    openssl_csr,
    utcnow,
    write_secret,
)

EXIT_IO = 74  # not among conftest's constants
CSV_HEADER = ["identifier", "description", "tags", "product_prn", "cohort_prn", "certificates", "target"]
TRIGGERS = ["records_no_delete", "records_no_rewrite", "events_no_delete", "events_no_update"]
ATTRIBUTE_COLUMNS = ["has_attributes", "description", "tags", "product_prn", "cohort_prn", "target"]

# The section renders only for a device signed with --hardware-id; work_order and issued_at are issuance values.
TEMPLATE = ("{{product_name}} {{cn}} {{#hardware_id}}[hw {{hardware_id}}]{{/hardware_id}}"
            "|op={{operator}}|wo={{work_order}}|at={{issued_at}}")
# Settings the profile is edited to after the first devices were issued (same organization, so still valid).
NEW_PRODUCT = f"prn:1:{ORG_A}:product:6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"
NEW_COHORT = f"prn:1:{ORG_A}:cohort:1f2e3d4c-5b6a-4978-a6b5-c4d3e2f1a0b9"
NEW_TARGET = "x86_64-unknown-linux-musl"


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def table_bounds(lines: list[str], table: str) -> tuple[int, int]:
    header = f"[{table}]"
    starts = [i for i, l in enumerate(lines) if l.strip() == header]
    assert len(starts) == 1, f"{header} appears {len(starts)} times"
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    return start, end


def remove_table(st: Station, table: str):
    """Deletes `[table]` and its keys from station.toml, leaving the rest as it was."""
    lines = st.toml_path.read_text().splitlines()
    start, end = table_bounds(lines, table)
    st.toml_path.write_text("\n".join(lines[:start] + lines[end:]) + "\n")
    node = st.config()
    *parents, last = table.split(".")
    for part in parents:
        node = node[part]
    assert last not in node, f"[{table}] is still there"


def remove_key(st: Station, table: str, key: str):
    lines = st.toml_path.read_text().splitlines()
    start, end = table_bounds(lines, table)
    kept = [l for i, l in enumerate(lines) if not (start < i < end and re.match(rf"\s*{re.escape(key)}\s*=", l))]
    assert len(kept) == len(lines) - 1, f"{key} not found once in [{table}]"
    st.toml_path.write_text("\n".join(kept) + "\n")
    node = st.config()
    for part in table.split("."):
        node = node[part]
    assert key not in node


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows and rows[0] == CSV_HEADER, rows[:1]
    return {r[0]: dict(zip(CSV_HEADER, r)) for r in rows[1:]}


def read_json(path: Path) -> dict[str, dict]:
    items = json.loads(path.read_text())
    assert isinstance(items, list)
    return {o["identifier"]: o for o in items}


def export(st: Station, out: Path, *args, fmt: str | None = None):
    r = st.run("manifest", "devices", "--out", out, *args, *(["--format", fmt] if fmt else []))
    assert_exit(r, EXIT_OK)
    return r


def records(st: Station) -> dict[str, dict]:
    with closing(st.db()) as c:
        c.row_factory = sqlite3.Row
        return {r["cn"]: dict(r) for r in c.execute("SELECT * FROM records ORDER BY seq")}


def iso_second(ms: int) -> str:
    """A stored Unix-ms timestamp cut to whole seconds, as ISO 8601 UTC (what a template's issued_at prints)."""
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}.summary.json"), Path(f"{path}.sig"), Path(f"{path}.checkpoint")]


def snapshot(paths) -> dict[str, str | None]:
    return {str(p): (sha256_file(p) if p.exists() else None) for p in paths}


def issue_three(st: Station, tmp_path: Path, profile="gw") -> dict[str, dict]:
    """Under `profile`: HW-0001 signed with --hardware-id and --work-order (alice), NOHW-0001 signed without
    (carol), ST-0001 issued with a station-made key (bob). Returns what each device should be assigned."""
    out = tmp_path / "out"
    csr, _ = openssl_csr(tmp_path / "csr", "HW-0001")
    st.sign_ok(csr, out, profile=profile,
               extra=["--hardware-id", "HW-42", "--work-order", "WO-7", "--operator", "alice"])
    csr, _ = openssl_csr(tmp_path / "csr", "NOHW-0001")
    st.sign_ok(csr, out, profile=profile, extra=["--operator", "carol"])
    assert_exit(st.run("issue", "ST-0001", "--profile", profile, "--out", tmp_path / "batch", "--operator", "bob"),
                EXIT_OK)
    recs = records(st)
    pn = JITP_PROFILE["product_name"]
    at = {cn: iso_second(recs[cn]["created_at"]) for cn in recs}
    descriptions = {
        "HW-0001": f"{pn} HW-0001 [hw HW-42]|op=alice|wo=WO-7|at={at['HW-0001']}",
        "NOHW-0001": f"{pn} NOHW-0001 |op=carol|wo=|at={at['NOHW-0001']}",
        "ST-0001": f"{pn} ST-0001 |op=bob|wo=|at={at['ST-0001']}",
    }
    return {
        cn: {
            "description": d,
            "tags": ",".join(JITP_PROFILE["tags"]),
            "product_prn": JITP_PROFILE["product_prn"],
            "cohort_prn": JITP_PROFILE["cohort_prn"],
            "target": JITP_PROFILE["target"],
        }
        for cn, d in descriptions.items()
    }


def assert_rows(rows: dict[str, dict[str, str]], expected: dict[str, dict]):
    for cn, want in expected.items():
        got = {k: rows[cn][k] for k in want}
        assert got == want, f"{cn}: exported {got}, expected {want}"


# --------------------------------------------------------------------------------------------------------------
# Attributes decided at issuance
# --------------------------------------------------------------------------------------------------------------


def test_attributes_are_rendered_at_issuance_and_stored(station: Station, tmp_path):
    station.add_jitp_profile("gw", description_template=TEMPLATE)
    expected = issue_three(station, tmp_path)
    recs = records(station)
    for cn, want in expected.items():
        rec = recs[cn]
        assert rec["has_attributes"] == 1, rec
        assert {k: rec[k] for k in want} == want, f"{cn}: stored {rec}"
    # The hardware section rendered for the one device signed with --hardware-id, and only for it.
    assert "[hw HW-42]" in recs["HW-0001"]["description"]
    assert "[hw" not in recs["NOHW-0001"]["description"] and "[hw" not in recs["ST-0001"]["description"]

    m = tmp_path / "m.csv"
    export(station, m)
    assert_rows(read_csv(m), expected)

    # issued_at in the description is the record's created_at to the second, as the JSON manifest also says.
    j = tmp_path / "m.json"
    export(station, j, fmt="json")
    objs = read_json(j)
    for cn, o in objs.items():
        issued = o["issued_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", issued), issued
        assert issued[:19] + "Z" == iso_second(recs[cn]["created_at"])
        assert o["description"].endswith("|at=" + issued[:19] + "Z"), o["description"]
        shown = json.loads(station.run("ledger", "show", cn, "--json").out)["record"]
        assert shown["created_at"] == issued, "the same stored millisecond timestamp prints the same everywhere"
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


def test_attributes_survive_profile_edits_and_removal(station: Station, tmp_path):
    station.add_jitp_profile("gw", description_template=TEMPLATE)
    expected = issue_three(station, tmp_path)
    before_csv, before_json = tmp_path / "before.csv", tmp_path / "before.json"
    export(station, before_csv)
    export(station, before_json, fmt="json")
    assert_rows(read_csv(before_csv), expected)

    # Edit everything the backend assigns: devices already issued keep what they were issued with.
    station.set_toml_key("profiles.gw", "tags", ["changed", "later"])
    station.set_toml_key("profiles.gw", "description_template", "CHANGED {{cn}} by {{operator}}")
    station.set_toml_key("profiles.gw", "cohort_prn", NEW_COHORT)
    station.set_toml_key("profiles.gw", "target", NEW_TARGET)
    station.set_toml_key("profiles.gw", "product_prn", NEW_PRODUCT)
    station.set_toml_key("profiles.gw", "product_name", "Renamed")
    assert_exit(station.run("config", "check"), EXIT_OK)
    assert_exit(station.run("issue", "LATE-0001", "--profile", "gw", "--out", tmp_path / "late", "--operator", "dave"),
                EXIT_OK)

    after = tmp_path / "after.csv"
    export(station, after)
    rows = read_csv(after)
    assert_rows(rows, expected)
    old_rows = read_csv(before_csv)
    for cn in expected:
        assert rows[cn] == old_rows[cn], f"{cn} is exported differently after the profile changed"
    # A device issued after the edit gets the new settings.
    late = rows["LATE-0001"]
    assert late["description"] == "CHANGED LATE-0001 by dave"
    assert late["tags"] == "changed,later"
    assert (late["product_prn"], late["cohort_prn"], late["target"]) == (NEW_PRODUCT, NEW_COHORT, NEW_TARGET)

    # Remove the profile, keep its CA: the station still loads, and the devices export as they were issued.
    remove_table(station, "profiles.gw")
    assert_exit(station.run("config", "check"), EXIT_OK)
    gone_csv, gone_json = tmp_path / "gone.csv", tmp_path / "gone.json"
    export(station, gone_csv)
    export(station, gone_json, fmt="json")
    rows = read_csv(gone_csv)
    assert_rows(rows, expected)
    for cn in expected:
        assert rows[cn] == old_rows[cn], f"{cn} is exported differently after its profile was removed"
    assert rows["LATE-0001"]["description"] == "CHANGED LATE-0001 by dave"
    objs, old_objs = read_json(gone_json), read_json(before_json)
    for cn in expected:
        assert objs[cn] == old_objs[cn], cn
        assert objs[cn]["profile"] == "gw"
    for path in (gone_csv, gone_json):
        assert_exit(station.run("manifest", "verify", path), EXIT_OK)
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


def test_product_prn_missing_at_issuance_is_filled_from_the_profile(station: Station, tmp_path):
    station.add_jitp_profile("late", product_prn=None, cohort_prn=None)
    assert_exit(station.run("issue", "NP-0001", "--profile", "late", "--out", tmp_path / "o"), EXIT_OK)
    rec = records(station)["NP-0001"]
    assert rec["has_attributes"] == 1 and rec["product_prn"] is None and rec["cohort_prn"] is None
    m = tmp_path / "m.csv"
    r = station.run("manifest", "devices", "--out", m)
    assert_exit(r, EXIT_CONFIG)
    reason = assert_one_line_error(r)
    assert "product_prn" in reason and "late" in reason, r
    assert not any(p.exists() for p in export_files(m))
    station.set_toml_key("profiles.late", "product_prn", NEW_PRODUCT)
    export(station, m)
    row = read_csv(m)["NP-0001"]
    assert row["product_prn"] == NEW_PRODUCT
    assert row["cohort_prn"] == "", "only the product is filled in from the profile's current settings"


# --------------------------------------------------------------------------------------------------------------
# The hash chain covers the attributes
# --------------------------------------------------------------------------------------------------------------


def chain_hash(tag, items) -> str:
    h = hashlib.sha256()
    for item in [tag, *items]:
        if item is None:
            h.update(b"\xff\xff\xff\xff")
        else:
            b = str(item).encode()
            h.update(struct.pack(">I", len(b)) + b)
    return h.hexdigest().upper()


RECORD_ITEMS = ("seq", "cn", "serial_hex", "cert_sha256", "pubkey_sha256", "ca_sha256", "ca_name", "profile",
                "station_id", "operator", "key_origin", "hardware_id", "work_order", "not_before", "not_after")


def record_hash(r: dict, prev_hash: str, with_attributes: bool) -> str:
    """The record hash as docs/ledger.md describes it."""
    items = [prev_hash] + [r[c] for c in RECORD_ITEMS]
    items += [hashlib.sha256(r["cert_der"]).hexdigest().upper(), r["created_at"]]
    if with_attributes:
        items += ["attributes-v1", r["description"], r["tags"], r["product_prn"], r["cohort_prn"], r["target"]]
    return chain_hash("keyline-record-v1", items)


def test_record_hash_covers_the_attributes_as_documented(station: Station, tmp_path):
    station.add_jitp_profile("gw", description_template=TEMPLATE)
    station.add_jitp_profile("bare", tags=[], cohort_prn=None, target=None, description_template=None,
                             jitp_description=None)
    issue_three(station, tmp_path)
    assert_exit(station.run("issue", "BARE-0001", "--profile", "bare", "--out", tmp_path / "bare"), EXIT_OK)
    rows = sorted(records(station).values(), key=lambda r: r["seq"])
    bare = next(r for r in rows if r["cn"] == "BARE-0001")
    assert (bare["description"], bare["tags"], bare["cohort_prn"], bare["target"]) == ("", "", None, None), bare
    prev = "0" * 64
    for r in rows:
        assert r["has_attributes"] == 1
        assert r["prev_hash"] == prev
        assert record_hash(r, prev, True) == r["hash"], f"record seq {r['seq']}"
        assert record_hash(r, prev, False) != r["hash"], "the attributes must be part of the hash"
        prev = r["hash"]


def tamper(st: Station, dest: Path, sql: str, args=()) -> Station:
    copy = copy_station(st, dest)
    with closing(sqlite3.connect(str(copy.ledger_path))) as c:
        for t in TRIGGERS:
            c.execute(f"DROP TRIGGER IF EXISTS {t}")
        cur = c.execute(sql, args)
        assert cur.rowcount == 1, f"{sql} changed {cur.rowcount} rows"
        c.commit()
    return copy


@pytest.mark.parametrize(
    "column,value",
    [
        ("description", "Forged description"),
        ("tags", "factory-a,line-1,gw,extra"),
        ("product_prn", NEW_PRODUCT),
        ("cohort_prn", None),
        ("target", NEW_TARGET),
        ("has_attributes", 0),
    ],
)
def test_editing_an_attribute_is_detected(station: Station, tmp_path, column, value):
    station.add_jitp_profile("gw", description_template=TEMPLATE)
    issue_three(station, tmp_path)
    recs = records(station)
    victim = recs["NOHW-0001"]
    seq = victim["seq"]
    assert seq == 2 and max(r["seq"] for r in recs.values()) == 3
    # The trigger refuses the edit while it is there.
    with closing(sqlite3.connect(str(station.ledger_path))) as c:
        with pytest.raises(sqlite3.DatabaseError, match="only a record's state may change"):
            c.execute(f"UPDATE records SET {column} = ? WHERE seq = ?", (value, seq))
        c.rollback()
    assert_exit(station.run("ledger", "verify"), EXIT_OK)

    copy = tamper(station, tmp_path / f"tampered-{column}", f"UPDATE records SET {column} = ? WHERE seq = ?",
                  (value, seq))
    r = copy.run("ledger", "verify")
    assert_exit(r, EXIT_INTEGRITY)
    named = sorted({int(n) for n in re.findall(r"record seq (\d+)", r.both)})
    assert named and named[0] == seq, f"expected record seq {seq} to be named first, got {named}\n{r}"
    assert f"record seq {seq}" in assert_one_line_error(r), r
    report = json.loads(copy.run("ledger", "verify", "--json").out)
    assert report["intact"] is False and report["first_bad_record_seq"] == seq, report


def test_records_without_attributes_hash_as_before_and_use_the_current_profile(station: Station, tmp_path):
    """A record from before migration v2 (has_attributes 0, attribute columns NULL), made here by clearing them and
    recomputing the chain without the attributes, as docs/ledger.md gives it: the ledger verifies, and exports take
    the profile's current settings; once the profile is gone such a record cannot be exported."""
    station.add_jitp_profile("gw", description_template="OLD {{cn}}")
    assert_exit(station.run("issue", "OLD-0001", "OLD-0002", "--profile", "gw", "--out", tmp_path / "o"), EXIT_OK)
    with closing(sqlite3.connect(str(station.ledger_path))) as c:
        c.row_factory = sqlite3.Row
        c.execute("DROP TRIGGER records_no_rewrite")
        c.execute("UPDATE records SET has_attributes = 0, description = NULL, tags = NULL, product_prn = NULL, "
                  "cohort_prn = NULL, target = NULL")
        prev = "0" * 64
        for r in c.execute("SELECT * FROM records ORDER BY seq").fetchall():
            h = record_hash(dict(r), prev, False)
            c.execute("UPDATE records SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, h, r["seq"]))
            prev = h
        c.commit()
    assert_exit(station.run("ledger", "verify"), EXIT_OK)

    station.set_toml_key("profiles.gw", "description_template", "NOW {{cn}}")
    station.set_toml_key("profiles.gw", "tags", ["now"])
    m = tmp_path / "m.csv"
    export(station, m)
    rows = read_csv(m)
    assert rows["OLD-0001"]["description"] == "NOW OLD-0001"
    assert rows["OLD-0001"]["tags"] == "now"
    assert rows["OLD-0001"]["product_prn"] == JITP_PROFILE["product_prn"]

    # A new record in the same ledger carries attributes and links onto the rewritten chain.
    assert_exit(station.run("issue", "NEW-0001", "--profile", "gw", "--out", tmp_path / "o2"), EXIT_OK)
    assert records(station)["NEW-0001"]["has_attributes"] == 1
    assert_exit(station.run("ledger", "verify"), EXIT_OK)

    remove_table(station, "profiles.gw")
    m2 = tmp_path / "m2.csv"
    r = station.run("manifest", "devices", "--out", m2)
    assert_exit(r, EXIT_CONFIG)
    reason = assert_one_line_error(r)
    assert "record seq 1" in reason and "'gw'" in reason, r
    assert not any(p.exists() for p in export_files(m2))
    # Selecting only the device with stored attributes still works.
    export(station, m2, "--since-seq", "2")
    assert list(read_csv(m2)) == ["NEW-0001"]


# --------------------------------------------------------------------------------------------------------------
# Exports never overwrite; the station signing key is never silently replaced
# --------------------------------------------------------------------------------------------------------------


def test_export_refuses_to_overwrite_an_earlier_export(station: Station, tmp_path):
    station.add_jitp_profile("gw")
    assert_exit(station.run("issue", "EX-0001", "EX-0002", "--profile", "gw", "--out", tmp_path / "o"), EXIT_OK)
    m = tmp_path / "m.csv"
    export(station, m)
    first = snapshot(export_files(m))
    assert all(first.values()), first
    exported = station.events("exported")
    assert_exit(station.run("issue", "EX-0003", "--profile", "gw", "--out", tmp_path / "o"), EXIT_OK)

    for fmt in (None, "json"):
        r = station.run("manifest", "devices", "--out", m, *(["--format", fmt] if fmt else []))
        assert_exit(r, EXIT_IO)
        reason = assert_one_line_error(r)
        assert str(m) in reason or m.name in reason, r
        assert snapshot(export_files(m)) == first, "a refused export changed the earlier one"
        assert_exit(station.run("manifest", "verify", m), EXIT_OK)
    assert station.events("exported") == exported, "a refused export was recorded"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("m.csv") and p not in export_files(m)]

    # The summary alone is enough to refuse: the manifest is not written beside it.
    lone = tmp_path / "lone.csv"
    Path(f"{lone}.summary.json").write_text("{}\n")
    r = station.run("manifest", "devices", "--out", lone)
    assert_exit(r, EXIT_IO)
    assert "lone.csv.summary.json" in assert_one_line_error(r), r
    assert not lone.exists() and not Path(f"{lone}.sig").exists() and not Path(f"{lone}.checkpoint").exists()
    assert Path(f"{lone}.summary.json").read_text() == "{}\n"


def test_default_export_names_carry_milliseconds(station: Station, tmp_path):
    station.add_jitp_profile("gw")
    assert_exit(station.run("issue", "DF-0001", "--profile", "gw", "--out", tmp_path / "o"), EXIT_OK)
    for _ in range(2):
        assert_exit(station.run("manifest", "devices"), EXIT_OK)
    names = sorted(p.name for p in (station.path / "exports").iterdir() if p.name.endswith(".csv"))
    assert len(names) == 2, names
    for n in names:
        assert re.fullmatch(r"devices-\d{8}T\d{6}\.\d{3}Z\.csv", n), n
        assert_exit(station.run("manifest", "verify", station.path / "exports" / n), EXIT_OK)


def test_missing_signing_key_next_to_public_key_is_refused(station: Station, tmp_path):
    station.add_jitp_profile("gw")
    assert_exit(station.run("issue", "SK-0001", "--profile", "gw", "--out", tmp_path / "o"), EXIT_OK)
    key = station.path / "secrets" / "station-signing.key"
    pub = station.path / "station-signing.pem"
    earlier = tmp_path / "earlier.csv"
    export(station, earlier)
    pub_before = pub.read_bytes()
    exported = station.events("exported")
    key.unlink()

    m = tmp_path / "m.csv"
    r = station.run("manifest", "devices", "--out", m)
    assert_exit(r, EXIT_KEY_GUARD)
    reason = assert_one_line_error(r)
    assert "station-signing.key" in reason and "station-signing.pem" in reason, r
    assert not key.exists(), "a new private key was made beside the old public key"
    assert pub.read_bytes() == pub_before
    assert not any(p.exists() for p in export_files(m))
    assert station.events("exported") == exported
    assert_exit(station.run("manifest", "verify", earlier), EXIT_OK)

    # Moving the public key aside (as docs/operations.md says) makes a new pair on the next export.
    pub.rename(tmp_path / "old-station-signing.pem")
    export(station, m)
    assert key.exists() and pub.exists() and pub.read_bytes() != pub_before
    assert_exit(station.run("manifest", "verify", m), EXIT_OK)
    assert_exit(station.run("manifest", "verify", earlier, "--public-key", tmp_path / "old-station-signing.pem"),
                EXIT_OK)


# --------------------------------------------------------------------------------------------------------------
# Per-CA systemd credential
# --------------------------------------------------------------------------------------------------------------


def credentials_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    d = tmp_path / "credentials"
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    for name, data in files.items():
        p = d / name
        if p.exists():
            os.chmod(p, 0o600)
        write_secret(p, data)
        os.chmod(p, 0o400)
    return d


def test_per_ca_credential_is_tried_before_the_shared_one(station: Station, tmp_path):
    right = station.passphrase + b"\n"
    remove_key(station, "cas.dev", "passphrase_file")
    out = tmp_path / "out"
    out.mkdir()
    creds = credentials_dir(tmp_path, {"keyline-ca-passphrase-dev": right,
                                       "keyline-ca-passphrase": b"not-the-passphrase\n"})
    env = {"CREDENTIALS_DIRECTORY": str(creds)}

    csr, _ = openssl_csr(tmp_path / "csr", "CRED-0001")
    r = station.run("sign", csr, "--out", out / "CRED-0001.pem", env=env)
    assert_exit(r, EXIT_OK)
    leaf = load_cert(out / "CRED-0001.pem")
    assert leaf.issuer == station.ca_cert().subject
    assert "CRED-0001" in {row[1] for row in station.query("SELECT seq, cn FROM records")}
    assert_exit(station.run("issue", "CRED-0002", "--out", tmp_path / "batch", env=env), EXIT_OK)
    assert_exit(station.run("ca", "verification-cert", "CODE-0001", "--ca", "dev", "--out", tmp_path / "v.pem",
                            env=env), EXIT_OK)

    # Without the CA's own credential, the shared one is used, and its wrong passphrase is refused.
    (creds / "keyline-ca-passphrase-dev").unlink()
    csr, _ = openssl_csr(tmp_path / "csr", "CRED-0003")
    r = station.run("sign", csr, "--out", out / "CRED-0003.pem", env=env)
    assert_exit(r, EXIT_KEY_GUARD)
    reason = assert_one_line_error(r)
    assert "keyline-ca-passphrase" in reason and "keyline-ca-passphrase-dev" not in reason, r
    assert right.strip() not in r.stdout_bytes + r.stderr_bytes

    # The CA's own credential wins even when it is the wrong one: no fallback to the (now right) shared one.
    credentials_dir(tmp_path, {"keyline-ca-passphrase-dev": b"wrong-for-dev\n", "keyline-ca-passphrase": right})
    r = station.run("sign", csr, "--out", out / "CRED-0003.pem", env=env)
    assert_exit(r, EXIT_KEY_GUARD)
    assert "keyline-ca-passphrase-dev" in assert_one_line_error(r), r

    # Without any credential directory there is no passphrase at all.
    r = station.run("sign", csr, "--out", out / "CRED-0003.pem", env={"CREDENTIALS_DIRECTORY": ""})
    assert_exit(r, EXIT_KEY_GUARD)
    assert not (out / "CRED-0003.pem").exists()
    assert_exit(station.run("ledger", "verify"), EXIT_OK)


def test_per_ca_credential_passes_the_key_guard(station: Station, tmp_path):
    right = station.passphrase + b"\n"
    remove_key(station, "cas.dev", "passphrase_file")
    creds = credentials_dir(tmp_path, {"keyline-ca-passphrase-dev": right})
    os.chmod(creds / "keyline-ca-passphrase-dev", 0o644)
    r = station.run("issue", "GUARD-0001", "--out", tmp_path / "batch", env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert_exit(r, EXIT_KEY_GUARD)
    assert "keyline-ca-passphrase-dev" in assert_one_line_error(r), r
    assert station.records_count() == 0


# --------------------------------------------------------------------------------------------------------------
# config check and its messages
# --------------------------------------------------------------------------------------------------------------


def test_config_check_fails_for_a_ca_that_can_no_longer_issue(station: Station, tmp_path):
    root = make_root("Soon Root")
    soon = make_issuing_ca(root, "Soon Issuing CA", not_after=utcnow() + dt.timedelta(days=100))
    install_ca_by_hand(station, "soon", soon, root)  # and profile 'soon' on it, min_validity_days 365
    r = station.run("config", "check")
    assert_exit(r, EXIT_CONFIG)
    reason = assert_one_line_error(r)
    assert "'soon'" in reason, r
    assert "station.toml OK" not in r.out
    # ca show only warns (it is for monitoring), and issuance under it is refused by the validity rule.
    show = station.run("ca", "show")
    assert_exit(show, EXIT_OK)
    assert "soon" in show.err
    csr, _ = openssl_csr(tmp_path / "csr", "SOON-0001")
    assert_exit(station.sign(csr, profile="soon", out_dir=tmp_path / "out"), EXIT_POLICY)


def test_config_check_only_warns_for_a_ca_no_profile_uses(station: Station, tmp_path):
    root = make_root("Idle Root")
    idle = make_issuing_ca(root, "Idle Issuing CA", not_after=utcnow() + dt.timedelta(days=10))
    install_ca_by_hand(station, "idle", idle, root, profile=False)
    r = station.run("config", "check")
    assert_exit(r, EXIT_OK)
    assert "'idle'" in r.err, r


def allowed_list(reason: str) -> set[str]:
    m = re.search(r"\(allowed: ([^)]*)\)", reason)
    assert m, f"no '(allowed: ...)' list in {reason!r}"
    return {k.strip() for k in m.group(1).split(",")}


def test_unknown_key_error_lists_the_allowed_keys(station: Station):
    station.set_toml_key("profiles.default", "prodcut_prn", "typo")
    r = station.run("config", "check")
    assert_exit(r, EXIT_CONFIG)
    reason = assert_one_line_error(r)
    assert "'prodcut_prn'" in reason and "[profiles.default]" in reason, r
    allowed = allowed_list(reason)
    assert {"ca", "cn_pattern", "validity_days", "min_validity_days", "key_types", "product_name", "product_prn",
            "cohort_prn", "tags", "target", "jitp_description", "description_template"} <= allowed, allowed
    assert "prodcut_prn" not in allowed
    # Every command refuses the same way.
    assert_exit(station.run("ledger", "list"), EXIT_CONFIG)

    remove_key(station, "profiles.default", "prodcut_prn")
    station.set_toml_key("cas.dev", "pasphrase_file", "secrets/dev.passphrase")
    reason = assert_one_line_error(station.run("config", "check"))
    assert "'pasphrase_file'" in reason and {"passphrase_file", "cert", "key", "status"} <= allowed_list(reason)


def test_unknown_ca_error_lists_the_cas(station: Station):
    station.set_toml_key("profiles.default", "ca", "nope")
    r = station.run("config", "check")
    assert_exit(r, EXIT_CONFIG)
    reason = assert_one_line_error(r)
    assert "'nope'" in reason and "[profiles.default]" in reason, r
    m = re.search(r"\(CAs: ([^)]*)\)", reason)
    assert m and [c.strip() for c in m.group(1).split(",")] == ["dev"], reason


# --------------------------------------------------------------------------------------------------------------
# JSON manifests: null for unset values
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_manifest_has_null_for_unset_values(station: Station, tmp_path, fmt):
    station.add_jitp_profile("plain", cohort_prn=None, target=None)
    assert_exit(station.run("issue", "PLAIN-0001", "--profile", "plain", "--out", tmp_path / "o"), EXIT_OK)
    csr, _ = openssl_csr(tmp_path / "csr", "PLAIN-0002")
    station.sign_ok(csr, tmp_path / "signed", profile="plain", extra=["--hardware-id", "HW-9", "--work-order", "WO-9"])
    m = tmp_path / f"m.{fmt}"
    export(station, m, fmt=fmt)
    text = m.read_text()
    items = json.loads(text) if fmt == "json" else [json.loads(l) for l in text.splitlines() if l.strip()]
    objs = {o["identifier"]: o for o in items}
    assert set(objs) == {"PLAIN-0001", "PLAIN-0002"}
    assert set(objs["PLAIN-0001"]) == set(objs["PLAIN-0002"]), "every object has the same keys"
    bare = objs["PLAIN-0001"]
    for key in ("hardware_id", "work_order", "cohort_prn", "target"):
        assert key in bare and bare[key] is None, f"{key}: {bare.get(key, '<missing>')!r}"
    assert bare["aki"] is not None and re.fullmatch(r"[0-9A-F]+", bare["aki"])
    full = objs["PLAIN-0002"]
    assert (full["hardware_id"], full["work_order"]) == ("HW-9", "WO-9")
    assert full["cohort_prn"] is None and full["target"] is None
    # The CSV still writes empty fields for the same devices.
    c = tmp_path / "m.csv"
    export(station, c)
    row = read_csv(c)["PLAIN-0001"]
    assert row["cohort_prn"] == "" and row["target"] == ""
