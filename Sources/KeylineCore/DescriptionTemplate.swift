import Mustache

/// A profile's `description_template`: Mustache, rendered per device into the manifest's `description`.
///
/// Rendered as plain text (no HTML escaping). Only the fields in ``fields`` may appear; a template naming any
/// other is refused when the configuration loads, so a typo never renders as an empty string on every device.
public struct DescriptionTemplate: Sendable {
    /// Every field a template may use.
    public static let fields: [String] = [
        "cn", "serial", "fingerprint", "not_before", "not_after", "issued_at", "station_id", "operator", "profile",
        "product_name", "hardware_id", "work_order", "ca", "key_origin",
    ]

    public let source: String
    private let template: MustacheTemplate

    /// Compiles `source`; throws ``KeylineError/Code/configuration`` naming an unknown field or the syntax error.
    public init(_ source: String) throws {
        self.source = source
        do {
            template = try MustacheTemplate(string: "{{% CONTENT_TYPE: TEXT}}" + source)
        } catch {
            throw KeylineError(.configuration, "description_template is not valid Mustache (\(error))")
        }
        let probe = FieldProbe()
        _ = template.render(probe)
        let unknown = probe.requested.subtracting(Self.fields)
        if let first = unknown.sorted().first {
            throw KeylineError(
                .configuration,
                "description_template uses unknown field '\(first)' (known: \(Self.fields.joined(separator: ", ")))")
        }
    }

    /// Renders the template for one device; missing optional fields render as empty text.
    public func render(_ values: [String: String]) -> String {
        template.render(values)
    }

    /// Records every name the template looks up (sections included) while rendering nothing of substance.
    private final class FieldProbe: MustacheParent {
        var requested: Set<String> = []
        func child(named name: String) -> Any? {
            requested.insert(name)
            return "x"
        }
    }
}
