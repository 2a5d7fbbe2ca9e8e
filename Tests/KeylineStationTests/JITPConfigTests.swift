import Foundation
import Testing

@testable import KeylineCore
@testable import KeylineStation

@Suite("station.toml: JITP profile keys")
struct JITPConfigTests {
    static let org = "11111111-2222-3333-4444-555555555555"
    static let valid = """
        station_id = "st-1"
        ledger = "sqlite:ledger.sqlite"
        [cas.dev]
        cert = "ca.pem"
        key = "ca.key"
        [cas.old]
        cert = "old.pem"
        key = "old.key"
        status = "retired"
        [profiles.line1]
        ca = "dev"
        product_name = "gateway"
        product_prn = "prn:1:\(org):product:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
        cohort_prn = "prn:1:\(org):cohort:bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"
        tags = ["factory-a", "line-1"]
        target = "aarch64-unknown-linux-gnu"
        jitp_description = "Line 1"
        description_template = "{{product_name}} {{cn}}"
        """

    @Test("a complete JITP profile parses into typed settings")
    func parses() throws {
        let p = try StationConfig.parse(Self.valid, directory: "/s").profile("line1")
        #expect(p.jitp.productName == "gateway")
        #expect(p.jitp.productPRN?.type == "product" && p.jitp.cohortPRN?.type == "cohort")
        #expect(p.jitp.tags == ["factory-a", "line-1"])
        #expect(p.jitp.target == "aarch64-unknown-linux-gnu")
        #expect(p.jitp.descriptionTemplate == "{{product_name}} {{cn}}")
    }

    @Test(
        "each mistake is a configuration error naming the table and the key",
        arguments: [
            ("product:aaaaaaaa", "cohort:aaaaaaaa", "product_prn"),
            (
                "prn:1:\(org):cohort:bbbbbbbb", "prn:1:22222222-2222-3333-4444-555555555555:cohort:bbbbbbbb",
                "different organizations"
            ),
            ("prn:1:\(org):cohort", "prn:2:\(org):cohort", "cohort_prn"),
            ("\"line-1\"]", "\"line 1\"]", "tags"),
            ("\"line-1\"]", "\"line,1\"]", "tags"),
            ("\"line-1\"]", "\"\"]", "tags"),
            ("{{cn}}\"", "{{serial_number}}\"", "serial_number"),
            ("aarch64-unknown-linux-gnu", "aarch64 linux", "target"),
            ("ca = \"dev\"", "ca = \"old\"", "retired"),
            ("jitp_description", "jitp_descripton", "jitp_descripton"),
            (
                "description_template = \"{{product_name}} {{cn}}\"", "description_template = \"@missing.mustache\"",
                "description_template"
            ),
        ])
    func refuses(_ find: String, _ replace: String, _ mentioned: String) {
        let text = Self.valid.replacingOccurrences(of: find, with: replace)
        #expect(text != Self.valid, "the test's edit did not apply")
        do {
            _ = try StationConfig.parse(text, directory: "/nonexistent")
            Issue.record("accepted: \(replace)")
        } catch let e as KeylineError {
            #expect(e.code == .configuration)
            #expect(e.reason.contains("[profiles.line1]"), "reason: \(e.reason)")
            #expect(e.reason.contains(mentioned), "reason: \(e.reason)")
            #expect(e.reason.hasPrefix("station.toml"), "reason: \(e.reason)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a template can live in a file next to station.toml")
    func templateFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keyline-tpl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: "\(dir)/templates", withIntermediateDirectories: true)
        try "{{cn}} from {{station_id}}\n".write(
            toFile: "\(dir)/templates/d.mustache", atomically: true, encoding: .utf8)
        let text = Self.valid.replacingOccurrences(
            of: "description_template = \"{{product_name}} {{cn}}\"",
            with: "description_template = \"@templates/d.mustache\"")
        #expect(
            try StationConfig.parse(text, directory: dir).profile("line1").jitp.descriptionTemplate
                == "{{cn}} from {{station_id}}")
    }
}

@Suite("Reconcile findings as JSON")
struct ReconcileFindingJSONTests {
    @Test("the hand-written JSON line is what JSONEncoder writes, escapes included")
    func matchesEncoder() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for f in [
            ReconcileFinding(
                category: .notIssuedHere, identifier: "a\"b\\c/d é\u{1}\t", row: 12, ledger_seq: nil, age_days: nil,
                detail: "line\nbreak <b>&</b>"),
            ReconcileFinding(
                category: .missingInBackend, identifier: "SN-1", row: nil, ledger_seq: 7, age_days: 3, detail: ""),
        ] {
            let line = f.jsonLine
            #expect(line.hasSuffix("\n"))
            let mine = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? NSDictionary
            let theirs = try JSONSerialization.jsonObject(with: encoder.encode(f)) as? NSDictionary
            #expect(mine == theirs)
            #expect(try JSONDecoder().decode(ReconcileFinding.self, from: Data(line.utf8)) == f)
        }
    }
}
