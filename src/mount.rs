//! Early mounts, the root switch out of the initramfs, and the state and data disks. Issue #3.
//!
//! PID 1 starts on the initramfs (`rootfs`), which runc cannot `pivot_root` out of
//! (research/init.md §1.3: "pivot_root .: invalid argument"). So flower-init mounts the
//! appliance image (a read-only squashfs/erofs disk) and makes it `/` the way switch_root does:
//! move /dev, /proc, /sys and /run under it, `mount(".", "/", MS_MOVE)`, `chroot(".")`. Without an
//! image disk the initramfs is copied to a tmpfs and that becomes `/`.
//!
//! Disks are recognised by content, not by device name: the image by its superblock magic
//! (squashfs `hsqs` at byte 0, erofs `0xE0F5E1E2` at byte 1024), the state and data disks by
//! their ext4 label (`FL_STATE`, `FL_DATA`).

use crate::error::{Ctx, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of the early mount table.
pub struct Early {
    pub fstype: &'static str,
    pub target: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);

/// What PID 1 mounts first (research/init.md §3.1, "minimal correct approach"). devtmpfs is not
/// mounted by the kernel for an initramfs (DEVTMPFS_MOUNT is unset on Debian kernels).
pub const EARLY: &[Early] = &[
    Early { fstype: "proc", target: "/proc", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Early { fstype: "sysfs", target: "/sys", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Early { fstype: "devtmpfs", target: "/dev", flags: MsFlags::MS_NOSUID, data: "mode=0755" },
    Early { fstype: "devpts", target: "/dev/pts", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC), data: "gid=5,mode=0620,ptmxmode=0666" },
    Early { fstype: "tmpfs", target: "/dev/shm", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), data: "mode=1777" },
    Early { fstype: "tmpfs", target: "/run", flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), data: "mode=0755" },
    Early { fstype: "cgroup2", target: "/sys/fs/cgroup", flags: NOSUID_NODEV_NOEXEC, data: "nsdelegate" },
];

/// `mount(2)` that creates the target and treats EBUSY (already mounted) as success, like
/// libkrun's `mount_or_busy`.
pub fn mount_or_busy(source: &str, target: &Path, fstype: &str, flags: MsFlags, data: &str) -> Result<()> {
    let _ = std::fs::create_dir_all(target);
    let data = (!data.is_empty()).then_some(data);
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e).with_ctx(|| format!("mount {fstype} on {}", target.display())),
    }
}

/// Mount [`EARLY`] under `root` (`/` in PID 1). Returns the first error after trying them all.
pub fn early_at(root: &Path) -> Result<()> {
    let mut first = None;
    for m in EARLY {
        let target = root.join(m.target.trim_start_matches('/'));
        if let Err(e) = mount_or_busy(m.fstype, &target, m.fstype, m.flags, m.data) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Make fds 0-2 point to /dev/console when the kernel could not open it for us (an initramfs
/// without /dev/console): a PID 1 whose stderr is closed logs nothing.
pub fn console_fds() {
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor number; an invalid one returns EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/console") {
                // SAFETY: dup2 onto a closed descriptor number; `f` stays valid for the call
                // and is closed afterwards, leaving `fd` as the only reference.
                unsafe { libc::dup2(f.as_raw_fd(), fd) };
            }
        }
    }
}

/// Filesystem of a read-only appliance image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFs {
    Squashfs,
    Erofs,
}

impl ImageFs {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFs::Squashfs => "squashfs",
            ImageFs::Erofs => "erofs",
        }
    }
}

/// What the first 2 KiB of a block device say about it (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Superblock {
    Image(ImageFs),
    /// ext2/3/4 with its volume label.
    Ext4(String),
    Other,
}

/// squashfs: `hsqs` at 0 (fs/squashfs/squashfs_fs.h SQUASHFS_MAGIC 0x73717368, little endian);
/// erofs: 0xE0F5E1E2 at 1024 (fs/erofs/erofs_fs.h EROFS_SUPER_OFFSET, EROFS_SUPER_MAGIC_V1);
/// ext4: 0xEF53 at 1024+0x38, volume name at 1024+0x78, 16 bytes (fs/ext4/ext4.h).
pub fn superblock(head: &[u8]) -> Superblock {
    if head.len() >= 4 && &head[..4] == b"hsqs" {
        return Superblock::Image(ImageFs::Squashfs);
    }
    if head.len() >= 1028 && head[1024..1028] == 0xE0F5E1E2u32.to_le_bytes() {
        return Superblock::Image(ImageFs::Erofs);
    }
    if head.len() >= 1024 + 0x88 && head[1024 + 0x38..1024 + 0x3a] == 0xEF53u16.to_le_bytes() {
        let raw = &head[1024 + 0x78..1024 + 0x88];
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        return Superblock::Ext4(String::from_utf8_lossy(&raw[..end]).into_owned());
    }
    Superblock::Other
}

