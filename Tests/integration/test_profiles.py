"""Profiles in station.toml (issue 3): every bad profile stops every command with the configuration status and a
message naming file, table and key; a good JITP profile reads back exactly; several CAs and a CA rotation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from conftest import (
    COHORT_PRN_A,
    COHORT_PRN_B,
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_POLICY,
    ORG_A,
    PRODUCT_PRN_A,
    Station,
    assert_exit,
    assert_one_line_error,
    cert_fingerprint,
    install_ca_by_hand,
    load_cert,
    make_issuing_ca,
    make_importable_ca,
    make_root,
    openssl,
    openssl_csr,
    openssl_verify_client,
    pem_certs,
    ski_of,
    toml_value,
)

UUID_X = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


# --------------------------------------------------------------------------------------------------------------
# Bad profiles
# --------------------------------------------------------------------------------------------------------------


@dataclass
class BadProfile:
    id: str
    lines: list[str]  # the body of [profiles.bad]
    keys: tuple[str, ...]  # every one of these must be named by the message
    ca: str = "dev"  # ca = ... of [profiles.bad] (None: the lines set it)
    retired_ca: bool = False  # also configure a retired [cas.old]
    also: tuple[str, ...] = field(default_factory=tuple)  # further text the message must hold


BAD_PROFILES = [
    BadProfile("prn-four-parts", [f'product_prn = "prn:1:{ORG_A}:product"'], ("product_prn",)),
    BadProfile("prn-six-parts", [f'product_prn = "{PRODUCT_PRN_A}:extra"'], ("product_prn",)),
    BadProfile("prn-two-parts", ['product_prn = "prn:1"'], ("product_prn",)),
    BadProfile("prn-not-prn", [f'product_prn = "urn:1:{ORG_A}:product:{UUID_X}"'], ("product_prn",)),
    BadProfile("prn-version-2", [f'product_prn = "prn:2:{ORG_A}:product:{UUID_X}"'], ("product_prn",)),
    BadProfile("prn-org-not-uuid", [f'product_prn = "prn:1:acme-corp:product:{UUID_X}"'], ("product_prn",)),
    BadProfile("prn-org-uuid-too-short", [f'cohort_prn = "prn:1:{ORG_A[:-1]}:cohort:{UUID_X}"'], ("cohort_prn",)),
    BadProfile("prn-id-not-uuid", [f'cohort_prn = "prn:1:{ORG_A}:cohort:12345"'], ("cohort_prn",)),
    BadProfile("cohort-prn-as-product", [f'product_prn = "{COHORT_PRN_A}"'], ("product_prn",)),
    BadProfile("organization-prn-as-product", [f'product_prn = "prn:1:{ORG_A}"'], ("product_prn",)),
    BadProfile("product-prn-as-cohort", [f'cohort_prn = "{PRODUCT_PRN_A}"'], ("cohort_prn",)),
    BadProfile(
        "prns-of-two-organizations",
        [f'product_prn = "{PRODUCT_PRN_A}"', f'cohort_prn = "{COHORT_PRN_B}"'],
        ("product_prn", "cohort_prn"),
    ),
    BadProfile("tag-with-space", ['tags = ["factory-a", "line 1"]'], ("tags",)),
    BadProfile("tag-with-comma", ['tags = ["factory-a,line-1"]'], ("tags",)),
    BadProfile("tag-empty", ['tags = ["factory-a", ""]'], ("tags",)),
    BadProfile("unknown-key", ['product_nme = "gateway"'], ("product_nme",)),
    BadProfile("unknown-template-field", ['description_template = "{{cn}} {{serial_number}}"'],
               ("description_template",), also=("serial_number",)),
    BadProfile("missing-template-file", ['description_template = "@templates/missing.mustache"'],
               ("description_template",), also=("missing.mustache",)),
    BadProfile("ca-does-not-exist", ['ca = "nosuchca"'], ("ca",), ca=None, also=("nosuchca",)),
    BadProfile("ca-retired", ['ca = "old"'], ("ca",), ca=None, retired_ca=True, also=("old",)),
    BadProfile("target-not-a-triplet", ['target = "aarch64 linux gnu"'], ("target",)),
    BadProfile("target-one-word", ['target = "linux"'], ("target",)),
]


def key_named(key: str, message: str) -> bool:
    """`key` appears in `message` as a word of its own (so 'ca' is not found inside 'cas' or 'cache')."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", message, re.I) is not None


