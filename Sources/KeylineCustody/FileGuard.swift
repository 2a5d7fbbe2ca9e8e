import Foundation
import KeylineCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Refuses secret files (CA keys, passphrase files) that others could read or swap.
///
/// A secret file must be a regular file (not a symlink), readable by its owner only, owned by the current user or
/// root, and sit in a directory that neither group nor others can write. Each refusal is one line naming the path
/// and the fix, with ``KeylineError/Code/keyGuard`` (exit 77).
public enum FileGuard {
    /// Checks `path` as a secret file; `what` names it in the message ("CA key", "passphrase file").
    ///
    /// `allowGroupRead` is for systemd credentials only: systemd grants the service user read access to
    /// `$CREDENTIALS_DIRECTORY/NAME` with a POSIX ACL, whose mask shows as the group read bit (mode 0440), inside a
    /// directory only the service can enter.
    public static func checkSecretFile(_ path: String, what: String, allowGroupRead: Bool = false) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            let err = errno
            if err == ENOENT { throw KeylineError(.keyGuard, "\(what) \(path) does not exist") }
            throw KeylineError(.keyGuard, "\(what) \(path) cannot be examined: \(String(cString: strerror(err)))")
        }
        let type = st.st_mode & S_IFMT
        if type == S_IFLNK {
            throw KeylineError(
                .keyGuard, "\(what) \(path) is a symlink; refusing it (replace the link with the file itself)")
        }
        guard type == S_IFREG else {
            throw KeylineError(.keyGuard, "\(what) \(path) is not a regular file")
        }
        let perms = st.st_mode & 0o777
        if perms & (allowGroupRead ? 0o037 : 0o077) != 0 {
            throw KeylineError(
                .keyGuard,
                "\(what) \(path) is readable or writable by group or others (mode 0\(String(perms, radix: 8))); fix: chmod 600 \(path)"
            )
        }
        let me = geteuid()
        if st.st_uid != me && st.st_uid != 0 {
            throw KeylineError(
                .keyGuard,
                "\(what) \(path) is owned by uid \(st.st_uid), not by this user (uid \(me)) or root; fix: chown it to the station's user"
            )
        }
        let dir = (path as NSString).deletingLastPathComponent
        let dirPath = dir.isEmpty ? "." : dir
        var dst = stat()
        guard stat(dirPath, &dst) == 0 else {
            throw KeylineError(.keyGuard, "directory \(dirPath) of \(what) \(path) cannot be examined")
        }
        if dst.st_mode & 0o022 != 0 {
            let mode = "0" + String(dst.st_mode & 0o7777, radix: 8)
            throw KeylineError(
                .keyGuard,
                "\(what) \(path) lies in directory \(dirPath) that group or others can write (mode \(mode)); fix: move it into a private directory (mode 0700) owned by the station's user"
            )
        }
    }

    /// Reads a secret file after ``checkSecretFile(_:what:)`` accepted it.
    public static func readSecretFile(_ path: String, what: String, allowGroupRead: Bool = false) throws -> [UInt8] {
        try checkSecretFile(path, what: what, allowGroupRead: allowGroupRead)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeylineError(.ioError, "\(what) \(path) cannot be read")
        }
        return Array(data)
    }
}