/// Block devices worth probing, from `<sys>/class/block`: whole disks and partitions, not
/// loop/ram/zram devices nor CD drives (the context CD is found by `cdrom`).
pub fn block_devices_at(sys: &Path, dev: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(sys.join("class/block"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !["loop", "ram", "zram", "sr", "fd"].iter().any(|p| n.starts_with(p)))
        .map(|n| dev.join(n))
        .collect();
    out.sort();
    out
}

/// Read a device's first 2 KiB and classify it.
pub fn probe(dev: &Path) -> Superblock {
    let mut head = vec![0u8; 2048];
    let n = std::fs::File::open(dev).and_then(|mut f| {
        let mut got = 0;
        while got < head.len() {
            match f.read(&mut head[got..])? {
                0 => break,
                k => got += k,
            }
        }
        Ok(got)
    });
    match n {
        Ok(n) => superblock(&head[..n]),
        Err(_) => Superblock::Other,
    }
}

/// The disks flower-init cares about, found by content.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Disks {
    pub image: Option<(PathBuf, ImageFs)>,
    pub state: Option<PathBuf>,
    pub data: Option<PathBuf>,
}

/// Ext4 label of the persistent state disk (mounted read-write at `/var/lib/flower`).
pub const STATE_LABEL: &str = "FL_STATE";
/// Ext4 label of the data disk (mounted read-only at `/var/lib/flower-data`, `/app/data` in
/// the container).
pub const DATA_LABEL: &str = "FL_DATA";

/// Probe every block device once. The first image wins (several images are a mistake the boot
/// log reports through `others`).
pub fn find_disks_at(sys: &Path, dev: &Path) -> (Disks, Vec<String>) {
    let mut d = Disks::default();
    let mut notes = Vec::new();
    for path in block_devices_at(sys, dev) {
        match probe(&path) {
            Superblock::Image(fs) if d.image.is_none() => d.image = Some((path, fs)),
            Superblock::Image(fs) => notes.push(format!("{} is another {} image: ignored", path.display(), fs.as_str())),
            Superblock::Ext4(l) if l == STATE_LABEL && d.state.is_none() => d.state = Some(path),
            Superblock::Ext4(l) if l == DATA_LABEL && d.data.is_none() => d.data = Some(path),
            _ => {}
        }
    }
    (d, notes)
}

/// Mount the image read-only at `target`.
pub fn mount_image(dev: &Path, fs: ImageFs, target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).with_ctx(|| format!("create {}", target.display()))?;
    mount(Some(dev), target, Some(fs.as_str()), MsFlags::MS_RDONLY | MsFlags::MS_NODEV, None::<&str>)
        .with_ctx(|| format!("mount {} ({}) on {}", dev.display(), fs.as_str(), target.display()))
}

/// Mount an ext4 disk (state read-write, data read-only). There is no fsck in the appliance:
/// ext4's journal replays on mount, and a damaged filesystem fails here with the kernel's error.
pub fn mount_ext4(dev: &Path, target: &Path, read_only: bool) -> Result<()> {
    std::fs::create_dir_all(target).with_ctx(|| format!("create {}", target.display()))?;
    let mut flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(Some(dev), target, Some("ext4"), flags, None::<&str>)
        .with_ctx(|| format!("mount {} (ext4) on {}", dev.display(), target.display()))
}

/// A tmpfs (for writable paths on a read-only root).
pub fn mount_tmpfs(target: &Path, data: &str) -> Result<()> {
    mount_or_busy("tmpfs", target, "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, data)
}

/// Switch `/` to `newroot` (already populated and mounted), as busybox switch_root does:
/// delete the initramfs files (they would pin RAM), move the API filesystems, make `newroot`
/// the root. The caller is PID 1 on the initramfs.
pub fn switch_root(newroot: &Path) -> Result<()> {
    // 1. Keep the API filesystems: move them under the new root (their mountpoints exist
    //    in the image; a tmpfs root gets them created).
    for m in ["/dev", "/proc", "/sys", "/run"] {
        let target = newroot.join(&m[1..]);
        let _ = std::fs::create_dir_all(&target);
        mount(Some(m), &target, None::<&str>, MsFlags::MS_MOVE, None::<&str>).with_ctx(|| format!("move {m} to {}", target.display()))?;
    }
    // 2. Free the initramfs: everything on the root device except the new root itself.
    let root_dev = std::fs::metadata("/").ctx("stat /")?.dev();
    remove_same_device(Path::new("/"), root_dev, newroot);
    // 3. The new root becomes "/": chdir into it, move it over /, chroot to it.
    nix::unistd::chdir(newroot).with_ctx(|| format!("chdir {}", newroot.display()))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).ctx("move the new root to /")?;
    nix::unistd::chroot(".").ctx("chroot to the new root")?;
    nix::unistd::chdir("/").ctx("chdir /")?;
    Ok(())
}

