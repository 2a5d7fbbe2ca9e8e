#!/usr/bin/python3
"""A USB fixture for `keyline run` without USB hardware: umockdev fakes the device in sysfs and /dev, and a
UMockdev.IoctlBase handler plays the device's side of usbdevfs, speaking Keyline device protocol v1 over its bulk
endpoints. Run by test_usb.py with Debian's python3 (python3-gi, gir1.2-umockdev-1.0):

    /usr/bin/python3 umockdev_line.py KEYLINE_BIN STATION_DIR STORE_DIR

It starts `keyline run` under umockdev's preload, adds a non-matching device (1209:0002) and then the fixture's
device (1209:0001) while the daemon runs (hotplug), waits for the daemon's verdict on it, removes the device, stops
the daemon and prints one JSON object: the daemon's log entries, what the device stored, how many bytes crossed.
"""
import base64
import collections
import errno
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

# linux/usbdevice_fs.h on x86_64.
DISCONNECT_CLAIM = 0x8108551B
CLAIMINTERFACE = 0x8004550F
RELEASEINTERFACE = 0x80045510
GETDRIVER = 0x41045508
SUBMITURB = 0x8038550A
REAPURB = 0x4008550C
REAPURBNDELAY = 0x4008550D
DISCARDURB = 0x0000550B
CLEAR_HALT = 0x80045515
URB_SIZE = 56  # type u8, endpoint u8, status i32 @4, buffer ptr @16, buffer_length i32 @24, actual_length i32 @28
URB_TYPE_BULK = 3

# Device descriptor (18) + configuration (9) + interface 0, class 0xFF, 2 endpoints (9) + bulk IN 0x81 and bulk
# OUT 0x01 of 64 bytes (7 + 7).
DESCRIPTORS = ("1201000200000040091201000001010203010902200001010080320904000002FF00000007058102400000070501024000"
               "00")


def description(pid: str, port: str, devnum: int) -> str:
    d = DESCRIPTORS.replace("09120100", "0912" + pid[2:] + pid[:2], 1).upper()  # idProduct, little-endian
    return "\n".join([
        f"P: /devices/pci0000:00/0000:00:14.0/usb1/{port}",
        f"N: bus/usb/001/{devnum:03d}={d}",
        "E: BUSNUM=001", f"E: DEVNAME=/dev/bus/usb/001/{devnum:03d}", f"E: DEVNUM={devnum:03d}",
        "E: DEVTYPE=usb_device", "E: DRIVER=usb", "E: ID_BUS=usb", f"E: ID_MODEL_ID={pid}", "E: ID_VENDOR_ID=1209",
        "E: MAJOR=189", f"E: MINOR={devnum - 1}", f"E: PRODUCT=1209/{int(pid, 16):x}/100", "E: SUBSYSTEM=usb",
        "E: TYPE=0/0/0",
        "A: bConfigurationValue=1\\n", "A: bDeviceClass=00", "A: bDeviceProtocol=00", "A: bDeviceSubClass=00",
        "A: bMaxPacketSize0=64", "A: bMaxPower=100mA", "A: bNumConfigurations=1", "A: bNumInterfaces= 1",
        "A: bcdDevice=0100", "A: bmAttributes=80", "A: busnum=1\\n", f"A: devnum={devnum}\\n",
        f"A: devpath={port.split('-')[1]}", f"A: idProduct={pid}", "A: idVendor=1209",
        "A: manufacturer=Keyline Test", "A: maxchild=0", "A: product=Keyline Fixture", f"A: serial=KL{pid}",
        "A: speed=12\\n", "A: version= 2.00", f"H: descriptors={d}", ""])


def der_of_first(pem: bytes, label: bytes) -> bytes:
    begin = b"-----BEGIN " + label + b"-----"
    start = pem.index(begin) + len(begin)
    end = pem.index(b"-----END " + label + b"-----", start)
    return base64.b64decode(b"".join(pem[start:end].split()))


