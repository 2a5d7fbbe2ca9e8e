import Crypto
import Foundation
import Testing
import X509

@testable import KeylineCore

@Suite("PRN")
struct PRNTests {
    let org = "11111111-2222-3333-4444-555555555555"
    let id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

    @Test("parses resource and organization PRNs")
    func parses() throws {
        let p = try PRN.parse("prn:1:\(org):cohort:\(id)").get()
        #expect(p.organization == org && p.type == "cohort" && p.id == id)
        #expect(p.description == "prn:1:\(org):cohort:\(id)")
        #expect(try PRN.parse("prn:1:\(org)").get().type == nil)
    }

    @Test(
        "refuses what is not a PRN",
        arguments: [
            "", "prn:1:x:cohort:y",
            "urn:1:11111111-2222-3333-4444-555555555555:cohort:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "prn:2:11111111-2222-3333-4444-555555555555:cohort:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "prn:1:11111111-2222-3333-4444-555555555555:cohort",
            "prn:1:11111111-2222-3333-4444-555555555555:cohort:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:x",
            "prn:1:11111111-2222-3333-4444-55555555555g:cohort:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "prn:1:11111111-2222-3333-4444-555555555555:co hort:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        ])
    func refuses(_ text: String) {
        guard case .failure(let e) = PRN.parse(text) else {
            Issue.record("accepted \(text)")
            return
        }
        #expect(e.code == .configuration)
    }

    @Test("a PRN of the wrong type is refused by name")
    func wrongType() {
        guard case .failure(let e) = PRN.parse("prn:1:\(org):cohort:\(id)", ofType: "product") else {
            Issue.record("a cohort PRN passed as a product")
            return
        }
        #expect(e.reason.contains("'cohort', not 'product'"))
    }
}

@Suite("Description template")
struct DescriptionTemplateTests {
    @Test("renders known fields as plain text, without HTML escaping")
    func renders() throws {
        let t = try DescriptionTemplate("{{product_name}} {{cn}} & <{{work_order}}>")
        #expect(t.render(["product_name": "gw", "cn": "dev-1", "work_order": "WO-7"]) == "gw dev-1 & <WO-7>")
        #expect(t.render(["product_name": "gw", "cn": "dev-1"]) == "gw dev-1 & <>")
    }

    @Test(
        "refuses unknown fields, also inside sections",
        arguments: ["{{serial_number}}", "{{#cn}}{{colour}}{{/cn}}", "{{^hw}}x{{/hw}}"])
    func unknown(_ source: String) {
        #expect(throws: KeylineError(.configuration, "")) { try DescriptionTemplate(source) }
    }

    @Test("refuses broken Mustache")
    func broken() {
        #expect(throws: KeylineError(.configuration, "")) { try DescriptionTemplate("{{#cn}} unclosed") }
    }

    @Test("every documented field is accepted")
    func allFields() throws {
        _ = try DescriptionTemplate(DescriptionTemplate.fields.map { "{{\($0)}}" }.joined(separator: " "))
    }
}

@Suite("JITP registration and device rows")
struct JITPRegistrationTests {
    let settings = JITPSettings(
        productName: "gateway",
        productPRN: try! PRN.parse(
            "prn:1:11111111-2222-3333-4444-555555555555:product:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        ).get(),
        cohortPRN: try! PRN.parse(
            "prn:1:11111111-2222-3333-4444-555555555555:cohort:bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"
        ).get(),
        tags: ["a", "b"], target: nil, description: "line 1", descriptionTemplate: "{{cn}}")

    @Test("has exactly the backend's keys; optional ones left out when unset")
    func keys() throws {
        let r = try JITPRegistration(
            caPEM: "CA", verificationPEM: nil, description: "d", settings: settings, profile: "p")
        let json = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(r)) as! [String: Any]
        #expect(Set(json.keys) == ["certificate", "description", "jitp"])
        let jitp = json["jitp"] as! [String: Any]
        #expect(Set(jitp.keys) == ["description", "tags", "product_name", "cohort_prn"])
        #expect(json["certificate"] as? String == Data("CA".utf8).base64EncodedString())
        #expect(r.cliFlags.contains("--jitp-tags 'a,b'"))
    }

