import Foundation
import KeylineCore
import Logging
import NIOSSL
import PostgresNIO

/// The organization's ledger on PostgreSQL: many stations, one database. Each station keeps its own hash chain of
/// records and of events (sequence numbers count per station, from 1, as in a station's own SQLite ledger), while
/// CN, serial, certificate and public key are unique across all of them, by the database's own unique indexes.
///
/// Reads see the station's own records; only the reservation's uniqueness check looks across stations. A station's
/// writers are serialized by a row lock on its `stations` row, so the chain has no gaps or forks; two stations
/// reserving the same CN at once are separated by the unique index, and the loser's write becomes a refusal.
public final class PostgresLedger: Ledger, @unchecked Sendable {
    public let stationID: String
    /// The schema every table lives in (validated identifier).
    public let schema: String
    let client: PostgresClient
    let runner: Task<Void, Never>
    let logger: Logger

    public struct ConnectionOptions: Sendable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        public var database: String
        public var tls: PostgresClient.Configuration.TLS
        /// The same TLS settings for a single, unpooled connection (used to say why the pool cannot connect).
        public var connectionTLS: PostgresConnection.Configuration.TLS = .disable

        public init(
            host: String, port: Int, user: String, password: String?, database: String,
            tls: PostgresClient.Configuration.TLS = .disable
        ) {
            self.host = host
            self.port = port
            self.user = user
            self.password = password
            self.database = database
            self.tls = tls
        }