/// Writes files so that a crash never leaves half a file under the final name, and secrets are never created
/// readable by others, not even for an instant.
public enum SafeFile {
    /// Writes `bytes` to `path` via a temporary file in the same directory, fsync'd, then renamed into place.
    ///
    /// `mode` applies from creation (0600 for keys). `exclusive` refuses to replace an existing file.
    /// With `durable: false` the fsync is left to a later ``syncFileSystem(of:)`` covering many files at once.
    public static func write(
        _ bytes: [UInt8], to path: String, mode: mode_t = 0o644, exclusive: Bool = false, durable: Bool = true
    ) throws {
        if exclusive && FileManager.default.fileExists(atPath: path) {
            throw KeylineError(.ioError, "\(path) already exists; refusing to overwrite it")
        }
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw ioError("cannot create \(tmp)") }
        var ok = false
        defer {
            if !ok { unlink(tmp) }
        }
        do {
            defer { close(fd) }
            try writeAll(fd, bytes, mode: mode, path: path)
            if durable && fsync(fd) != 0 { throw ioError("cannot flush \(path) to disk") }
        }
        guard rename(tmp, path) == 0 else { throw ioError("cannot move \(tmp) to \(path)") }
        ok = true
        if durable { syncDirectory(of: path) }
    }

    /// Writes `bytes` to `path` in place (created or truncated, `mode` from creation), without a temporary file or
    /// fsync: for bulk output whose completeness another step vouches for (a batch's key rename, a later
    /// ``syncFileSystem(of:)``).
    ///
    /// A new file gets `mode` from open(2) when the umask takes no bit of it (a default ACL on the directory may
    /// still narrow it, never widen it), else from fchmod. A file already there (a resumed batch rewrites its own)
    /// must be a regular file, not a symbolic link, which could send a key elsewhere; it is truncated and given
    /// `mode`, and a mode that cannot be set (a file of another user) is an error.
    public static func writeInPlace(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        var fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        let created = fd >= 0
        if !created {
            guard errno == EEXIST else { throw ioError("cannot create \(path)") }
            // O_NONBLOCK: opening a FIFO put there must not hang (without a reader it fails with ENXIO).
            fd = open(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else {
                if errno == ELOOP {
                    throw KeylineError(.ioError, "\(path) is a symbolic link; refusing to write through it")
                }
                if errno == ENXIO {
                    throw KeylineError(.ioError, "\(path) is not a regular file; refusing to write it")
                }
                throw ioError("cannot open \(path)")
            }
        }
        defer { close(fd) }
        if !created {
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
                throw KeylineError(.ioError, "\(path) is not a regular file; refusing to write it")
            }
            guard ftruncate(fd, 0) == 0 else { throw ioError("cannot truncate \(path)") }
        }
        try writeAll(fd, bytes, mode: created && umaskKeeps(mode) ? nil : mode, path: path)
    }

    /// The process's umask, read once from /proc/self/status (Linux 4.7 and later; nil elsewhere). Keyline never
    /// changes its umask.
    static let processUmask: mode_t? = {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Umask:") }),
            let value = mode_t(line.dropFirst("Umask:".count).trimmingCharacters(in: .whitespaces), radix: 8)
        else { return nil }
        return value
    }()

    /// True when a file created with `mode` gets all of `mode` under the process's umask.
    static func umaskKeeps(_ mode: mode_t) -> Bool {
        guard let mask = processUmask else { return false }
        return mode & mask == 0
    }

    /// Sets `mode` (when given) on an open file and writes all of `bytes`, retrying short writes and EINTR.
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], mode: mode_t?, path: String) throws {
        if let mode, fchmod(fd, mode) != 0 { throw ioError("cannot set the mode of \(path)") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ioError("cannot write \(path)")
            }
            offset += n
        }
    }

    /// Flushes every file of the file system holding `directory` (one call for a whole chunk of files).
    public static func syncFileSystem(of directory: String) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("cannot open \(directory)") }
        defer { close(fd) }
        guard keyline_syncfs(fd) == 0 else { throw ioError("cannot flush \(directory) to disk") }
    }

    /// Writes text; see ``write(_:to:mode:exclusive:)``.
    public static func write(
        _ text: String, to path: String, mode: mode_t = 0o644, exclusive: Bool = false, durable: Bool = true
    ) throws {
        try write(Array(text.utf8), to: path, mode: mode, exclusive: exclusive, durable: durable)
    }

    /// fsyncs the directory holding `path`, so a rename survives power loss.
    public static func syncDirectory(of path: String) {
        let dir = (path as NSString).deletingLastPathComponent
        let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    static func ioError(_ what: String) -> KeylineError {
        let err = errno
        if err == ENOSPC { return KeylineError(.ioError, "\(what): disk full") }
        if err == EACCES || err == EPERM { return KeylineError(.ioError, "\(what): permission denied") }
        return KeylineError(.ioError, "\(what): \(String(cString: strerror(err)))")
    }
}

/// glibc's syncfs(2), declared here because Glibc exports it only under _GNU_SOURCE.
@_silgen_name("syncfs")
private func keyline_syncfs(_ fd: Int32) -> Int32
