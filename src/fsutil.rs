//! Files that must never be seen half-written: certificates and keys, the OCI bundle,
//! resolv.conf and hosts, status files.
//!
//! [`write_atomic`] writes a temp file in the same directory (`.NAME.tmp`; rename is atomic only
//! within a filesystem), sets the exact mode (whatever the umask) and owner, fsyncs it, renames
//! it over the target and fsyncs the directory: a power cut leaves the old file or the new one.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The temp file `write_atomic` uses for `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replace `path` with `data`, atomically and durably, with exactly `mode` and, if given, owner
/// `(uid, gid)`. On failure `path` is untouched and the temp file is gone.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp); // a stale temp file from a crash
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.set_permissions(Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .map_err(|e| io::Error::new(e.kind(), format!("set owner {uid}:{gid}: {e}")))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync the directory holding `path`, so a rename in it survives a power cut.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_with_exact_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"old").unwrap();
        fs::write(d.path().join(".f.tmp"), b"stale").unwrap();
        write_atomic(&p, b"new", 0o640, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!d.path().join(".f.tmp").exists());
        assert!(write_atomic(&d.path().join("no/such/dir/f"), b"x", 0o644, None).is_err());
    }
}
