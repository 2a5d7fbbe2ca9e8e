#!/usr/bin/env python3
"""Keyline's benchmark driver (issue 7). Run it through Scripts/bench, which builds the release binaries first.

One run, one machine, the same inputs for every peer:

  1. durable issuance: `keyline sign` against a pyca/cryptography + sqlite3 loop and `openssl ca`, interleaved in
     rounds, per-certificate median and p95;
  2. flat as it grows: one durable issuance with 0 / 100k / 1M records already in the ledger (and openssl ca with
     an index.txt of the same sizes, as far as it gets);
  3. bulk pre-generation: `keyline issue` on one core and on all cores, beside keyline-rawbench's raw limit
     (and, as context, the raw limit plus each device's three files on the same disk), interleaved in 3 rounds,
     medians;
  4. export at scale: `keyline manifest devices` over the largest ledger of step 2 (time, peak RSS);
  5. reconcile at scale: `keyline ledger reconcile` of that ledger against its own device manifest, beside a Python
     peer (time, peak RSS);
  6. the line: the daemon with simulated devices on socket fixtures, the station's own time per device, 1 and 4
     fixtures.

Writes bench/results.json and BENCHMARKS.md; scratch files go to bench/work/ (wiped at start). Exits non-zero when a
step fails; a missed target is reported, not a failure. Standard library plus `cryptography` only.

`bench.py _pyca-peer ...` is the pyca peer itself (one process per round), started by the driver.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work"
# keyline issue's default --chunk, passed explicitly so the command in BENCHMARKS.md says what was measured.
BULK_CHUNK = 2000
RESULTS = REPO / "bench" / "results.json"
REPORT = REPO / "BENCHMARKS.md"
STARTED = time.monotonic()

BENCH_PROFILE = """
# Added by Scripts/bench: the profile the growth and export steps issue under.
[profiles.bench]
ca = "dev"
product_prn = "prn:1:11111111-2222-3333-4444-555555555555:product:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
tags = ["bench"]
"""

# The openssl ca configuration: its own index.txt database, random 159-bit serials, unique subjects, nothing copied
# from the CSR, and the leaf extensions keyline gives (keyUsage critical digitalSignature, EKU clientAuth, SKI, AKI).
OPENSSL_CNF = """\
[ ca ]
default_ca = bench_ca

[ bench_ca ]
dir              = {dir}
database         = $dir/index.txt
new_certs_dir    = $dir/newcerts
certificate      = {ca_cert}
private_key      = {ca_key}
rand_serial      = yes
unique_subject   = yes
copy_extensions  = none
default_md       = sha256
default_days     = 3650
policy           = policy_cn
email_in_dn      = no
preserve         = no
x509_extensions  = leaf_ext

[ policy_cn ]
commonName       = supplied

[ leaf_ext ]
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
"""


# --------------------------------------------------------------------------------------------------------------------
# Small helpers


class StepFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:7.1f}s] {msg}", flush=True)


def rel(path) -> str:
    s = str(path)
    root = str(REPO) + "/"
    return s.replace(root, "")


COMMANDS: list[dict] = []
# The number each step's commands carry in the report ("4 export at scale", ...).
# What the notes a step writes say, so a partial run that measures the step again replaces them.
STEP_NOTE_MARKERS = {"durable": ("'s leaf differs from keyline's",), "export": ("the export had",),
                     "line": ("The line: a device's station time",)}
STEP_NUMBERS = {"durable": "1", "growth": "2", "bulk": "3", "export": "4", "reconcile": "5", "line": "6"}


def note_command(step: str, argv: list[str], what: str = "") -> None:
    """Records a command template for the report (each distinct one once)."""
    text = " ".join(_quote(rel(a)) for a in argv)
    for c in COMMANDS:
        if c["step"] == step and c["command"] == text:
            return
    COMMANDS.append({"step": step, "command": text, "what": what})


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[A-Za-z0-9_./:=,+@%-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def run(argv: list[str], *, timeout: float, what: str, stdout=None, stderr=None, env=None,
        check: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    """Runs a command with a timeout; returns (completed, wall seconds). Raises StepFailed on timeout/non-zero."""
    t0 = time.perf_counter()
    try:
        cp = subprocess.run(argv, timeout=timeout, stdout=stdout if stdout is not None else subprocess.PIPE,
                            stderr=stderr if stderr is not None else subprocess.PIPE, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{what}: timed out after {timeout:.0f} s: {' '.join(rel(a) for a in argv[:6])} ...")
    wall = time.perf_counter() - t0
    if check and cp.returncode != 0:
        err = cp.stderr.decode(errors="replace")[-2000:] if isinstance(cp.stderr, bytes) else ""
        raise StepFailed(f"{what}: exit {cp.returncode}: {' '.join(rel(a) for a in argv[:8])} ...\n{err}")
    return cp, wall


def text_of(argv: list[str], timeout: float = 60) -> str:
    try:
        cp = subprocess.run(argv, timeout=timeout, capture_output=True, text=True)
        return (cp.stdout + cp.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def median(xs):
    return statistics.median(xs) if xs else None


def median_run(runs: list[dict]) -> dict:
    """One side's runs summed up: the median of every numeric figure, and the runs themselves under "runs"."""
    out: dict = {}
    for k, v in runs[0].items():
        values = [r.get(k) for r in runs]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            m = statistics.median(values)
            out[k] = round(m, 3) if isinstance(m, float) else m
        else:
            out[k] = v
    out["runs"] = runs
    return out


def pct(xs, p: float):
    """Nearest-rank percentile."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


def stats_us(times_us: list[float], wall_s: float | None = None) -> dict:
    """Per-certificate statistics from per-certificate microseconds."""
    if not times_us:
        return {"count": 0}
    med = median(times_us)
    total_s = sum(times_us) / 1e6
    d = {
        "count": len(times_us),
        "median_us": round(med, 1),
        "p95_us": round(pct(times_us, 95), 1),
        "p99_us": round(pct(times_us, 99), 1),
        "min_us": round(min(times_us), 1),
        "max_us": round(max(times_us), 1),
        "per_sec_from_median": round(1e6 / med, 1) if med else None,
        "throughput_per_sec": round(len(times_us) / total_s, 1) if total_s else None,
    }
    if wall_s:
        d["wall_seconds"] = round(wall_s, 3)
        d["wall_per_sec"] = round(len(times_us) / wall_s, 1)
    return d


def bootstrap_ratio_interval(largest: list[list[float]], empty: list[list[float]], n: int = 2000,
                             seed: int = 20261129) -> tuple[float, float]:
    """A 95 % interval for median(largest) / median(empty), resampling whole rounds (a round is one run per side,
    measured one after the other, so the pair shares the machine's state) with replacement."""
    import random
    rng = random.Random(seed)
    k = len(largest)
    out = []
    for _ in range(n):
        pick = [rng.randrange(k) for _ in range(k)]
        a = [t for i in pick for t in largest[i]]
        b = [t for i in pick for t in empty[i]]
        out.append(statistics.median(a) / statistics.median(b))
    out.sort()
    return round(out[int(0.025 * n)], 3), round(out[int(0.975 * n) - 1], 3)


def ratio(a, b, nd=3):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, nd)