def assert_config_error(r, case: BadProfile):
    assert_exit(r, EXIT_CONFIG)
    reason = assert_one_line_error(r)
    assert "station.toml" in reason, f"the message must name the file station.toml\n{r}"
    assert "[profiles.bad]" in reason, f"the message must name the table [profiles.bad]\n{r}"
    for key in case.keys:
        assert key_named(key, reason), f"the message must name the key {key!r}\n{r}"
    for text in case.also:
        assert text in reason, f"the message must mention {text!r}\n{r}"
    assert b"-----BEGIN CERTIFICATE-----" not in r.stdout_bytes


@pytest.mark.parametrize("case", BAD_PROFILES, ids=[c.id for c in BAD_PROFILES])
def test_bad_profile_fails_config_check_and_every_command(station: Station, tmp_path, case: BadProfile):
    csr, _ = openssl_csr(tmp_path / "csr", "DEV-BADPROFILE-1")
    good_toml = station.toml_path.read_text()
    if case.retired_ca:
        old_root = make_root("Old Root")
        install_ca_by_hand(station, "old", make_issuing_ca(old_root, "Old Issuing CA"), old_root, status="retired",
                           profile=False)
        good_toml = station.toml_path.read_text()  # a retired CA nobody points at is fine
        assert_exit(station.run("config", "check"), EXIT_OK)
    body = ([f'ca = "{case.ca}"'] if case.ca else []) + case.lines
    station.append_toml("[profiles.bad]\n" + "\n".join(body))

    out_dir = tmp_path / "out"
    manifest = tmp_path / "m.csv"
    commands = [
        ["config", "check"],
        ["sign", csr, "--out-dir", out_dir],  # the default profile: the whole configuration is refused
        ["sign", csr, "--profile", "bad", "--out-dir", out_dir],
        ["ledger", "list"],
        ["manifest", "devices", "--out", manifest],
        ["profile", "list"],
        ["profile", "show", "bad", "--json"],
    ]
    for args in commands:
        r = station.run(*args)
        assert_config_error(r, case)
    assert station.records_count() == 0, "a refused configuration let a certificate be issued"
    assert not out_dir.exists() or not any(out_dir.iterdir()), "a certificate was written"
    assert not manifest.exists(), "a manifest was written under a refused configuration"

    # The bad profile alone was the cause: without it the station works again.
    station.toml_path.write_text(good_toml)
    assert_exit(station.run("config", "check"), EXIT_OK)
    assert_exit(station.run("sign", csr, "--out-dir", out_dir), EXIT_OK)


def test_template_file_that_exists_is_accepted(station: Station, tmp_path):
    """The counterpart of missing-template-file: `@templates/x.mustache` is read relative to the station."""
    (station.path / "templates").mkdir()
    (station.path / "templates" / "line.mustache").write_text("{{cn}} made by {{operator}}\n")
    station.add_profile("line", description_template="@templates/line.mustache", product_prn=PRODUCT_PRN_A)
    assert_exit(station.run("config", "check"), EXIT_OK)
    r = station.run("profile", "show", "line", "--json")
    assert_exit(r, EXIT_OK)
    assert "{{cn}} made by {{operator}}" in json.loads(r.out)["description_template"]


# --------------------------------------------------------------------------------------------------------------
# A good JITP profile
# --------------------------------------------------------------------------------------------------------------

GOOD = {
    "ca": "dev",
    "product_name": "Gateway & Co",
    "product_prn": PRODUCT_PRN_A,
    "cohort_prn": COHORT_PRN_A,
    "tags": ["factory-a", "line-1", "gw"],
    "target": "aarch64-unknown-linux-gnu",
    "jitp_description": "Provisioned from factory A, line 1",
    "description_template": "{{product_name}} {{cn}} ({{station_id}}, {{issued_at}})",
    "cn_pattern": "^GW-[0-9]{4}$",
    "key_types": ["p256", "p384"],
    "validity_days": 1825,
    "min_validity_days": 400,
    "subject_organization": "Example Devices Ltd",
    "subject_organizational_unit": "Line 1",
}


