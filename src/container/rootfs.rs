//! The container's root: in a VM the appliance image is `/` after the root switch, and runc
//! needs it at another path (it pivots into the bundle root), so flower-init binds `/` there
//! read-only. On the host (tests) the unpacked `build/image/<framework>/rootfs` is bound the
//! same way, so the container sees exactly what a VM would: a read-only tree whose every
//! mountpoint already exists.

use crate::error::{Ctx, Result};
use nix::mount::{MsFlags, mount};
use std::path::Path;

/// Where flower-init binds the image for runc in a VM (on the `/run` tmpfs).
pub const ROOTFS_DIR: &str = "/run/flower-init/rootfs";

/// Bind `image_root` (not recursively: only the image, none of the filesystems mounted on it
/// such as `/run` or the state disk) onto `target`, then make that bind read-only, nosuid,
/// nodev. Creates `target`. Needs CAP_SYS_ADMIN in the current mount namespace.
pub fn bind_rootfs(image_root: &Path, target: &Path) -> Result<()> {
    let what = || format!("bind {} read-only on {}", image_root.display(), target.display());
    std::fs::create_dir_all(target).with_ctx(what)?;
    mount(Some(image_root), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).with_ctx(what)?;
    // A bind takes the source's flags; read-only needs a second, remounting call.
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, target, None::<&str>, ro, None::<&str>).with_ctx(what)
}

/// Make `dir` (the host side of the container's `/state`, on the state disk) exist, owned by
/// the container user and private (0700), so Flower can write its database there and nothing
/// else in the VM reads it. Existing contents keep their owners (a restart reuses them).
pub fn prepare_state_dir(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let what = || format!("prepare state directory {}", dir.display());
    std::fs::create_dir_all(dir).with_ctx(what)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).with_ctx(what)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_ctx(what)
}

/// Where the image keeps the SuperLink's state database, created and migrated by the image's
/// own Flower at build time (image/in-rootfs.sh): empty tables at Flower's latest schema.
pub const STATE_DB_TEMPLATE: &str = "opt/flower/superlink-state.db";

/// Put the image's migrated, empty state database (`template`) at `db` (the host side of
/// FL_DATABASE) when there is nothing there yet, owned by the container user, mode 0600.
/// Flower then finds its schema current and skips creating ~30 tables through its migrations at
/// the first boot (seconds of Python under emulation; BENCHMARKS.md). Does nothing, returning
/// `false`, when `db` or a journal of it exists (Flower's own data, or a crash's leftovers:
/// Flower recovers those itself), when its directory does not exist (Flower reports that), or
/// when the image has no template (an older or custom image).
pub fn seed_state_db(template: &Path, db: &Path, uid: u32, gid: u32) -> Result<bool> {
    let journals = ["-wal", "-journal", "-shm"].map(|sfx| {
        let mut name = db.as_os_str().to_os_string();
        name.push(sfx);
        std::path::PathBuf::from(name)
    });
    let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    if present(db) || journals.iter().any(|j| present(j)) || !template.is_file() || !db.parent().is_some_and(Path::is_dir) {
        return Ok(false);
    }
    let what = || format!("seed {} from {}", db.display(), template.display());
    let bytes = std::fs::read(template).with_ctx(what)?;
    crate::fsutil::write_atomic(db, &bytes, 0o600, Some((uid, gid))).with_ctx(what)?;
    Ok(true)
}

/// What the container user cannot read on the data disk (its host side `dir`, bound read-only
/// at `/app/data`): files without a read bit for `uid`/`gid` (owner, group or others), and
/// directories without read + search. A data disk prepared as root often has such files
/// (Hugging Face's `save_pretrained` writes weights 0600), and the app then fails far from the
/// cause (`FileNotFoundError` in transformers). At most `limit` entries are looked at.
#[derive(Debug, Default, PartialEq)]
pub struct DataAccess {
    /// `(path relative to dir, mode, owner uid)` of each unreadable entry, in walk order.
    pub unreadable: Vec<(String, u32, u32)>,
    /// Entries looked at.
    pub scanned: usize,
    /// The walk stopped at `limit`.
    pub truncated: bool,
}

impl DataAccess {
    /// One line for the boot step's note, or `None` when everything looked at is readable.
    pub fn problem(&self, uid: u32) -> Option<String> {
        let n = self.unreadable.len();
        if n == 0 {
            return None;
        }
        let first: Vec<String> = self
            .unreadable
            .iter()
            .take(3)
            .map(|(p, mode, owner)| format!("{p} (mode {:04o}, owner uid {owner})", mode & 0o7777))
            .collect();
        let more = if n > 3 { format!(" and {} more", n - 3) } else { String::new() };
        let of = if self.truncated { format!(" (of the first {} entries)", self.scanned) } else { String::new() };
        Some(format!(
            "the app (uid {uid}) cannot read {n} of the data disk's entries{of}: {}{more}; make them readable \
             (chmod -R a+rX, or owner {uid}) when preparing the disk",
            first.join(", ")
        ))
    }
}