def spki_sha256(cert_der: bytes) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo, by openssl (the device has no ASN.1 parser of its own)."""
    pub = subprocess.run(["openssl", "x509", "-inform", "DER", "-pubkey", "-noout"], input=cert_der,
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                         check=True).stdout
    return hashlib.sha256(der).hexdigest().upper()


class ProtocolDevice:
    """The device's side of protocol v1 for a device without key generation (the station makes its key)."""

    def __init__(self, hw: str, store_dir: str):
        self.hw, self.store_dir = hw, store_dir
        self.buf = b""
        self.stored: bytes | None = None
        self.requests: list[str] = []

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = b""
        while b"\n" in self.buf:
            line, rest = self.buf.split(b"\n", 1)
            words = line.rstrip(b"\r").decode().split()
            payload = None
            if len(words) >= 2 and words[-2].startswith("+"):
                n = int(words[-2][1:])
                if len(rest) < n + 1:
                    return out  # the payload is still arriving
                payload, rest = rest[:n], rest[n + 1:]
                if hashlib.sha256(payload).hexdigest().upper() != words[-1].upper():
                    self.buf = rest
                    out += b"ERR CHECKSUM payload does not match\n"
                    continue
            self.buf = rest
            self.requests.append(words[0] if words else "")
            out += self.answer(words, payload)
        return out

    def answer(self, words, payload) -> bytes:
        verb = words[0] if words else ""
        if verb == "HELLO":
            return b"OK HELLO keyline/1\n"
        if verb == "IDENTIFY":
            return f"OK IDENTIFY hw={self.hw} model=usb-fixture fw=2.0.0 keygen=no\n".encode()
        if verb == "READBACK":
            if self.stored is None:
                return b"OK READBACK cert=none pubkey=none\n"
            der = der_of_first(self.stored, b"CERTIFICATE")
            return f"OK READBACK cert={hashlib.sha256(der).hexdigest().upper()} pubkey={spki_sha256(der)}\n".encode()
        if verb in ("STORE-KEY", "STORE-CERT") and payload is not None:
            self.stored = payload
            os.makedirs(self.store_dir, exist_ok=True)
            with open(os.path.join(self.store_dir, "key-and-cert.pem"), "wb") as f:
                f.write(payload)
            return b"OK STORED\n"
        return f"ERR UNKNOWN {verb}\n".encode()