def read_timings(path: Path) -> list[float]:
    """Per-certificate microseconds, read to written (the first column of a timings file)."""
    return [float(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]


def read_span(path: Path) -> float:
    """Seconds from the first certificate read to the last one written, from a timings file's two columns
    (microseconds read to written, and when it was read, microseconds after the first was read)."""
    rows = [tuple(map(float, line.split()[:2])) for line in path.read_text().splitlines() if line.strip()]
    if not rows or len(rows[0]) < 2:
        raise StepFailed(f"{rel(path)} has no read times (second column); rebuild keyline")
    return (max(lat + at for lat, at in rows) - min(at for _, at in rows)) / 1e6


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU so far, from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def machine_busy_percent(before: tuple[int, int], after: tuple[int, int], cores: int) -> float | None:
    """How busy the whole machine was between two cpu_ticks(), in percent of one core (200 = two cores busy)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(100 * cores * busy / total, 1) if total > 0 else None


def parse_time_v(path: Path) -> dict:
    """Parses GNU time -v output."""
    out = {}
    txt = path.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", txt)
    if m:
        out["peak_rss_mb"] = round(int(m.group(1)) / 1024, 1)
    m = re.search(r"Percent of CPU this job got: (\d+)%", txt)
    if m:
        out["cpu_percent"] = int(m.group(1))
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", txt)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        secs = 0.0
        for p in parts:
            secs = secs * 60 + p
        out["time_wall_seconds"] = round(secs, 3)
    m = re.search(r"User time \(seconds\): ([\d.]+)", txt)
    if m:
        out["user_seconds"] = float(m.group(1))
    m = re.search(r"System time \(seconds\): ([\d.]+)", txt)
    if m:
        out["system_seconds"] = float(m.group(1))
    return out


def settle() -> None:
    """Flushes dirty pages before a measured run, so one peer's unflushed writes are not paid by the next's fsyncs."""
    try:
        subprocess.run(["sync"], timeout=600)
    except subprocess.TimeoutExpired:
        raise StepFailed("sync timed out after 600 s")
    time.sleep(0.5)


def read_through(path: Path) -> None:
    """Reads a file to the end, through the kernel's page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def page_cache_fraction(paths: list[Path]) -> float | None:
    """The fraction of these files' pages resident in the page cache (util-linux fincore), None if unknown."""
    if not paths or not shutil.which("fincore"):
        return None
    cp = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", *map(str, paths)],
                        capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        return None
    res = size = 0
    for line in cp.stdout.splitlines():
        a, b = line.split()
        res, size = res + int(a), size + int(b)
    return res / size if size else None


def count_files(path: Path) -> int:
    n = 0
    for _, _, files in os.walk(path):
        n += len(files)
    return n


# ext4 without a journal (this machine's root file system) skips recently deleted inodes when it allocates new ones
# (recently_deleted() in fs/ext4/ialloc.c): an inode deleted less than 60 s ago, or 360 s when its inode-table block is
# dirty (and creating files dirties it), is passed over, each at the cost of a buffer lookup. After some thousands of
# deletions, creating a file is several times slower for up to six minutes (measured here: keyline issue on one core
# at 564/s 62 s after deleting 30,000 files, 1,500/s with none recent). The harness therefore never deletes many files
# before a measurement: a previous run's scratch is renamed aside and deleted at the end, and a run that starts within
# six minutes of a mass deletion waits out the rest.
DELETION_QUIET_SECONDS = 370
MASS_DELETION = 2_000
DELETED_STAMP = WORK.parent / ".work-deleted-at"
TRASH = WORK.parent / "work-trash"


# How `keyline sign` writes a certificate file after the ledger commit, which the pyca peer mirrors: atomically
# (temporary file, rename) and, since keyline 3d881c4, without fsync — the commit is the one fsync per device. Set it
# back to True here if keyline goes back to SafeFile.write(..., durable: true) for sign's output.
KEYLINE_SIGN_FSYNCS_PEM = False

# keyline sign's default --commit-group: certificates per ledger transaction when it is given several CSRs. Step 1
# runs keyline at this default and at 1, and the pyca peer at 1 (the issue's loop) and at this size.
COMMIT_GROUP = 64


def atomic_write(path: Path, data: bytes, durable: bool) -> None:
    """keyline's SafeFile.write: temporary file, (fsync,) rename, (fsync of the directory)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------------------------------------------------
# The pyca peer (one process per round)

PYCA_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY,
    cn TEXT NOT NULL UNIQUE,
    serial_hex TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    public_key_sha256 TEXT NOT NULL UNIQUE,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    created_at TEXT NOT NULL,
    der BLOB NOT NULL
)
"""


def pyca_peer(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench.py _pyca-peer")
    ap.add_argument("--ca-cert", required=True)
    ap.add_argument("--ca-key", required=True)
    ap.add_argument("--passphrase-file", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--list", required=True, help="file with one CSR path a line")
    ap.add_argument("--timings", required=True)
    ap.add_argument("--group", type=int, default=1,
                    help="certificates per transaction (1: commit each, as the issue's peer does)")
    a = ap.parse_args(argv)

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature  # noqa: F401
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(Path(a.ca_cert).read_bytes())
    passphrase = Path(a.passphrase_file).read_bytes()
    if passphrase.endswith(b"\n"):  # keyline strips one trailing newline
        passphrase = passphrase[:-1]
    ca_key = serialization.load_pem_private_key(Path(a.ca_key).read_bytes(), password=passphrase)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    ca_not_after = ca_cert.not_valid_after_utc
    cn_pattern = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    key_usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    strong = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

    con = sqlite3.connect(a.db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(PYCA_SCHEMA)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    paths = [p for p in Path(a.list).read_text().splitlines() if p]
    times: list[tuple[int, int]] = []
    failures = 0
    first = time.perf_counter_ns()
    pending: list[tuple[int, str, object, tuple]] = []

    def commit_pending():
        # One transaction for the pending certificates (one with --group 1); then, and only then, their files.
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                for _, _, _, row in pending:
                    con.execute(
                        "INSERT INTO certificates (cn, serial_hex, fingerprint, public_key_sha256, not_before,"
                        " not_after, created_at, der) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                con.execute("COMMIT")
            except sqlite3.Error:
                con.execute("ROLLBACK")
                raise
            for t0, cn, cert, _ in pending:
                # Committed first, then the certificate leaves: written the way keyline sign writes it.
                atomic_write(out_dir / f"{cn}.pem", cert.public_bytes(serialization.Encoding.PEM),
                             durable=KEYLINE_SIGN_FSYNCS_PEM)
                times.append((time.perf_counter_ns() - t0, t0 - first))
        finally:
            pending.clear()

    for path in paths:
        t0 = time.perf_counter_ns()
        try:
            with open(path, "rb") as f:
                data = f.read()
            csr = x509.load_pem_x509_csr(data)
            # The policy keyline applies: proof of possession, SHA-256 or stronger, P-256, exactly one valid CN.
            if not csr.is_signature_valid:
                raise ValueError("proof-of-possession")
            if not isinstance(csr.signature_hash_algorithm, strong):
                raise ValueError("signature-algorithm")
            pub = csr.public_key()
            if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
                raise ValueError("key-type")
            cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if len(cns) != 1 or not cn_pattern.match(cns[0].value):
                raise ValueError("cn")
            cn = cns[0].value
            pub_sha = hashlib.sha256(
                pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            ).hexdigest().upper()
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            not_before = now - dt.timedelta(minutes=5)
            not_after = min(now + dt.timedelta(days=3650), ca_not_after)
            serial = 0
            while serial == 0:
                serial = int.from_bytes(os.urandom(20), "big") & ((1 << 159) - 1)  # top bit cleared
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(ca_cert.subject)
                .public_key(pub)
                .serial_number(serial)
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(key_usage, critical=True)
                .add_extension(eku, critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            der = cert.public_bytes(serialization.Encoding.DER)
            fingerprint = hashlib.sha256(der).hexdigest().upper()
            pending.append((t0, cn, cert, (cn, f"{serial:040X}", fingerprint, pub_sha, not_before.isoformat(),
                                            not_after.isoformat(), now.isoformat(), der)))
            if len(pending) >= a.group:
                commit_pending()
        except Exception as e:  # a refusal: reported, not timed
            failures += 1
            print(f"pyca peer: {path}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
    if pending:
        commit_pending()
    con.close()
    Path(a.timings).write_text("".join(f"{t / 1000:.1f} {at / 1000:.1f}\n" for t, at in times))
    return 1 if failures else 0


# --------------------------------------------------------------------------------------------------------------------
# Inputs


def make_csrs(directory: Path, names: list[str]) -> list[Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for cn in names:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .sign(key, hashes.SHA256()))
        p = directory / f"{cn}.csr"
        p.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        paths.append(p)
    return paths


# --------------------------------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        bin_dir = Path(args.bin_dir).resolve() if args.bin_dir else REPO / ".build" / "release"
        self.keyline = str(bin_dir / "keyline")
        self.rawbench = str(bin_dir / "keyline-rawbench")
        self.devsim = str(bin_dir / "keyline-devsim")
        self.line_n = 400 if self.quick else 2000
        self.n = args.n or (1000 if self.quick else 5000)
        self.rounds = args.rounds or 5
        self.openssl_n = max(self.rounds, self.n // 5)
        self.openssl_plain_n = max(self.rounds, self.openssl_n // 5)
        self.sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
                      else ([0, 10_000, 100_000] if self.quick else [0, 100_000, 1_000_000]))
        self.growth_csrs = args.growth_csrs or 200
        self.growth_reps = 3
        # Runs per side of the interleaved growth measurement. One run's median moves by ±20 % on this kind of
        # machine (fsync latency), so 5 runs could not tell 1.0× from 1.2×; 20 rounds (40 runs) take about a minute.
        self.growth_inter_reps = 6 if args.quick else 20
        self.openssl_growth_budget = args.openssl_budget or (20.0 if self.quick else 60.0)
        self.openssl_growth_cap = 15 if self.quick else 40  # certificates per repetition at most
        self.fill_batch = 100_000
        self.bulk_n = args.bulk_n or (5000 if self.quick else 20_000)
        self.raw_seconds = args.raw_seconds or 5.0
        # Bulk rounds: each runs keyline issue and keyline-rawbench on one core and on all cores, interleaved.
        self.bulk_rounds = max(1, args.bulk_rounds or 3)
        self.env = dict(os.environ, KEYLINE_OPERATOR="bench")
        self.env.pop("KEYLINE_STATION", None)
        self.r: dict = {}
        self.notes: list[str] = []
        self.only = set(args.only.split(",")) if args.only else set()
        if self.only:
            # A partial run: start from the last full run's figures and replace only what the named steps measure.
            self.r = json.loads(RESULTS.read_text())
            self.r.pop("targets", None)
            # keep the full run's commands of the steps not re-run
            self.kept_commands = [c for c in self.r.pop("commands", [])
                                  if not any(c["step"].split(" ", 1)[0] == STEP_NUMBERS[n] for n in self.only)]
            # Notes the run writes anew (its own partial-run lines, the targets' verdicts) are dropped here.
            # So are the notes of the steps measured again (each step writes its own anew).
            markers = [m for step in self.only for m in STEP_NOTE_MARKERS.get(step, ())]
            self.notes = [n for n in self.r.pop("notes", [])
                          if not n.startswith(("Partial run", "MISSED")) and not any(m in n for m in markers)]
            self.growth_station = WORK / "growth" / "station"
            if "growth" not in self.only:
                self.sizes = self.r.get("parameters", {}).get("growth_sizes", self.sizes)

    # -- helpers --------------------------------------------------------------------------------------------------

    def kl(self, *args: str) -> list[str]:
        return [self.keyline, *args]

    def init_station(self, path: Path, step: str) -> Path:
        argv = self.kl("init", str(path))
        note_command(step, argv, "a fresh station (development CA, empty ledger)")
        run(argv, timeout=120, what="keyline init", env=self.env)
        return path

    def time_v(self, argv: list[str], out: Path) -> list[str]:
        return ["/usr/bin/time", "-v", "-o", str(out), *argv]

    # -- setup ----------------------------------------------------------------------------------------------------

    def preflight(self):
        for b in (self.keyline, self.rawbench, self.devsim):
            if not os.access(b, os.X_OK):
                raise StepFailed(f"{rel(b)} is missing; run Scripts/bench without --no-build (or build it)")
        for tool in ("openssl", "taskset"):
            if not shutil.which(tool):
                raise StepFailed(f"{tool} is not installed")
        if not os.access("/usr/bin/time", os.X_OK):
            if os.geteuid() == 0:
                log("installing GNU time (apt-get install -y time)")
                run(["apt-get", "install", "-y", "-qq", "time"], timeout=600, what="apt-get install time",
                    env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            if not os.access("/usr/bin/time", os.X_OK):
                raise StepFailed("/usr/bin/time is missing (apt-get install time, as root)")
        waited_for = 0.0
        keep_growth = bool(self.only) and "growth" not in self.only
        if keep_growth and self.only & {"export", "reconcile"}:
            # A partial run that reuses the growth station must not wipe it: drop only the other steps' scratch.
            if not (WORK / "growth" / "station" / "ledger.sqlite").exists():
                raise StepFailed(f"--only {','.join(sorted(self.only))} reuses {rel(WORK / 'growth/station')}, "
                                 "which is missing: include growth in --only (or run the full bench)")
        recent = 0.0
        try:
            stamp = json.loads(DELETED_STAMP.read_text())
            if stamp.get("files", 0) >= MASS_DELETION:
                recent = max(0.0, DELETION_QUIET_SECONDS - (time.time() - stamp["at"]))
        except (OSError, ValueError, KeyError):
            pass
        # The previous run's scratch is renamed aside, not deleted: it is deleted at the end of this run.
        TRASH.mkdir(parents=True, exist_ok=True)
        if keep_growth:
            for name in sorted(self.only):
                if (WORK / name).exists():
                    (WORK / name).rename(TRASH / f"{name}-{time.time_ns()}")
        elif WORK.exists():
            log(f"moving the previous run's {rel(WORK)} aside (deleted at the end of this run)")
            WORK.rename(TRASH / f"work-{time.time_ns()}")
            shutil.rmtree(Path("/dev/shm") / "keyline-bench-fill", ignore_errors=True)
        if recent > 0:
            log(f"  waiting {recent:.0f} s: new files are slow to create on this file system right after a mass "
                "deletion (ext4 recently_deleted inode scan)")
            subprocess.run(["sync"], timeout=600)
            time.sleep(recent)
            waited_for = recent
        WORK.mkdir(parents=True, exist_ok=True)
        self.r["waited_after_deletion_seconds"] = round(waited_for)
        if waited_for:
            self.notes.append(f"The run waited {waited_for:.0f} s before measuring, after a mass deletion of files "
                              "(see the fill note).")
        # A stale release build would measure old code: say so.
        bin_mtime = os.path.getmtime(self.keyline)
        newer = [rel(p) for p in (REPO / "Sources").rglob("*.swift") if p.stat().st_mtime > bin_mtime]
        if newer:
            self.notes.append(
                f"{len(newer)} source file(s) are newer than the keyline binary measured (e.g. {newer[0]}); "
                "the figures may not reflect the working tree.")
            log(f"warning: {len(newer)} source file(s) newer than {rel(self.keyline)}")
        help_sign = text_of([self.keyline, "sign", "--help"])
        if "--timings" not in help_sign or "--commit-group" not in help_sign:
            raise StepFailed(f"{rel(self.keyline)} has no 'sign --timings' or '--commit-group'; rebuild it")

    def machine(self) -> dict:
        cpu = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        mem = None
        try:
            m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
            mem = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
        except OSError:
            pass
        osname = platform.platform()
        try:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', Path("/etc/os-release").read_text(), re.M)
            if m:
                osname = f"{m.group(1)} (kernel {platform.release()})"
        except OSError:
            pass
        try:
            import cryptography
            cver = cryptography.__version__
            from cryptography.hazmat.backends.openssl.backend import backend
            cver += f" ({backend.openssl_version_text()})"
        except Exception as e:  # pragma: no cover
            cver = f"unavailable ({e})"
        git = text_of(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
        dirty = text_of(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
        return {
            "nproc": int(text_of(["nproc"]) or os.cpu_count() or 0),
            "cpu_model": cpu,
            "memory_gib": mem,
            "os": osname,
            "swift_version": text_of(["swift", "--version"]).splitlines()[0] if shutil.which("swift")
            else "swift not on PATH",
            "openssl_version": text_of(["openssl", "version"]),
            "python_version": platform.python_version(),
            "cryptography_version": cver,
            "sqlite_version_python": sqlite3.sqlite_version,
            "git_commit": git + (" (working tree modified)" if dirty else ""),
            "keyline_binary": rel(self.keyline),
            "keyline_binary_mtime": dt.datetime.fromtimestamp(os.path.getmtime(self.keyline), dt.timezone.utc)
            .isoformat(timespec="seconds"),
        }

    # -- openssl ca -----------------------------------------------------------------------------------------------

    def openssl_ca_dir(self, d: Path, ca_cert: Path, ca_key: Path, index_lines: int = 0) -> Path:
        d.mkdir(parents=True)
        (d / "newcerts").mkdir()
        (d / "out").mkdir()
        cnf = d / "ca.cnf"
        cnf.write_text(OPENSSL_CNF.format(dir=d, ca_cert=ca_cert, ca_key=ca_key))
        (d / "index.txt.attr").write_text("unique_subject = yes\n")
        with open(d / "index.txt", "w") as f:
            # Synthetic records in index.txt's format: status, expiry, revocation (empty), serial, file, subject.
            chunk = []
            for i in range(1, index_lines + 1):
                chunk.append(f"V\t360101000000Z\t\t{i:040X}\tunknown\t/CN=fill-{i:07d}\n")
                if len(chunk) >= 50_000:
                    f.write("".join(chunk))
                    chunk = []
            f.write("".join(chunk))
        return cnf

    def openssl_argv(self, cnf: Path, csr: Path, out: Path, passfile: Path | None) -> list[str]:
        argv = ["openssl", "ca", "-config", str(cnf), "-batch", "-notext", "-days", "3650", "-md", "sha256",
                "-extensions", "leaf_ext", "-in", str(csr), "-out", str(out)]
        if passfile:
            argv += ["-passin", f"file:{passfile}"]
        return argv

    def openssl_one(self, cnf: Path, csr: Path, passfile: Path | None, step: str, timeout: float = 120) -> float:
        out = cnf.parent / "out" / (csr.stem + ".pem")
        argv = self.openssl_argv(cnf, csr, out, passfile)
        note_command(step, self.openssl_argv(cnf, Path("<CSR>"), cnf.parent / "out" / "<CN>.pem", passfile),
                     "openssl ca: one process per certificate")
        t0 = time.perf_counter_ns()
        try:
            cp = subprocess.run(argv, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"openssl ca timed out after {timeout:.0f} s on {rel(csr)}")
        us = (time.perf_counter_ns() - t0) / 1000
        if cp.returncode != 0:
            raise StepFailed(f"openssl ca failed on {rel(csr)}: {cp.stderr.decode(errors='replace')[-1500:]}")
        return us

    # -- step 1 ---------------------------------------------------------------------------------------------------

    def disk_probe(self, n: int = 200) -> dict:
        """What durability costs on this disk, for reading the figures: a one-row SQLite commit (WAL,
        synchronous=FULL), a durable file write (temporary file, fsync, rename, directory fsync), a plain small file."""
        d = WORK / "probe"
        d.mkdir(parents=True)
        con = sqlite3.connect(d / "probe.sqlite", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, cn TEXT UNIQUE, der BLOB)")
        commit, durable, plain = [], [], []
        blob = os.urandom(450)
        settle()
        for i in range(n):
            t = time.perf_counter_ns()
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t (cn, der) VALUES (?, ?)", (f"probe-{i}", blob))
            con.execute("COMMIT")
            commit.append((time.perf_counter_ns() - t) / 1000)
            t = time.perf_counter_ns()
            atomic_write(d / f"durable-{i}.pem", blob, durable=True)
            durable.append((time.perf_counter_ns() - t) / 1000)
            t = time.perf_counter_ns()
            with open(d / f"plain-{i}.pem", "wb") as f:
                f.write(blob)
            plain.append((time.perf_counter_ns() - t) / 1000)
        con.close()
        return {"samples": n, "sqlite_commit_median_us": round(median(commit), 1),
                "durable_file_write_median_us": round(median(durable), 1),
                "plain_file_create_median_us": round(median(plain), 1)}

    def step_durable(self):
        step = "1 durable issuance"
        log(f"step 1: durable issuance — {self.n} CSRs, {self.rounds} rounds; openssl ca on {self.openssl_n}")
        base = WORK / "durable"
        station = self.init_station(base / "station", step)
        # keyline --commit-group 1 signs the same CSRs into a station of its own sharing the same CA.
        station_each = base / "station-group1"
        shutil.copytree(station, station_each)
        ca_cert, ca_key = station / "ca/dev/ca.pem", station / "ca/dev/ca.key"
        passfile = station / "secrets/dev.passphrase"

        t = time.perf_counter()
        names = [f"bench-{i:06d}" for i in range(1, self.n + 1)]
        csrs = make_csrs(base / "csrs", names)
        plain_csrs = make_csrs(base / "csrs-plain", [f"plain-{i:06d}" for i in range(1, self.openssl_plain_n + 1)])
        log(f"  made {len(csrs) + len(plain_csrs)} P-256 CSRs with cryptography in {time.perf_counter() - t:.1f} s")

        # openssl ca: the encrypted key as-is (-passin file:), plus a side variant with a decrypted copy of the key
        # to show how much of its per-process cost is the key's PBKDF2.
        ossl_cnf = self.openssl_ca_dir(base / "openssl", ca_cert, ca_key)
        plain_key = base / "ca-plain.key"
        argv = ["openssl", "pkey", "-in", str(ca_key), "-passin", f"file:{passfile}", "-out", str(plain_key)]
        note_command(step, argv, "a decrypted copy of the CA key for the openssl ca (plain key) side variant")
        run(argv, timeout=120, what="openssl pkey")
        os.chmod(plain_key, 0o600)
        plain_cnf = self.openssl_ca_dir(base / "openssl-plain", ca_cert, plain_key)
        decrypt = []
        for _ in range(3):
            argv = ["openssl", "pkey", "-in", str(ca_key), "-passin", f"file:{passfile}", "-noout"]
            _, w = run(argv, timeout=120, what="openssl pkey -noout")
            decrypt.append(w * 1000)
        note_command(step, argv, "time to open the encrypted CA key once (PBKDF2), for the notes")
        self.r["ca_key_decrypt_ms_openssl"] = round(median(decrypt), 1)

        self.r["disk_probe"] = probe = self.disk_probe()
        log(f"  disk: SQLite commit {probe['sqlite_commit_median_us']:.0f} µs, durable file write "
            f"{probe['durable_file_write_median_us']:.0f} µs, plain file {probe['plain_file_create_median_us']:.0f} µs")

        slices = [csrs[i::self.rounds] for i in range(self.rounds)]  # interleaved slices, same size
        ossl_slices = [csrs[: self.openssl_n][i::self.rounds] for i in range(self.rounds)]
        plain_slices = [plain_csrs[i::self.rounds] for i in range(self.rounds)]
        kl_out, py_out = base / "keyline-out", base / "pyca-out"
        py_db = base / "pyca.sqlite"
        times = {"keyline": [], "pyca": [], "openssl_ca": [], "openssl_ca_plain_key": []}
        walls = {k: 0.0 for k in times}
        per_round = []

        def do_keyline(k, group):
            tag = "" if group == COMMIT_GROUP else f"-group{group}"
            tim = base / f"keyline{tag}-timings-{k}.txt"
            st_ = station if group == COMMIT_GROUP else station_each
            argv = self.kl("sign", *map(str, slices[k]), "--out-dir", str(kl_out) + tag, "--timings", str(tim),
                           "--commit-group", str(group), "--station", str(st_))
            note_command(step, self.kl("sign", "<csr files of the round>", "--out-dir", str(kl_out) + tag,
                                       "--timings", str(base / f"keyline{tag}-timings-ROUND.txt"), "--commit-group",
                                       str(group), "--station", str(st_)),
                         f"keyline: one process per round, {group} certificate(s) per ledger commit")
            with open(base / f"keyline{tag}-{k}.log", "wb") as logf:
                _, wall = run(argv, timeout=900, what="keyline sign", stdout=subprocess.DEVNULL, stderr=logf,
                              env=self.env)
            ts = read_timings(tim)
            if len(ts) != len(slices[k]):
                raise StepFailed(f"keyline sign wrote {len(ts)} timings for {len(slices[k])} CSRs")
            return ts, wall, read_span(tim)

        def do_pyca(k, group):
            tag = "" if group == 1 else f"-group{group}"
            lst = base / f"pyca-list-{k}.txt"
            lst.write_text("".join(f"{p}\n" for p in slices[k]))
            tim = base / f"pyca{tag}-timings-{k}.txt"
            argv = [sys.executable, str(Path(__file__).resolve()), "_pyca-peer", "--ca-cert", str(ca_cert),
                    "--ca-key", str(ca_key), "--passphrase-file", str(passfile), "--db", str(base / f"pyca{tag}.sqlite"),
                    "--out-dir", str(py_out) + tag, "--group", str(group), "--list", str(lst), "--timings", str(tim)]
            note_command(step, [*argv[:-4], "--list", str(base / "pyca-list-ROUND.txt"), "--timings",
                                str(base / f"pyca{tag}-timings-ROUND.txt")],
                         f"pyca peer: one process per round, {group} certificate(s) per commit")
            _, wall = run(argv, timeout=900, what="pyca peer", stdout=subprocess.DEVNULL)
            ts = read_timings(tim)
            if len(ts) != len(slices[k]):
                raise StepFailed(f"pyca peer timed {len(ts)} of {len(slices[k])} CSRs")
            return ts, wall, read_span(tim)

        def do_openssl(k):
            t0 = time.perf_counter()
            ts = [self.openssl_one(ossl_cnf, c, passfile, step) for c in ossl_slices[k]]
            ts_plain = [self.openssl_one(plain_cnf, c, None, step) for c in plain_slices[k]]
            return ts, time.perf_counter() - t0, ts_plain

        peers = ["keyline", "keyline_each", "pyca", "pyca_group", "openssl_ca"]
        spans = {p: 0.0 for p in peers}
        times.update({"keyline_each": [], "pyca_group": []})
        walls.update({"keyline_each": 0.0, "pyca_group": 0.0})
        for k in range(self.rounds):
            order = peers[k % len(peers):] + peers[:k % len(peers)]  # rotated each round
            rnd = {"round": k + 1, "order": list(order)}
            for peer in order:
                settle()
                span = None
                if peer == "keyline":
                    ts, wall, span = do_keyline(k, COMMIT_GROUP)
                elif peer == "keyline_each":
                    ts, wall, span = do_keyline(k, 1)
                elif peer == "pyca":
                    ts, wall, span = do_pyca(k, 1)
                elif peer == "pyca_group":
                    ts, wall, span = do_pyca(k, COMMIT_GROUP)
                else:
                    ts, wall, ts_plain = do_openssl(k)
                    times["openssl_ca_plain_key"] += ts_plain
                    rnd["openssl_ca_plain_key_median_us"] = round(median(ts_plain), 1)
                times[peer] += ts
                walls[peer] += wall
                rnd[f"{peer}_count"] = len(ts)
                rnd[f"{peer}_median_us"] = round(median(ts), 1)
                rnd[f"{peer}_wall_seconds"] = round(wall, 3)
                if span is not None:
                    spans[peer] += span
                    rnd[f"{peer}_span_seconds"] = round(span, 3)
                    rnd[f"{peer}_per_sec_span"] = round(len(ts) / span, 1)
            rnd["keyline_vs_pyca"] = ratio(rnd["keyline_per_sec_span"], 1e6 / rnd["pyca_median_us"])
            per_round.append(rnd)
            log(f"  round {k + 1}/{self.rounds}: certificates/s keyline {rnd['keyline_per_sec_span']:.0f} "
                f"(commit per {COMMIT_GROUP}), keyline {rnd['keyline_each_per_sec_span']:.0f} (commit each), pyca "
                f"{1e6 / rnd['pyca_median_us']:.0f} (commit each, 1e6/median), pyca "
                f"{rnd['pyca_group_per_sec_span']:.0f} (commit per {COMMIT_GROUP}); median µs openssl ca "
                f"{rnd['openssl_ca_median_us']:.0f} ({len(ossl_slices[k])}), plain key "
                f"{rnd['openssl_ca_plain_key_median_us']:.0f}")

        self.check_leaves(ca_cert, {
            "keyline": kl_out / f"{slices[0][0].stem}.pem",
            "keyline_each": Path(str(kl_out) + "-group1") / f"{slices[0][0].stem}.pem",
            "pyca": py_out / f"{slices[0][0].stem}.pem",
            "pyca_group": Path(f"{py_out}-group{COMMIT_GROUP}") / f"{slices[0][0].stem}.pem",
            "openssl_ca": ossl_cnf.parent / "out" / f"{ossl_slices[0][0].stem}.pem",
        })

        st = {peer: stats_us(ts, walls[peer] if peer != "openssl_ca_plain_key" else None)
              for peer, ts in times.items()}
        for peer, span in spans.items():
            if span:
                st[peer]["span_seconds"] = round(span, 3)
                st[peer]["per_sec_span"] = round(st[peer]["count"] / span, 1)
        # The target's figure: keyline as a technician runs it (group commit, certificates over the time from the
        # first CSR read to the last certificate written) against the issue's peer, the per-certificate loop, at its
        # best figure (1e6 / its median per-certificate time).
        kl_ps = st["keyline"]["per_sec_span"]
        py_ps, os_ps = st["pyca"]["per_sec_from_median"], st["openssl_ca"]["per_sec_from_median"]
        self.r["durable"] = {
            "csrs": self.n, "rounds": self.rounds, "openssl_csrs": self.openssl_n, "commit_group": COMMIT_GROUP,
            "openssl_plain_key_csrs": self.openssl_plain_n, "peers": st, "per_round": per_round,
            "ratio_vs_pyca_median_of_rounds": round(median([r["keyline_vs_pyca"] for r in per_round]), 3),
            "ratio_vs_pyca_span": ratio(kl_ps, st["pyca"]["per_sec_span"]),
            "ratio_commit_each_vs_pyca": ratio(st["keyline_each"]["per_sec_from_median"], py_ps),
            "ratio_commit_group_vs_pyca_group": ratio(kl_ps, st["pyca_group"]["per_sec_span"]),
            "wall_ratio_vs_pyca": ratio(st["keyline"]["wall_per_sec"], st["pyca"]["wall_per_sec"]),
        }
        self.r["keyline_durable_per_sec"] = kl_ps
        self.r["keyline_durable_commit_each_per_sec"] = st["keyline_each"]["per_sec_from_median"]
        self.r["pyca_durable_per_sec"] = py_ps
        self.r["pyca_durable_group_per_sec"] = st["pyca_group"]["per_sec_span"]
        self.r["openssl_ca_per_sec"] = os_ps
        self.r["openssl_ca_plain_key_per_sec"] = st["openssl_ca_plain_key"]["per_sec_from_median"]
        self.r["durable_ratio_vs_pyca"] = ratio(kl_ps, py_ps)
        self.r["durable_ratio_commit_each_vs_pyca"] = self.r["durable"]["ratio_commit_each_vs_pyca"]
        self.r["durable_ratio_group_vs_pyca_group"] = self.r["durable"]["ratio_commit_group_vs_pyca_group"]
        self.r["durable_ratio_vs_openssl"] = ratio(kl_ps, os_ps)
        self.r["durable_ratio_vs_openssl_plain_key"] = ratio(kl_ps, self.r["openssl_ca_plain_key_per_sec"])
        for p in ("keyline", "keyline_each", "pyca", "pyca_group", "openssl_ca"):
            self.r[f"{p}_durable_median_us"] = st[p]["median_us"]
            self.r[f"{p}_durable_p95_us"] = st[p]["p95_us"]
        log(f"  keyline {kl_ps}/s (commit per {COMMIT_GROUP}), pyca {py_ps}/s (commit each), openssl ca {os_ps}/s → "
            f"keyline/pyca {self.r['durable_ratio_vs_pyca']}×, keyline/openssl {self.r['durable_ratio_vs_openssl']}×; "
            f"commit each: {self.r['durable_ratio_commit_each_vs_pyca']}×; both per {COMMIT_GROUP}: "
            f"{self.r['durable_ratio_group_vs_pyca_group']}×")

    def check_leaves(self, ca_cert_path: Path, leaves: dict[str, Path]):
        """Every peer's leaf verifies under the CA; their extensions are compared (differences become notes)."""
        from cryptography import x509
        ca = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        shapes = {}
        for peer, path in leaves.items():
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            try:
                cert.verify_directly_issued_by(ca)
            except Exception as e:
                raise StepFailed(f"{peer}'s certificate {rel(path)} does not verify under the CA: {e}")
            shapes[peer] = {
                "subject": [a.oid._name for a in cert.subject],
                "extensions": sorted(f"{e.oid.dotted_string}{'!' if e.critical else ''}" for e in cert.extensions),
                "serial_bits": cert.serial_number.bit_length(),
                "days": round((cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400, 2),
                "signature": cert.signature_algorithm_oid._name,
            }
        self.r["leaf_shapes"] = shapes
        ref = shapes["keyline"]
        for peer, s in shapes.items():
            if s["extensions"] != ref["extensions"] or s["subject"] != ref["subject"]:
                self.notes.append(f"{peer}'s leaf differs from keyline's: {s} vs {ref}.")
        log("  every peer's leaf verifies under the CA; extensions: "
            + "; ".join(f"{p} {len(s['extensions'])}" for p, s in shapes.items()))

    # -- step 2 ---------------------------------------------------------------------------------------------------

    def step_growth(self):
        step = "2 flat as it grows"
        log(f"step 2: growth — ledger sizes {self.sizes}, {self.growth_reps}× {self.growth_csrs} CSRs each")
        base = WORK / "growth"
        station = self.init_station(base / "station", step)
        with open(station / "station.toml", "a") as f:
            f.write(BENCH_PROFILE)
        self.growth_station = station
        ca_cert, ca_key = station / "ca/dev/ca.pem", station / "ca/dev/ca.key"
        passfile = station / "secrets/dev.passphrase"

        t = time.perf_counter()
        csr_sets = {}
        ossl_sets = {}
        for size in self.sizes:
            for rep in range(self.growth_reps):
                names = [f"g{size}-r{rep + 1}-{i:04d}" for i in range(1, self.growth_csrs + 1)]
                csr_sets[(size, rep)] = make_csrs(base / "csrs" / f"{size}-{rep + 1}", names)
                onames = [f"o{size}-r{rep + 1}-{i:04d}" for i in range(1, self.openssl_growth_cap + 1)]
                ossl_sets[(size, rep)] = make_csrs(base / "csrs-openssl" / f"{size}-{rep + 1}", onames)
        log(f"  made the growth CSRs in {time.perf_counter() - t:.1f} s")

        filled = 0
        fills = []
        kl_rows = []
        os_rows = []
        openssl_stopped = None
        fill_dir = WORK / "fill"
        # The fill's key and certificate files (three per record) are only a means to fill the ledger: they go to
        # tmpfs (bench/work/fill links there) and are dropped after each batch, so no mass deletion on the real
        # file system slows the measurements that follow (see DELETION_QUIET_SECONDS).
        shm = Path("/dev/shm")
        fill_on_tmpfs = False
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 * 2**30:
            target = shm / "keyline-bench-fill"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(mode=0o700)
            fill_dir.symlink_to(target, target_is_directory=True)
            fill_on_tmpfs = True
        else:
            fill_dir.mkdir()
        self.r["fill_files_on_tmpfs"] = fill_on_tmpfs
        deleted_on_disk = 0
        for size in self.sizes:
            # Fill the ledger up to `size` records with station-made certificates (then drop their files).
            while filled < size:
                count = min(self.fill_batch, size - filled)
                batch_dir = fill_dir / f"batch-{len(fills) + 1}"
                argv = self.kl("issue", "--count", str(count), "--start", str(filled + 1), "--cn-template",
                               "fill-{seq:07}", "--chunk", "5000", "--profile", "bench", "--out", str(batch_dir),
                               "--station", str(station))
                note_command(step, self.kl("issue", "--count", "K", "--start", "S", "--cn-template", "fill-{seq:07}",
                                           "--chunk", "5000", "--profile", "bench", "--out",
                                           str(fill_dir / "batch-B"), "--station", str(station)),
                             f"fills the ledger in batches of up to {self.fill_batch} (fill/ is deleted after each)")
                with open(base / "fill.log", "ab") as logf:
                    _, wall = run(argv, timeout=3600, what="keyline issue (fill)", stdout=logf, stderr=logf,
                                  env=self.env)
                filled += count
                fills.append({"from": filled - count, "to": filled, "seconds": round(wall, 2),
                              "per_sec": round(count / wall, 1)})
                log(f"  filled {filled}/{size} ({count / wall:.0f} certs/s)")
                if not fill_on_tmpfs:
                    deleted_on_disk += count_files(batch_dir)
                shutil.rmtree(batch_dir, ignore_errors=True)
            if deleted_on_disk >= MASS_DELETION:
                log(f"  waiting {DELETION_QUIET_SECONDS} s after deleting {deleted_on_disk} fill files on disk")
                settle()
                time.sleep(DELETION_QUIET_SECONDS)
                deleted_on_disk = 0
            ledger_mb = sum(p.stat().st_size for p in station.glob("ledger.sqlite*")) / 1e6

            # openssl ca with an index.txt of the same size (fresh directory each size).
            ossl_cnf = None
            if openssl_stopped is None:
                t = time.perf_counter()
                ossl_cnf = self.openssl_ca_dir(base / f"openssl-{size}", ca_cert, ca_key, index_lines=size)
                log(f"  wrote a {size}-line index.txt in {time.perf_counter() - t:.1f} s")
            kl_times, kl_reps = [], []
            os_times, os_reps = [], []
            os_budget_rep = self.openssl_growth_budget / self.growth_reps
            os_spent = 0.0
            for rep in range(self.growth_reps):
                tim = base / f"keyline-timings-{size}-{rep + 1}.txt"
                csrs = csr_sets[(size, rep)]
                argv = self.kl("sign", *map(str, csrs), "--profile", "bench", "--commit-group", "1", "--out-dir",
                               str(base / "keyline-out"), "--timings", str(tim), "--station", str(station))
                note_command(step, self.kl("sign", f"<{self.growth_csrs} csr files>", "--profile", "bench", "--commit-group", "1",
                                           "--out-dir", str(base / "keyline-out"), "--timings",
                                           str(base / "keyline-timings-SIZE-REP.txt"), "--station", str(station)),
                             "one durable issuance run per repetition")
                settle()
                with open(base / f"keyline-{size}-{rep + 1}.log", "wb") as logf:
                    _, wall = run(argv, timeout=900, what="keyline sign (growth)", stdout=subprocess.DEVNULL,
                                  stderr=logf, env=self.env)
                ts = read_timings(tim)
                if len(ts) != len(csrs):
                    raise StepFailed(f"keyline sign wrote {len(ts)} timings for {len(csrs)} CSRs")
                kl_times += ts
                kl_reps.append({"median_us": round(median(ts), 1), "p95_us": round(pct(ts, 95), 1),
                                "wall_seconds": round(wall, 3)})
                if ossl_cnf is not None:
                    settle()
                    t0 = time.perf_counter()
                    rep_times = []
                    for c in ossl_sets[(size, rep)]:
                        if time.perf_counter() - t0 >= os_budget_rep:
                            break
                        rep_times.append(self.openssl_one(ossl_cnf, c, passfile, step,
                                                          timeout=max(60.0, 2 * self.openssl_growth_budget)))
                    os_spent += time.perf_counter() - t0
                    os_times += rep_times
                    os_reps.append({"count": len(rep_times), "median_us": round(median(rep_times), 1)})
            row = {"size": size, "records_before": size, "ledger_mb": round(ledger_mb, 1),
                   **stats_us(kl_times), "repetitions": kl_reps}
            kl_rows.append(row)
            msg = f"  size {size}: keyline median {row['median_us']:.0f} µs p95 {row['p95_us']:.0f} µs"
            if ossl_cnf is not None:
                orow = {"size": size, **stats_us(os_times), "seconds_spent": round(os_spent, 1),
                        "repetitions": os_reps}
                os_rows.append(orow)
                msg += f"; openssl ca median {orow['median_us'] / 1000:.0f} ms over {len(os_times)} certs"
                # Too slow to say anything at the next size within the budget: stop there.
                if len(os_times) < 2 * self.growth_reps:
                    openssl_stopped = size
                    msg += " (too slow: larger sizes skipped)"
                for big in ossl_cnf.parent.glob("index.txt*"):  # the index copies are large; few files
                    big.unlink()
            log(msg)

        first, last = kl_rows[0], kl_rows[-1]
        sequential = ratio(last["median_us"], first["median_us"])
        largest = last["size"]

        # The sizes above are measured one after another, with a fill of up to a million records (and its
        # writeback) between them, so a machine that is slower later shows as growth. The issue asks for peers to
        # be interleaved so drift hits both sides: the largest ledger and a fresh empty station (same profile) are
        # measured again, alternating, the same number of runs each. That interleaved ratio is the target's figure;
        # the sequential one stays in the table beside it.
        log("  interleaved: the largest ledger and a fresh empty one, alternating")
        empty = self.init_station(base / "station-empty", step)
        with open(empty / "station.toml", "a") as f:
            f.write(BENCH_PROFILE)
        ledger_files = [p for p in station.glob("ledger.sqlite*") if p.is_file()]
        resident_before = page_cache_fraction(ledger_files)
        seq_no = [0]

        def interleaved(state: str, reps: int, before_run) -> tuple[dict, dict, list, dict]:
            times_ = {"largest": [], "empty": []}
            rounds = {"largest": [], "empty": []}
            runs = []
            for rep in range(reps):
                pair = [("largest", station), ("empty", empty)]
                for which, st in (pair if rep % 2 == 0 else pair[::-1]):
                    seq_no[0] += 1
                    names = [f"i-{state}-{which}-r{rep + 1}-{i:04d}" for i in range(1, self.growth_csrs + 1)]
                    csrs = make_csrs(base / "csrs-interleaved" / f"{state}-{which}-{rep + 1}", names)
                    tim = base / f"keyline-timings-interleaved-{state}-{which}-{rep + 1}.txt"
                    argv = self.kl("sign", *map(str, csrs), "--profile", "bench", "--commit-group", "1",
                                   "--out-dir", str(base / f"keyline-out-{which}"), "--timings", str(tim),
                                   "--station", str(st))
                    note_command(step, self.kl("sign", f"<{self.growth_csrs} csr files>", "--profile", "bench",
                                               "--commit-group", "1", "--out-dir", str(base / "keyline-out-WHICH"),
                                               "--timings",
                                               str(base / "keyline-timings-interleaved-STATE-WHICH-REP.txt"),
                                               "--station", str(base / "station{,-empty}")),
                                 f"the interleaved runs ({state} page cache): largest and empty ledger alternating")
                    before_run()
                    with open(base / f"keyline-interleaved-{state}-{which}-{rep + 1}.log", "wb") as logf:
                        run(argv, timeout=900, what="keyline sign (growth, interleaved)",
                            stdout=subprocess.DEVNULL, stderr=logf, env=self.env)
                    ts = read_timings(tim)
                    if len(ts) != len(csrs):
                        raise StepFailed(f"keyline sign wrote {len(ts)} timings for {len(csrs)} CSRs")
                    times_[which] += ts
                    rounds[which].append(ts)
                    runs.append({"cache": state, "ledger": which, "round": rep + 1, "median_us": round(median(ts), 1)})
            paired = sorted(round(median(a) / median(b), 3) for a, b in zip(rounds["largest"], rounds["empty"]))
            spread = {"round_ratios": paired, "round_ratio_median": round(median(paired), 3),
                      "interval_95": list(bootstrap_ratio_interval(rounds["largest"], rounds["empty"]))}
            return stats_us(times_["largest"]), stats_us(times_["empty"]), runs, spread

        # Warm: the state of a running station, whose ledger the kernel has cached (right after the fill it mostly
        # is; after a reboot or in a new session it is not). The ledger is read through the page cache first and the
        # state recorded, so the figure does not depend on what happened to run before.
        def warm():
            for p in ledger_files:
                read_through(p)
            settle()

        warm()
        resident_warm = page_cache_fraction(ledger_files)
        il, ie, inter_runs, spread = interleaved("warm", self.growth_inter_reps, warm)
        growth = ratio(il["median_us"], ie["median_us"])
        lo, hi = spread["interval_95"]
        log(f"  interleaved, warm page cache ({resident_warm:.0%} of the ledger resident): median "
            f"{il['median_us']:.0f} µs at {largest} vs {ie['median_us']:.0f} µs empty = {growth}× "
            f"(95 % interval {lo}–{hi}×; rounds {spread['round_ratios'][0]}–{spread['round_ratios'][-1]}×; "
            f"sequential {sequential}×)")
        # Cold: every run starts with the kernel's page cache dropped (both ledgers, and the binary): the first
        # issuances after a reboot. Needs root; skipped otherwise.
        cold = None
        if os.geteuid() == 0 and not self.quick:
            def drop():
                settle()
                Path("/proc/sys/vm/drop_caches").write_text("1\n")
            try:
                cl, ce, cold_runs, _ = interleaved("cold", 2, drop)
                cold = {"largest": cl, "empty": ce, "ratio": ratio(cl["median_us"], ce["median_us"]),
                        "runs": cold_runs}
                log(f"  interleaved, cold page cache: median {cl['median_us']:.0f} µs vs {ce['median_us']:.0f} µs = "
                    f"{cold['ratio']}×")
            except OSError as e:
                log(f"  cold page cache not measured: {e}")
            warm()

        os_reached = [r["size"] for r in os_rows]
        self.r["growth"] = {
            "sizes": self.sizes, "csrs_per_run": self.growth_csrs, "repetitions": self.growth_reps,
            "keyline": kl_rows, "openssl_ca": os_rows, "openssl_ca_sizes_reached": os_reached,
            "openssl_ca_budget_seconds_per_size": self.openssl_growth_budget,
            "openssl_ca_skipped_sizes": [s for s in self.sizes if s not in os_reached], "fill": fills,
            "interleaved": {"largest": il, "empty": ie, "runs": inter_runs, "repetitions": self.growth_inter_reps,
                            "cache": "warm", "resident_before": resident_before, "resident_warm": resident_warm,
                            **spread},
            "interleaved_cold": cold,
        }
        self.r["growth_sizes"] = self.sizes
        self.r["growth_largest_size"] = largest
        self.r["growth_ratio_1m_vs_empty"] = growth
        self.r["growth_ratio_1m_vs_empty_interval_95"] = spread["interval_95"]
        self.r["growth_ratio_1m_vs_empty_p95"] = ratio(il["p95_us"], ie["p95_us"])
        self.r["growth_ratio_sequential"] = sequential
        self.r["growth_ratio_1m_vs_empty_cold"] = cold["ratio"] if cold else None
        self.r["growth_ratio_sequential_p95"] = ratio(last["p95_us"], first["p95_us"])
        self.r["openssl_ca_growth_ratio_largest_vs_empty"] = (
            ratio(os_rows[-1]["median_us"], os_rows[0]["median_us"]) if len(os_rows) >= 2 else None)
        self.r["openssl_ca_growth_largest_size"] = os_reached[-1] if os_reached else None
        if fills:
            self.r["fill_per_sec_first_batch"] = fills[0]["per_sec"]
            self.r["fill_per_sec_last_batch"] = fills[-1]["per_sec"]
        log(f"  growth ratio (median at {largest} / median at {first['size']}) = {growth}")

    # -- step 3 ---------------------------------------------------------------------------------------------------

    def rawbench_run(self, threads: int, one_core: bool, step: str, files: Path | None = None) -> dict:
        argv = [self.rawbench, "--threads", str(threads), "--seconds", str(self.raw_seconds)]
        if files is not None:
            argv += ["--files", str(files)]
        if one_core:
            argv = ["taskset", "-c", "0", *argv]
        note_command(step, argv, "the raw limit: P-256 keygen + one ECDSA signature per op" + (
            "; with --files, also each device's three files as keyline issue writes them (the floor of the files)"
            if files is not None else ""))
        settle()
        cp, _ = run(argv, timeout=self.raw_seconds + 120, what="keyline-rawbench")
        line = cp.stdout.decode().strip().splitlines()[-1]
        return json.loads(line)

    def bulk_run(self, station: Path, start: int, one_core: bool, step: str, out: Path | None = None,
                 round_: int = 1) -> dict:
        tag = ("1core" if one_core else "all") + ("-tmpfs" if out is not None else f"-{round_}")
        out = out or WORK / "bulk" / (f"out-1core-{round_}" if one_core else f"out-all-{round_}")
        tv = WORK / "bulk" / f"time-{tag}.txt"
        argv = self.kl("issue", "--count", str(self.bulk_n), "--start", str(start), "--cn-template", "bulk-{seq:06}",
                       "--chunk", str(BULK_CHUNK), "--out", str(out), "--station", str(station))
        if one_core:
            argv = ["taskset", "-c", "0", *argv]
        argv = self.time_v(argv, tv)
        note_command(step, argv, "bulk pre-generation (station-made keys)")
        settle()
        with open(WORK / "bulk" / "issue.log", "ab") as logf:
            ticks = cpu_ticks()
            _, wall = run(argv, timeout=3600, what="keyline issue (bulk)", stdout=logf, stderr=logf, env=self.env)
            # The whole machine, beside the process's own CPU: the kernel's writeback threads flush the batch's
            # files on the process's behalf and are not counted in its CPU %.
            machine = machine_busy_percent(ticks, cpu_ticks(), os.cpu_count() or 1)
        got = len(list(out.glob("*.key")))
        if got != self.bulk_n:
            raise StepFailed(f"keyline issue made {got} keys, expected {self.bulk_n}")
        tvr = parse_time_v(tv)  # the files stay until the end of the run: deleting them would slow what follows
        return {"count": self.bulk_n, "wall_seconds": round(wall, 3), "per_sec": round(self.bulk_n / wall, 1),
                "machine_busy_percent": machine, **tvr}

    def step_bulk(self):
        step = "3 bulk pre-generation"
        log(f"step 3: bulk — keyline issue --count {self.bulk_n}, one core then all cores, beside rawbench, "
            f"{self.bulk_rounds} rounds")
        base = WORK / "bulk"
        base.mkdir(parents=True, exist_ok=True)
        station = self.init_station(base / "station", step)
        cores = int(text_of(["nproc"]) or 1)
        # Each round runs every side once, in the same order, so drift over the rounds reaches all of them; the
        # figures are the medians over the rounds. The raw limit plus the three files a device leaves behind, on
        # the batch's disk, is context, not a target.
        series: dict[str, list[dict]] = {k: [] for k in ("raw1", "rawfiles1", "bulk1", "rawall", "rawfilesall",
                                                          "bulkall")}
        for i in range(1, self.bulk_rounds + 1):
            series["raw1"].append(self.rawbench_run(1, True, step))
            series["rawfiles1"].append(self.rawbench_run(1, True, step, files=base / f"raw-files-1core-{i}"))
            series["bulk1"].append(self.bulk_run(station, (2 * i - 2) * self.bulk_n + 1, True, step, round_=i))
            series["rawall"].append(self.rawbench_run(0, False, step))
            series["rawfilesall"].append(self.rawbench_run(0, False, step, files=base / f"raw-files-all-{i}"))
            series["bulkall"].append(self.bulk_run(station, (2 * i - 1) * self.bulk_n + 1, False, step, round_=i))
            log(f"  round {i}: one core {series['bulk1'][-1]['per_sec']}/s (raw {series['raw1'][-1]['per_sec']}/s, "
                f"with the files {series['rawfiles1'][-1]['per_sec']}/s); all cores "
                f"{series['bulkall'][-1]['per_sec']}/s at {series['bulkall'][-1].get('cpu_percent')}% CPU (raw "
                f"{series['rawall'][-1]['per_sec']}/s, with the files {series['rawfilesall'][-1]['per_sec']}/s)")
        raw1, rawfiles1, bulk1, rawall, rawfilesall, bulkall = (median_run(series[k]) for k in (
            "raw1", "rawfiles1", "bulk1", "rawall", "rawfilesall", "bulkall"))
        log(f"  medians: one core {bulk1['per_sec']}/s against raw {raw1['per_sec']}/s; all cores "
            f"{bulkall['per_sec']}/s at {bulkall.get('cpu_percent')}% CPU")
        # Side variant: the same runs with the batch's files on tmpfs (the ledger stays on disk). Creating three
        # files per certificate in one directory is serial in the kernel and, on this disk, the largest cost left;
        # this shows what the rest costs.
        tmpfs = {}
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK):
            first = 2 * self.bulk_rounds * self.bulk_n
            for one_core, key, start in ((True, "one_core", first + 1), (False, "all_cores",
                                                                         first + self.bulk_n + 1)):
                out = shm / f"keyline-bench-bulk-{os.getpid()}-{key}"
                try:
                    tmpfs[key] = self.bulk_run(station, start, one_core, step, out=out)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                log(f"  keyline issue, {key.replace('_', ' ')}, files on tmpfs: {tmpfs[key]['per_sec']}/s "
                    f"(CPU {tmpfs[key].get('cpu_percent')}%)")
        self.r["bulk"] = {"count": self.bulk_n, "chunk": BULK_CHUNK, "cores": cores, "one_core": bulk1,
                          "all_cores": bulkall, "raw_1core": raw1, "raw_all": rawall, "files_on_tmpfs": tmpfs,
                          "raw_files_1core": rawfiles1, "raw_files_all": rawfilesall,
                          "speedup_all_vs_1core": ratio(bulkall["per_sec"], bulk1["per_sec"]),
                          "raw_speedup_all_vs_1core": ratio(rawall["per_sec"], raw1["per_sec"]),
                          "rounds": self.bulk_rounds,
                          # The ratios of each round, beside the ratios of the medians above.
                          "round_ratio_vs_raw_limit": [ratio(b["per_sec"], x["per_sec"])
                                                       for b, x in zip(series["bulk1"], series["raw1"])],
                          "round_ratio_vs_raw_files": [ratio(b["per_sec"], x["per_sec"])
                                                       for b, x in zip(series["bulk1"], series["rawfiles1"])],
                          "round_all_cpu_percent": [b.get("cpu_percent") for b in series["bulkall"]]}
        self.r["cores"] = cores
        self.r["bulk_per_sec"] = bulkall["per_sec"]
        self.r["bulk_1core_per_sec"] = bulk1["per_sec"]
        self.r["raw_limit_1core_per_sec"] = raw1["per_sec"]
        self.r["raw_limit_all_per_sec"] = rawall["per_sec"]
        self.r["bulk_ratio_vs_raw_limit"] = ratio(bulk1["per_sec"], raw1["per_sec"])
        self.r["bulk_ratio_vs_raw_limit_all"] = ratio(bulkall["per_sec"], rawall["per_sec"])
        self.r["bulk_all_cpu_percent"] = bulkall.get("cpu_percent")
        self.r["bulk_all_machine_busy_percent"] = bulkall.get("machine_busy_percent")
        self.r["raw_files_1core_per_sec"] = rawfiles1["per_sec"]
        self.r["raw_files_all_per_sec"] = rawfilesall["per_sec"]
        self.r["bulk_ratio_vs_raw_files"] = ratio(bulk1["per_sec"], rawfiles1["per_sec"])
        self.r["bulk_ratio_vs_raw_files_all"] = ratio(bulkall["per_sec"], rawfilesall["per_sec"])
        if tmpfs:
            self.r["bulk_tmpfs_ratio_vs_raw_limit"] = ratio(tmpfs["one_core"]["per_sec"], raw1["per_sec"])
            self.r["bulk_tmpfs_all_cpu_percent"] = tmpfs["all_cores"].get("cpu_percent")
            self.r["bulk_tmpfs_per_sec"] = tmpfs["all_cores"]["per_sec"]

    # -- step 4 ---------------------------------------------------------------------------------------------------

    def step_export(self):
        step = "4 export at scale"
        station = self.growth_station
        size = self.sizes[-1]
        log(f"step 4: export — keyline manifest devices over the {size}-record ledger of step 2")
        base = WORK / "export"
        base.mkdir(parents=True, exist_ok=True)
        runs = []
        for k in range(3):
            out = base / f"devices-{k + 1}.csv"
            tv = base / f"time-{k + 1}.txt"
            argv = self.time_v(self.kl("manifest", "devices", "--profile", "bench", "--out", str(out), "--station",
                                       str(station)), tv)
            note_command(step, argv, "device import manifest of every bench record (time, peak RSS)")
            settle()
            with open(base / "export.log", "ab") as logf:
                _, wall = run(argv, timeout=3600, what="keyline manifest devices", stdout=logf, stderr=logf,
                              env=self.env)
            summary = json.loads(Path(f"{out}.summary.json").read_text())
            rows = summary.get("rows")
            runs.append({"seconds": round(wall, 3), "rows": rows, "bytes": out.stat().st_size, **parse_time_v(tv)})
            log(f"  export {k + 1}: {rows} rows in {wall:.1f} s, peak RSS {runs[-1].get('peak_rss_mb')} MB")
            out.unlink()
            if wall > 120:  # one long run is enough at this size
                break
        # Every size's runs, plus the interleaved runs on the largest ledger.
        expected = size + self.growth_reps * self.growth_csrs * (len(self.sizes) + 1)
        if runs[0]["rows"] != expected:
            self.notes.append(f"the export had {runs[0]['rows']} rows; the bench profile has {expected} records.")
        self.r["export"] = {"ledger_records": size, "runs": runs}
        self.r["export_records"] = runs[0]["rows"]
        self.r["export_ledger_size"] = size
        self.r["export_1m_seconds"] = round(median([r["seconds"] for r in runs]), 3)
        self.r["export_1m_peak_rss_mb"] = max(r.get("peak_rss_mb", 0) for r in runs)

    # -- step 5 ---------------------------------------------------------------------------------------------------

    def step_reconcile(self):
        step = "5 reconcile at scale"
        station = self.growth_station
        size = self.sizes[-1]
        log(f"step 5: reconcile — keyline ledger reconcile of the {size}-record ledger of step 2 against its own "
            "device manifest (the backend's view), beside a Python dict-based peer")
        base = WORK / "reconcile"
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        export = base / "backend.csv"
        argv = self.kl("manifest", "devices", "--profile", "bench", "--out", str(export), "--station", str(station))
        note_command(step, argv, "the backend's view: the device import manifest of every bench record")
        run(argv, timeout=3600, what="keyline manifest devices (reconcile input)", env=self.env)
        rows = json.loads(Path(f"{export}.summary.json").read_text())["rows"]
        ledger = station / "ledger.sqlite"
        runs, peer_runs = [], []
        for k in range(2):
            tv = base / f"time-keyline-{k + 1}.txt"
            out = base / f"reconcile-{k + 1}.json"
            argv = self.time_v(self.kl("ledger", "reconcile", str(export), "--profile", "bench", "--json",
                                       "--station", str(station)), tv)
            note_command(step, argv, "reconcile every device against the ledger (time, peak RSS); JSON to a file")
            settle()
            with open(out, "wb") as o:
                _, wall = run(argv, timeout=3600, what="keyline ledger reconcile", stdout=o, env=self.env)
            doc = json.loads(out.read_text())
            matched = doc["summary"]["matched"]
            if matched != rows or doc["exit_status"] != 0:
                raise StepFailed(f"reconcile matched {matched} of {rows} rows (exit {doc['exit_status']})")
            runs.append({"seconds": round(wall, 3), "rows": rows, "matched": matched, **parse_time_v(tv)})
            log(f"  keyline {k + 1}: {rows} vs {rows} in {wall:.1f} s, peak RSS {runs[-1].get('peak_rss_mb')} MB")
            tv = base / f"time-peer-{k + 1}.txt"
            argv = self.time_v([sys.executable, str(Path(__file__).resolve()), "_reconcile-peer", str(ledger),
                                str(export), "bench"], tv)
            note_command(step, argv, "peer: Python dicts over the same ledger and export (time, peak RSS)")
            settle()
            cp, wall = run(argv, timeout=3600, what="reconcile peer", env=self.env)
            counts = json.loads(cp.stdout.decode().strip().splitlines()[-1])
            if counts["matched"] != rows:
                raise StepFailed(f"the peer matched {counts['matched']} of {rows} rows: {counts}")
            peer_runs.append({"seconds": round(wall, 3), "rows": rows, **counts, **parse_time_v(tv)})
            log(f"  peer {k + 1}: {wall:.1f} s, peak RSS {peer_runs[-1].get('peak_rss_mb')} MB")
        export.unlink()
        self.r["reconcile"] = {"ledger_records": size, "export_rows": rows, "runs": runs, "peer_runs": peer_runs}
        self.r["reconcile_1m_seconds"] = round(median([r["seconds"] for r in runs]), 3)
        self.r["reconcile_1m_peak_rss_mb"] = max(r.get("peak_rss_mb", 0) for r in runs)
        self.r["reconcile_rows"] = rows
        self.r["reconcile_peer_seconds"] = round(median([r["seconds"] for r in peer_runs]), 3)
        self.r["reconcile_peer_peak_rss_mb"] = max(r.get("peak_rss_mb", 0) for r in peer_runs)
        self.r["reconcile_speed_ratio_vs_peer"] = ratio(self.r["reconcile_peer_seconds"],
                                                        self.r["reconcile_1m_seconds"])

    def step_line(self):
        step = "6 the line"
        log(f"step 6: the line — keyline run with 1 and 4 socket fixtures, {self.line_n} simulated devices each "
            "time; the station's own time per device (the device's answer times excluded)")
        result = {}
        for k in (1, 4):
            base = WORK / f"line-{k}"
            if base.exists():
                shutil.rmtree(base)
            base.mkdir(parents=True)
            station = self.init_station(base / "station", step)
            lines = ["", "[daemon]", "fail_cooldown = 0", f'log = "{base}/devices.jsonl"']
            per = self.line_n // k
            for i in range(1, k + 1):
                lines += ["", f"[fixtures.f{i}]", 'transport = "socket"', f'address = "unix:{base}/f{i}.sock"',
                          'profile = "default"']
            with open(station / "station.toml", "a") as f:
                f.write("\n".join(lines) + "\n")
            sims = []
            for i in range(1, k + 1):
                argv = [self.devsim, "--hardware-id", f"L{k}F{i}", "--count", str(per), "--listen",
                        f"unix:{base}/f{i}.sock"]
                note_command(step, argv, "a line of simulated devices on one socket fixture, one after another")
                p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                p.stdout.readline()  # listening
                sims.append(p)
            argv = self.kl("run", "--station", str(station))
            note_command(step, argv, f"the daemon with {k} fixture(s)")
            settle()
            start = time.monotonic()
            daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env)
            log_path = base / "devices.jsonl"
            total = per * k
            devices = []
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if log_path.exists():
                    devices = [json.loads(x) for x in log_path.read_text().splitlines()
                               if x.strip() and '"event":"device"' in x]
                if len(devices) >= total or daemon.poll() is not None:
                    break
                time.sleep(0.2)
            wall = time.monotonic() - start
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
            for p in sims:
                p.kill()
                p.wait()
            passed = [d for d in devices if d["result"] == "pass"]
            if len(passed) != total:
                raise StepFailed(f"the line with {k} fixture(s): {len(passed)} of {total} devices passed "
                                 f"({len(devices)} reported)")
            station_us = sorted(d["station_seconds"] * 1e6 for d in passed)
            total_us = sorted(d["seconds"] * 1e6 for d in passed)
            result[k] = {"devices": total, "wall_seconds": round(wall, 2),
                         "devices_per_sec": round(total / wall, 1),
                         "station_p50_us": round(pct(station_us, 50)), "station_p99_us": round(pct(station_us, 99)),
                         "device_total_p50_us": round(pct(total_us, 50)),
                         "device_total_p99_us": round(pct(total_us, 99))}
            log(f"  {k} fixture(s): {total} devices in {wall:.1f} s; station time p50 "
                f"{result[k]['station_p50_us']} µs, p99 {result[k]['station_p99_us']} µs")
        self.r["line"] = {str(k): v for k, v in result.items()}
        self.r["line_p50_us_1_fixture"] = result[1]["station_p50_us"]
        self.r["line_p99_us_1_fixture"] = result[1]["station_p99_us"]
        self.r["line_p50_us_4_fixtures"] = result[4]["station_p50_us"]
        self.r["line_p99_us_4_fixtures"] = result[4]["station_p99_us"]
        self.r["line_throughput_ratio_4_vs_1"] = ratio(result[4]["devices_per_sec"], result[1]["devices_per_sec"])
        self.notes.append(
            "The line: a device's station time is everything but waiting for its answers: the CSR check, signing, "
            "the ledger commit of its record and of its delivery (two fsync'd SQLite transactions), the in-flight "
            "journal, and waiting for the other fixtures' devices, since one device at a time goes from its check "
            "to its commit (a work order's count and the rate limits hold across fixtures). So 4 fixtures gave "
            f"{self.r['line_throughput_ratio_4_vs_1']}× the devices per second of 1 (what overlaps is everything "
            "outside that section: the exchanges, the delivery commit, the journal), and a device's station time "
            "grows with the number of fixtures; the simulated devices answer at once, where real ones take seconds "
            "to make a key and write flash, so on a real line the fixtures mostly wait for their devices.")

    # -- report ---------------------------------------------------------------------------------------------------

    def targets(self) -> list[dict]:
        r = self.r
        t = []

        def status(ok):
            return None if ok is None else ("PASS" if ok else "MISS")

        v = r.get("durable_ratio_vs_pyca")
        each, grp = r.get("durable_ratio_commit_each_vs_pyca"), r.get("durable_ratio_group_vs_pyca_group")
        t.append({"target": "durable issuance ≥ 2× the pyca/cryptography + sqlite3 loop",
                  "figure": (f"{v}× (keyline sign commits {COMMIT_GROUP} certificates per transaction, the loop one; "
                             f"both committing each: {each}×, both per {COMMIT_GROUP}: {grp}×)")
                  if v is not None else "n/a", "status": status(None if v is None else v >= 2)})
        g = r.get("growth_ratio_1m_vs_empty")
        largest = r.get("growth_largest_size")
        small = "" if largest == 1_000_000 else " at a smaller ledger"
        gc = r.get("growth_ratio_1m_vs_empty_cold")
        gi = r.get("growth_ratio_1m_vs_empty_interval_95")
        within = "" if not gi else (f" (95 % interval {gi[0]}–{gi[1]}×" +
                                    (", all of it within the target)" if gi[1] <= 1.15 else
                                     ", which reaches past the target)" if g is not None and g <= 1.15 else ")"))
        t.append({"target": "one issuance at 1,000,000 records within 15% of the cost at 0",
                  "figure": (f"{g}×{within} at {largest:,} records, ledger in the page cache (a running station)"
                             + (f"; {gc}× with the page cache dropped before each run (after a reboot)"
                                if gc is not None else "")) if g is not None else "n/a",
                  "status": None if g is None else status(g <= 1.15) + small})
        b = r.get("bulk_ratio_vs_raw_limit")
        t.append({"target": "bulk on one core ≥ 0.5× the raw one-core limit",
                  "figure": (f"{b}×" + (f" ({r['bulk_tmpfs_ratio_vs_raw_limit']}× with the batch's files on tmpfs)"
                                         if r.get("bulk_tmpfs_ratio_vs_raw_limit") is not None else "")
                             + (f"; {r['bulk_ratio_vs_raw_files']}× the raw limit with each device's files "
                                f"({r['raw_files_1core_per_sec']:,.0f}/s)"
                                if r.get("bulk_ratio_vs_raw_files") is not None else ""))
                  if b is not None else "n/a", "status": status(None if b is None else b >= 0.5)})
        cpu, cores = r.get("bulk_all_cpu_percent"), r.get("cores")
        ok = None if cpu is None or not cores else cpu >= 80 * cores
        t.append({"target": "bulk uses every core it is given (CPU ≥ 80% × cores)",
                  "figure": (f"{cpu}% CPU on {cores} cores, {r.get('bulk', {}).get('speedup_all_vs_1core')}× the "
                             f"one-core rate" + (f" ({r['bulk_tmpfs_all_cpu_percent']}% with the files on tmpfs)"
                                                 if r.get("bulk_tmpfs_all_cpu_percent") is not None else "")
                             + (f"; the whole machine {r['bulk_all_machine_busy_percent']}% busy"
                                if r.get("bulk_all_machine_busy_percent") is not None else ""))
                  if cpu is not None else "n/a",
                  "status": status(ok)})
        rss, es = r.get("export_1m_peak_rss_mb"), r.get("export_ledger_size")
        small = "" if es == 1_000_000 else " at a smaller ledger"
        t.append({"target": "export of 1,000,000 records with peak RSS < 100 MB",
                  "figure": f"{rss} MB at {es:,} records" if rss is not None else "n/a",
                  "status": None if rss is None else status(rss < 100) + small})
        rr, rn = r.get("reconcile_1m_peak_rss_mb"), r.get("reconcile_rows")
        if rr is not None:
            t.append({"target": "reconcile streams: 1,000,000 vs 1,000,000 with flat memory (peak RSS < 100 MB)",
                      "figure": f"{rr} MB, {r.get('reconcile_1m_seconds')} s at {rn:,} devices",
                      "status": status(rr < 100) + ("" if rn and rn >= 1_000_000 else " at a smaller ledger")})
        return t

    def write(self, duration: float):
        r = self.r
        r["targets"] = self.targets()
        auto = self.auto_notes()
        r["notes"] = list(dict.fromkeys(auto + self.notes))  # each note once, in order
        if self.only:
            r["commands"] = sorted(self.kept_commands + COMMANDS, key=lambda c: c["step"])
            partial = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "steps": sorted(self.only), "duration_seconds": round(duration, 1),
                       "command": "Scripts/bench " + " ".join(sys.argv[1:])}
            # The machine table names the full run's commit; a partial run names its own.
            machine = self.machine()
            partial["commit"] = machine["git_commit"]
            partial["keyline_binary_mtime"] = machine["keyline_binary_mtime"]
            # Earlier partial runs keep only the steps this one did not re-measure.
            kept = []
            for p in r.get("partial_runs", []):
                rest = sorted(set(p["steps"]) - self.only)
                if rest:
                    kept.append({**p, "steps": rest})
            r["partial_runs"] = kept + [partial]
            r["notes"] = [n for n in r["notes"] if not n.startswith("Partial run")]
            for p in r["partial_runs"]:
                r["notes"].append(f"Partial run on {p['date']}: steps {', '.join(p['steps'])} re-measured with "
                                  f"`Scripts/bench --only` on the same machine; figures of steps not re-measured by a "
                                  f"partial run are from the full run of {r['date']}.")
        else:
            r["commands"] = COMMANDS
            r["duration_seconds"] = round(duration, 1)
        ordered = {k: r[k] for k in (
            "date", "quick", "duration_seconds", "parameters",
            "keyline_durable_per_sec", "pyca_durable_per_sec", "openssl_ca_per_sec", "openssl_ca_plain_key_per_sec",
            "durable_ratio_vs_pyca", "durable_ratio_vs_openssl", "durable_ratio_vs_openssl_plain_key",
            "keyline_durable_median_us", "keyline_durable_p95_us", "pyca_durable_median_us", "pyca_durable_p95_us",
            "openssl_ca_durable_median_us", "openssl_ca_durable_p95_us", "ca_key_decrypt_ms_openssl",
            "growth_ratio_1m_vs_empty", "growth_ratio_1m_vs_empty_interval_95", "growth_ratio_1m_vs_empty_p95",
            "growth_ratio_sequential", "growth_sizes", "growth_largest_size",
            "openssl_ca_growth_ratio_largest_vs_empty", "openssl_ca_growth_largest_size",
            "fill_per_sec_first_batch", "fill_per_sec_last_batch",
            "bulk_per_sec", "bulk_1core_per_sec", "raw_limit_1core_per_sec", "raw_limit_all_per_sec",
            "bulk_ratio_vs_raw_limit", "bulk_ratio_vs_raw_limit_all", "bulk_all_cpu_percent", "cores",
            "raw_files_1core_per_sec", "raw_files_all_per_sec", "bulk_ratio_vs_raw_files",
            "bulk_ratio_vs_raw_files_all", "bulk_all_machine_busy_percent",
            "export_1m_seconds", "export_1m_peak_rss_mb", "export_ledger_size", "export_records",
            "reconcile_1m_seconds", "reconcile_1m_peak_rss_mb", "reconcile_rows", "reconcile_peer_seconds",
            "reconcile_peer_peak_rss_mb", "reconcile_speed_ratio_vs_peer", "reconcile",
            "line", "line_p50_us_1_fixture", "line_p99_us_1_fixture", "line_p50_us_4_fixtures",
            "line_p99_us_4_fixtures", "line_throughput_ratio_4_vs_1") if k in r}
        ordered.update({k: v for k, v in r.items() if k not in ordered})
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n")
        REPORT.write_text(self.markdown(ordered))
        log(f"wrote {rel(RESULTS)} and {rel(REPORT)}")

    def auto_notes(self) -> list[str]:
        r = self.r
        d = r["durable"]
        n = []
        n.append(
            f"Durable issuance: {d['csrs']} CSRs in {d['rounds']} interleaved rounds; the order of the five runs "
            "rotates each round. keyline sign runs as a technician runs it on a batch of CSRs: with several CSRs it "
            f"commits {d.get('commit_group', COMMIT_GROUP)} certificates per ledger transaction (its default "
            "--commit-group), checking and signing them on every core, and writes each certificate only after the "
            "transaction holding its record is durable. It also runs with --commit-group 1 (one transaction and one "
            "fsync per certificate, as the daemon does per device). The pyca peer is the issue's loop (one "
            f"transaction per certificate) and, as a side variant, the same loop committing per "
            f"{d.get('commit_group', COMMIT_GROUP)}, so the gain of the group commit itself is visible. Times: "
            "keyline from its own `sign --timings` (read to written, and when each CSR was read), pyca from "
            "`time.perf_counter_ns()`, openssl ca from the wall time of its process measured in Python. The target "
            "compares keyline's certificates over its span (first CSR read to last certificate written) with the "
            "loop's 1e6 / median, the loop's best figure; process wall time also counts start-up and opening the "
            "CA key (PBKDF2).")
        n.append(
            f"openssl ca ran on {d['openssl_csrs']} of the {d['csrs']} CSRs (N/5, to bound the run), one process per "
            "certificate as a shell script would use it. Each process opens the encrypted CA key: "
            f"`openssl pkey` alone takes {r.get('ca_key_decrypt_ms_openssl')} ms on this key (PBKDF2, 600,000 "
            "iterations), which dominates its cost. With a decrypted copy of the key (side variant, "
            f"{d['openssl_plain_key_csrs']} CSRs) it reaches {r.get('openssl_ca_plain_key_per_sec')} certificates/s. "
            "openssl ca does not fsync its index.txt or the certificate; keyline and the pyca peer fsync their "
            "ledger commit (synchronous=FULL) and then write the PEM the same way: temporary file and rename"
            + (", fsync'd with its directory" if KEYLINE_SIGN_FSYNCS_PEM else
               ", not fsync'd (keyline sign has made the ledger commit its one fsync per device since 3d881c4; the "
               "pyca peer follows it)")
            + ". openssl's notBefore is now (keyline and pyca: now − 5 min).")
        pr = r.get("disk_probe")
        if pr:
            n.append(
                f"On this disk (medians of {pr['samples']}, measured at the start of step 1): a one-row SQLite commit "
                f"(WAL, synchronous=FULL) costs {pr['sqlite_commit_median_us']:.0f} µs, a durable file write "
                f"(temporary file, fsync, rename, directory fsync) {pr['durable_file_write_median_us']:.0f} µs, creating a "
                f"small file without fsync {pr['plain_file_create_median_us']:.0f} µs. A durable issuance cannot cost less "
                "than its commit, in any language; the rest of the per-certificate time is CPU and file creation. "
                "Committing each certificate, the commit and the file alone cost more than half the loop's median, so "
                "2× the loop needs the commit shared: a group commit, the same guarantee (no certificate is written "
                "before its record is durable) for a batch.")
        n.append(
            "The pyca peer does the same policy checks (proof of possession, SHA-256+, P-256, one CN matching the "
            "default cn_pattern) and keeps UNIQUE cn, serial and public-key hash in a WAL, synchronous=FULL table, one "
            "transaction per certificate (or per group in its side variant). It does not keep keyline's hash chains, "
            "events or device attributes: keyline's ledger does more per certificate.")
        g = r.get("growth")
        if g:
            n.append(
                f"Growth: ledger sizes {g['sizes']}; at each, {g['repetitions']} runs of `keyline sign` with "
                f"{g['csrs_per_run']} fresh CSRs, interleaved with openssl ca on an index.txt of the same size "
                f"(synthetic lines, budget {g['openssl_ca_budget_seconds_per_size']:.0f} s per size). The growth "
                "ratio is the pooled per-certificate median at the largest size over that at 0, both measured again "
                "after the sizes, alternating with a fresh empty station, so drift hits both sides (the key is named "
                "`growth_ratio_1m_vs_empty` whatever the largest size; see `growth_largest_size`; the ratio of the "
                "sizes measured in sequence is `growth_ratio_sequential`). The ledger is "
                "filled with `keyline issue` (station-made keys, profile bench); the fill's key and certificate files "
                "are deleted, the ledger keeps the records. openssl ca reached sizes "
                f"{g['openssl_ca_sizes_reached']}" + (f", skipped {g['openssl_ca_skipped_sizes']}."
                                                       if g["openssl_ca_skipped_sizes"] else "."))
        if r.get("quick"):
            n.append("This is a --quick run: fewer CSRs and smaller ledgers than the targets name; rerun without "
                     "--quick for the figures the targets are judged on.")
        if "fill_files_on_tmpfs" in r:
            n.append(
                "Fill files: " + ("the fill's key and certificate files went to tmpfs (bench/work/fill links to "
                                  "/dev/shm) and were dropped after each batch" if r["fill_files_on_tmpfs"] else
                                  "the fill's files were written to disk and deleted after each batch, followed by a "
                                  f"{DELETION_QUIET_SECONDS} s wait")
                + ": on this machine's ext4 (no journal), creating files right after some thousands of deletions "
                "is several times slower for about a minute (recently_deleted inode scan), which would otherwise "
                "leak into the next measurement. Fill rates are therefore not bulk figures. Each measured run starts "
                "after `sync`, so no peer pays for another's unflushed writes.")
        n.append(f"Bulk: {self.bulk_rounds} rounds, each a run on one core (taskset -c 0) and one on all cores, "
                 f"each beside keyline-rawbench ({self.raw_seconds:.0f} s, with and without the files) in the same "
                 "conditions; the figures are the medians over the rounds. The station's ledger holds only the bulk "
                 "records. Export: the device import manifest (CSV) of the largest ledger of step 2, under "
                 "/usr/bin/time -v (peak RSS = maximum resident set size).")
        if r.get("reconcile_1m_seconds") is not None:
            n.append("Reconcile (step 5): the largest ledger of step 2 against its own device manifest, so every "
                     "device matches (the common case QA meets: the cost of a clean run); run twice, interleaved "
                     "with the peer, a Python script holding the ledger's (CN, fingerprint) pairs and the export's "
                     "identifiers in dicts, under /usr/bin/time -v.")
        n.append("Not available yet: the station daemon (step 6, the line); its figures are null.")
        for t in r.get("targets", []):
            if (t["status"] or "").startswith("MISS"):
                n.append(f"MISSED: {t['target']} — measured {t['figure']}.")
        return n

    def markdown(self, r: dict) -> str:
        m = r["machine"]
        d = r["durable"]
        p = d["peers"]

        def f(v, nd=1):
            if v is None:
                return "not available"
            if isinstance(v, float):
                return f"{v:,.{nd}f}"
            if isinstance(v, int):
                return f"{v:,}"
            return str(v)

        L = []
        L.append("# Keyline benchmarks\n")
        L.append(f"Generated by `Scripts/bench{' --quick' if r['quick'] else ''}` on {r['date']} in "
                 f"{r['duration_seconds'] / 60:.1f} minutes. Every figure comes from the same run on the same machine "
                 "and the same inputs; `bench/results.json` holds all of them. Rerun: `Scripts/bench` "
                 "(full) or `Scripts/bench --quick`.\n")
        for run_ in r.get("partial_runs", []):
            cmd = run_.get("command") or f"Scripts/bench --only {','.join(run_['steps'])}"
            at = (f" at commit {run_['commit']} (keyline binary built {run_['keyline_binary_mtime']})"
                  if run_.get("commit") else "")
            L.append(f"Re-measured on {run_['date']} by `{cmd}`{at} on the same machine, and still standing: "
                     f"{', '.join(run_['steps'])} (the other steps' figures are from the run above).\n")
        L.append("## Targets\n")
        L.append("| Target | Measured | Status |")
        L.append("| --- | --- | --- |")
        for t in r["targets"]:
            L.append(f"| {t['target']} | {t['figure']} | {t['status'] or 'not available'} |")
        L.append("")
        L.append("## Figures\n")
        L.append("| Figure | Value |")
        L.append("| --- | --- |")
        rows = [
            (f"keyline sign durable issuance, commit per {COMMIT_GROUP}, certificates/s (count / first read to "
             "last written)", f(r.get("keyline_durable_per_sec"))),
            ("keyline sign --commit-group 1 (commit each), certificates/s (1e6 / median)",
             f(r.get("keyline_durable_commit_each_per_sec"))),
            ("pyca/cryptography + sqlite3 loop (commit each), certificates/s (1e6 / median)",
             f(r.get("pyca_durable_per_sec"))),
            (f"pyca loop committing per {COMMIT_GROUP} (side variant), certificates/s",
             f(r.get("pyca_durable_group_per_sec"))),
            ("openssl ca (encrypted key, one process per certificate), certificates/s",
             f(r.get("openssl_ca_per_sec"))),
            ("openssl ca with a decrypted key (side variant), certificates/s",
             f(r.get("openssl_ca_plain_key_per_sec"))),
            ("durable ratio keyline / pyca loop (the target's)", f(r.get("durable_ratio_vs_pyca"), 2) + "×"),
            ("durable ratio, both committing each certificate", f(r.get("durable_ratio_commit_each_vs_pyca"), 2) + "×"),
            (f"durable ratio, both committing per {COMMIT_GROUP}", f(r.get("durable_ratio_group_vs_pyca_group"), 2) + "×"),
            ("durable ratio keyline / openssl ca", f(r.get("durable_ratio_vs_openssl"), 2) + "×"),
            (f"growth ratio: median at {f(r.get('growth_largest_size'))} records / at 0 (interleaved)",
             f(r.get("growth_ratio_1m_vs_empty"), 3) + "×"),
            ("growth ratio, sizes measured in sequence", f(r.get("growth_ratio_sequential"), 3) + "×"),
            ("bulk pre-generation, all cores, certificates/s", f(r.get("bulk_per_sec"))),
            ("bulk pre-generation, one core, certificates/s", f(r.get("bulk_1core_per_sec"))),
            ("raw limit (P-256 keygen + ECDSA sign), one core, ops/s", f(r.get("raw_limit_1core_per_sec"))),
            (f"raw limit, all cores ({r.get('cores')}), ops/s", f(r.get("raw_limit_all_per_sec"))),
            ("bulk / raw limit, one core", f(r.get("bulk_ratio_vs_raw_limit"), 3) + "×"),
            ("bulk / raw limit, all cores", f(r.get("bulk_ratio_vs_raw_limit_all"), 3) + "×"),
            ("bulk CPU use, all cores", f"{r.get('bulk_all_cpu_percent')}%"),
            ("raw limit with each device's three files, one core, ops/s", f(r.get("raw_files_1core_per_sec"))),
            ("bulk / raw limit with the files, one core", f(r.get("bulk_ratio_vs_raw_files"), 3) + "×"),
            (f"export of {f(r.get('export_ledger_size'))} records ({f(r.get('export_records'))} rows), seconds",
             f(r.get("export_1m_seconds"), 2)),
            ("export peak RSS, MB", f(r.get("export_1m_peak_rss_mb"))),
            (f"ledger reconcile, {f(r.get('reconcile_rows'))} devices vs the ledger, seconds",
             f(r.get("reconcile_1m_seconds"), 2)),
            ("reconcile peak RSS, MB", f(r.get("reconcile_1m_peak_rss_mb"))),
            ("reconcile peer (Python dicts), seconds / peak RSS MB",
             f"{f(r.get('reconcile_peer_seconds'), 2)} / {f(r.get('reconcile_peer_peak_rss_mb'))}"),
            ("the line, 1 fixture: station time per device p50 / p99 µs, devices/s",
             f"{f(r.get('line_p50_us_1_fixture'))} / {f(r.get('line_p99_us_1_fixture'))}, "
             f"{f((r.get('line') or {}).get('1', {}).get('devices_per_sec'))}"),
            ("the line, 4 fixtures: station time per device p50 / p99 µs, devices/s",
             f"{f(r.get('line_p50_us_4_fixtures'))} / {f(r.get('line_p99_us_4_fixtures'))}, "
             f"{f((r.get('line') or {}).get('4', {}).get('devices_per_sec'))}"),
            ("the line, throughput 4 fixtures / 1", f(r.get("line_throughput_ratio_4_vs_1"), 2) + "×"),
        ]
        for a, b in rows:
            L.append(f"| {a} | {b} |")
        L.append("")
        L.append("### Durable issuance, per certificate\n")
        L.append("Latency is one certificate's time from reading its CSR to its file written; with a commit group "
                 "that includes waiting for the rest of its group. Cert/s (span) is certificates over the time from "
                 "the first CSR read to the last certificate written, summed over the rounds.\n")
        L.append("| Peer | Commit per | Certificates | Median latency µs | p95 µs | p99 µs | Cert/s (1e6/median) "
                 "| Cert/s (span) | Cert/s (process wall) |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, label, group in (
                ("keyline", "keyline sign", COMMIT_GROUP), ("keyline_each", "keyline sign --commit-group 1", 1),
                ("pyca", "pyca/cryptography + sqlite3", 1), ("pyca_group", "pyca/cryptography + sqlite3", COMMIT_GROUP),
                ("openssl_ca", "openssl ca", 1), ("openssl_ca_plain_key", "openssl ca, decrypted key", 1)):
            s = p.get(name)
            if not s:
                continue
            L.append(f"| {label} | {group} | {f(s['count'])} | {f(s['median_us'])} | {f(s['p95_us'])} | "
                     f"{f(s['p99_us'])} | {f(s['per_sec_from_median'])} | {f(s.get('per_sec_span'))} | "
                     f"{f(s.get('wall_per_sec'))} |")
        L.append("")
        L.append(f"Ratio keyline / pyca loop: {f(r['durable_ratio_vs_pyca'], 2)}× (keyline's span rate against the "
                 f"loop's 1e6/median), {f(d['ratio_vs_pyca_median_of_rounds'], 2)}× as the median of the per-round "
                 f"ratios, {f(d.get('ratio_vs_pyca_span'), 2)}× span against span, {f(d['wall_ratio_vs_pyca'], 2)}× "
                 f"by process wall time. With the same commit granularity: "
                 f"{f(r.get('durable_ratio_commit_each_vs_pyca'), 2)}× both committing each certificate (1e6/median), "
                 f"{f(r.get('durable_ratio_group_vs_pyca_group'), 2)}× both committing per {COMMIT_GROUP} (span). "
                 f"Ratio keyline / openssl ca: {f(r['durable_ratio_vs_openssl'], 2)}× "
                 f"({f(r['durable_ratio_vs_openssl_plain_key'], 2)}× against the decrypted-key variant).\n")
        g = r.get("growth")
        if g:
            L.append("### Flat as it grows\n")
            L.append("| Records in the ledger | Ledger MB | keyline median µs | keyline p95 µs | "
                     "openssl ca median µs | openssl ca certificates |")
            L.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
            orows = {o["size"]: o for o in g["openssl_ca"]}
            for k in g["keyline"]:
                o = orows.get(k["size"])
                L.append(f"| {f(k['size'])} | {f(k['ledger_mb'])} | {f(k['median_us'])} | {f(k['p95_us'])} | "
                         f"{f(o['median_us']) if o else 'skipped'} | {f(o['count']) if o else '–'} |")
            L.append("")
            il = g.get("interleaved")
            if il:
                res = il.get("resident_before")
                L.append(f"Interleaved (the target's figure): the {f(r['growth_largest_size'])}-record ledger and a "
                         f"fresh empty one measured alternately, {il.get('repetitions', g['repetitions'])} runs of "
                         f"{g['csrs_per_run']} CSRs each, with the ledger read through the page cache before each "
                         f"run (a running station's state; {'' if res is None else f'{res:.0%} of it was resident after the fill, '}"
                         f"{f((il.get('resident_warm') or 0) * 100, 0)}% after the read): median "
                         f"{f(il['largest']['median_us'])} µs vs {f(il['empty']['median_us'])} µs, "
                         f"p95 {f(il['largest']['p95_us'])} vs {f(il['empty']['p95_us'])} µs. "
                         + (f"The ratio of the pooled medians is {f(r['growth_ratio_1m_vs_empty'], 3)}×; resampling "
                            f"whole rounds (2,000 bootstrap draws) puts it between {il['interval_95'][0]}× and "
                            f"{il['interval_95'][1]}× (95 %). One round's ratio ranged from {il['round_ratios'][0]}× "
                            f"to {il['round_ratios'][-1]}× (median {il['round_ratio_median']}×): a single run of "
                            f"{g['csrs_per_run']} cannot tell a few per cent of growth from the disk's fsync jitter. "
                            if il.get("interval_95") else "")
                         + f"The table above is "
                         f"sequential (each size after the previous one's fill): "
                         f"{f(r.get('growth_ratio_sequential'), 3)}× by median.\n")
            cold = g.get("interleaved_cold")
            if cold:
                L.append(f"Cold (side figure): the same alternation, 2 runs each, with the kernel's page cache dropped "
                         f"before every run (`echo 1 > /proc/sys/vm/drop_caches`), as after a reboot: median "
                         f"{f(cold['largest']['median_us'])} µs vs {f(cold['empty']['median_us'])} µs = "
                         f"{f(cold['ratio'], 3)}×. At a million records every issuance then reads about ten index "
                         "pages from disk (serial, certificate and key hashes are random keys) until the kernel has "
                         "cached them.\n")
            L.append(f"keyline: {f(r['growth_ratio_1m_vs_empty'], 3)}× (median), "
                     f"{f(r['growth_ratio_1m_vs_empty_p95'], 3)}× (p95) from 0 to {f(r['growth_largest_size'])} "
                     f"records. openssl ca: {f(r.get('openssl_ca_growth_ratio_largest_vs_empty'), 2)}× from 0 to "
                     f"{f(r.get('openssl_ca_growth_largest_size'))} index lines. Fill rate (keyline issue, "
                     f"profile bench): {f(r.get('fill_per_sec_first_batch'))}/s first batch, "
                     f"{f(r.get('fill_per_sec_last_batch'))}/s last batch.\n")
        b = r.get("bulk")
        if b:
            L.append("### Bulk pre-generation\n")
            rounds = b.get("rounds", 1)
            if rounds > 1:
                L.append(f"Medians of {rounds} rounds (each round runs every row once, in this order); the rounds "
                         "themselves are listed below the table. The tmpfs rows are single runs after the rounds.\n")
            L.append("| Run | Certificates/s | CPU % | Machine busy % | Peak RSS MB | Raw limit ops/s | Ratio to raw |")
            L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            L.append(f"| one core (taskset -c 0) | {f(b['one_core']['per_sec'])} | {b['one_core'].get('cpu_percent')} "
                     f"| {b['one_core'].get('machine_busy_percent') or ''} "
                     f"| {f(b['one_core'].get('peak_rss_mb'))} | {f(b['raw_1core']['per_sec'])} | "
                     f"{f(r['bulk_ratio_vs_raw_limit'], 3)} |")
            L.append(f"| all {b['cores']} cores | {f(b['all_cores']['per_sec'])} | {b['all_cores'].get('cpu_percent')} "
                     f"| {b['all_cores'].get('machine_busy_percent') or ''} "
                     f"| {f(b['all_cores'].get('peak_rss_mb'))} | {f(b['raw_all']['per_sec'])} | "
                     f"{f(r['bulk_ratio_vs_raw_limit_all'], 3)} |")
            for key, label, raw_key in (("one_core", "one core, files on tmpfs", "raw_1core"),
                                        ("all_cores", f"all {b['cores']} cores, files on tmpfs", "raw_all")):
                t_ = (b.get("files_on_tmpfs") or {}).get(key)
                if t_:
                    L.append(f"| {label} | {f(t_['per_sec'])} | {t_.get('cpu_percent')} | "
                             f"{t_.get('machine_busy_percent') or ''} | "
                             f"{f(t_.get('peak_rss_mb'))} | {f(b[raw_key]['per_sec'])} | "
                             f"{f(ratio(t_['per_sec'], b[raw_key]['per_sec']), 3)} |")
            for key, label in (("raw_files_1core", "raw limit with the files, one core"),
                               ("raw_files_all", f"raw limit with the files, all {b['cores']} cores")):
                x = b.get(key)
                if x:
                    bulk = b["one_core" if key.endswith("1core") else "all_cores"]
                    L.append(f"| {label} (keyline-rawbench --files) | {f(x['per_sec'])} | | | | | keyline "
                             f"{f(ratio(bulk['per_sec'], x['per_sec']), 3)}× this |")
            L.append("")
            if rounds > 1 and b["one_core"].get("runs"):
                L.append("| Round | One core cert/s | Raw, one core | Raw with the files, one core | Ratio to raw | "
                         "Ratio to raw with the files | All cores cert/s | CPU % | Raw, all cores | "
                         "Raw with the files, all cores |")
                L.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
                for i in range(rounds):
                    one, al = b["one_core"]["runs"][i], b["all_cores"]["runs"][i]
                    L.append(f"| {i + 1} | {f(one['per_sec'])} | {f(b['raw_1core']['runs'][i]['per_sec'])} | "
                             f"{f(b['raw_files_1core']['runs'][i]['per_sec'])} | "
                             f"{f(b['round_ratio_vs_raw_limit'][i], 3)} | {f(b['round_ratio_vs_raw_files'][i], 3)} | "
                             f"{f(al['per_sec'])} | {al.get('cpu_percent')} | {f(b['raw_all']['runs'][i]['per_sec'])} | "
                             f"{f(b['raw_files_all']['runs'][i]['per_sec'])} |")
                L.append("")
            if b.get("raw_files_1core"):
                L.append("The two rows \"raw limit with the files\" are context, not a target: keyline-rawbench makes the key "
                         "and the signature and then writes the three files of each device as `keyline issue` does "
                         "(the key staged as `.key.partial` with mode 0600, `.pem`, `.chain.pem` of the same sizes, "
                         "the rename), with no X.509 structure and no ledger, and flushes the file system once at the "
                         "end (keyline also flushes each chunk's staged keys before the chunk commits): the floor of "
                         "any tool that leaves the same files on the same disk. Their last column is keyline's rate "
                         "over that floor. \"Machine busy\" is every CPU's busy time during the run (from /proc/stat, "
                         "200 = two cores busy): beside the process's own CPU % it counts the kernel's writeback "
                         "threads, which flush the batch's files on its behalf, and anything else running.\n")
            L.append(f"{f(b['count'])} certificates per run, chunk {f(b.get('chunk', 500))}. All cores vs one core: keyline "
                     f"{f(b['speedup_all_vs_1core'], 2)}×, raw {f(b['raw_speedup_all_vs_1core'], 2)}×. Each "
                     "certificate is three new files in the batch directory (`CN.key`, staged as `CN.key.partial` "
                     "before the commit, `CN.pem`, `CN.chain.pem`); the kernel creates files in one directory one "
                     "at a time, so that part does not spread over cores. The tmpfs rows write the same files to "
                     "/dev/shm (the ledger stays on disk) to show what the rest costs. The wall time includes "
                     "opening the CA key (PBKDF2) and writing index.csv. Keys are made as keyline-rawbench makes "
                     "them: a P-256 scalar from the CSPRNG and its public point, without the FIPS pairwise test "
                     "swift-crypto runs on each key it generates. Runs before ed7f53a used swift-crypto's generation "
                     "on both sides, about five times slower, so their ratios are not comparable with these. Since "
                     "dc46ff3 both sides draw the scalar in one getrandom(2) call (not four), and `--files` encodes "
                     "the key file from the scalar and the point as keyline issue does, so the raw limits of runs "
                     "before it were measured with a slightly slower rawbench.\n")
        e = r.get("export")
        if e:
            L.append("### Export\n")
            L.append("| Run | Rows | Seconds | Peak RSS MB | CPU % | File MB |")
            L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
            for i, x in enumerate(e["runs"], 1):
                L.append(f"| {i} | {f(x['rows'])} | {f(x['seconds'], 2)} | {f(x.get('peak_rss_mb'))} | "
                         f"{x.get('cpu_percent')} | {x['bytes'] / 1e6:,.1f} |")
            L.append("")
        rc = r.get("reconcile")
        if isinstance(rc, dict):
            L.append("### Reconcile\n")
            L.append("| Run | Tool | Devices | Seconds | Peak RSS MB | CPU % |")
            L.append("| --- | --- | ---: | ---: | ---: | ---: |")
            for i, x in enumerate(rc["runs"], 1):
                L.append(f"| {i} | keyline ledger reconcile | {f(x['rows'])} | {f(x['seconds'], 2)} | "
                         f"{f(x.get('peak_rss_mb'))} | {x.get('cpu_percent')} |")
            for i, x in enumerate(rc["peer_runs"], 1):
                L.append(f"| {i} | Python dicts (peer) | {f(x['rows'])} | {f(x['seconds'], 2)} | "
                         f"{f(x.get('peak_rss_mb'))} | {x.get('cpu_percent')} |")
            L.append("")
            L.append("The export is the station's own device manifest of every bench record, so every device "
                     "matches; keyline sorts into all its categories and checks attributes, the peer only compares "
                     "fingerprints. Speed ratio (peer seconds / keyline seconds): "
                     f"{f(r.get('reconcile_speed_ratio_vs_peer'), 2)}×.\n")
        L.append("## Machine\n")
        L.append("| | |")
        L.append("| --- | --- |")
        for k, label in (("nproc", "nproc"), ("cpu_model", "CPU"), ("memory_gib", "memory GiB"), ("os", "OS"),
                         ("swift_version", "swift --version"), ("openssl_version", "openssl version"),
                         ("python_version", "Python"), ("cryptography_version", "cryptography"),
                         ("sqlite_version_python", "SQLite (Python's)"), ("git_commit", "commit"),
                         ("keyline_binary_mtime", "keyline binary built"),
                         ("loadavg_at_start", "load average at start (1/5/15 min)"),
                         ("loadavg_at_end", "load average at end")):
            L.append(f"| {label} | {m.get(k)} |")
        L.append("")
        L.append("Seconds per step: " + ", ".join(f"{k} {v}" for k, v in r.get("step_seconds", {}).items()) + ".\n")
        pr = r["parameters"]
        L.append("Parameters: " + ", ".join(f"{k} = {v}" for k, v in pr.items()) + ".\n")
        L.append("## Commands\n")
        L.append("Paths are relative to the repository; ROUND, SIZE, REP, K and S stand for the values of each run.\n")
        L.append("```sh")
        for c in r["commands"]:
            L.append(f"# [{c['step']}] {c['what']}")
            L.append(c["command"])
        L.append("```\n")
        L.append("## Notes\n")
        for note in r["notes"]:
            L.append(f"- {note}")
        L.append("")
        return "\n".join(L)

    # -- main -----------------------------------------------------------------------------------------------------

    def cleanup(self):
        """Drops the fill's tmpfs files and the bulk outputs (tens of thousands of files), and notes when, so the next
        run can wait out the slow file creation that follows a mass deletion."""
        shutil.rmtree(Path("/dev/shm") / "keyline-bench-fill", ignore_errors=True)
        files = 0
        t = time.perf_counter()
        for top, dirs, names in os.walk(WORK):
            if len(names) > 200:  # CSRs, certificates, keys: the rest (stations, logs, timings) stays to look at
                files += count_files(top)
                shutil.rmtree(top, ignore_errors=True)
                dirs[:] = []
        if files:
            log(f"deleted {files} generated files (CSRs, certificates, keys) under {rel(WORK)} in "
                f"{time.perf_counter() - t:.0f} s")
        if TRASH.exists():
            trashed = count_files(TRASH)
            shutil.rmtree(TRASH, ignore_errors=True)
            log(f"deleted the previous run's scratch ({trashed} files)")
            files += trashed
        DELETED_STAMP.write_text(json.dumps({"at": time.time(), "files": files}) + "\n")

    def main(self) -> int:
        t0 = time.monotonic()
        try:
            self.preflight()
        except StepFailed as e:
            log(f"FAILED preflight: {e}")
            return 1
        if self.only:
            self.r["step_seconds"] = self.r.get("step_seconds", {})
            log(f"partial run: steps {sorted(self.only)}, merged into {rel(RESULTS)} of {self.r.get('date')}")
            try:
                return self.run_steps(t0)
            finally:
                self.cleanup()
        self.r["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.r["quick"] = self.quick
        self.r["parameters"] = {
            "n": self.n, "rounds": self.rounds, "openssl_n": self.openssl_n,
            "openssl_plain_key_n": self.openssl_plain_n, "growth_sizes": self.sizes,
            "growth_csrs_per_run": self.growth_csrs, "growth_repetitions": self.growth_reps,
            "openssl_growth_budget_seconds": self.openssl_growth_budget, "bulk_n": self.bulk_n,
            "bulk_rounds": self.bulk_rounds, "raw_seconds": self.raw_seconds,
        }
        self.r["machine"] = self.machine()
        m = self.r["machine"]
        log(f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, {m['os']}")
        log(f"quick={self.quick} n={self.n} rounds={self.rounds} sizes={self.sizes} bulk={self.bulk_n}")
        self.r["machine"]["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        if os.getloadavg()[0] > 0.5:
            log(f"warning: load average {os.getloadavg()[0]:.2f} at start; other work on the machine skews the figures")
        self.r["step_seconds"] = {}
        try:
            return self.run_steps(t0)
        finally:
            self.cleanup()

    def run_steps(self, t0: float) -> int:
        failed = None
        steps = (("durable", self.step_durable), ("growth", self.step_growth), ("bulk", self.step_bulk),
                 ("export", self.step_export), ("reconcile", self.step_reconcile), ("line", self.step_line))
        if self.only:
            steps = tuple((n, fn) for n, fn in steps if n in self.only)
        for name, fn in steps:
            ts = time.monotonic()
            try:
                fn()
                self.r["step_seconds"][name] = round(time.monotonic() - ts, 1)
            except StepFailed as e:
                failed = f"step {name}: {e}"
                break
            except Exception as e:
                failed = f"step {name}: {type(e).__name__}: {e}"
                import traceback
                traceback.print_exc()
                break
        if failed:
            log(f"FAILED {failed}")
            partial = WORK / "results.partial.json"
            self.r["failed"] = failed
            self.r["commands"] = COMMANDS
            partial.write_text(json.dumps(self.r, indent=2, ensure_ascii=False, default=str) + "\n")
            log(f"partial results in {rel(partial)}; bench/results.json and BENCHMARKS.md left as they were")
            return 1
        self.r["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        self.write(time.monotonic() - t0)
        print()
        print(f"{'target':<62} {'measured':<48} status")
        for t in self.r["targets"]:
            print(f"{t['target']:<62} {t['figure']:<48} {t['status'] or 'n/a'}")
        print()
        for k in ("keyline_durable_per_sec", "pyca_durable_per_sec", "openssl_ca_per_sec", "durable_ratio_vs_pyca",
                  "growth_ratio_1m_vs_empty", "bulk_per_sec", "bulk_1core_per_sec", "raw_limit_1core_per_sec",
                  "raw_limit_all_per_sec", "bulk_ratio_vs_raw_limit", "bulk_ratio_vs_raw_limit_all",
                  "raw_files_1core_per_sec", "bulk_ratio_vs_raw_files", "export_1m_seconds", "export_1m_peak_rss_mb"):
            print(f"  {k:<32} {self.r.get(k)}")
        log(f"done in {(time.monotonic() - t0) / 60:.1f} min")
        return 0


def reconcile_peer(argv: list[str]) -> int:
    """The peer for step 5: what QA would script without Keyline. Loads the ledger's (CN, fingerprint) pairs and the
    export into dicts, fingerprints every PEM of the export, and counts matched, missing, unknown and mismatched.
    argv: LEDGER EXPORT.CSV PROFILE. Prints one JSON line."""
    import base64
    import csv as csvmod
    ledger_path, export_path, profile = argv
    csvmod.field_size_limit(1 << 24)
    db = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    ledger = {cn: (fp, state) for cn, fp, state in db.execute(
        "SELECT cn, cert_sha256, state FROM records WHERE profile = ? ORDER BY seq", (profile,))}
    seen = set()
    counts = {"matched": 0, "missing": 0, "unknown": 0, "mismatch": 0, "duplicate": 0}
    with open(export_path, newline="") as f:
        for row in csvmod.DictReader(f):
            ident = row["identifier"]
            if ident in seen:
                counts["duplicate"] += 1
                continue
            seen.add(ident)
            pem = row["certificates"]
            body = pem.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
            fp = hashlib.sha256(base64.b64decode("".join(body.split()))).hexdigest().upper()
            known = ledger.get(ident)
            if known is None:
                counts["unknown"] += 1
            elif known[0] != fp:
                counts["mismatch"] += 1
            else:
                counts["matched"] += 1
    counts["missing"] = sum(1 for cn, (_, state) in ledger.items() if cn not in seen and state in ("issued", "delivered"))
    print(json.dumps(counts))
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_pyca-peer":
        return pyca_peer(argv[1:])
    if argv and argv[0] == "_reconcile-peer":
        return reconcile_peer(argv[1:])
    ap = argparse.ArgumentParser(prog="Scripts/bench", description="Keyline benchmarks (issue 7).")
    ap.add_argument("--quick", action="store_true", help="smaller N and ledgers (about 8 minutes on 2 cores)")
    ap.add_argument("--no-build", action="store_true", help="(Scripts/bench) use the release binaries as they are")
    ap.add_argument("--bin-dir", help="where keyline and keyline-rawbench are (default .build/release)")
    ap.add_argument("--n", type=int, help="override: CSRs for durable issuance")
    ap.add_argument("--rounds", type=int, help="override: interleaved rounds (default 5)")
    ap.add_argument("--sizes", help="override: ledger sizes for growth, comma-separated (first must be 0)")
    ap.add_argument("--growth-csrs", type=int, help="override: CSRs per growth run (default 200)")
    ap.add_argument("--openssl-budget", type=float, help="override: openssl ca seconds per growth size")
    ap.add_argument("--bulk-n", type=int, help="override: certificates per bulk run")
    ap.add_argument("--bulk-rounds", type=int, help="override: bulk rounds (default 3)")
    ap.add_argument("--raw-seconds", type=float, help="override: keyline-rawbench seconds (default 5)")
    ap.add_argument("--only", help="run only these steps (comma-separated: durable, growth, bulk, export, "
                                   "reconcile, line) and merge their figures into the existing bench/results.json; "
                                   "export and reconcile reuse the growth station left in bench/work/growth")
    args = ap.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(STEP_NUMBERS)
        if unknown:
            ap.error(f"--only: unknown step(s) {', '.join(sorted(unknown))}; steps are {', '.join(STEP_NUMBERS)}")
    if args.sizes and int(args.sizes.split(",")[0]) != 0:
        ap.error("--sizes must start with 0")
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