def add_good_profile(st: Station, name="line1"):
    st.append_toml("\n".join([f"[profiles.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in GOOD.items()]))


def assert_profile_json(got: dict, name: str):
    assert got.get("name") == name, got
    for k, v in GOOD.items():
        if k == "key_types":
            assert sorted(got.get(k) or []) == sorted(v), f"{k}: {got.get(k)!r} != {v!r}"
        else:
            assert got.get(k) == v, f"{k}: {got.get(k)!r} != {v!r}"


def test_config_check_fresh_station(station: Station):
    r = station.run("config", "check")
    assert_exit(r, EXIT_OK)
    assert "error" not in r.err, r


def test_good_jitp_profile_reads_back_exactly(station: Station, tmp_path):
    add_good_profile(station)
    assert_exit(station.run("config", "check"), EXIT_OK)

    r = station.run("profile", "show", "line1", "--json")
    assert_exit(r, EXIT_OK)
    assert_profile_json(json.loads(r.out), "line1")

    r = station.run("profile", "list", "--json")
    assert_exit(r, EXIT_OK)
    data = json.loads(r.out)
    profiles = data["profiles"] if isinstance(data, dict) else data
    by_name = {p["name"]: p for p in profiles}
    assert set(by_name) == {"default", "line1"}, by_name.keys()
    assert_profile_json(by_name["line1"], "line1")
    assert by_name["default"]["ca"] == "dev"

    r = station.run("profile", "list")
    assert_exit(r, EXIT_OK)
    rows = {line.split()[0]: line for line in r.out.splitlines()[1:] if line.strip()}
    assert set(rows) == {"default", "line1"}, r
    for text in ("dev", "p256", "p384", "Gateway & Co", "factory-a,line-1,gw"):
        assert text in rows["line1"], f"profile list's line for line1 lacks {text!r}\n{r}"

    r = station.run("profile", "show", "line1")
    assert_exit(r, EXIT_OK)
    for v in GOOD.values():
        for text in (v if isinstance(v, list) else [str(v)]):
            assert text in r.out, f"profile show lacks {text!r}\n{r}"

    r = station.run("profile", "show", "nosuch")
    assert_exit(r, EXIT_CONFIG)
    assert_one_line_error(r)


def test_good_profile_signs_with_its_settings(station: Station, tmp_path):
    add_good_profile(station)
    csr, _ = openssl_csr(tmp_path / "csr", "GW-0001")
    leaf = load_cert(station.sign_ok(csr, tmp_path / "out", profile="line1"))
    attrs = {a.oid: a.value for a in leaf.subject}
    assert attrs.get(NameOID.COMMON_NAME) == "GW-0001"
    assert attrs.get(NameOID.ORGANIZATION_NAME) == "Example Devices Ltd"
    assert attrs.get(NameOID.ORGANIZATIONAL_UNIT_NAME) == "Line 1"
    # cn_pattern of the profile applies
    bad_csr, _ = openssl_csr(tmp_path / "csr", "GW-12")
    assert_exit(station.sign(bad_csr, out_dir=tmp_path / "out", profile="line1"), EXIT_POLICY)


def ca_list_rows(r) -> dict[str, list[str]]:
    lines = [l for l in r.out.splitlines() if l.strip()]
    assert lines and lines[0].split()[0] == "CA", f"ca list has no header\n{r}"
    return {l.split()[0]: l.split() for l in lines[1:]}


def test_ca_list_names_the_profiles_using_each_ca(station: Station, tmp_path):
    add_good_profile(station)
    root = make_root("Tenant B Root")
    ca_b = make_issuing_ca(root, "Tenant B Issuing CA")
    install_ca_by_hand(station, "tenantb", ca_b, root, profile=False)
    station.add_profile("tenantb-line", ca="tenantb")
    assert_exit(station.run("config", "check"), EXIT_OK)

    r = station.run("ca", "list")
    assert_exit(r, EXIT_OK)
    rows = ca_list_rows(r)
    assert set(rows) == {"dev", "tenantb"}, r
    dev, tb = rows["dev"], rows["tenantb"]
    assert dev[1] == "active" and set(dev[2].split(",")) == {"default", "line1"}, r
    assert tb[1] == "active" and tb[2] == "tenantb-line", r
    assert cert_fingerprint(station.ca_cert()) in dev, r
    assert cert_fingerprint(ca_b.cert) in tb, r

    # A device signed under each tenant's profile chains to that tenant's CA only.
    csr, _ = openssl_csr(tmp_path / "csr", "TB-0001")
    leaf = station.sign_ok(csr, tmp_path / "out", profile="tenantb-line")
    (tmp_path / "tb-root.pem").write_bytes(root.pem)
    (tmp_path / "tb-ca.pem").write_bytes(ca_b.pem)
    openssl_verify_client(tmp_path / "tb-root.pem", tmp_path / "tb-ca.pem", leaf)
    wrong = openssl("verify", "-CAfile", station.root_pem, "-untrusted", station.ca_pem, leaf, check=False)
    assert wrong.rc != 0, f"a tenant B device must not verify under the dev CA\n{wrong}"


# --------------------------------------------------------------------------------------------------------------
# CA rotation
# --------------------------------------------------------------------------------------------------------------

def test_ca_rotation(station: Station, tmp_path):
    st = station
    st.add_jitp_profile("line1")
    old_ca = st.ca_cert()
    new = make_importable_ca(tmp_path / "new-ca", "Factory Root 2027", "Factory Issuing CA 2027")

    # 1. Configure the new CA next to the old one.
    r = st.run("ca", "import", "--name", "gen2", "--cert", new.cert_file, "--key", new.key_file,
               "--chain", new.root_file, "--passphrase-file", new.passfile)
    assert_exit(r, EXIT_OK)
    assert st.config()["cas"]["gen2"].get("status", "active") == "active"

    # 2. Devices signed under the old CA (sign and issue).
    out = tmp_path / "out"
    old_certs = {}
    csr, _ = openssl_csr(tmp_path / "csr", "OLD-0001")
    old_certs["OLD-0001"] = st.sign_ok(csr, out, profile="line1")
    assert_exit(st.run("issue", "OLD-0002", "--profile", "line1", "--out", tmp_path / "issued-old"), EXIT_OK)
    old_certs["OLD-0002"] = tmp_path / "issued-old" / "OLD-0002.pem"

    # 3. Switch the profiles to the new CA; a legacy profile keeps signing with the old one during the transition.
    st.set_toml_key("profiles.line1", "ca", "gen2")
    st.set_toml_key("profiles.default", "ca", "gen2")
    st.add_profile("legacy", ca="dev")
    assert_exit(st.run("config", "check"), EXIT_OK)
    csr, _ = openssl_csr(tmp_path / "csr", "TRANS-0001")
    old_certs["TRANS-0001"] = st.sign_ok(csr, out, profile="legacy")

    # 4. Retire the old CA while a profile still points at it: refused, naming the profile and its key.
    st.set_toml_key("cas.dev", "status", "retired")
    csr, _ = openssl_csr(tmp_path / "csr", "LATE-0001")
    for args in (["sign", csr, "--profile", "legacy", "--out-dir", out],
                 ["sign", csr, "--profile", "line1", "--out-dir", out],
                 ["config", "check"]):
        r = st.run(*args)
        assert_exit(r, EXIT_CONFIG)
        reason = assert_one_line_error(r)
        assert "[profiles.legacy]" in reason and key_named("ca", reason) and "station.toml" in reason, r
    assert not (out / "LATE-0001.pem").exists()
    assert "LATE-0001" not in [row[0] for row in st.query("SELECT cn FROM records")]

    # The retired CA signs nothing more, not even a verification certificate.
    st.set_toml_key("profiles.legacy", "ca", "gen2")
    assert_exit(st.run("config", "check"), EXIT_OK)
    v = tmp_path / "v-old.pem"
    r = st.run("ca", "verification-cert", "CODE-OLD-1", "--ca", "dev", "--out", v)
    assert r.rc != EXIT_OK, f"a retired CA signed a verification certificate\n{r}"
    assert_one_line_error(r)
    assert not v.exists()

    # 5. New devices under the new CA.
    new_certs = {}
    csr, _ = openssl_csr(tmp_path / "csr", "NEW-0001")
    new_certs["NEW-0001"] = st.sign_ok(csr, out, profile="line1")
    assert_exit(st.run("issue", "NEW-0002", "--profile", "line1", "--out", tmp_path / "issued-new"), EXIT_OK)
    new_certs["NEW-0002"] = tmp_path / "issued-new" / "NEW-0002.pem"
    v = tmp_path / "v-new.pem"
    assert_exit(st.run("ca", "verification-cert", "CODE-NEW-1", "--ca", "gen2", "--out", v), EXIT_OK)
    openssl("verify", "-CAfile", new.root_file, "-untrusted", new.cert_file, v)

    # 6. The ledger stays intact and every certificate verifies against the CA that issued it.
    r = st.run("ledger", "verify")
    assert_exit(r, EXIT_OK)
    r = st.run("ledger", "verify", "--json")
    assert_exit(r, EXIT_OK)
    report = json.loads(r.out)
    assert report["intact"] is True and report["records"] == 5, report
    ca_of = dict(st.query("SELECT cn, ca_name FROM records"))
    for cn, path in old_certs.items():
        assert ca_of[cn] == "dev", ca_of
        openssl_verify_client(st.root_pem, st.ca_pem, path)
        leaf = load_cert(path)
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert aki == ski_of(old_ca)
        wrong = openssl("verify", "-CAfile", new.root_file, "-untrusted", new.cert_file, path, check=False)
        assert wrong.rc != 0, f"{cn} must not verify under the new CA\n{wrong}"
    for cn, path in new_certs.items():
        assert ca_of[cn] == "gen2", ca_of
        openssl_verify_client(new.root_file, new.cert_file, path)
        leaf = load_cert(path)
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        assert aki == ski_of(new.ca.cert)
        wrong = openssl("verify", "-CAfile", st.root_pem, "-untrusted", st.ca_pem, path, check=False)
        assert wrong.rc != 0, f"{cn} must not verify under the retired CA\n{wrong}"

    # 7. Both CAs stay known: ca show and ca list.
    r = st.run("ca", "show", "--json")
    assert_exit(r, EXIT_OK)
    cas = {c["name"]: c for c in json.loads(r.out)["cas"]}
    assert set(cas) == {"dev", "gen2"}, cas.keys()
    assert cas["dev"]["status"] == "retired" and cas["gen2"]["status"] == "active"
    assert cas["dev"]["fingerprint"] == cert_fingerprint(old_ca)
    assert cas["gen2"]["fingerprint"] == cert_fingerprint(new.ca.cert)
    r = st.run("ca", "show")
    assert_exit(r, EXIT_OK)
    assert "dev" in r.out and "gen2" in r.out and "retired" in r.out, r
    r = st.run("ca", "list")
    assert_exit(r, EXIT_OK)
    rows = ca_list_rows(r)
    assert set(rows) == {"dev", "gen2"}, r
    assert rows["dev"][1] == "retired" and rows["dev"][2] == "-", r
    assert rows["gen2"][1] == "active" and set(rows["gen2"][2].split(",")) == {"default", "legacy", "line1"}, r

    # 8. Reconciliation still knows the old devices: the manifest of line1 holds both generations, each with the
    #    AKI of its own CA.
    r = st.run("manifest", "devices", "--profile", "line1", "--format", "json", "--out", tmp_path / "m.json")
    assert_exit(r, EXIT_OK)
    devices = {d["identifier"]: d for d in json.loads((tmp_path / "m.json").read_text())}
    assert set(devices) == {"OLD-0001", "OLD-0002", "NEW-0001", "NEW-0002"}, devices.keys()
    for cn, d in devices.items():
        want = ski_of(old_ca if cn.startswith("OLD") else new.ca.cert).hex().upper()
        assert d["aki"].replace(":", "").upper() == want, (cn, d["aki"])
        pems = d["certificates"] if isinstance(d["certificates"], list) else [d["certificates"]]
        certs = pem_certs("\n".join(pems).encode())
        assert certs == [load_cert((old_certs | new_certs)[cn])]
