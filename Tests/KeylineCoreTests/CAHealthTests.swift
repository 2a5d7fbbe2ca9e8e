import Crypto
import Foundation
import Testing
import X509

@testable import KeylineCore

@Suite("CA health")
struct CAHealthTests {
    let now = TestPKI.now

    func ca(daysLeft: Double) throws -> IssuingCA {
        try TestPKI.ca(notAfter: now.addingTimeInterval(daysLeft * 86400 + 3600)).ca
    }

    @Test("warns by the days a CA can still issue, not by its days to expiry")
    func issuingDays() throws {
        let h = CAHealth(
            ca: try ca(daysLeft: 400), active: true, profileMinValidityDays: [365, 30], warningDays: 60, now: now)
        #expect(h.daysLeft == 400)
        #expect(h.issuingDaysLeft == 35)
        #expect(h.warning?.contains("can issue for 35 days more") == true)
        #expect(h.canIssue)
        let calm = CAHealth(
            ca: try ca(daysLeft: 400), active: true, profileMinValidityDays: [365], warningDays: 30, now: now)
        #expect(calm.warning == nil)
    }

    @Test("says when issuance is already refused, and when the CA expired")
    func refusedAndExpired() throws {
        let h = CAHealth(
            ca: try ca(daysLeft: 100), active: true, profileMinValidityDays: [365], warningDays: 30, now: now)
        #expect(h.warning?.contains("can no longer meet min_validity_days (365)") == true)
        #expect(!h.canIssue)
        let gone = CAHealth(
            ca: try ca(daysLeft: 10), active: true, profileMinValidityDays: [], warningDays: 30,
            now: now.addingTimeInterval(20 * 86400))
        #expect(gone.daysLeft < 0)
        #expect(gone.warning?.contains("has expired") == true)
    }

    @Test("half a day over the minimum still issues: the test is the issuer's exact one, not rounded days")
    func exact() throws {
        let ca = try TestPKI.ca(notAfter: now.addingTimeInterval(365.5 * 86400)).ca
        let h = CAHealth(ca: ca, active: true, profileMinValidityDays: [365], warningDays: 30, now: now)
        #expect(h.canIssue)
        #expect(h.warning?.contains("can no longer") != true)
    }

    @Test("a retired CA has nothing to warn about; an unused active CA warns by plain expiry")
    func retiredAndUnused() throws {
        let retired = CAHealth(
            ca: try ca(daysLeft: 5), active: false, profileMinValidityDays: [365], warningDays: 30, now: now)
        #expect(retired.warning == nil && retired.issuingDaysLeft == nil && !retired.canIssue)
        let unused = CAHealth(
            ca: try ca(daysLeft: 20), active: true, profileMinValidityDays: [], warningDays: 30, now: now)
        #expect(unused.warning == "CA 'test' expires in 20 days")
    }

    @Test("an active CA that cannot issue (a root without pathlen:0) is flagged")
    func unfit() throws {
        let pki = try TestPKI.ca()
        let root = try IssuingCA(name: "root", certificate: pki.ca.chain[0])
        let h = CAHealth(ca: root, active: true, profileMinValidityDays: [], warningDays: 30, now: now)
        #expect(h.warning?.contains("cannot issue") == true)
        #expect(h.warning?.contains("pathlen") == true)
    }
}
