import Testing

@testable import KeylineCore

@Suite("CN rule")
struct CNRuleTests {
    let rule = try! CNRule(pattern: Profile.defaultCNPattern)

    @Test(
        "accepts ordinary device identifiers",
        arguments: ["dev-0001", "SN.000123", "a", "A1:B2_c3", String(repeating: "x", count: 64)])
    func accepts(_ cn: String) {
        #expect(rule.check(cn) == .accept)
    }

    @Test(
        "refuses with the rule and reason",
        arguments: [
            ("", "cn", "empty"),
            (String(repeating: "x", count: 65), "cn", "65 characters"),
            ("dev\u{0007}01", "cn", "control character"),
            ("dev\n01", "cn", "control character"),
            ("dev/01", "cn", "'/'"),
            ("dev*", "cn", "'*'"),
            ("dev 01", "cn", "white space"),
            ("-leading-dash", "cn-pattern", "cn_pattern"),
            ("dév-01", "cn-pattern", "cn_pattern"),
        ])
    func refuses(_ cn: String, _ expectedRule: String, _ fragment: String) {
        guard case .refuse(let r, let reason) = rule.check(cn) else {
            Issue.record("'\(cn)' was accepted")
            return
        }
        #expect(r == expectedRule)
        #expect(reason.contains(fragment), "reason was: \(reason)")
    }

    @Test("hard rules hold even when a profile's pattern would allow more")
    func hardRulesBeatPattern() throws {
        let loose = try CNRule(pattern: ".*")
        #expect(loose.check("a/b") != .accept)
        #expect(loose.check("a*") != .accept)
        #expect(loose.check(String(repeating: "y", count: 65)) != .accept)
        #expect(loose.check("ok") == .accept)
    }

    @Test("refusals of a batch: each refused CN by its index, with check's verdict; none when all pass")
    func refusalsByIndex() {
        let cns = ["dev-1", "bad cn", "dev-2", "BAD/2", "", "dev-3"]
        let refusals = rule.refusals(cns)
        #expect(refusals.keys.sorted() == [1, 3, 4])
        for (i, verdict) in refusals { #expect(verdict == rule.check(cns[i])) }
        #expect(rule.refusals(["dev-1", "dev-2"]).isEmpty)
        #expect(rule.refusals([]).isEmpty)
    }

    @Test("an invalid pattern is a configuration error")
    func invalidPattern() {
        #expect(throws: KeylineError(.configuration, "")) { try CNRule(pattern: "([") }
    }
}

@Suite("CN template")
struct CNTemplateTests {
    @Test("renders zero-padded and plain sequence numbers")
    func renders() throws {
        #expect(try CNTemplate("SN-{seq:06}").render(42) == "SN-000042")
        #expect(try CNTemplate("SN-{seq:06}-x").render(1_234_567) == "SN-1234567-x")
        #expect(try CNTemplate("d{seq}").render(7) == "d7")
    }

    @Test(
        "refuses templates without exactly one placeholder", arguments: ["SN-", "SN-{seq:xx}", "{seq}-{seq}", "{seq"])
    func refuses(_ text: String) {
        #expect(throws: KeylineError(.usage, "")) { try CNTemplate(text) }
    }
}
