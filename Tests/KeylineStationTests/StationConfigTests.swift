import Foundation
import Testing

@testable import KeylineCore
@testable import KeylineStation

@Suite("station.toml")
struct StationConfigTests {
    static let valid = """
        station_id = "st-1"
        ledger = "sqlite:ledger.sqlite"
        [cas.dev]
        cert = "ca/dev/ca.pem"
        key = "/abs/ca.key"
        status = "active"
        [profiles.default]
        ca = "dev"
        key_types = ["p256", "rsa2048"]
        validity_days = 400
        min_validity_days = 30
        subject_organization = "Acme"
        """

    @Test("parses a valid configuration and resolves paths against the station directory")
    func parses() throws {
        let c = try StationConfig.parse(Self.valid, directory: "/srv/station")
        #expect(c.stationID == "st-1")
        #expect(c.ledger == .sqlite(path: "/srv/station/ledger.sqlite"))
        #expect(c.cas["dev"]?.cert == "/srv/station/ca/dev/ca.pem")
        #expect(c.cas["dev"]?.key == "/abs/ca.key")
        #expect(c.cas["dev"]?.allowUnencryptedKey == false)
        let p = try c.profile(nil)
        #expect(
            p.keyTypes == [.p256, .rsa2048] && p.validityDays == 400 && p.minValidityDays == 30
                && p.organization == "Acme")
        #expect(p.cnPattern == Profile.defaultCNPattern)
        #expect(c.caExpiryWarningDays == 30)
    }

    @Test(
        "refuses mistakes with a configuration error naming the key",
        arguments: [
            ("validity_days = 400", "valdity_days = 400", "valdity_days"),
            ("station_id = \"st-1\"", "", "station_id"),
            ("ledger = \"sqlite:ledger.sqlite\"", "ledger = \"mysql://x\"", "ledger"),
            ("ca = \"dev\"", "ca = \"prod\"", "prod"),
            ("key_types = [\"p256\", \"rsa2048\"]", "key_types = [\"rsa1024\"]", "rsa1024"),
            ("status = \"active\"", "status = \"paused\"", "paused"),
            ("min_validity_days = 30", "min_validity_days = 900", "min_validity_days"),
            ("validity_days = 400", "validity_days = \"400\"", "validity_days"),
            ("[profiles.default]", "[profiles.default]\ncn_pattern = \"([\"", "cn_pattern"),
            ("[profiles.default]", "[profiles.default]\norganization = \"Acme\"", "organization"),
            ("station_id = \"st-1\"", "station_id = \"st-1\"\nstation_name = \"x\"", "station_name"),
            ("ledger = \"sqlite:ledger.sqlite\"", "ledger = ", "line"),
        ])
    func refuses(_ find: String, _ replace: String, _ mentioned: String) {
        let text = Self.valid.replacingOccurrences(of: find, with: replace)
        do {
            _ = try StationConfig.parse(text, directory: "/srv/station")
            Issue.record("accepted: \(replace)")
        } catch let e as KeylineError {
            #expect(e.code == .configuration)
            #expect(e.exitStatus == 78)
            #expect(e.reason.contains(mentioned), "reason: \(e.reason)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("an unknown profile is a configuration error listing the known ones")
    func unknownProfile() throws {
        let c = try StationConfig.parse(Self.valid, directory: "/srv")
        do {
            _ = try c.profile("line9")
            Issue.record("found a profile that does not exist")
        } catch let e as KeylineError {
            #expect(e.code == .configuration && e.reason.contains("default"))
        }
    }

    @Test("the station is found by --station, then KEYLINE_STATION, then the current directory")
    func locate() {
        #expect(Station.locate(explicit: "/a", environment: ["KEYLINE_STATION": "/b"]) == "/a")
        #expect(Station.locate(explicit: nil, environment: ["KEYLINE_STATION": "/b"]) == "/b")
        #expect(Station.locate(explicit: nil, environment: [:]) == FileManager.default.currentDirectoryPath)
    }

    @Test("a missing station.toml says how to find or make a station")
    func missing() {
        do {
            _ = try StationConfig.load(directory: "/nonexistent-\(UUID().uuidString)")
            Issue.record("loaded a station from nowhere")
        } catch let e as KeylineError {
            #expect(e.code == .configuration && e.reason.contains("keyline init"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("the template keyline init writes parses and refers to the dev CA")
    func template() throws {
        let c = try StationConfig.parse(StationTemplate.render(stationID: "abc"), directory: "/s")
        #expect(c.stationID == "abc")
        #expect(try c.profile("default").caName == "dev")
        #expect(c.cas["dev"]?.passphraseFile == "/s/secrets/dev.passphrase")
    }
}