        /// Parses `postgres://user@host:port/db` (no password in the URL: it comes from a file or a credential).
        public static func parse(_ url: String, password: String?) throws -> ConnectionOptions {
            // First, so that a password never reaches an error message (the other errors quote the URL).
            if url.range(of: "://[^/@]*:[^/@]*@", options: .regularExpression) != nil
                || URLComponents(string: url)?.password != nil
            {
                throw KeylineError(
                    .configuration, "ledger URL must not carry a password; put it in a file (ledger_password_file)")
            }
            guard let u = URLComponents(string: url), u.scheme == "postgres" || u.scheme == "postgresql",
                let host = u.host, !host.isEmpty, let user = u.user, !user.isEmpty
            else {
                throw KeylineError(
                    .configuration, "ledger URL '\(url)' must look like postgres://USER@HOST:PORT/DATABASE")
            }
            let db = String(u.path.drop(while: { $0 == "/" }))
            guard !db.isEmpty else { throw KeylineError(.configuration, "ledger URL '\(url)' names no database") }
            return ConnectionOptions(host: host, port: u.port ?? 5432, user: user, password: password, database: db)
        }
    }

    /// Read-only access to a station's chains (QA's role): no migration, no registration; the station must have a
    /// chain already.
    public static func connect(
        options: ConnectionOptions, stationID: String, schema: String = "keyline"
    ) async throws -> PostgresLedger {
        try await PostgresLedger(
            options: options, stationID: stationID, schema: schema, migrate: false, registration: .require)
    }

    /// What opening does about the station's row in `stations` (its chain heads).
    public enum Registration: Sendable {
        /// Create it when missing (a station's first start).
        case register
        /// Refuse a station that has no chain (read-only use).
        case require
        /// Neither (`ledger copy` creates it inside its own transaction).
        case none
    }

    /// Connects, runs pending migrations (unless `migrate` is false: then a schema behind the build is refused)
    /// and registers the station as `registration` says.
    public init(
        options: ConnectionOptions, stationID: String, schema: String = "keyline", migrate: Bool = true,
        registration: Registration = .register
    ) async throws {
        guard schema.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) != nil else {
            throw KeylineError(.configuration, "schema '\(schema)' must be a lower-case SQL identifier")
        }
        self.stationID = stationID
        self.schema = schema
        self.place = "\(options.host):\(options.port)/\(options.database)"
        self.options = options
        var log = Logger(label: "keyline.ledger.postgres")
        log.logLevel = .critical
        logger = log
        var config = PostgresClient.Configuration(
            host: options.host, port: options.port, username: options.user, password: options.password,
            database: options.database, tls: options.tls)
        config.options.connectTimeout = .seconds(5)

        let client = PostgresClient(configuration: config, backgroundLogger: log)
        self.client = client
        runner = Task { await client.run() }
        do {
            if migrate { try await self.migrate() } else { try await checkSchema() }
            switch registration {
            case .register: try await self.register()
            case .none: break
            case .require:
                let known = try await stationIDs()
                guard known.contains(stationID) else {
                    throw KeylineError(
                        .configuration,
                        "station '\(stationID)' has no chain in the ledger database \(place) (stations there: \(known.isEmpty ? "none" : known.joined(separator: ", ")))"
                    )
                }
            }
        } catch {
            runner.cancel()
            throw error
        }
    }

    /// Makes sure the station's chain row exists (a station's first start).
    func register() async throws {
        let schema = schema
        let stationID = stationID
        _ = try await write("registering the station") { conn in
            try await conn.exec(
                PostgresQuery(
                    unsafeSQL: """
                        INSERT INTO \(schema).stations (station_id, record_seq, record_hash, event_seq, event_hash)
                        VALUES ($1, 0, $2, 0, $2) ON CONFLICT (station_id) DO NOTHING
                        """, binds: Self.binds(stationID, LedgerRecord.genesisHash)), logger: self.logger)
        }
    }

    deinit { runner.cancel() }

    // MARK: - Schema

    /// The migrations, in order, each a list of statements; applied ones are recorded in `schema_migrations`.
    /// Never edit a shipped one.
    var migrations: [(String, [String])] {
        let s = schema
        return [
            (
                "v1",
                [
                    """
                    CREATE TABLE \(s).stations (
                    station_id TEXT PRIMARY KEY,
                    record_seq BIGINT NOT NULL, record_hash TEXT NOT NULL,
                    event_seq BIGINT NOT NULL, event_hash TEXT NOT NULL)
                    """,
                    """
                    CREATE TABLE \(s).records (
                    chain TEXT NOT NULL REFERENCES \(s).stations(station_id),
                    seq BIGINT NOT NULL,
                    cn TEXT NOT NULL, serial_hex TEXT NOT NULL, cert_sha256 TEXT NOT NULL, pubkey_sha256 TEXT NOT NULL,
                    ca_sha256 TEXT NOT NULL, ca_name TEXT NOT NULL, profile TEXT NOT NULL, station_id TEXT NOT NULL,
                    operator TEXT NOT NULL,
                    key_origin TEXT NOT NULL CHECK (key_origin IN ('device', 'station')),
                    hardware_id TEXT, work_order TEXT, not_before BIGINT NOT NULL, not_after BIGINT NOT NULL,
                    cert_der BYTEA NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ('issued', 'delivered', 'failed', 'revoked')),
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
                    has_attributes BOOLEAN NOT NULL, description TEXT, tags TEXT, product_prn TEXT, cohort_prn TEXT,
                    target TEXT, reissue_of BIGINT,
                    PRIMARY KEY (chain, seq))
                    """,
                    """
                    CREATE UNIQUE INDEX records_serial ON \(s).records(serial_hex)
                    """,
                    """
                    CREATE UNIQUE INDEX records_cert ON \(s).records(cert_sha256)
                    """,
                    """
                    CREATE UNIQUE INDEX records_pubkey ON \(s).records(pubkey_sha256)
                    """,
                    """
                    CREATE UNIQUE INDEX records_cn_current ON \(s).records(cn) WHERE state <> 'revoked'
                    """,
                    """
                    CREATE INDEX records_cn ON \(s).records(cn, chain, seq)
                    """,
                    """
                    CREATE INDEX records_work_order ON \(s).records(chain, work_order, seq)
                    """,
                    """
                    CREATE INDEX records_profile ON \(s).records(chain, profile, seq)
                    """,
                    """
                    CREATE TABLE \(s).events (
                    chain TEXT NOT NULL REFERENCES \(s).stations(station_id),
                    seq BIGINT NOT NULL,
                    kind TEXT NOT NULL, record_seq BIGINT, cn TEXT, detail TEXT NOT NULL, station_id TEXT NOT NULL,
                    operator TEXT NOT NULL, at BIGINT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
                    PRIMARY KEY (chain, seq))
                    """,
                    """
                    CREATE INDEX events_record ON \(s).events(chain, record_seq, seq)
                    """,
                    """
                    CREATE FUNCTION \(s).refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                    IF TG_OP = 'DELETE' THEN
                    RAISE EXCEPTION 'keyline ledger: history is append-only';
                    END IF;
                    IF TG_TABLE_NAME = 'events' OR (to_jsonb(NEW) - 'state' - 'updated_at')
                    IS DISTINCT FROM (to_jsonb(OLD) - 'state' - 'updated_at') THEN
                    RAISE EXCEPTION 'keyline ledger: only a record''s state may change';
                    END IF;
                    RETURN NEW;
                    END $$
                    """,
                    """
                    CREATE TRIGGER records_no_rewrite BEFORE UPDATE OR DELETE ON \(s).records
                    FOR EACH ROW EXECUTE FUNCTION \(s).refuse_rewrite()
                    """,
                    """
                    CREATE TRIGGER events_no_rewrite BEFORE UPDATE OR DELETE ON \(s).events
                    FOR EACH ROW EXECUTE FUNCTION \(s).refuse_rewrite()
                    """,
                ]
            ),
            // v2: least privilege. SCHEMA_station may read, insert records and events, change a record's state and
            // move its own chain heads; SCHEMA_qa may only read. Grant one to each station's login role and to
            // QA's (docs/operations.md). Neither may delete or alter anything else.
            (
                "v2",
                [
                    """
                    DO $$ BEGIN
                        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(s)_station') THEN
                            CREATE ROLE \(s)_station NOLOGIN;
                        END IF;
                        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(s)_qa') THEN
                            CREATE ROLE \(s)_qa NOLOGIN;
                        END IF;
                    END $$
                    """,
                    "GRANT USAGE ON SCHEMA \(s) TO \(s)_station, \(s)_qa",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA \(s) TO \(s)_station, \(s)_qa",
                    "GRANT INSERT ON \(s).records, \(s).events, \(s).stations TO \(s)_station",
                    "GRANT UPDATE (state, updated_at) ON \(s).records TO \(s)_station",
                    "GRANT UPDATE (record_seq, record_hash, event_seq, event_hash) ON \(s).stations TO \(s)_station",
                ]
            ),
        ]
    }

    /// The migrations applied to the database, in order.
    public func appliedMigrations() async throws -> [String] {
        try await read("reading the ledger's schema") { conn in
            let exists = try await conn.query(
                sql("SELECT to_regclass($1) IS NOT NULL", "\(self.schema).schema_migrations"), logger: self.logger)
            for try await present in exists.decode(Bool.self) where !present { return [] }
            var out: [String] = []
            let rows = try await conn.query(
                PostgresQuery(unsafeSQL: "SELECT version FROM \(self.schema).schema_migrations ORDER BY version"),
                logger: self.logger)
            for try await v in rows.decode(String.self) { out.append(v) }
            return out
        }
    }

    /// Refuses a database whose schema is behind this build: migrations are run on purpose, by the owner
    /// (`keyline ledger migrate`), never by a station on the way.
    func checkSchema() async throws {
        let applied = Set(try await appliedMigrations())
        let missing = migrations.map(\.0).filter { !applied.contains($0) }
        guard missing.isEmpty else {
            throw KeylineError(
                .configuration,
                "the ledger database \(place) lacks schema migration(s) \(missing.joined(separator: ", ")); run 'keyline ledger migrate' with the owner's role"
            )
        }
    }

    /// Runs pending migrations in one transaction, holding an advisory lock so two stations starting at once do
    /// not race.
    public func migrate() async throws {
        try await write("migrating the ledger") { conn in
            try await conn.exec("SELECT pg_advisory_xact_lock(4242421)", logger: self.logger)
            try await conn.exec(
                PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(self.schema)"), logger: self.logger)
            try await conn.exec(
                PostgresQuery(
                    unsafeSQL:
                        "CREATE TABLE IF NOT EXISTS \(self.schema).schema_migrations (version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                ), logger: self.logger)
            var applied: Set<String> = []
            let rows = try await conn.query(
                PostgresQuery(unsafeSQL: "SELECT version FROM \(self.schema).schema_migrations"), logger: self.logger)
            for try await v in rows.decode(String.self) { applied.insert(v) }
            for (version, statements) in self.migrations where !applied.contains(version) {
                for statement in statements {
                    try await conn.exec(PostgresQuery(unsafeSQL: statement), logger: self.logger)
                }
                try await conn.exec(
                    PostgresQuery(
                        unsafeSQL: "INSERT INTO \(self.schema).schema_migrations (version) VALUES ($1)",
                        binds: Self.binds(version)), logger: self.logger)
            }
        }
    }

    // MARK: - Plumbing

    static func binds(_ values: (any PostgresThrowingDynamicTypeEncodable)?...) -> PostgresBindings {
        var b = PostgresBindings(capacity: values.count)
        for v in values {
            if let v { try? b.append(v) } else { b.appendNull() }
        }
        return b
    }

    func sql(_ text: String, _ values: (any PostgresThrowingDynamicTypeEncodable)?...) -> PostgresQuery {
        var b = PostgresBindings(capacity: values.count)
        for v in values {
            if let v { try? b.append(v) } else { b.appendNull() }
        }
        return PostgresQuery(unsafeSQL: text.replacingOccurrences(of: "@.", with: "\(schema)."), binds: b)
    }

    /// An error of the caller's own (a signing failure, a refusal) carried through the connection pool untouched.
    struct Passthrough: Error {
        let error: Error
    }

    /// How long the station waits for the database before it says the ledger is unreachable.
    public var reachTimeout: Duration = .seconds(5)
    let place: String
    let options: ConnectionOptions

    /// Why a connection cannot be made, when the server or the TLS handshake says so (the pool only keeps trying):
    /// one unpooled attempt, bounded by 3 s. Nil when the server simply does not answer.
    func diagnoseConnection() async -> String? {
        let o = options
        let config = PostgresConnection.Configuration(
            host: o.host, port: o.port, username: o.user, password: o.password, database: o.database,
            tls: o.connectionTLS)
        let log = logger
        let outcome = try? await Self.withDeadline(.seconds(3)) { () async -> String? in
            do {
                let conn = try await PostgresConnection.connect(configuration: config, id: 0, logger: log)
                try? await conn.close()
                return nil
            } catch {
                return Self.connectionFailure(error)
            }
        }
        return outcome ?? nil
    }

    /// Runs `operation` against a deadline and returns nil when the deadline comes first. It never waits for the
    /// operation after that (a task group would: a connection request the pool does not cancel would hold the
    /// caller forever); the operation is cancelled and left to end on its own.
    static func withDeadline<T: Sendable>(
        _ deadline: Duration, _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T? {
        let race = DeadlineRace()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T?, Error>) in
            let finish: @Sendable (Result<T?, Error>) -> Void = { result in
                race.lock.lock()
                guard !race.finished else {
                    race.lock.unlock()
                    return
                }
                race.finished = true
                let (work, timer) = (race.work, race.timer)
                race.lock.unlock()
                work?.cancel()
                timer?.cancel()
                continuation.resume(with: result)
            }
            let work = Task {
                do { finish(.success(try await operation())) } catch { finish(.failure(error)) }
            }
            let timer = Task {
                try? await Task.sleep(for: deadline)
                finish(.success(nil))
            }
            race.lock.lock()
            race.work = work
            race.timer = timer
            let already = race.finished
            race.lock.unlock()
            if already {
                work.cancel()
                timer.cancel()
            }
        }
    }

    /// A connection failure worth naming: what the server said (authentication, pg_hba), or the TLS handshake's
    /// complaint. Nil for a plain network failure (refused, timed out), which "does not answer" already says.
    static func connectionFailure(_ error: Error) -> String? {
        if let (state, message, _) = serverFields(error) { return "\(message) (SQLSTATE \(state))" }
        guard let e = error as? PSQLError else { return nil }
        if e.code == .sslUnsupported { return "the server does not offer TLS (ledger_sslmode requires it)" }
        guard let u = e.underlying, u is NIOSSLError || String(reflecting: type(of: u)).contains("SSL") else {
            return nil
        }
        let text = "\(u)"
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return "TLS: the server's certificate does not verify against ledger_ca_file (or the system's roots)"
        }
        if text.contains("failedToValidateHostname") || text.contains("HOSTNAME") {
            return "TLS: the server's certificate does not name the host in the ledger URL"
        }
        // BoringSSL's reason, such as "...:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER at ...".
        if let r = text.range(of: "OPENSSL_internal:[A-Z0-9_]+", options: .regularExpression) {
            return "TLS handshake failed: " + text[r].dropFirst("OPENSSL_internal:".count)
        }
        return "TLS handshake failed: \(text.prefix(200))"
    }

    /// Fails fast, with the operator's message, when no connection can be had within ``reachTimeout`` (the pool
    /// itself would keep retrying for minutes).
    func ensureReachable(_ context: String) async throws {
        let client = client
        let timeout = reachTimeout
        let reached = try await Self.withDeadline(timeout) { try await client.withConnection { _ in } } != nil
        if !reached {
            if let why = await diagnoseConnection() {
                throw KeylineError(
                    .unavailable,
                    "the ledger database \(place) refused the connection (\(context)): \(why); issuance is refused until it is fixed"
                )
            }
            throw KeylineError(
                .unavailable,
                "the ledger database \(place) does not answer (\(context)); issuance is refused until it is back")
        }
    }

    /// The pauses between attempts of a transaction the server aborted for a reason that is safe to retry (a
    /// serialization failure, a deadlock, a connection lost before COMMIT was sent); a quarter of each is jitter.
    /// After the last, the error reaches the caller.
    public var retryDelays: [Duration] = [.milliseconds(50), .milliseconds(200), .milliseconds(800)]

    /// Fault injection for tests: runs inside every transaction just before its COMMIT, with the attempt number
    /// (0 first); `afterCommitSent` runs where COMMIT counts as sent (a failure there leaves the outcome unknown).
    var beforeCommit: (@Sendable (PostgresConnection, Int) async throws -> Void)?
    var afterCommitSent: (@Sendable (PostgresConnection, Int) async throws -> Void)?

    /// The server answered COMMIT with something else (ROLLBACK: it had aborted the transaction): nothing was
    /// committed, so the attempt may run again.
    struct RolledBack: Error {
        let answer: String
    }

    /// Whether COMMIT went to the server in an attempt (after that, a lost connection leaves the outcome unknown).
    final class CommitSent: @unchecked Sendable {
        var value = false
    }

    /// Whether a failed attempt is certain to have changed nothing and may run again: the server rolled it back
    /// (serialization failure, deadlock, lock timeout, the backend terminated) or the connection was lost before
    /// COMMIT was sent. A read-only transaction may always run again.
    static func retryable(sqlState: String?, commitSent: Bool, readOnly: Bool) -> Bool {
        if let state = sqlState {
            if ["40001", "40P01", "55P03"].contains(state) { return true }
            // Admin shutdown / crash shutdown / cannot connect now / connection exceptions: the session is gone.
            if state.hasPrefix("57P") || state.hasPrefix("08") { return readOnly || !commitSent }
            return false
        }
        return readOnly || !commitSent
    }

    /// A transaction on one connection (`begin` opens it); errors become Keyline errors with the operator's
    /// wording, the caller's own errors pass through as they are. The body runs again, from BEGIN, after a
    /// failure ``retryable(sqlState:commitSent:readOnly:)`` calls safe (so it must not have effects outside the
    /// transaction that a second run would repeat wrongly; signing again is fine: nothing was committed).
    ///
    /// Known limit: a session the server terminates in the middle of a transaction (pg_terminate_backend, a
    /// failover) left postgres-nio 1.33's pool waiting for a connection in about one full test run in three, so
    /// the tests inject the server's error (SQLSTATE 57P01) instead. The reachability check has a deadline
    /// (``withDeadline(_:_:)``); the lease the transaction itself takes does not.
    func transaction<T: Sendable>(
        _ context: String, begin: String, retry: Bool = true, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let readOnly = begin.hasSuffix("READ ONLY")
        var attempt = 0
        while true {
            let sent = CommitSent()
            do {
                try await ensureReachable(context)
                return try await client.withConnection { conn in
                    try await conn.exec(PostgresQuery(unsafeSQL: begin), logger: logger)
                    do {
                        let value: T
                        do {
                            value = try await body(conn)
                        } catch let e as PSQLError {
                            throw e
                        } catch {
                            throw Passthrough(error: error)
                        }
                        if let hook = beforeCommit { try await hook(conn, attempt) }
                        sent.value = true
                        if let hook = afterCommitSent { try await hook(conn, attempt) }
                        try await conn.commit(logger: logger)
                        return value
                    } catch {
                        _ = try? await conn.query("ROLLBACK", logger: logger)
                        throw error
                    }
                }
            } catch let p as Passthrough {
                throw p.error
            } catch let e as KeylineError {
                throw e
            } catch {
                let rolledBack = error as? RolledBack
                if retry, attempt < retryDelays.count,
                    rolledBack != nil
                        || Self.retryable(sqlState: Self.sqlState(error), commitSent: sent.value, readOnly: readOnly)
                {
                    let delay = retryDelays[attempt]
                    do {
                        try await Task.sleep(for: delay + delay * Double.random(in: 0...0.25))
                    } catch {
                        throw KeylineError(.temporaryFailure, "\(context): stopped while waiting to try again")
                    }
                    attempt += 1
                    continue
                }
                if let rolledBack {
                    throw KeylineError(
                        .temporaryFailure,
                        "the ledger database rolled the transaction back (\(context): it answered \(rolledBack.answer) to COMMIT); nothing was recorded, try again"
                    )
                }
                if sent.value, !readOnly, Self.isSessionLoss(error) {
                    throw KeylineError(
                        .unavailable,
                        "the connection to the ledger database \(place) was lost while committing (\(context)); whether it was recorded is unknown until the server answers again ('keyline ledger show CN' tells); nothing left the station"
                    )
                }
                throw Self.map(error, context: context)
            }
        }
    }

    func write<T: Sendable>(_ context: String, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await transaction(context, begin: "BEGIN", body)
    }

    /// One snapshot for everything the body reads. `retry: false` for a body that hands rows to a caller as it
    /// reads (running it again would hand them over twice).
    func read<T: Sendable>(
        _ context: String, retry: Bool = true, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await transaction(context, begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", retry: retry, body)
    }

    /// The server's SQLSTATE, message and detail for an error it reported (through either postgres-nio API).
    static func serverFields(_ error: Error) -> (state: String, message: String, detail: String?)? {
        if let e = error as? PSQLError, let state = e.serverInfo?[.sqlState] {
            return (state, e.serverInfo?[.message] ?? state, e.serverInfo?[.detail])
        }
        if case .server(let m)? = error as? PostgresError, let state = m.fields[.sqlState] {
            return (state, m.fields[.message] ?? state, m.fields[.detail])
        }
        return nil
    }

    /// The SQLSTATE of a server error, if it is one.
    static func sqlState(_ error: Error) -> String? {
        serverFields(error)?.state
    }

    /// The session is gone: the connection dropped, or the server ended it (admin shutdown, crash, failover).
    static func isSessionLoss(_ error: Error) -> Bool {
        guard let state = sqlState(error) else { return true }
        return state.hasPrefix("57P") || state.hasPrefix("08")
    }

    static func map(_ error: Error, context: String) -> KeylineError {
        if let (state, message, serverDetail) = serverFields(error) {
            switch state {
            case "23505":
                let detail = serverDetail.map { " \($0)" } ?? ""
                return KeylineError(
                    .policyRefusal, "ledger constraint refused the write (\(context): \(message).\(detail))",
                    rule: "ledger-constraint")
            case "40001", "40P01", "55P03":
                return KeylineError(.temporaryFailure, "\(context): \(message); try again")
            case let s where s.hasPrefix("57P") || s.hasPrefix("08"):
                return KeylineError(
                    .unavailable,
                    "the ledger database closed the connection (\(context): \(message)); issuance is refused until it is back"
                )
            case "42501":
                return KeylineError(.unavailable, "\(context): permission denied: \(message)")
            case "P0001":
                return KeylineError(.integrity, "\(context): \(message)")
            default:
                return KeylineError(.internalError, "\(context): \(message) (SQLSTATE \(state))")
            }
        }
        let what = (error as? PSQLError).map { "\($0.code)" } ?? "\(error)"
        return KeylineError(
            .unavailable,
            "the ledger database is unreachable (\(context): \(what)); issuance is refused until it is back")
    }

    static let recordColumns = """
        seq, cn, serial_hex, cert_sha256, pubkey_sha256, ca_sha256, ca_name, profile, station_id, operator, \
        key_origin, hardware_id, work_order, not_before, not_after, cert_der, state, created_at, updated_at, \
        prev_hash, hash, has_attributes, description, tags, product_prn, cohort_prn, target, reissue_of
        """
    static let eventColumns = "seq, kind, record_seq, cn, detail, station_id, operator, at, prev_hash, hash"

    static func record(_ row: PostgresRow) throws -> LedgerRecord {
        let r = row.makeRandomAccess()
        let der = try r[15].decode(Data.self)
        var attributes: DeviceAttributes?
        if try r[21].decode(Bool.self) {
            let tags = try r[23].decode(String?.self) ?? ""
            attributes = DeviceAttributes(
                description: try r[22].decode(String?.self) ?? "",
                tags: tags.isEmpty ? [] : tags.split(separator: ",").map(String.init),
                productPRN: try r[24].decode(String?.self), cohortPRN: try r[25].decode(String?.self),
                target: try r[26].decode(String?.self))
        }
        let content = RecordContent(
            cn: try r[1].decode(String.self), serialHex: try r[2].decode(String.self),
            certificateFingerprint: try r[3].decode(String.self), publicKeySHA256: try r[4].decode(String.self),
            caFingerprint: try r[5].decode(String.self), caName: try r[6].decode(String.self),
            profile: try r[7].decode(String.self), stationID: try r[8].decode(String.self),
            operatorName: try r[9].decode(String.self),
            keyOrigin: KeyOrigin(rawValue: try r[10].decode(String.self)) ?? .device,
            hardwareID: try r[11].decode(String?.self), workOrder: try r[12].decode(String?.self),
            notBefore: Date(timeIntervalSince1970: Double(try r[13].decode(Int64.self))),
            notAfter: Date(timeIntervalSince1970: Double(try r[14].decode(Int64.self))),
            certificateDER: Array(der), createdAt: Timestamp.fromMillis(try r[17].decode(Int64.self)),
            attributes: attributes, reissueOf: try r[27].decode(Int64?.self))
        return LedgerRecord(
            seq: try r[0].decode(Int64.self), content: content,
            state: RecordState(rawValue: try r[16].decode(String.self)) ?? .failed,
            updatedAt: Timestamp.fromMillis(try r[18].decode(Int64.self)), prevHash: try r[19].decode(String.self),
            hash: try r[20].decode(String.self))
    }

    static func event(_ row: PostgresRow) throws -> LedgerEvent {
        let r = row.makeRandomAccess()
        let content = EventContent(
            kind: EventKind(rawValue: try r[1].decode(String.self)) ?? .refused,
            recordSeq: try r[2].decode(Int64?.self), cn: try r[3].decode(String?.self),
            detail: try r[4].decode(String.self), stationID: try r[5].decode(String.self),
            operatorName: try r[6].decode(String.self), at: Timestamp.fromMillis(try r[7].decode(Int64.self)))
        return LedgerEvent(
            seq: try r[0].decode(Int64.self), content: content, prevHash: try r[8].decode(String.self),
            hash: try r[9].decode(String.self))
    }

    func records(_ conn: PostgresConnection, _ query: PostgresQuery) async throws -> [LedgerRecord] {
        var out: [LedgerRecord] = []
        for try await row in try await conn.query(query, logger: logger) { out.append(try Self.record(row)) }
        return out
    }

    // MARK: - Writing

    /// Locks the station's row and returns both chain heads.
    func lockHeads(_ conn: PostgresConnection) async throws -> LedgerHeads {
        let rows = try await conn.query(
            sql(
                "SELECT record_seq, record_hash, event_seq, event_hash FROM @.stations WHERE station_id = $1 FOR UPDATE",
                stationID), logger: logger)
        for try await (rs, rh, es, eh) in rows.decode((Int64, String, Int64, String).self) {
            return LedgerHeads(recordsSeq: rs, recordsHash: rh, eventsSeq: es, eventsHash: eh)
        }
        throw KeylineError(.internalError, "station \(stationID) has no chain row")
    }

    func saveHeads(_ conn: PostgresConnection, _ h: LedgerHeads) async throws {
        try await conn.exec(
            sql(
                "UPDATE @.stations SET record_seq = $2, record_hash = $3, event_seq = $4, event_hash = $5 WHERE station_id = $1",
                stationID, h.recordsSeq, h.recordsHash, h.eventsSeq, h.eventsHash), logger: logger)
    }

    func insertEvent(
        _ conn: PostgresConnection, _ content: EventContent, heads: inout LedgerHeads
    ) async throws
        -> LedgerEvent
    {
        let seq = heads.eventsSeq + 1
        let event = LedgerEvent(
            seq: seq, content: content, prevHash: heads.eventsHash,
            hash: ChainHash.event(seq: seq, prevHash: heads.eventsHash, content: content))
        try await conn.exec(
            sql(
                """
                INSERT INTO @.events (chain, seq, kind, record_seq, cn, detail, station_id, operator, at, prev_hash, hash)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                """, stationID, seq, content.kind.rawValue, content.recordSeq, content.cn, content.detail,
                content.stationID, content.operatorName, Timestamp.millis(content.at), event.prevHash, event.hash),
            logger: logger)
        heads.eventsSeq = seq
        heads.eventsHash = event.hash
        return event
    }

    func insert(_ conn: PostgresConnection, _ r: LedgerRecord) async throws {
        let c = r.content
        try await conn.exec(
            sql(
                """
                INSERT INTO @.records (chain, seq, cn, serial_hex, cert_sha256, pubkey_sha256, ca_sha256, ca_name, profile,
                  station_id, operator, key_origin, hardware_id, work_order, not_before, not_after, cert_der, state,
                  created_at, updated_at, prev_hash, hash, has_attributes, description, tags, product_prn, cohort_prn,
                  target, reissue_of)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                  $22, $23, $24, $25, $26, $27, $28, $29)
                """, stationID, r.seq, c.cn, c.serialHex, c.certificateFingerprint, c.publicKeySHA256,
                c.caFingerprint, c.caName, c.profile, c.stationID, c.operatorName, c.keyOrigin.rawValue, c.hardwareID,
                c.workOrder, Int64(Timestamp.seconds(c.notBefore)), Int64(Timestamp.seconds(c.notAfter)),
                Data(c.certificateDER), r.state.rawValue, Timestamp.millis(c.createdAt),
                Timestamp.millis(r.updatedAt), r.prevHash, r.hash, c.attributes != nil, c.attributes?.description,
                c.attributes?.tags.joined(separator: ","), c.attributes?.productPRN, c.attributes?.cohortPRN,
                c.attributes?.target, c.reissueOf), logger: logger)
    }

    /// Why a reservation cannot be made, looking across every station (nil when it can).
    func refusal(_ conn: PostgresConnection, _ r: inout Reservation) async throws -> KeylineError? {
        // Another station's record for the CN (a current one first): the CN belongs to that station's chain,
        // and a reworked device is re-issued there.
        let elsewhere = try await records(
            conn,
            sql(
                "SELECT \(Self.recordColumns) FROM @.records WHERE cn = $1 AND chain <> $2 ORDER BY (state <> 'revoked') DESC, seq DESC LIMIT 1",
                r.cn, stationID)
        ).first
        if let other = elsewhere {
            return .refused(
                "unique-cn",
                "CN '\(r.cn)' was already issued by station \(other.content.stationID) (its ledger seq \(other.seq), \(other.state.rawValue))"
            )
        }
        let own = try await records(
            conn,
            sql(
                "SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 AND cn = $2 ORDER BY seq DESC LIMIT 1",
                stationID, r.cn)
        ).first
        if let error = r.cnRefusal(latest: own) { return error }
        r.reissueOf = r.reissue ? own?.seq : nil
        let taken = try await conn.query(
            sql("SELECT 1 FROM @.records WHERE pubkey_sha256 = $1", r.publicKeySHA256), logger: logger)
        for try await _ in taken { return r.keyTakenRefusal }
        return nil
    }

    public func issue(
        _ reservation: Reservation, sign: (Reservation) throws -> RecordContent
    ) async throws -> LedgerRecord {
        try await issueBatch([reservation]) { try $0.map(sign) }[0]
    }

    public func issueBatch(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [LedgerRecord] {
        var refused: (Reservation, KeylineError)?
        do {
            return try await issueGroup(reservations, each: false, firstRefusal: &refused, signAll: signAll).map {
                try $0.get()
            }
        } catch let e as KeylineError where e.code == .policyRefusal {
            // A refusal found by the checks, or another station that took the CN, serial or key first (the unique
            // indexes): either way nothing was written, and the refusal is recorded.
            let r = refused?.0 ?? reservations[0]
            let error =
                refused?.1
                ?? .refused(
                    "unique-cn",
                    "another station issued CN '\(r.cn)' (or the same serial or key) at the same moment: \(e.reason)")
            _ = try? await appendEvent(r.refusedEvent(error, stationID: stationID))
            throw error
        }
    }

    /// Group commit: the group's reservations are checked, the accepted ones signed and committed with the refused
    /// ones' events in one transaction. If another station takes a CN, serial or key of the group between the
    /// checks and the inserts (a unique index refuses it, and nothing is written), the group is checked again, which
    /// now refuses that one; should that happen twice, or the group keep deadlocking with another station's, the
    /// reservations go one transaction each.
    public func issueEach(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [Result<LedgerRecord, KeylineError>] {
        var unused: (Reservation, KeylineError)?
        for _ in 0..<2 {
            do {
                return try await issueGroup(reservations, each: true, firstRefusal: &unused, signAll: signAll)
            } catch let error as KeylineError {
                // Another station won a race for one of the group's keys: check the group again.
                if error.rule == "ledger-constraint" { continue }
                // Stations whose groups share CNs can deadlock on each other's uncommitted keys (it took three
                // attempts and still failed in about one run in ten of four stations signing the same 24 CSRs):
                // one transaction per reservation cannot.
                if error.code == .temporaryFailure { break }
                throw error
            }
        }
        return try await issueEachSeparately(reservations, signAll: signAll)
    }

    /// Reserve → sign → commit in one transaction. Without `each`, the first refusal is put in `firstRefusal` and
    /// thrown (nothing is written); with it, refused reservations are skipped and their events committed with the
    /// accepted ones.
    private func issueGroup(
        _ reservations: [Reservation], each: Bool, firstRefusal: inout (Reservation, KeylineError)?,
        signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [Result<LedgerRecord, KeylineError>] {
        var first: (Reservation, KeylineError)?
        defer { firstRefusal = first }
        return try await write("committing to the ledger") { conn in
            first = nil
            var heads = try await lockHeads(conn)
            var batch = BatchUniqueness()
            var rs = reservations
            var refused: [Int: KeylineError] = [:]
            for i in rs.indices {
                let r = rs[i]
                let ledgerRefusal = try await refusal(conn, &rs[i])
                if let error = ledgerRefusal ?? batch.refusal(r) {
                    guard each else {
                        first = (r, error)
                        throw error
                    }
                    refused[i] = error
                }
            }
            let accepted = rs.indices.filter { refused[$0] == nil }.map { rs[$0] }
            let contents = accepted.isEmpty ? [] : try signAll(accepted)
            guard contents.count == accepted.count else {
                throw KeylineError(.internalError, "signed \(contents.count) of \(accepted.count) reservations")
            }
            var next = contents.makeIterator()
            var out: [Result<LedgerRecord, KeylineError>] = []
            for (i, r) in rs.enumerated() {
                if let error = refused[i] {
                    _ = try await insertEvent(conn, r.refusedEvent(error, stationID: stationID), heads: &heads)
                    out.append(.failure(error))
                    continue
                }
                let record = try LedgerRecord.issued(
                    next.next()!, for: r, after: (heads.recordsSeq, heads.recordsHash))
                try await insert(conn, record)
                heads.recordsSeq = record.seq
                heads.recordsHash = record.hash
                _ = try await insertEvent(conn, record.issuedEvent, heads: &heads)
                out.append(.success(record))
            }
            try await saveHeads(conn, heads)
            return out
        }
    }

    @discardableResult
    public func appendEvent(_ content: EventContent) async throws -> LedgerEvent {
        try await write("appending an event") { conn in
            var heads = try await lockHeads(conn)
            let event = try await insertEvent(conn, content, heads: &heads)
            try await saveHeads(conn, heads)
            return event
        }
    }

    @discardableResult
    public func transition(recordSeq: Int64, to state: RecordState, event: EventContent) async throws -> LedgerRecord {
        try await write("changing a record's state") { conn in
            var heads = try await lockHeads(conn)
            guard
                var current = try await records(
                    conn,
                    sql(
                        "SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 AND seq = $2", stationID,
                        recordSeq)
                ).first
            else { throw KeylineError(.dataError, "no record with seq \(recordSeq)") }
            if let error = LedgerRecord.transitionRefusal(current, to: state) { throw error }
            try await conn.exec(
                sql(
                    "UPDATE @.records SET state = $3, updated_at = $4 WHERE chain = $1 AND seq = $2", stationID,
                    recordSeq, state.rawValue, Timestamp.millis(event.at)), logger: logger)
            _ = try await insertEvent(conn, event, heads: &heads)
            try await saveHeads(conn, heads)
            current.state = state
            current.updatedAt = event.at
            return current
        }
    }

    // MARK: - Reading

    public func record(cn: String) async throws -> LedgerRecord? {
        try await read("reading the ledger") { conn in
            try await records(
                conn,
                sql(
                    "SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 AND cn = $2 ORDER BY seq DESC LIMIT 1",
                    stationID, cn)
            ).first
        }
    }

    public func history(cn: String) async throws -> [LedgerRecord] {
        try await read("reading the ledger") { conn in
            try await records(
                conn,
                sql(
                    "SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 AND cn = $2 ORDER BY seq", stationID,
                    cn))
        }
    }

    public func records(cns: [String]) async throws -> [String: LedgerRecord] {
        try await read("reading the ledger") { conn in
            var out: [String: LedgerRecord] = [:]
            let unique = Array(Set(cns))
            var start = 0
            while start < unique.count {
                let slice = Array(unique[start..<min(start + 1000, unique.count)])
                for r in try await records(
                    conn,
                    sql(
                        "SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 AND cn = ANY($2) ORDER BY seq",
                        stationID, slice))
                {
                    out[r.content.cn] = r
                }
                start += slice.count
            }
            return out
        }
    }

    public func record(seq: Int64) async throws -> LedgerRecord? {
        try await read("reading the ledger") { conn in
            try await records(
                conn, sql("SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 AND seq = $2", stationID, seq)
            ).first
        }
    }

    public func records(seqs: [Int64]) async throws -> [LedgerRecord] {
        try await read("reading the ledger") { conn in
            try await records(
                conn,
                sql(
                    "SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 AND seq = ANY($2) ORDER BY seq",
                    stationID, Array(Set(seqs))))
        }
    }

    func select(_ q: RecordQuery, columns: String) -> PostgresQuery {
        var clauses = ["chain = $1"]
        var values: [(any PostgresThrowingDynamicTypeEncodable)?] = [stationID]
        func add(_ clause: String, _ value: any PostgresThrowingDynamicTypeEncodable) {
            values.append(value)
            clauses.append(clause.replacingOccurrences(of: "?", with: "$\(values.count)"))
        }
        if let v = q.afterSeq { add("seq > ?", v) }
        if let v = q.state { add("state = ?", v.rawValue) }
        if let v = q.profile { add("profile = ?", v) }
        if let v = q.cnPrefix { add("left(cn, \(v.count)) = ?", v) }
        if let v = q.workOrder { add("work_order = ?", v) }
        if let v = q.createdSince { add("created_at >= ?", Timestamp.millis(v)) }
        if let v = q.createdBefore { add("created_at < ?", Timestamp.millis(v)) }
        if let v = q.serialHex { add("serial_hex = ?", v) }
        if let v = q.fingerprint { add("cert_sha256 = ?", v) }
        if let v = q.caName { add("ca_name = ?", v) }
        var text = "SELECT \(columns) FROM @.records WHERE " + clauses.joined(separator: " AND ") + " ORDER BY seq"
        if let limit = q.limit { text += " LIMIT \(limit)" }
        var b = PostgresBindings(capacity: values.count)
        for v in values {
            if let v { try? b.append(v) } else { b.appendNull() }
        }
        return PostgresQuery(unsafeSQL: text.replacingOccurrences(of: "@.", with: "\(schema)."), binds: b)
    }

    public func records(_ query: RecordQuery) async throws -> [LedgerRecord] {
        try await read("reading the ledger") { conn in
            try await records(conn, select(query, columns: Self.recordColumns))
        }
    }

    @discardableResult
    public func forEachRecord(
        _ query: RecordQuery, _ body: (LedgerRecord) throws -> Void
    ) async throws -> (seq: Int64, hash: String) {
        let (seq, hash) = try await read("reading the ledger", retry: false) { conn -> (Int64, String) in
            let h = try await headIn(conn)
            for try await row in try await conn.query(select(query, columns: Self.recordColumns), logger: logger) {
                try body(try Self.record(row))
            }
            return (h.seq, h.hash)
        }
        return (seq, hash)
    }

    public func forEachRecordState(_ query: RecordQuery, _ body: (Int64, RecordState) throws -> Void) async throws {
        try await read("reading the ledger", retry: false) { conn in
            let rows = try await conn.query(select(query, columns: "seq, state"), logger: logger)
            for try await (seq, state) in rows.decode((Int64, String).self) {
                try body(seq, RecordState(rawValue: state) ?? .failed)
            }
        }
    }

    func headIn(_ conn: PostgresConnection) async throws -> (seq: Int64, hash: String) {
        let rows = try await conn.query(
            sql("SELECT seq, hash FROM @.records WHERE chain = $1 ORDER BY seq DESC LIMIT 1", stationID),
            logger: logger)
        for try await (seq, hash) in rows.decode((Int64, String).self) { return (seq, hash) }
        return (0, LedgerRecord.genesisHash)
    }

    public func head() async throws -> (seq: Int64, hash: String) {
        let h = try await read("reading the ledger") { conn -> [String] in
            let h = try await headIn(conn)
            return [String(h.seq), h.hash]
        }
        return (Int64(h[0]) ?? 0, h[1])
    }

    public func heads() async throws -> LedgerHeads {
        try await read("reading the ledger") { conn in
            let records = try await headIn(conn)
            let rows = try await conn.query(
                sql("SELECT seq, hash FROM @.events WHERE chain = $1 ORDER BY seq DESC LIMIT 1", stationID),
                logger: logger)
            var events: (Int64, String) = (0, LedgerRecord.genesisHash)
            for try await (seq, hash) in rows.decode((Int64, String).self) { events = (seq, hash) }
            return LedgerHeads(
                recordsSeq: records.seq, recordsHash: records.hash, eventsSeq: events.0, eventsHash: events.1)
        }
    }

    public func counts(
        throughRecordSeq recordSeq: Int64, throughEventSeq eventSeq: Int64
    ) async throws -> (records: Int64, events: Int64) {
        let both = try await read("reading the ledger") { conn -> [Int64] in
            var out: [Int64] = []
            for (table, through) in [("records", recordSeq), ("events", eventSeq)] {
                let rows = try await conn.query(
                    sql("SELECT count(*) FROM @.\(table) WHERE chain = $1 AND seq <= $2", stationID, through),
                    logger: logger)
                for try await n in rows.decode(Int64.self) { out.append(n) }
            }
            return out
        }
        return (both[0], both[1])
    }

    public func events(recordSeq: Int64?, limit: Int?) async throws -> [LedgerEvent] {
        try await read("reading the ledger") { conn in
            var text = "SELECT \(Self.eventColumns) FROM @.events WHERE chain = $1"
            if recordSeq != nil { text += " AND record_seq = $2" }
            text += " ORDER BY seq"
            if let limit { text += " LIMIT \(limit)" }
            let q = recordSeq.map { sql(text, stationID, $0) } ?? sql(text, stationID)
            var out: [LedgerEvent] = []
            for try await row in try await conn.query(q, logger: logger) { out.append(try Self.event(row)) }
            return out
        }
    }

    public func event(seq: Int64) async throws -> LedgerEvent? {
        try await read("reading the ledger") { conn in
            for try await row in try await conn.query(
                sql("SELECT \(Self.eventColumns) FROM @.events WHERE chain = $1 AND seq = $2", stationID, seq),
                logger: logger)
            {
                return try Self.event(row)
            }
            return nil
        }
    }

    public func forEachEvent(
        kinds: Set<EventKind>?, afterSeq: Int64, _ body: (LedgerEvent) throws -> Void
    ) async throws {
        try await read("reading the ledger", retry: false) { conn in
            var text = "SELECT \(Self.eventColumns) FROM @.events WHERE chain = $1 AND seq > $2"
            if kinds != nil { text += " AND kind = ANY($3)" }
            text += " ORDER BY seq"
            let q =
                kinds.map { sql(text, stationID, afterSeq, $0.map(\.rawValue).sorted()) }
                ?? sql(text, stationID, afterSeq)
            for try await row in try await conn.query(q, logger: logger) { try body(try Self.event(row)) }
        }
    }

    public func count() async throws -> Int {
        try await read("reading the ledger") { conn in
            let rows = try await conn.query(
                sql("SELECT count(*) FROM @.records WHERE chain = $1", stationID), logger: logger)
            for try await n in rows.decode(Int64.self) { return Int(n) }
            return 0
        }
    }

    public func verify() async throws -> VerificationReport {
        try await verify(chain: stationID)
    }

    /// Every station with a chain in this database, in name order.
    public func stationIDs() async throws -> [String] {
        try await read("listing the stations") { conn in
            var out: [String] = []
            let rows = try await conn.query(
                sql("SELECT station_id FROM @.stations ORDER BY station_id"), logger: logger)
            for try await id in rows.decode(String.self) { out.append(id) }
            return out
        }
    }

    /// Walks one station's chains (any station's: QA verifies them all with `ledger verify --all-stations`).
    public func verify(chain stationID: String) async throws -> VerificationReport {
        try await read("verifying the ledger") { conn in try await verifyIn(conn, chain: stationID) }
    }

    /// Walks a chain on `conn` (inside the caller's transaction: `ledger copy` checks its rows before COMMIT). Also
    /// compares the heads kept in `stations` with the last rows, which catches a chain whose newest rows were cut
    /// off (the rows alone would still chain).
    func verifyIn(_ conn: PostgresConnection, chain stationID: String) async throws -> VerificationReport {
        var verifier = ChainVerifier()
        var stateEvents: [Int64: [EventKind]] = [:]
        let kinds = try await conn.query(
            sql(
                """
                SELECT record_seq, kind FROM @.events WHERE chain = $1 AND record_seq IS NOT NULL
                  AND kind IN ('issued', 'delivered', 'failed', 'revoked') ORDER BY record_seq, seq
                """, stationID), logger: logger)
        for try await (seq, kind) in kinds.decode((Int64, String).self) {
            stateEvents[seq, default: []].append(EventKind(rawValue: kind) ?? .issued)
        }
        var lastRecord: (Int64, String) = (0, LedgerRecord.genesisHash)
        for try await row in try await conn.query(
            sql("SELECT \(Self.recordColumns) FROM @.records WHERE chain = $1 ORDER BY seq", stationID),
            logger: logger)
        {
            let record = try Self.record(row)
            verifier.add(record: record, stateEvents: stateEvents[record.seq] ?? [])
            lastRecord = (record.seq, record.hash)
        }
        var lastEvent: (Int64, String) = (0, LedgerRecord.genesisHash)
        for try await row in try await conn.query(
            sql("SELECT \(Self.eventColumns) FROM @.events WHERE chain = $1 ORDER BY seq", stationID),
            logger: logger)
        {
            let event = try Self.event(row)
            verifier.add(event: event)
            lastEvent = (event.seq, event.hash)
        }
        let heads = try await conn.query(
            sql(
                "SELECT record_seq, record_hash, event_seq, event_hash FROM @.stations WHERE station_id = $1",
                stationID), logger: logger)
        var found = false
        for try await (rs, rh, es, eh) in heads.decode((Int64, String, Int64, String).self) {
            found = true
            if rs != lastRecord.0 || rh != lastRecord.1 {
                verifier.note(
                    "records: the station's head says seq \(rs) (\(rh.prefix(16))…) but the chain ends at seq \(lastRecord.0) (\(lastRecord.1.prefix(16))…): rows were cut off or added behind the ledger's back"
                )
            }
            if es != lastEvent.0 || eh != lastEvent.1 {
                verifier.note(
                    "events: the station's head says seq \(es) (\(eh.prefix(16))…) but the chain ends at seq \(lastEvent.0) (\(lastEvent.1.prefix(16))…): rows were cut off or added behind the ledger's back"
                )
            }
        }
        if !found && (lastRecord.0 > 0 || lastEvent.0 > 0) {
            verifier.note("station \(stationID) has rows but no head in the stations table")
        }
        return verifier.report
    }
}

/// TLS to the ledger database, from `ledger_sslmode` and `ledger_ca_file`.
public enum PostgresTLS {
    public enum Mode: String, Sendable {
        case disable
        case require
        case verifyFull = "verify-full"
    }

    /// `disable`: plain TCP (loopback or a trusted network only). `require`: encrypted, the server certificate not
    /// checked. `verify-full` (the default): encrypted, the server's certificate checked against `caFile` (or the
    /// system's roots) and its name against the host.
    /// The same settings for one unpooled connection.
    public static func makeConnection(mode: Mode, caFile: String?) throws -> PostgresConnection.Configuration.TLS {
        switch mode {
        case .disable: return .disable
        case .require, .verifyFull:
            return .require(try NIOSSLContext(configuration: configuration(mode: mode, caFile: caFile)))
        }
    }

    static func configuration(mode: Mode, caFile: String?) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if mode == .require {
            tls.certificateVerification = .none
        } else {
            tls.certificateVerification = .fullVerification
            if let caFile {
                guard FileManager.default.isReadableFile(atPath: caFile) else {
                    throw KeylineError(.configuration, "ledger_ca_file \(caFile) cannot be read")
                }
                tls.trustRoots = .file(caFile)
            }
        }
        return tls
    }

    public static func make(mode: Mode, caFile: String?) throws -> PostgresClient.Configuration.TLS {
        switch mode {
        case .disable: return .disable
        case .require, .verifyFull: return .require(try configuration(mode: mode, caFile: caFile))
        }
    }
}

/// The shared state of ``PostgresLedger/withDeadline(_:_:)``: who finished first, and the two tasks to cancel.
final class DeadlineRace: @unchecked Sendable {
    let lock = NSLock()
    var finished = false
    var work: Task<Void, Never>?
    var timer: Task<Void, Never>?
}

extension PostgresConnection {
    /// Runs a statement and reads its result to the end, so an error the server reports for it is thrown here
    /// and not left in a discarded row stream (where the transaction would go on aborted, unnoticed).
    func exec(_ query: PostgresQuery, logger: Logger) async throws {
        for try await _ in try await self.query(query, logger: logger) {}
    }

    /// Commits, and makes sure the server did: a COMMIT of a transaction the server had already aborted answers
    /// "ROLLBACK", not an error, and a certificate must never leave on a rolled-back record.
    func commit(logger: Logger) async throws {
        let answer = try await (self as any PostgresDatabase).query("COMMIT", []).get().metadata.command
        guard answer == "COMMIT" else { throw PostgresLedger.RolledBack(answer: answer) }
    }
}
