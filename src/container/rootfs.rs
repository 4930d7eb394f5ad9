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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
