//! Finding the context CD: the ISO9660 volume labelled `CONTEXT` among block devices (label read
//! from the primary volume descriptor), mounted read-only with retries. Issue #2.
//!
//! OpenNebula attaches the context as the last CD-ROM (IDE on `pc`, SATA on `q35`), built with
//! `xorriso -as mkisofs -V CONTEXT -J -R`; with user CDs attached it is not necessarily `sr0`, so
//! every block device is a candidate, CD drives first (research/opennebula.md §1). Drivers probe
//! asynchronously, so [`discover`] waits a bounded time for the volume to appear, calling the
//! caller's `sleep` between scans (boot keeps answering health probes in it). The CD is mounted
//! only long enough to copy `context.sh`, `token.txt` and the FILES_DS files into a tmpfs
//! directory, then unmounted, so nothing holds it (OpenNebula ejects and swaps it on updates).

use crate::context::{CONTEXT_FILE, MAX_FILE_BYTES, TOKEN_FILE};
use crate::error::{Ctx, Error, Result};
use nix::mount::{MntFlags, MsFlags};
use std::fmt::Write as _;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The volume identifier OpenNebula gives the context CD (compared ignoring ASCII case, like talos).
pub const LABEL: &str = "CONTEXT";
/// Where boot keeps its copy of the context (on the /run tmpfs).
pub const RUNTIME_DIR: &str = "/run/flower-init/context";
/// How long to wait for the CD to show up: generous, it costs nothing when the CD is there,
/// and a VM without its context cannot do anything useful anyway.
pub const DEVICE_WAIT: Duration = Duration::from_secs(30);
/// Pause between two scans of the block devices.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The first mount of a fresh CD sometimes fails; one-context retries 6 × 1 s (addon-context-linux#247).
pub const MOUNT_ATTEMPTS: u32 = 6;
pub const MOUNT_RETRY: Duration = Duration::from_secs(1);
/// Cap on everything copied from the CD (FILES_DS files are certificates and small configs).
pub const MAX_COPY_BYTES: u64 = 16 << 20;

/// ISO9660 logical sector size; the volume descriptor set starts at sector 16 (ECMA-119 §6.7).
const SECTOR: u64 = 2048;
const FIRST_VD: u64 = 16;
/// Upper bound on descriptors read before giving up on the terminator (type 255).
const MAX_VDS: u64 = 32;

/// A block device that may hold the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Kernel name (`sr0`, `vda`).
    pub name: String,
    /// Its node under the dev root.
    pub node: PathBuf,
    /// A CD/DVD drive (`sr*`, or SCSI peripheral type 5): scanned first.
    pub cdrom: bool,
}

/// Block devices under `sys_root/class/block`, CD drives first, then the rest, each group in
/// natural name order (`sr2` before `sr10`). Loop, RAM and zram devices are never the context.
pub fn candidates_at(sys_root: &Path, dev_root: &Path) -> Vec<Candidate> {
    let dir = sys_root.join("class/block");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<Candidate> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)))
        .map(|name| {
            let dev_type = std::fs::read_to_string(dir.join(&name).join("device/type")).unwrap_or_default();
            let cdrom = name.starts_with("sr") || dev_type.trim() == "5";
            Candidate { node: dev_root.join(&name), name, cdrom }
        })
        .collect();
    out.sort_by(|a, b| b.cdrom.cmp(&a.cdrom).then_with(|| natural_key(&a.name).cmp(&natural_key(&b.name))));
    out
}

/// `sr10` → ("sr", 10) so that numbered devices sort numerically.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let head = name.trim_end_matches(|c: char| c.is_ascii_digit());
    (head, name[head.len()..].parse().unwrap_or(0), name)
}

/// The volume identifier of an ISO9660 primary volume descriptor (one 2048-byte sector):
/// type 1, `CD001`, version 1; bytes 40..72, space padded. `None` for any other descriptor.
pub fn pvd_label(sector: &[u8]) -> Option<String> {
    if sector.len() < 72 || sector[0] != 1 || &sector[1..6] != b"CD001" || sector[6] != 1 {
        return None;
    }
    let id = String::from_utf8_lossy(&sector[40..72]);
    Some(id.trim_end_matches([' ', '\0']).to_string())
}