class UsbFunction(UMockdev.IoctlBase):
    """usbdevfs for one bulk IN/OUT interface, the device behind it a ProtocolDevice. Runs on umockdev's ioctl
    thread."""

    def __init__(self, device: ProtocolDevice):
        super().__init__()
        self.device = device
        self.done = collections.deque()
        self.pending_in = collections.deque()
        self.to_host = b""
        self.bytes_out = 0
        self.bytes_in = 0
        self.claimed = 0
        self.lock = threading.Lock()
        self.seen: list[int] = []

    def do_handle_ioctl(self, client):
        try:
            return self.handle(client)
        except Exception as e:  # an unanswered ioctl would hang the daemon: answer EIO and say why
            sys.stderr.write(f"ioctl handler: {e!r}\n")
            client.complete(-1, errno.EIO)
            return True

    def handle(self, client):
        req, arg = client.get_request(), client.get_arg()
        self.seen.append(req)
        with self.lock:
            if req in (DISCONNECT_CLAIM, CLAIMINTERFACE):
                self.claimed += 1
                client.complete(0, 0)
                return True
            if req in (RELEASEINTERFACE, CLEAR_HALT):
                client.complete(0, 0)
                return True
            if req == GETDRIVER:
                client.complete(-1, errno.ENODATA)
                return True
            if req == SUBMITURB:
                urb = arg.resolve(0, URB_SIZE)
                raw = bytes(urb.retrieve())
                typ, ep = raw[0], raw[1]
                length = struct.unpack_from("<i", raw, 24)[0]
                buf = urb.resolve(16, length) if length else None
                if typ != URB_TYPE_BULK:
                    client.complete(-1, errno.EINVAL)
                    return True
                if ep & 0x80:
                    self.pending_in.append((urb, buf, length))
                else:
                    data = bytes(buf.retrieve())[:length] if buf else b""
                    self.bytes_out += len(data)
                    self.to_host += self.device.feed(data)
                    urb.update(4, struct.pack("<i", 0))
                    urb.update(28, struct.pack("<i", length))
                    self.done.append(urb)
                self.match_in()
                client.complete(0, 0)
                return True
            if req in (REAPURB, REAPURBNDELAY):
                if not self.done:
                    client.complete(-1, errno.EAGAIN)
                    return True
                urb = self.done.popleft()
                arg.resolve(0, 8).set_ptr(0, urb)
                client.complete(0, 0)
                return True
            if req == DISCARDURB:
                addr = struct.unpack("<Q", bytes(arg.retrieve())[:8])[0]
                for item in list(self.pending_in):
                    if item[0].client_addr == addr:
                        self.pending_in.remove(item)
                        item[0].update(4, struct.pack("<i", -errno.ENOENT))
                        item[0].update(28, struct.pack("<i", 0))
                        self.done.append(item[0])
                        client.complete(0, 0)
                        return True
                client.complete(-1, errno.EINVAL)
                return True
        return False

    def match_in(self):
        while self.pending_in and self.to_host:
            urb, buf, length = self.pending_in.popleft()
            data, self.to_host = self.to_host[:length], self.to_host[length:]
            if buf is not None:
                buf.update(0, data)
            self.bytes_in += len(data)
            urb.update(4, struct.pack("<i", 0))
            urb.update(28, struct.pack("<i", len(data)))
            self.done.append(urb)


def log_entries(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_for(path: str, pred, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(pred(e) for e in log_entries(path)):
            return True
        time.sleep(0.05)
    return False


def main():
    if "libumockdev-preload" not in os.environ.get("LD_PRELOAD", ""):
        env = dict(os.environ)
        env["LD_PRELOAD"] = "libumockdev-preload.so.0" + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    keyline, station, store_dir = sys.argv[1:4]
    log = os.path.join(station, "run", "devices.jsonl")
    testbed = UMockdev.Testbed.new()
    root = testbed.get_root_dir()
    env = dict(os.environ, UMOCKDEV_DIR=root)
    daemon = subprocess.Popen([keyline, "run", "--station", station], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    result = {"started": wait_for(log, lambda e: e.get("event") == "started", 30)}
    device = ProtocolDevice("USB-0001", store_dir)
    function = UsbFunction(device)
    # The non-matching device first, then the fixture's: both arrive by hotplug while the daemon runs.
    testbed.add_from_string(description("0002", "1-2", 3))
    time.sleep(0.5)
    assert testbed.add_from_string(description("0001", "1-1", 2))
    path = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1"
    testbed.attach_ioctl("/dev/bus/usb/001/002", function)
    result["verdict"] = wait_for(log, lambda e: e.get("event") == "device", 60)
    # Taken off the fixture: the daemon hears it leave. (The usbdevfs handler keeps answering as if the node were
    # still there: umockdev's preload hangs a client whose ioctls start failing with ENODEV under libusb's event
    # handling, which is not what is under test here.)
    testbed.uevent(path, "remove")
    result["left"] = wait_for(log, lambda e: "left" in e.get("message", ""), 10)
    daemon.send_signal(signal.SIGTERM)
    try:
        out, err = daemon.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        out, err = daemon.communicate()
    result |= {
        "exit": daemon.returncode, "stdout": out.decode(), "stderr": err.decode(), "log": log_entries(log),
        "requests": device.requests, "bytes_out": function.bytes_out, "bytes_in": function.bytes_in,
        "claimed": function.claimed, "last_ioctls": ["0x%08x" % r for r in function.seen[-6:]],
    }
    testbed.detach_ioctl("/dev/bus/usb/001/002")
    del testbed
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
