"""The line (issue 4): the real `keyline run` daemon with pseudo-terminal and Unix-socket fixtures, and simulated
devices (`keyline-devsim`, well-behaved and misbehaving) plugged in and taken off the way an operator would.

Every good device must end with a stored certificate whose fingerprint is its `delivered` ledger record and which
`openssl verify` accepts; every bad one must end `failed` with its reason; no CN is issued twice. A second test kills
the daemon with SIGKILL at many points of a device's exchange and checks the ledger and the device after each
restart."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import KEYLINE_BIN, REPO, EXIT_OK, Station, assert_exit, openssl, pem_certs

DEVSIM = Path(os.environ.get("KEYLINE_DEVSIM_BIN") or REPO / ".build" / "debug" / "keyline-devsim")


@pytest.fixture
def short_dir():
    """Unix socket paths are limited to 108 bytes: fixtures live in a short directory under /tmp."""
    d = Path(tempfile.mkdtemp(prefix="kl-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def configure_line(station: Station, fixtures: dict[str, str], *, profile_extra: str = "", daemon_extra: str = ""):
    """A `line` profile (CN = SN-<hardware id>, upper-case only) and the given fixtures (name -> TOML body)."""
    station.append_toml(f"""
[profiles.line]
ca = "dev"
cn_pattern = '^SN-[A-Z0-9-]+$'
cn_template = "SN-{{hardware_id}}"
validity_days = 365
min_validity_days = 30
{profile_extra}

