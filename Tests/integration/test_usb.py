"""The libusb transport (issue 4) without USB hardware: umockdev fakes a device in sysfs and /dev, and a usbdevfs
ioctl handler plays the device's side of protocol v1 over its bulk endpoints (umockdev_line.py, run with Debian's
python3 for python3-gi). The real `keyline run` finds the device by hotplug, matched by vendor and product id,
claims its interface, provisions it over bulk transfers and hears it leave."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from conftest import KEYLINE_BIN, EXIT_OK, Station, assert_exit, openssl, pem_certs

DRIVER = Path(__file__).with_name("umockdev_line.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # python3-gi and gir1.2-umockdev-1.0 (Scripts/test installs them)


def test_usb_fixture_hotplug_match_and_bulk_exchange(station: Station, tmp_path: Path):
    station.append_toml("""
[profiles.line]
ca = "dev"
cn_pattern = '^SN-[A-Z0-9-]+$'
cn_template = "SN-{hardware_id}"
validity_days = 365
min_validity_days = 30

[daemon]
response_timeout = 3
store_timeout = 5
retries = 1

[fixtures.usb-1]
transport = "usb"
vendor_id = "1209"
product_id = "0001"
interface = 0
profile = "line"
""")
    store = tmp_path / "device"
    p = subprocess.run([SYSTEM_PYTHON, str(DRIVER), str(KEYLINE_BIN), str(station.path), str(store)],
                       capture_output=True, timeout=180)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    result = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert result["started"], result
    assert result["exit"] == 0, result["stderr"]
    notes = [e["message"] for e in result["log"] if e.get("event") == "usb"]
    # Hotplug matched the fixture's device only: the 1209:0002 that arrived first is never mentioned.
    assert "usb 1209:0001 arrived on bus 1 address 2 (hotplug)" in notes, notes
    assert not any("0002" in n for n in notes), notes
    assert result["left"] and "usb 1209:0001 left on bus 1 address 2 (hotplug)" in notes, notes
    devices = [e for e in result["log"] if e.get("event") == "device"]
    assert len(devices) == 1, devices
    d = devices[0]
    assert d["result"] == "pass" and d["fixture"] == "usb-1" and d["cn"] == "SN-USB-0001", d
    assert d["hardware_id"] == "USB-0001"
    # The whole exchange crossed the bulk endpoints: a station-made key, so READBACK comes first and last.
    assert result["requests"] == ["HELLO", "IDENTIFY", "READBACK", "STORE-KEY", "READBACK"], result["requests"]
    assert result["bytes_out"] > 1000 and result["bytes_in"] > 100 and result["claimed"] >= 1
    stored = (store / "key-and-cert.pem").read_bytes()
    assert b"PRIVATE KEY" in stored
    certs = pem_certs(stored)
    assert len(certs) == 3
    from cryptography.hazmat.primitives.serialization import Encoding
    r = station.run("ledger", "show", "SN-USB-0001", "--json")
    assert_exit(r, EXIT_OK)
    record = json.loads(r.out)
    rec = record.get("record", record)
    assert rec["state"] == "delivered" and rec["key_origin"] == "station"
    assert hashlib.sha256(certs[0].public_bytes(Encoding.DER)).hexdigest().upper() == rec["fingerprint"]
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(stored[stored.index(b"-----BEGIN CERTIFICATE-----"):])
    openssl("verify", "-CAfile", station.root_pem, "-untrusted", station.ca_pem, leaf)
