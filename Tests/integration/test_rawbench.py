"""keyline-rawbench, the benchmark's peer: its --files mode must write each device's files as `keyline issue` does,
or the "raw limit with the files" it measures is not the floor it claims to be."""

import json
import os
import stat
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import KEYLINE_BIN

# Built beside keyline (swift build builds every product).
RAWBENCH = Path(os.environ.get("KEYLINE_RAWBENCH_BIN") or Path(KEYLINE_BIN).parent / "keyline-rawbench")


def rawbench(*args, cwd=None) -> dict:
    cp = subprocess.run([str(RAWBENCH), *map(str, args)], capture_output=True, timeout=120, cwd=cwd)
    assert cp.returncode == 0, cp.stderr.decode()
    return json.loads(cp.stdout.decode().strip().splitlines()[-1])


def test_raw_limit_reports_its_ops(tmp_path):
    r = rawbench("--threads", "2", "--seconds", "0.3", cwd=tmp_path)
    assert r["threads"] == 2 and r["ops"] > 0
    assert abs(r["per_sec"] - r["ops"] / r["seconds"]) < 0.1 * r["per_sec"]
    assert list(tmp_path.iterdir()) == [], "without --files nothing is written"


def test_files_mode_writes_each_devices_three_files_like_keyline_issue(tmp_path):
    out = tmp_path / "files"
    r = rawbench("--threads", "2", "--seconds", "0.3", "--files", out)
    names = sorted(p.name for p in out.iterdir())
    keys = [n for n in names if n.endswith(".key")]
    assert len(keys) == r["ops"] > 0
    assert not [n for n in names if n.endswith(".partial")], "every staged key is renamed into place"
    assert len(names) == 3 * r["ops"]
    for key_name in keys[:20]:
        stem = key_name[: -len(".key")]
        key_path = out / key_name
        assert stat.S_IMODE(os.lstat(key_path).st_mode) == 0o600
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        pem = (out / f"{stem}.pem").read_bytes()
        chain = (out / f"{stem}.chain.pem").read_bytes()
        assert pem.startswith(b"-----BEGIN CERTIFICATE-----") and chain.startswith(pem)
        # Within 10 % of keyline's own files (676 and 2,093 bytes with the development CA).
        assert 610 < len(pem) < 745 and 1880 < len(chain) < 2300