    @Test("refuses a profile without product_name or any description")
    func required() {
        var s = settings
        s.productName = nil
        #expect(throws: KeylineError(.configuration, "")) {
            try JITPRegistration(caPEM: "CA", verificationPEM: nil, description: "d", settings: s, profile: "p")
        }
        s = settings
        s.description = nil
        s.descriptionTemplate = nil
        #expect(throws: KeylineError(.configuration, "")) {
            try JITPRegistration(caPEM: "CA", verificationPEM: nil, description: "d", settings: s, profile: "p")
        }
    }

    @Test(
        "decimal serials match the integer value",
        arguments: [
            ([UInt8](), "0"), ([0x01, 0x00], "256"),
            ([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "4722366482869645213695"),
        ])
    func decimal(_ bytes: [UInt8], _ expected: String) {
        #expect(DecimalText.string(bytes) == expected)
    }

    @Test("a device row carries the profile's settings, the rendered description and the certificate PEM")
    func row() throws {
        let pki = try TestPKI.ca()
        var profile = Profile(name: "p", caName: "test")
        profile.jitp = settings
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let cert = try CertificateFactory.leaf(
            cn: "dev-1", publicKey: key.publicKey, profile: profile, ca: pki.ca, signer: pki.key,
            serial: try TestPKI.randomSerial(),
            notBefore: TestPKI.now, notAfter: TestPKI.now.addingTimeInterval(86400))
        let der = try CertificateFactory.der(cert)
        let content = RecordContent(
            cn: "dev-1", serialHex: "01", certificateFingerprint: Hex.sha256(der), publicKeySHA256: "k",
            caFingerprint: "c",
            caName: "test", profile: "p", stationID: "st", operatorName: "op", keyOrigin: .device, hardwareID: nil,
            notBefore: TestPKI.now, notAfter: TestPKI.now, certificateDER: der, createdAt: TestPKI.now)
        let record = LedgerRecord(
            seq: 7, content: content, state: .issued, updatedAt: TestPKI.now, prevHash: "", hash: "")
        let template = try DescriptionTemplate(
            "{{cn}} by {{operator}}{{#hardware_id}} hw {{hardware_id}}{{/hardware_id}}")
        let row = DeviceManifestRow(record: record, profile: profile, template: template)
        #expect(row.csvFields[0] == "dev-1")
        #expect(row.description == "dev-1 by op", "an unset hardware_id hides its section")
        #expect(row.csvFields[2] == "a,b")
        #expect(row.csvFields[6] == "")
        #expect(try Certificate(pemEncoded: row.certificates) == cert)
        #expect(try CertificateFactory.authorityKeyIdentifierHex(der: der) == Hex.upper(pki.ca.subjectKeyIdentifier))

        // Attributes fixed at issuance win over the profile's settings of today.
        var fixed = record
        fixed.content.attributes = DeviceAttributes(
            description: "as issued", tags: ["old"], productPRN: nil, cohortPRN: nil, target: "x86_64-unknown-linux-gnu"
        )
        let later = DeviceManifestRow(record: fixed, profile: profile, template: template)
        #expect(later.description == "as issued" && later.tags == ["old"] && later.target == "x86_64-unknown-linux-gnu")
        #expect(later.cohortPRN == "")
        #expect(
            later.productPRN == profile.jitp.productPRN?.description, "a missing product is filled from the profile")
        #expect(DeviceManifestRow(record: fixed, profile: nil, template: nil).description == "as issued")
    }

    @Test("the verification certificate has the code as its CN and verifies under the CA")
    func verificationCertificate() throws {
        let pki = try TestPKI.ca()
        let cert = try CertificateFactory.verificationCertificate(
            code: "abc123", publicKey: Certificate.PublicKey(P256.Signing.PrivateKey().publicKey), ca: pki.ca,
            signer: pki.key,
            serial: try TestPKI.randomSerial(), now: TestPKI.now, validity: 86400)
        #expect(cert.subject == (try DistinguishedName { CommonName("abc123") }))
        #expect(pki.ca.certificate.publicKey.isValidSignature(cert.signature, for: cert))
        #expect(cert.notValidAfter.timeIntervalSince(TestPKI.now) == 86400)
    }
}