[daemon]
response_timeout = 1.5
csr_timeout = 5
store_timeout = 3
retries = 1
fail_cooldown = 0
{daemon_extra}
""")
    for name, body in fixtures.items():
        station.append_toml(f"[fixtures.{name}]\nprofile = \"line\"\n{body}\n")


class Daemon:
    """`keyline run` as a subprocess; its JSON log is read for outcomes."""

    def __init__(self, station: Station, *extra):
        self.station = station
        self.log = station.path / "run" / "devices.jsonl"
        self.proc = subprocess.Popen(
            [str(KEYLINE_BIN), "run", "--station", str(station.path), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "KEYLINE_OPERATOR": "line-test"})

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def devices(self) -> list[dict]:
        return [e for e in self.entries() if e.get("event") == "device"]

    def wait_started(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(e.get("event") == "started" for e in self.entries()[self._started_before:]):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"keyline run exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        raise AssertionError("keyline run did not start")

    def start(self):
        self._started_before = len(self.entries())
        return self

    def stop(self, timeout=60) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out.decode(), err.decode()

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def start_daemon(station: Station, *extra) -> Daemon:
    d = Daemon(station, *extra)
    d._started_before = 0
    if d.log.exists():
        d._started_before = len(d.entries())
    d.wait_started()
    return d


@dataclass
class Device:
    hw: str
    flags: list[str] = field(default_factory=list)
    good: bool = True
    reason: str = ""  # expected reason prefix for a bad one

    @property
    def cn(self) -> str:
        return f"SN-{self.hw}"


class Plugged:
    """A keyline-devsim on a fixture: a pseudo-terminal linked at the fixture's path, or listening on its socket."""

    def __init__(self, device: Device, devices_dir: Path, *, tty_link: Path | None = None, socket: Path | None = None):
        if not DEVSIM.is_file():
            pytest.fail(f"{DEVSIM} not built (swift build)", pytrace=False)
        where = ["--pty"] if tty_link else ["--listen", f"unix:{socket}"]
        self.proc = subprocess.Popen(
            [str(DEVSIM), "--hardware-id", device.hw, "--dir", str(devices_dir), *where, *device.flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        path = self.proc.stdout.readline().decode().strip()
        assert path, f"devsim for {device.hw} printed nothing"
        self.tty_link = tty_link
        if tty_link:
            tmp = tty_link.with_suffix(".new")
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(path, tmp)
            os.replace(tmp, tty_link)

    def unplug(self):
        if self.tty_link and self.tty_link.is_symlink():
            self.tty_link.unlink()
        self.proc.kill()
        self.proc.wait(timeout=10)


def records(station: Station) -> list[dict]:
    r = station.run("ledger", "list", "--json")
    assert_exit(r, EXIT_OK)
    return json.loads(r.out)["records"]


def stored_leaf(devices_dir: Path, hw: str) -> bytes | None:
    p = devices_dir / hw / "cert.pem"
    if not p.exists():
        return None
    from cryptography.hazmat.primitives.serialization import Encoding
    return pem_certs(p.read_bytes())[0].public_bytes(Encoding.DER)


def test_line_end_to_end(station: Station, short_dir: Path):
    """Three pseudo-terminal fixtures and two socket fixtures, 24 devices of which 8 misbehave."""
    fx_dir = short_dir / "fx"
    fx_dir.mkdir()
    devices_dir = station.path / "devices"
    fixtures = {f"tty-{i}": f'transport = "tty"\npath = "{fx_dir}/tty-{i}"' for i in (1, 2, 3)}
    fixtures |= {f"sock-{i}": f'transport = "socket"\naddress = "unix:{fx_dir}/sock-{i}"' for i in (1, 2)}
    configure_line(station, fixtures)

    bad = {
        3: (["--wrong-readback"], "read-back does not match"),
        6: (["--disconnect-mid-write"], "the device disconnected"),
        9: (["--garbage"], "corrupt answer from the device"),
        12: (["--silent"], "no answer from the device"),
        15: (["--wrong-checksum"], "corrupt answer from the device"),
        18: (["--wrong-readback", "--no-keygen"], "read-back does not match"),
        23: (["--disconnect-mid-write", "--no-keygen"], "the device disconnected"),
    }
    plan: list[Device] = []
    for i in range(24):
        hw = f"HW-{i:04d}"
        if i in bad:
            plan.append(Device(hw, bad[i][0], good=False, reason=bad[i][1]))
        elif i == 20:
            plan.append(Device("hw-lower", [], good=False, reason="cn-pattern"))  # a CN outside the profile
        elif i == 21:
            plan.append(Device(hw, ["--delay-ms", "300"]))  # slow, but within the timeouts
        elif i % 5 == 2:
            plan.append(Device(hw, ["--no-keygen"]))  # the station makes its key
        else:
            plan.append(Device(hw))
    assert sum(not d.good for d in plan) == 8

    daemon = start_daemon(station)
    queue = list(plan)
    on: dict[str, tuple[Device, Plugged]] = {}
    seen: dict[str, int] = {name: 0 for name in fixtures}
    outcome: dict[str, dict] = {}

    def plug(name):
        if not queue:
            return
        dev = queue.pop(0)
        # A device that dropped its link may be tried again before it is taken off (a socket fixture cannot tell a
        # drop from a re-seat): only lines from the device now plugged count.
        seen[name] = len([r for r in daemon.devices() if r["fixture"] == name])
        if name.startswith("tty"):
            on[name] = (dev, Plugged(dev, devices_dir, tty_link=fx_dir / name))
        else:
            on[name] = (dev, Plugged(dev, devices_dir, socket=fx_dir / name))

    try:
        for name in fixtures:
            plug(name)
        deadline = time.time() + 180
        while on and time.time() < deadline:
            reports = daemon.devices()
            for name in list(on):
                dev, p = on[name]
                identifies = not any(f in dev.flags for f in ("--garbage", "--silent"))
                mine = [r for r in reports[:] if r["fixture"] == name][seen[name]:]
                mine = [r for r in mine if r.get("hardware_id") == (dev.hw if identifies else None)]
                if mine:
                    on.pop(name)
                    outcome[dev.hw] = mine[0]
                    p.unplug()
                    plug(name)
            time.sleep(0.05)
        assert not on, f"devices without an outcome: {[d.hw for d, _ in on.values()]}"
    finally:
        for _, p in on.values():
            p.unplug()
        code, out, err = daemon.stop()
    assert code == 0, err
    assert "stopped: " in out and "PASS  tty-" in out and "PASS  sock-" in out and "FAIL  " in out, out

    recs = records(station)
    by_cn: dict[str, list[dict]] = {}
    for r in recs:
        by_cn.setdefault(r["cn"], []).append(r)
    assert all(len(v) == 1 for v in by_cn.values()), "a CN was issued twice"

    verified = 0
    for dev in plan:
        o = outcome[dev.hw]
        if dev.good:
            assert o["result"] == "pass", (dev, o)
            assert o["cn"] == dev.cn and o["hardware_id"] == dev.hw and o["profile"] == "line"
            rec = by_cn[dev.cn][0]
            assert rec["state"] == "delivered" and rec["hardware_id"] == dev.hw
            assert rec["key_origin"] == ("station" if "--no-keygen" in dev.flags else "device")
            leaf = stored_leaf(devices_dir, dev.hw)
            assert leaf is not None, f"{dev.hw} stored nothing"
            assert hashlib.sha256(leaf).hexdigest().upper() == rec["fingerprint"]
            stored = devices_dir / dev.hw / "cert.pem"
            assert len(pem_certs(stored.read_bytes())) == 3, "leaf, issuing CA and root were stored"
            openssl("verify", "-CAfile", station.root_pem, "-untrusted", station.ca_pem, "-x509_strict", stored)
            if "--no-keygen" in dev.flags:
                assert b"PRIVATE KEY" in (devices_dir / dev.hw / "key-and-cert.pem").read_bytes()
            verified += 1
        else:
            assert o["result"] == "fail", (dev, o)
            assert dev.reason in o["reason"], (dev, o)
            rec = by_cn.get(dev.cn)
            if rec:  # issued, then not confirmed: failed, with the reason in its event
                assert rec[0]["state"] == "failed", (dev, rec)
            if dev.reason in ("no answer from the device", "corrupt answer from the device", "cn-pattern"):
                assert rec is None, f"{dev.hw} failed before issuance but has a record"
    assert verified == 16
    # Exactly the devices that reached issuance have records: the 16 good ones and the 4 that failed after it.
    assert len(recs) == 20
    # A device that drops its link on a socket fixture may be tried again before it is taken off (a socket cannot
    # tell a drop from a re-seat), so count the devices the failed events name, not the events.
    failed_cns = {e[3] for e in station.events("failed")}
    assert failed_cns == {d.cn for d in plan if not d.good and d.cn in by_cn}
    assert len(failed_cns) == 4
    assert_exit(station.run("ledger", "verify"), EXIT_OK)
    # The refusal left its trace: an event, no record.
    assert any("cn-pattern" in e[4] for e in station.events("refused"))
    # The JSON log is what the MES reads: every device line carries these fields.
    for o in outcome.values():
        assert {"at", "fixture", "result", "seconds", "station_seconds", "station_id", "profile"} <= o.keys()
        assert 0 <= o["station_seconds"] <= o["seconds"]
    # The slow device's 300 ms answers are its own time, not the station's.
    slow = outcome["HW-0021"]
    assert slow["seconds"] - slow["station_seconds"] >= 1.5, slow


def test_sigkill_at_many_points_leaves_the_ledger_consistent(station: Station, short_dir: Path):
    """The daemon is killed with SIGKILL at 10 points of a slow device's exchange, then started again with the
    device still plugged in. After each: the ledger verifies, what the device holds is in the ledger, its CN has one
    record, and the restarted daemon delivers the same certificate."""
    sock = short_dir / "s"
    configure_line(station, {"fx": f'transport = "socket"\naddress = "unix:{sock}"'})
    devices_dir = station.path / "devices"
    kill_points = [0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0, 1.2, 1.6]
    recovered_failed = 0
    for i, delay in enumerate(kill_points):
        dev = Device(f"K-{i:02d}", ["--delay-ms", "120"] + (["--no-keygen"] if i % 3 == 2 else []))
        plugged = Plugged(dev, devices_dir, socket=sock)
        try:
            d = start_daemon(station)
            time.sleep(delay)
            d.kill()
            # The ledger is consistent at once, whatever the point.
            assert_exit(station.run("ledger", "verify"), EXIT_OK)
            before = [r for r in records(station) if r["cn"] == dev.cn]
            assert len(before) <= 1
            leaf = stored_leaf(devices_dir, dev.hw)
            if leaf is not None:
                # Anything the device holds was committed first.
                assert before and hashlib.sha256(leaf).hexdigest().upper() == before[0]["fingerprint"]
            # Restart with the device still plugged in: it is finished, not issued twice.
            d = start_daemon(station)
            deadline = time.time() + 30
            while time.time() < deadline and not any(
                    r["hardware_id"] == dev.hw for r in d.devices()[-1:] if r.get("hardware_id")):
                time.sleep(0.05)
            recovered_failed += sum(1 for e in d.entries() if e.get("event") == "recovered"
                                    and "marked failed" in e["message"] and dev.cn in e["message"])
            code, out, err = d.stop()
            assert code == 0, err
        finally:
            plugged.unplug()
        after = [r for r in records(station) if r["cn"] == dev.cn]
        assert len(after) == 1, f"kill at {delay}s: {len(after)} records for {dev.cn}"
        assert after[0]["state"] == "delivered", (delay, after)
        leaf = stored_leaf(devices_dir, dev.hw)
        assert leaf is not None and hashlib.sha256(leaf).hexdigest().upper() == after[0]["fingerprint"]
        if before:
            assert after[0]["fingerprint"] == before[0]["fingerprint"], "the same certificate, not a second"
        assert_exit(station.run("ledger", "verify"), EXIT_OK)
    assert not list((station.path / "run" / "inflight").glob("*.json")), "journal entries left behind"
    # Some kills landed between commit and confirmation: the restart failed those records before re-delivering.
    assert recovered_failed >= 1


def test_workorder_commands_and_the_daemon_honours_the_quantity(station: Station, short_dir: Path):
    sock = short_dir / "w"
    configure_line(station, {"fx": f'transport = "socket"\naddress = "unix:{sock}"'})
    r = station.run("workorder", "open", "--profile", "line", "--quantity", "2", "--id", "WO-1")
    assert_exit(r, EXIT_OK)
    assert "opened work order WO-1" in r.out
    r = station.run("workorder", "open", "--profile", "line", "--quantity", "5")
    assert r.rc == 65 and "already has work order 'WO-1' open" in r.err
    r = station.run("workorder", "open", "--profile", "nope", "--quantity", "5")
    assert r.rc == 78
    d = start_daemon(station)
    devices_dir = station.path / "devices"
    results = []
    try:
        for hw in ("W-1", "W-2", "W-3"):
            p = Plugged(Device(hw), devices_dir, socket=sock)
            n = len(d.devices())
            deadline = time.time() + 30
            while len(d.devices()) == n and time.time() < deadline:
                time.sleep(0.05)
            results.append(d.devices()[-1])
            p.unplug()
    finally:
        code, out, err = d.stop()
    assert code == 0, err
    assert [x["result"] for x in results] == ["pass", "pass", "fail"]
    assert [x.get("work_order") for x in results[:2]] == ["WO-1", "WO-1"]
    assert "work-order: work order 'WO-1' is complete (2 of 2 issued)" in results[2]["reason"]
    r = station.run("workorder", "list", "--json")
    assert_exit(r, EXIT_OK)
    (wo,) = json.loads(r.out)
    assert wo["id"] == "WO-1" and wo["issued"] == 2 and wo["quantity"] == 2 and wo["state"] == "open"
    r = station.run("manifest", "devices", "--work-order", "WO-1", "--out", str(short_dir / "wo.csv"),
                    "--profile", "line")
    # The line profile has no product_prn: the manifest names what is missing rather than writing half a file.
    assert r.rc == 78 and "product_prn" in r.err
    assert_exit(station.run("workorder", "close", "WO-1"), EXIT_OK)
    r = station.run("workorder", "close", "WO-1")
    assert r.rc == 65 and "already closed" in r.err


def test_run_refuses_a_second_daemon_and_explains_missing_fixtures(station: Station, short_dir: Path):
    r = station.run("run")
    assert r.rc == 78 and "no fixtures" in r.err
    configure_line(station, {"fx": f'transport = "socket"\naddress = "unix:{short_dir}/x"'})
    r = station.run("run", "--fixture", "nope")
    assert r.rc == 64 and "no fixture 'nope'" in r.err
    d = start_daemon(station)
    try:
        r = station.run("run")
        assert r.rc == 69 and "already running" in r.err
    finally:
        code, _, err = d.stop()
    assert code == 0, err
    kinds = [e[1] for e in station.events()]
    assert "daemon-started" in kinds and "daemon-stopped" in kinds


@pytest.mark.parametrize("body, message", [
    ('transport = "serial"\npath = "/dev/x"', "transport 'serial' must be"),
    ('transport = "tty"\npath = "/dev/x"\nbaud = 1234', "baud 1234 is not one of"),
    ('transport = "socket"\naddress = "http://x"', "must be unix:PATH or tcp:HOST:PORT"),
    ('transport = "usb"\nvendor_id = "12345"\nproduct_id = "0001"', "vendor_id '12345' must be four hex digits"),
    ('transport = "usb"\nproduct_id = "0001"', "is missing 'vendor_id'"),
    ('transport = "tty"\npath = "/dev/x"\nprofile = "nope"', "profile = 'nope' has no [profiles.nope]"),
    ('transport = "tty"\npath = "/dev/x"\nspeed = 9600', "unknown key 'speed'"),
])
def test_fixture_configuration_errors_name_the_key(station: Station, body: str, message: str):
    station.append_toml(f"[fixtures.fx]\n{body}\n")
    r = station.run("config", "check")
    assert r.rc == 78, r
    assert message in r.err, r.err
    assert r.err.count("\n") == 1


def test_demo_is_the_main_job(keyline_bin, short_dir: Path):
    """`keyline demo` creates a station, passes devices through pseudo-terminal fixtures and ends with a manifest."""
    d = short_dir / "demo"
    r = subprocess.run([str(KEYLINE_BIN), "demo", "--station", str(d), "--devices", "20", "--fixtures", "3",
                        "--devsim", str(DEVSIM)], capture_output=True, timeout=180)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "every device ended as expected: PASS" in out
    # Devices 4 and 14 read back wrong, 9 and 19 drop the link, 12 talks garbage (keyline demo --help).
    assert "summary: 20 device(s), 15 PASS, 5 FAIL" in out, out
    manifest = d / "manifests" / "demo-1.csv"
    rows = list(csv.DictReader(manifest.open(newline="")))
    assert len(rows) == 15 and {r["identifier"] for r in rows} == {
        f"DEMO-1-{i:04d}" for i in range(1, 21) if i not in (4, 9, 12, 14, 19)}
    st = Station(d)
    assert_exit(st.run("ledger", "verify"), EXIT_OK)
    # A second run adds new devices (new hardware ids), never re-issuing the first run's.
    r = subprocess.run([str(KEYLINE_BIN), "demo", "--station", str(d), "--devices", "5", "--fixtures", "2",
                        "--devsim", str(DEVSIM)], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert "DEMO-2-0001" in r.stdout.decode()


def test_station_example_toml_is_accepted(station: Station):
    """Station/station.example.toml, with its fixtures and [daemon] keys uncommented, is what the parser accepts."""
    text = (REPO / "Station" / "station.example.toml").read_text()
    import re
    # Uncomment the example fixture and daemon keys (lines like '# key = value' inside those sections).
    lines, out, section = text.splitlines(), [], ""
    for line in lines:
        m = re.match(r"^#\s*(\[(fixtures\.[^\]]+|daemon)\])\s*$", line)
        if m:
            section = m.group(1)
            out.append(m.group(1))
            continue
        if line.startswith("["):
            section = line
        if (section.startswith("[fixtures") or section == "[daemon]") and re.match(r"^#\s*[a-z_]+\s*=", line):
            line = re.sub(r"^#\s*", "", line)
        out.append(line)
    (station.path / "templates").mkdir(exist_ok=True)
    (station.path / "templates" / "description.mustache").write_text(
        (REPO / "Templates" / "description.mustache").read_text())
    station.toml_path.write_text("\n".join(out) + "\n")
    cfg = station.config()
    assert {"fx-1", "fx-2", "usb-1"} <= set(cfg.get("fixtures", {})), cfg.get("fixtures")
    assert cfg.get("daemon"), "the [daemon] keys were uncommented"
    r = station.run("profile", "list")
    assert_exit(r, EXIT_OK)


def test_devsim_count_is_a_line_of_devices_on_one_socket(station: Station, short_dir: Path):
    """keyline-devsim --count N (the benchmark's line) is N devices in turn, each leaving after its read-back."""
    sock = short_dir / "c"
    configure_line(station, {"fx": f'transport = "socket"\naddress = "unix:{sock}"'})
    sim = subprocess.Popen([str(DEVSIM), "--hardware-id", "CNT", "--count", "3", "--listen", f"unix:{sock}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sim.stdout.readline()
    d = start_daemon(station)
    try:
        assert sim.wait(timeout=60) == 0, sim.stderr.read().decode()
        deadline = time.time() + 10
        while len(d.devices()) < 3 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        code, _, err = d.stop()
    assert code == 0, err
    assert [(x["hardware_id"], x["result"]) for x in d.devices()] == [
        ("CNT-0001", "pass"), ("CNT-0002", "pass"), ("CNT-0003", "pass")]
    assert [r["state"] for r in records(station)] == ["delivered"] * 3


def resident_fraction(path: Path) -> float:
    """How much of a file the kernel holds in its page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", str(path)],
                         capture_output=True, text=True, check=True, timeout=30).stdout.split()
    return int(out[0]) / int(out[1])


def drop_page_cache():
    subprocess.run(["sync"], check=True, timeout=120)
    Path("/proc/sys/vm/drop_caches").write_text("1\n")


def test_daemon_reads_the_ledger_into_the_page_cache_at_start(station: Station, short_dir):
    """After a boot the ledger's index pages are on disk only: `keyline run` asks the kernel to read the ledger in,
    in the background, before the first devices need it (docs/operations.md, "A large ledger and the page cache")."""
    if os.geteuid() != 0 or not shutil.which("fincore"):
        pytest.skip("dropping the page cache needs root (as in CI) and fincore (util-linux)")
    configure_line(station, {"fx": f'transport = "socket"\naddress = "unix:{short_dir}/none.sock"'})
    assert_exit(station.run("issue", "--count", "3000", "--cn-template", "PF-{seq:05}", "--out",
                            station.path.parent / "batch"), EXIT_OK)
    ledger = station.ledger_path
    assert ledger.stat().st_size > 4 << 20, "the ledger should span a few megabytes"
    drop_page_cache()
    cold = resident_fraction(ledger)
    assert cold < 0.5, f"dropping the page cache left {cold:.0%} of the ledger resident: the test cannot tell"
    time.sleep(1)
    assert resident_fraction(ledger) < 0.5, "something else read the ledger in"
    daemon = start_daemon(station)
    try:
        deadline = time.time() + 20
        while time.time() < deadline and resident_fraction(ledger) < 0.95:
            time.sleep(0.1)
        assert resident_fraction(ledger) >= 0.95, f"only {resident_fraction(ledger):.0%} of the ledger was read in"
    finally:
        rc, _, err = daemon.stop()
    assert rc == 0, err
