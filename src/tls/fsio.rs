//! Files: atomic replacement (temp file, fsync, rename, fsync of the directory), exact modes
//! and owners, and setting aside files that turned out corrupt.
//!
//! A power cut at any point leaves either the old file or the new one, never a truncated key
//! or certificate: the data is on disk before the rename makes it visible, and the rename is
//! on disk before we go on. Temp files are named `.NAME.tmp` in the same directory (rename is
//! atomic only within a filesystem); a stale one from a crash is simply replaced.

use super::TlsError;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of private keys on the state disk (root only).
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificates (public).
pub const CERT_MODE: u32 = 0o644;
/// Mode of the server key given to the container: read-only for its owner, uid 49999.
pub const CONTAINER_KEY_MODE: u32 = 0o400;

/// The temp file `write_atomic` uses for `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replace `path` with `data`, atomically and durably, with exactly `mode` (whatever the
/// umask) and, if given, owner `(uid, gid)`. On failure `path` is untouched and the temp file
/// is gone.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<(), TlsError> {
    let tmp = temp_path(path);
    let werr = |source| TlsError::WriteFile { path: path.to_path_buf(), source };
    let _ = fs::remove_file(&tmp); // a stale temp file from a crash
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(werr)?;
        f.set_permissions(Permissions::from_mode(mode)).map_err(werr)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .map_err(|source| TlsError::SetOwner { path: path.to_path_buf(), uid, gid, source })?;
        }
        f.write_all(data).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        fs::rename(&tmp, path).map_err(werr)?;
        sync_dir(path).map_err(werr)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync the directory holding `path`, so a rename in it survives a power cut.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

/// The contents of `path`, or `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    match fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::ReadFile { path: path.to_path_buf(), source }),
    }
}

/// Create `dir` (and parents) if needed and set its mode.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::CreateDir { path: dir.to_path_buf(), source };
    fs::create_dir_all(dir).map_err(err)?;
    fs::set_permissions(dir, Permissions::from_mode(mode)).map_err(err)
}

/// Move a corrupt file out of the way as `NAME.corrupt` (replacing an older one) so the
/// operator can inspect it, rather than deleting what might be the only copy of a CA key.
pub fn set_aside(path: &Path) -> Result<(), TlsError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let target = path.with_file_name(format!("{name}.corrupt"));
    match fs::rename(path, &target) {
        Ok(()) => sync_dir(path).map_err(|source| TlsError::WriteFile { path: target, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TlsError::WriteFile { path: target, source }),
    }
}

/// Bring `path` back to `mode` if something widened it (a key readable by others is logged:
/// it may have been copied).
pub fn enforce_mode(path: &Path, mode: u32) -> Result<(), TlsError> {
    let meta = fs::metadata(path).map_err(|source| TlsError::ReadFile { path: path.to_path_buf(), source })?;
    let have = meta.permissions().mode() & 0o7777;
    if have != mode {
        log::warn!("tls: {} had mode {have:04o}, setting {mode:04o}", path.display());
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(|source| TlsError::WriteFile { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn writes_exact_mode_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ca.crt");
        // 0666 is what the usual umask (022) would cut down to 0644 at open(2); changing the
        // process umask here would race with other tests creating files.
        write_atomic(&p, b"cert", 0o666, None).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o666);
        write_atomic(&p, b"new", KEY_MODE, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(names(d.path()), vec!["ca.crt"]);
    }

    #[test]
    fn failed_write_leaves_old_file_and_no_temp() {
        let d = tempfile::tempdir().unwrap();
        // The rename fails: the target is a non-empty directory.
        let target = d.path().join("server.key");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        let e = write_atomic(&target, b"secret", KEY_MODE, None).unwrap_err();
        assert!(e.to_string().starts_with(&format!("write {}", target.display())), "{e}");
        assert_eq!(names(d.path()), vec!["server.key"]);
        assert_eq!(names(&target), vec!["keep"]);
    }

    #[test]
    fn stale_temp_from_a_crash_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("server.pem");
        fs::write(&p, b"old complete").unwrap();
        fs::write(d.path().join(".server.pem.tmp"), b"half wri").unwrap();
        write_atomic(&p, b"new complete", CERT_MODE, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new complete");
        assert_eq!(names(d.path()), vec!["server.pem"]);
    }

    #[test]
    fn set_aside_and_enforce_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ca.key");
        fs::write(&p, b"junk").unwrap();
        fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        enforce_mode(&p, KEY_MODE).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        set_aside(&p).unwrap();
        set_aside(&p).unwrap(); // already gone: fine
        assert_eq!(names(d.path()), vec!["ca.key.corrupt"]);
        assert_eq!(read_optional(&p).unwrap(), None);
    }
}