/// What a device holds, for discovery and for the "not found" message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Label(String),
    NotIso,
    /// Could not be opened or read (no medium, no node yet, …): the reason.
    Unreadable(String),
}

/// Read the label of the ISO9660 volume on `dev` (a block device or an image file).
pub fn probe(dev: &Path) -> Probe {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK).open(dev);
    let f = match f {
        Ok(f) => f,
        Err(e) => return Probe::Unreadable(e.to_string()),
    };
    let mut sector = [0u8; SECTOR as usize];
    for i in 0..MAX_VDS {
        match f.read_exact_at(&mut sector, (FIRST_VD + i) * SECTOR) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Probe::NotIso,
            Err(e) => return Probe::Unreadable(e.to_string()),
        }
        if &sector[1..6] != b"CD001" || sector[0] == 255 {
            return Probe::NotIso;
        }
        if let Some(label) = pvd_label(&sector) {
            return Probe::Label(label);
        }
    }
    Probe::NotIso
}

/// Scan once: the first candidate labelled [`LABEL`], or what each device held.
pub fn scan_at(sys_root: &Path, dev_root: &Path) -> std::result::Result<Candidate, Vec<(String, Probe)>> {
    let mut seen = Vec::new();
    for c in candidates_at(sys_root, dev_root) {
        match probe(&c.node) {
            Probe::Label(l) if l.eq_ignore_ascii_case(LABEL) => return Ok(c),
            p => seen.push((c.name, p)),
        }
    }
    Err(seen)
}

/// Scan every `poll` until the context volume appears or `wait` has been spent in `sleep`.
/// The wait is counted in scans (`wait / poll`), so a `sleep` that also serves health probes
/// (or a test's that returns at once) keeps the bound.
pub fn wait_at(
    sys_root: &Path,
    dev_root: &Path,
    wait: Duration,
    poll: Duration,
    sleep: &mut dyn FnMut(Duration),
) -> Result<Candidate> {
    let scans = 1 + wait.as_millis() / poll.as_millis().max(1);
    let mut last = Vec::new();
    for i in 0..scans {
        match scan_at(sys_root, dev_root) {
            Ok(c) => return Ok(c),
            Err(seen) => last = seen,
        }
        if i + 1 < scans {
            sleep(poll);
        }
    }
    let mut why = format!("no ISO9660 volume labelled {LABEL} after {} s", wait.as_secs());
    if last.is_empty() {
        why.push_str(" (no block devices)");
    } else {
        why.push_str("; block devices:");
        for (name, p) in &last {
            let _ = match p {
                Probe::Label(l) => write!(why, " {name} (ISO9660 labelled {l:?})"),
                Probe::NotIso => write!(why, " {name} (not ISO9660)"),
                Probe::Unreadable(e) => write!(why, " {name} ({e})"),
            };
        }
    }
    Err(Error::msg("find the context CD", why))
}

/// Mount `dev` read-only as iso9660 on `dir`, retrying [`MOUNT_ATTEMPTS`] times.
pub fn mount_ro(dev: &Path, dir: &Path, attempts: u32, retry: Duration, sleep: &mut dyn FnMut(Duration)) -> Result<()> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut n = 0;
    loop {
        n += 1;
        match nix::mount::mount(Some(dev), dir, Some("iso9660"), flags, None::<&str>) {
            Ok(()) => return Ok(()),
            Err(e) if n < attempts.max(1) => {
                log::debug!("mount {} on {}: {} (attempt {n} of {attempts})", dev.display(), dir.display(), e.desc());
                sleep(retry);
            }
            Err(e) => {
                return Err(e)
                    .with_ctx(|| format!("mount {} on {} (after {n} attempts)", dev.display(), dir.display()));
            }
        }
    }
}

