import Foundation
import KeylineCore

#if canImport(Glibc)
    import Glibc
#endif

/// The outputs of `ledger reconcile`: the console summary, JSON for machines, and the CSV or HTML report QA files.
/// Findings are streamed from the ``FindingStore``, most alarming category first.
public enum ReconcileReport {
    public enum Kind: String, Sendable {
        case csv, html
    }

    /// The report kind for a `--report` path, by its extension.
    public static func kind(for path: String) throws -> Kind {
        switch (path as NSString).pathExtension.lowercased() {
        case "csv": return .csv
        case "html", "htm": return .html
        default:
            throw KeylineError(
                .usage, "--report must end in .csv or .html (got \((path as NSString).lastPathComponent))")
        }
    }

    /// Writes the report to `path` atomically (a temporary file renamed into place).
    public static func write(
        _ kind: Kind, to path: String, summary: ReconcileSummary, store: FindingStore
    ) throws {
        let tmp = path + ".tmp-\(getpid())"
        guard let stream = BufferedFileOutputStream(path: tmp) else {
            throw KeylineError(.ioError, "cannot create \(tmp)")
        }
        stream.open()
        do {
            switch kind {
            case .csv: try csv(stream, summary: summary, store: store)
            case .html: try html(stream, summary: summary, store: store)
            }
        } catch {
            stream.close()
            unlink(tmp)
            throw error
        }
        guard stream.finish(), rename(tmp, path) == 0 else {
            unlink(tmp)
            throw KeylineError(.ioError, "cannot write \(path) (disk full or directory not writable)")
        }
    }

    /// Prints `{"summary": …, "findings": […], "exit_status": N}` to standard output, streaming the findings.
    public static func json(summary: ReconcileSummary, store: FindingStore) throws {
        let stream = BufferedFileOutputStream(fd: 1)
        stream.open()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        try put(stream, "{\"summary\": ")
        try put(stream, String(decoding: try encoder.encode(summary), as: UTF8.self))
        try put(stream, ",\n\"findings\": [")
        var first = true
        for category in ReconcileCategory.allCases {
            try store.forEachLine(category) { line in
                try put(stream, first ? "\n" : ",\n")
                try line.withUnsafeBufferPointer { b in
                    guard b.isEmpty || stream.write(b.baseAddress!, maxLength: b.count) == b.count else {
                        throw KeylineError(.ioError, "cannot write to standard output")
                    }
                }
                first = false
            }
        }
        try put(stream, "\n],\n\"exit_status\": \(summary.exitStatus)}\n")
        guard stream.finish() else { throw KeylineError(.ioError, "cannot write to standard output") }
    }

    static func put(_ stream: OutputStream, _ text: String) throws {
        let bytes = Array(text.utf8)
        guard
            bytes.isEmpty
                || bytes.withUnsafeBufferPointer({ stream.write($0.baseAddress!, maxLength: $0.count) }) == bytes.count
        else {
            throw KeylineError(.ioError, "cannot write the report (disk full?)")
        }
    }

    static func csvField(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    static func csv(_ stream: OutputStream, summary: ReconcileSummary, store: FindingStore) throws {
        try put(stream, "category,identifier,row,ledger_seq,age_days,detail\n")
        for category in ReconcileCategory.allCases {
            try store.forEach(category) { f in
                let fields = [
                    f.category.rawValue, f.identifier, f.row.map(String.init) ?? "",
                    f.ledger_seq.map(String.init) ?? "",
                    f.age_days.map(String.init) ?? "", f.detail,
                ]
                try put(stream, fields.map(csvField).joined(separator: ",") + "\n")
            }
        }
    }

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    static func html(_ stream: OutputStream, summary s: ReconcileSummary, store: FindingStore) throws {
        let verdict =
            switch s.exitStatus {
            case 0: ("PASS", "pass", "Everything matched.")
            case 6: ("ALARM", "alarm", "The backend knows devices this station never issued.")
            default: ("DIFFERENCES", "diff", "The ledger and the backend disagree.")
            }
        try put(
            stream,
            """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>Keyline reconcile — \(escape(s.station_id)) — \(escape(s.reconciled_at))</title>
            <style>
            body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
            .verdict { font-size: 1.6em; font-weight: bold; padding: .4em .8em; display: inline-block; }
            .pass { background: #d6f5d6; } .alarm { background: #ffb3b3; } .diff { background: #ffe9a8; }
            table { border-collapse: collapse; margin: 1em 0; }
            th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; vertical-align: top; }
            td.n { text-align: right; }
            h2.not_issued_here { color: #b00000; }
            </style>
            </head>
            <body>
            <h1>Keyline ledger reconcile</h1>
            <p id="verdict" class="verdict \(verdict.1)">\(verdict.0)</p>
            <p>\(escape(verdict.2)) Exit status \(s.exitStatus).</p>
            <table id="context">
            <tr><th>Station</th><td>\(escape(s.station_id))</td></tr>
            <tr><th>Backend export</th><td>\(escape(s.export)) (\(s.format), \(s.export_rows) rows)</td></tr>
            <tr><th>Ledger</th><td>\(s.ledger_records_in_scope) records in scope, head seq \(s.ledger_head_seq)</td></tr>
            <tr><th>Scope</th><td>profile \(escape(s.profile ?? "all")), work order \(escape(s.work_order ?? "all"))</td></tr>
            <tr><th>Reconciled at</th><td>\(escape(s.reconciled_at))</td></tr>
            </table>
            <table id="summary">
            <tr><th>Category</th><th>Count</th></tr>

            """)
        for c in ReconcileCategory.allCases {
            try put(
                stream,
                "<tr data-category=\"\(c.rawValue)\"><td>\(escape(c.title))</td><td class=\"n\">\(s.counts[c.rawValue] ?? 0)</td></tr>\n"
            )
        }
        try put(
            stream,
            """
            <tr data-category="matched"><td>matched</td><td class="n">\(s.matched)</td></tr>
            <tr data-category="out_of_scope"><td>out of scope</td><td class="n">\(s.out_of_scope)</td></tr>
            <tr data-category="revoked_absent"><td>revoked, absent from the backend</td><td class="n">\(s.revoked_absent)</td></tr>
            <tr data-category="failed_absent"><td>failed, absent from the backend</td><td class="n">\(s.failed_absent)</td></tr>
            </table>

            """)
        for c in ReconcileCategory.allCases where (s.counts[c.rawValue] ?? 0) > 0 {
            try put(
                stream,
                """
                <h2 class="\(c.rawValue)">\(escape(c.title)) (\(s.counts[c.rawValue] ?? 0))</h2>
                <table class="findings" id="\(c.rawValue)">
                <tr><th>Identifier</th><th>Row</th><th>Ledger seq</th><th>Age (days)</th><th>Detail</th></tr>

                """)
            try store.forEach(c) { f in
                try put(
                    stream,
                    "<tr><td class=\"identifier\">\(escape(f.identifier))</td><td class=\"n\">\(f.row.map(String.init) ?? "")</td><td class=\"n\">\(f.ledger_seq.map(String.init) ?? "")</td><td class=\"n\">\(f.age_days.map(String.init) ?? "")</td><td>\(escape(f.detail))</td></tr>\n"
                )
            }
            try put(stream, "</table>\n")
        }
        try put(stream, "</body>\n</html>\n")
    }
}
