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