/// Delete the files of the filesystem `dev` under `dir`, not descending into other filesystems
/// nor into `keep`. Failures are ignored: this only frees memory.
fn remove_same_device(dir: &Path, dev: u64, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p == keep {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            remove_same_device(&p, dev, keep);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Copy the initramfs (the running `/`, minus API filesystems) into `dest`, a fresh tmpfs:
/// the root for VMs without an image disk.
pub fn copy_rootfs(src: &Path, dest: &Path) -> Result<()> {
    let dev = std::fs::metadata(src).with_ctx(|| format!("stat {}", src.display()))?.dev();
    copy_tree(src, dest, dev, dest)
}

fn copy_tree(src: &Path, dest: &Path, dev: u64, skip: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(src).with_ctx(|| format!("read {}", src.display()))?.flatten() {
        let p = e.path();
        if p == skip {
            continue;
        }
        let md = std::fs::symlink_metadata(&p).with_ctx(|| format!("stat {}", p.display()))?;
        let to = dest.join(e.file_name());
        if md.is_dir() {
            std::fs::create_dir_all(&to).with_ctx(|| format!("create {}", to.display()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(md.mode() & 0o7777)).ok();
            if md.dev() == dev {
                copy_tree(&p, &to, dev, skip)?;
            }
        } else if md.file_type().is_symlink() {
            let t = std::fs::read_link(&p).with_ctx(|| format!("readlink {}", p.display()))?;
            std::os::unix::fs::symlink(t, &to).with_ctx(|| format!("symlink {}", to.display()))?;
        } else if md.is_file() {
            std::fs::copy(&p, &to).with_ctx(|| format!("copy {} to {}", p.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Unmount `targets` in reverse order of mounting; a busy mount is detached lazily after a few
/// tries. Returns what could not be unmounted cleanly, for the shutdown log.
pub fn unmount_all(targets: &[PathBuf], sleep: &mut dyn FnMut(std::time::Duration)) -> Vec<String> {
    let mut problems = Vec::new();
    for t in targets.iter().rev() {
        let mut done = false;
        for _ in 0..3 {
            if umount2(t.as_path(), MntFlags::empty()).is_ok() {
                done = true;
                break;
            }
            sleep(std::time::Duration::from_millis(200));
        }
        if !done {
            match umount2(t.as_path(), MntFlags::MNT_DETACH) {
                Ok(()) => problems.push(format!("{}: busy, detached lazily", t.display())),
                Err(e) => problems.push(format!("{}: {}", t.display(), e.desc())),
            }
        }
    }
    problems
}

/// Whether `path` is a mountpoint (its device differs from its parent's).
pub fn is_mountpoint(path: &Path) -> bool {
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext4_head(label: &str) -> Vec<u8> {
        let mut h = vec![0u8; 2048];
        h[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        h[1024 + 0x78..1024 + 0x78 + label.len()].copy_from_slice(label.as_bytes());
        h
    }

    #[test]
    fn superblocks_are_recognised() {
        let mut sq = vec![0u8; 2048];
        sq[..4].copy_from_slice(b"hsqs");
        assert_eq!(superblock(&sq), Superblock::Image(ImageFs::Squashfs));
        let mut ero = vec![0u8; 2048];
        ero[1024..1028].copy_from_slice(&0xE0F5E1E2u32.to_le_bytes());
        assert_eq!(superblock(&ero), Superblock::Image(ImageFs::Erofs));
        assert_eq!(superblock(&ext4_head("FL_STATE")), Superblock::Ext4("FL_STATE".into()));
        assert_eq!(superblock(&[0u8; 100]), Superblock::Other);
    }

    #[test]
    fn disks_found_by_content_not_name() {
        let d = tempfile::tempdir().unwrap();
        let (sys, dev) = (d.path().join("sys"), d.path().join("dev"));
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let mut sq = vec![0u8; 4096];
        sq[..4].copy_from_slice(b"hsqs");
        for (name, data) in [("vda", ext4_head("FL_DATA")), ("vdb", sq.clone()), ("vdc", ext4_head("FL_STATE")), ("loop0", sq), ("sr0", vec![0u8; 10])] {
            std::fs::create_dir_all(sys.join("class/block").join(name)).unwrap();
            std::fs::write(dev.join(name), data).unwrap();
        }
        let (disks, notes) = find_disks_at(&sys, &dev);
        assert_eq!(disks.image, Some((dev.join("vdb"), ImageFs::Squashfs)));
        assert_eq!(disks.state, Some(dev.join("vdc")));
        assert_eq!(disks.data, Some(dev.join("vda")));
        assert!(notes.is_empty(), "loop devices are never images: {notes:?}");
    }

    #[test]
    fn copy_rootfs_keeps_links_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("lib/modules")).unwrap();
        std::fs::write(src.join("init"), b"elf").unwrap();
        std::fs::set_permissions(src.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("init", src.join("sbin-init")).unwrap();
        let dest = src.join("newroot");
        std::fs::create_dir_all(&dest).unwrap();
        copy_rootfs(&src, &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("init")).unwrap(), b"elf");
        assert_eq!(std::fs::metadata(dest.join("init")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_link(dest.join("sbin-init")).unwrap(), Path::new("init"));
        assert!(dest.join("lib/modules").is_dir());
        assert!(!dest.join("newroot").exists(), "the destination is not copied into itself");
    }
}