/// Copy the context files from the mounted CD `src` into `dest` (created 0700; files 0600):
/// `context.sh` (required), `token.txt`, and every other regular file in the CD root up to
/// [`MAX_FILE_BYTES`] each and [`MAX_COPY_BYTES`] in all (FILES_DS). Larger files, symlinks and
/// directories are skipped with a warning. Returns the names copied.
pub fn copy_context(src: &Path, dest: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dest).with_ctx(|| format!("create {}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
        .with_ctx(|| format!("chmod {}", dest.display()))?;
    let mut names: Vec<String> = std::fs::read_dir(src)
        .with_ctx(|| format!("list {}", src.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    if !names.iter().any(|n| n == CONTEXT_FILE) {
        return Err(Error::msg(
            format!("read {}", src.join(CONTEXT_FILE).display()),
            "the context CD has no context.sh",
        ));
    }
    // context.sh and token.txt first, so the cap never squeezes them out.
    names.sort_by_key(|n| (n != CONTEXT_FILE, n != TOKEN_FILE, n.clone()));
    let mut total = 0u64;
    let mut copied = Vec::new();
    for name in names {
        let from = src.join(&name);
        let cap = if name == CONTEXT_FILE { crate::context::MAX_CONTEXT_BYTES as u64 } else { MAX_FILE_BYTES };
        let data = match crate::context::read_capped(&from, cap.min(MAX_COPY_BYTES - total)) {
            Ok(d) => d,
            Err(e) if name == CONTEXT_FILE || name == TOKEN_FILE => {
                return Err(Error::msg(format!("read {}", from.display()), e.to_string()));
            }
            Err(e) => {
                log::warn!("context CD: skipping {name:?}: {e}");
                continue;
            }
        };
        total += data.len() as u64;
        write_private(&dest.join(&name), &data)?;
        copied.push(name);
    }
    Ok(copied)
}

/// Write `data` to a new file only its owner can read (the token, private keys).
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .with_ctx(|| format!("create {}", path.display()))?;
    f.write_all(data).with_ctx(|| format!("write {}", path.display()))
}

/// Mount `dev`, copy the context into `dest`, unmount (lazily if busy) and remove the mount
/// point, whatever happened in between.
pub fn fetch(dev: &Path, dest: &Path, sleep: &mut dyn FnMut(Duration)) -> Result<Vec<String>> {
    let mnt = dest.with_extension("mnt");
    std::fs::create_dir_all(&mnt).with_ctx(|| format!("create {}", mnt.display()))?;
    let copied = mount_ro(dev, &mnt, MOUNT_ATTEMPTS, MOUNT_RETRY, sleep).and_then(|()| {
        let r = copy_context(&mnt, dest);
        if let Err(e) = nix::mount::umount(&mnt) {
            log::warn!("unmount {}: {}; detaching it", mnt.display(), e.desc());
            let _ = nix::mount::umount2(&mnt, MntFlags::MNT_DETACH);
        }
        r
    });
    let _ = std::fs::remove_dir(&mnt);
    copied
}

/// Find the context CD, copy it into [`RUNTIME_DIR`] and return that directory (for
/// [`crate::context::Context::load_from`]). `sleep` is called while waiting.
pub fn discover(sleep: &mut dyn FnMut(Duration)) -> Result<PathBuf> {
    discover_at(Path::new("/sys"), Path::new("/dev"), Path::new(RUNTIME_DIR), DEVICE_WAIT, sleep)
}

/// [`discover`] over other roots (tests: a fake /sys and /dev).
pub fn discover_at(
    sys_root: &Path,
    dev_root: &Path,
    dest: &Path,
    wait: Duration,
    sleep: &mut dyn FnMut(Duration),
) -> Result<PathBuf> {
    let c = wait_at(sys_root, dev_root, wait, POLL_INTERVAL, sleep)?;
    log::info!("context CD: {} ({})", c.name, c.node.display());
    let copied = fetch(&c.node, dest, sleep)?;
    log::info!("context CD: copied {} into {}", copied.join(", "), dest.display());
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests;