/// Walk `dir` (not following symbolic links, at most `limit` entries) for what `uid`/`gid`
/// cannot read. An entry that cannot be examined counts as unreadable.
pub fn data_access(dir: &Path, uid: u32, gid: u32, limit: usize) -> DataAccess {
    use std::os::unix::fs::MetadataExt;
    let can = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.mode();
        let class = if m.uid() == uid {
            mode >> 6
        } else if m.gid() == gid {
            mode >> 3
        } else {
            mode
        };
        class & bits == bits
    };
    let mut out = DataAccess::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if out.scanned >= limit {
            out.truncated = true;
            break;
        }
        out.scanned += 1;
        let rel = p.strip_prefix(dir).ok().map(|r| r.display().to_string()).filter(|r| !r.is_empty()).unwrap_or_else(|| ".".into());
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            out.unreadable.push((rel, 0, 0));
            continue;
        };
        if m.file_type().is_symlink() {
            continue; // its target is checked where it lives, if on the disk
        }
        let ok = if m.is_dir() { can(&m, 0o5) } else { can(&m, 0o4) };
        if !ok {
            out.unreadable.push((rel, m.mode(), m.uid()));
            continue; // what is under an unreadable directory is unreachable anyway
        }
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                names.sort();
                stack.extend(names.into_iter().rev());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn seed_state_db_copies_the_template_only_where_flower_has_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let tpl = d.path().join("template.db");
        std::fs::write(&tpl, b"SQLite format 3\0 migrated").unwrap();
        let state = d.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());

        // First boot: copied, private, and no temp file left.
        let db = state.join("state.db");
        assert!(seed_state_db(&tpl, &db, uid, gid).unwrap());
        assert_eq!(std::fs::read(&db).unwrap(), b"SQLite format 3\0 migrated");
        let m = std::fs::metadata(&db).unwrap();
        assert_eq!((m.permissions().mode() & 0o777, m.uid(), m.gid()), (0o600, uid, gid));
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);

        // Later boots: Flower's own database is never touched.
        std::fs::write(&db, b"flower's data").unwrap();
        assert!(!seed_state_db(&tpl, &db, uid, gid).unwrap());
        assert_eq!(std::fs::read(&db).unwrap(), b"flower's data");

        // A journal without its database (a crash), no directory, no template: left to Flower.
        let db2 = state.join("other.db");
        std::fs::write(state.join("other.db-wal"), b"wal").unwrap();
        assert!(!seed_state_db(&tpl, &db2, uid, gid).unwrap());
        assert!(!db2.exists());
        assert!(!seed_state_db(&tpl, &state.join("missing/x.db"), uid, gid).unwrap());
        assert!(!seed_state_db(&d.path().join("none.db"), &state.join("y.db"), uid, gid).unwrap());
        assert!(!state.join("y.db").exists());
    }

    #[test]
    fn data_access_names_what_the_container_user_cannot_read() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::create_dir_all(d.path().join("model")).unwrap();
        std::fs::write(d.path().join("model/config.json"), "{}").unwrap();
        std::fs::write(d.path().join("model/model.safetensors"), "w").unwrap();
        std::fs::write(d.path().join("train.jsonl"), "{}").unwrap();
        std::fs::create_dir(d.path().join("private")).unwrap();
        std::fs::write(d.path().join("private/x"), "x").unwrap();
        set(&d.path().join("model/model.safetensors"), 0o600);
        set(&d.path().join("private"), 0o700);
        set(d.path(), 0o755);
        std::os::unix::fs::symlink("/etc/shadow", d.path().join("link")).unwrap();
        // Another uid than the files' owner (whoever runs the test), in no group of theirs.
        let owner = std::fs::metadata(d.path()).unwrap().uid();
        let (uid, gid) = (owner.wrapping_add(4242), 4242);
        let a = data_access(d.path(), uid, gid, 100);
        let names: Vec<&str> = a.unreadable.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(names, ["model/model.safetensors", "private"], "{a:?}");
        assert_eq!(a.unreadable[0].1 & 0o7777, 0o600);
        assert!(!a.truncated);
        let msg = a.problem(uid).unwrap();
        assert!(msg.contains("cannot read 2 of the data disk's entries: model/model.safetensors (mode 0600, owner uid"), "{msg}");
        assert!(msg.contains("chmod -R a+rX"), "{msg}");
        // The owner reads everything; a bounded walk says it stopped.
        assert_eq!(data_access(d.path(), owner, gid, 100).problem(owner), None);
        let b = data_access(d.path(), uid, gid, 2);
        assert!(b.truncated && b.scanned == 2, "{b:?}");
        // A missing directory is one unreadable entry.
        assert_eq!(data_access(&d.path().join("gone"), uid, gid, 10).unreadable.len(), 1);
    }

    #[test]
    fn state_dir_belongs_to_the_container_user() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("flower/superlink");
        // chown to another uid needs root (CI runs as root); as a user, chown to ourselves.
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (want_uid, want_gid) = if uid == 0 { (49999, 49999) } else { (uid, gid) };
        prepare_state_dir(&s, want_uid, want_gid).unwrap();
        prepare_state_dir(&s, want_uid, want_gid).unwrap();
        let m = std::fs::metadata(&s).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (want_uid, want_gid, 0o700));
        let e = prepare_state_dir(Path::new("/proc/nope/x"), uid, gid).unwrap_err().to_string();
        assert!(e.starts_with("prepare state directory /proc/nope/x: "), "{e}");
    }
}
