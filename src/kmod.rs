//! Kernel module coldplug without udev: `modalias` files matched against `modules.alias`,
//! loaded with `finit_module` in `modules.dep` order. Issue #3.
//!
//! Debian's stock kernel builds virtio, ata, sr_mod, isofs, squashfs, ext4, overlay and the ACPI
//! button as modules (research/init.md §1.4) and there is no udev in the appliance, so PID 1 does
//! what `modprobe -a $(cat /sys/**/modalias)` would (linuxkit `rc.init modalias()`):
//! 1. read the device aliases the kernel exposes under `/sys/devices/**/modalias`;
//! 2. match them against the `alias PATTERN module` lines of `modules.alias` (fnmatch globs);
//! 3. load each match after its dependencies from `modules.dep`, with `finit_module(2)`.
//!
//! Loading a bus driver (virtio_pci) creates new devices (virtio0 …) with their own aliases, so
//! coldplug repeats until a pass loads nothing new. Filesystems have no modalias: they are
//! loaded by name ([`EXPLICIT`]). Every reader takes a root so tests run over fake trees.

use crate::error::{Ctx, Error, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Modules the appliance needs that no device alias brings in: the filesystems of the context
/// CD (isofs), the image (squashfs, erofs), the state and data disks (ext4) and overlay; the
/// crc32c implementations ext4 and erofs ask the crypto API for (the kernel would run
/// /sbin/modprobe for them, which does not exist here); and the ACPI button for
/// `onevm terminate`, in case the firmware describes no button device (Debian's arm64 kernel
/// has it built in). crc32c_intel is x86's; arm64 has no separate crc32c module.
#[cfg(target_arch = "x86_64")]
pub const EXPLICIT: &[&str] = &["isofs", "squashfs", "erofs", "ext4", "overlay", "crc32c_intel", "crc32c_generic", "button"];
#[cfg(not(target_arch = "x86_64"))]
pub const EXPLICIT: &[&str] = &["isofs", "squashfs", "erofs", "ext4", "overlay", "crc32c_generic", "button"];

/// `modules.dep`, `modules.alias` and `modules.builtin` of one kernel.
#[derive(Debug, Default)]
pub struct Index {
    dir: PathBuf,
    /// module name → (path relative to `dir`, direct dependencies by name)
    deps: BTreeMap<String, (String, Vec<String>)>,
    /// (glob, module name), in file order
    aliases: Vec<(String, String)>,
    builtin: HashSet<String>,
}

/// Module names are compared with `-` and `_` equal, as the kernel does.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/fs/isofs/isofs.ko[.xz]` → `isofs`.
fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    normalize(file.split(".ko").next().unwrap_or(file))
}

impl Index {
    /// Read the index of the running kernel: `/lib/modules/$(uname -r)`.
    pub fn running() -> Result<Index> {
        let release = nix::sys::utsname::uname().ctx("uname")?.release().to_string_lossy().into_owned();
        Index::load(&Path::new("/lib/modules").join(release))
    }

    /// Read `modules.dep`, `modules.alias` and (if present) `modules.builtin` from `dir`.
    pub fn load(dir: &Path) -> Result<Index> {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).with_ctx(|| format!("read {}", dir.join(f).display()));
        let dep = read("modules.dep")?;
        let alias = read("modules.alias")?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(Index::parse(dir, &dep, &alias, &builtin))
    }

    /// Parse the three files (pure, for tests).
    pub fn parse(dir: &Path, dep: &str, alias: &str, builtin: &str) -> Index {
        let mut deps = BTreeMap::new();
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else { continue };
            let ds = rest.split_whitespace().map(name_of).collect();
            deps.insert(name_of(path), (path.trim().to_string(), ds));
        }
        let aliases = alias
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("alias")).then_some(())?;
                Some((w.next()?.to_string(), normalize(w.next()?)))
            })
            .collect();
        let builtin = builtin.lines().map(name_of).collect();
        Index { dir: dir.to_path_buf(), deps, aliases, builtin }
    }

    /// Modules whose alias globs match a device's `modalias` (deduplicated, sorted).
    pub fn lookup(&self, modalias: &str) -> Vec<String> {
        let set: BTreeSet<String> =
            self.aliases.iter().filter(|(glob, _)| fnmatch(glob.as_bytes(), modalias.as_bytes())).map(|(_, m)| m.clone()).collect();
        set.into_iter().collect()
    }

    /// `name` and its dependencies as files to load, dependencies first. Built-in modules need
    /// no file; an unknown name is an error.
    pub fn load_order(&self, name: &str) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&normalize(name), &mut seen, &mut out, 0)?;
        Ok(out)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, out: &mut Vec<(String, PathBuf)>, depth: usize) -> Result<()> {
        if !seen.insert(name.to_string()) || self.builtin.contains(name) {
            return Ok(());
        }
        let Some((path, deps)) = self.deps.get(name) else {
            return Err(Error::msg(format!("load module {name}"), "not in modules.dep (nor built in)"));
        };
        if depth > 64 {
            return Err(Error::msg(format!("load module {name}"), "dependency chain deeper than 64 (a cycle in modules.dep?)"));
        }
        // modules.dep lists a module's dependencies in reverse load order (modprobe walks the
        // list from its end), and each dependency's own line gives its dependencies.
        for d in deps.iter().rev() {
            self.visit(d, seen, out, depth + 1)?;
        }
        out.push((name.to_string(), self.dir.join(path)));
        Ok(())
    }

    /// Whether the kernel has this module (as a file or built in).
    pub fn knows(&self, name: &str) -> bool {
        let n = normalize(name);
        self.deps.contains_key(&n) || self.builtin.contains(&n)
    }
}

/// POSIX `fnmatch` without flags, as `modules.alias` globs use it: `*`, `?` and `[...]` classes
/// (with ranges and `!`/`^` negation). Iterative with one backtrack point, so no input blows up.
pub fn fnmatch(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pat[p..], s[i]) {
                        if matched {
                            p += next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        // An unterminated '[' is a literal.
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Match `c` against the class at the start of `pat` (`[...]`); returns (matched, class length),
/// or None if the class is not terminated.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let negate = matches!(pat.get(j), Some(b'!' | b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() {
        let a = pat[j];
        if a == b']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if pat.get(j + 1) == Some(&b'-') && pat.get(j + 2).is_some_and(|&b| b != b']') {
            let b = pat[j + 2];
            matched |= a <= c && c <= b;
            j += 3;
        } else {
            matched |= a == c;
            j += 1;
        }
    }
    None
}

/// Every `modalias` value under `<sys>/devices` (files that cannot be read are skipped: devices
/// come and go while we walk).
pub fn modaliases_at(sys: &Path) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![sys.join("devices")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            // sysfs links point back up the tree (subsystem, driver, …): never follow them.
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == "modalias" {
                if let Ok(v) = std::fs::read_to_string(e.path()) {
                    let v = v.trim();
                    if !v.is_empty() {
                        out.insert(v.to_string());
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// What loads a module file; the real one calls `finit_module(2)`, tests record.
pub trait Loader {
    /// Load one module file. Already loaded (EEXIST) must be Ok.
    fn load(&mut self, name: &str, path: &Path) -> Result<()>;
}

/// `finit_module(2)` on the file. Compressed files are handed to the kernel with
/// MODULE_INIT_COMPRESSED_FILE (the kernel decompresses them when built to).
pub struct Finit;

/// `MODULE_INIT_COMPRESSED_FILE` from include/uapi/linux/module.h (Linux 5.17+).
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

impl Loader for Finit {
    fn load(&mut self, name: &str, path: &Path) -> Result<()> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).with_ctx(|| format!("open module {}", path.display()))?;
        let compressed = path.extension().is_some_and(|e| e != "ko");
        let flags = if compressed { MODULE_INIT_COMPRESSED_FILE } else { 0 };
        // SAFETY: finit_module reads the open file descriptor and the NUL-terminated empty
        // parameter string; both outlive the call, and the kernel copies what it keeps.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), flags) };
        match nix::errno::Errno::result(rc) {
            Ok(_) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(e).with_ctx(|| format!("load module {name} ({})", path.display())),
        }
    }
}

/// Loads modules with their dependencies, each file once, remembering what failed.
pub struct Coldplug<'a, L: Loader> {
    pub index: &'a Index,
    loader: L,
    /// Names loaded (or found built in) so far.
    pub loaded: BTreeSet<String>,
    /// Modules that failed, with why (a missing device is normal for some aliases; boot logs them).
    pub failed: BTreeMap<String, String>,
}

impl<'a, L: Loader> Coldplug<'a, L> {
    pub fn new(index: &'a Index, loader: L) -> Self {
        Coldplug { index, loader, loaded: BTreeSet::new(), failed: BTreeMap::new() }
    }

    /// Load `name` after its dependencies. Idempotent; true if anything new was loaded.
    pub fn load(&mut self, name: &str) -> bool {
        let name = normalize(name);
        if self.loaded.contains(&name) || self.failed.contains_key(&name) {
            return false;
        }
        let order = match self.index.load_order(&name) {
            Ok(o) => o,
            Err(e) => {
                self.failed.insert(name, e.to_string());
                return false;
            }
        };
        let mut any = false;
        for (m, path) in order {
            if self.loaded.contains(&m) {
                continue;
            }
            match self.loader.load(&m, &path) {
                Ok(()) => {
                    self.loaded.insert(m);
                    any = true;
                }
                Err(e) => {
                    self.failed.insert(name.clone(), e.to_string());
                    return any;
                }
            }
        }
        self.loaded.insert(name);
        any
    }

    /// One pass over the device aliases; true if it loaded something (new devices may follow).
    pub fn pass(&mut self, modaliases: &[String]) -> bool {
        let mut any = false;
        for alias in modaliases {
            for m in self.index.lookup(alias) {
                any |= self.load(&m);
            }
        }
        any
    }

    /// Coldplug `sys`: repeat passes until one loads nothing (bounded), then load `extra`.
    pub fn run_at(&mut self, sys: &Path, extra: &[&str]) {
        for _ in 0..8 {
            if !self.pass(&modaliases_at(sys)) {
                break;
            }
        }
        for m in extra {
            self.load(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_handles_modalias_globs() {
        assert!(fnmatch(b"pci:v00001AF4d00001000sv*sd*bc*sc*i*", b"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"));
        assert!(!fnmatch(b"pci:v00001AF4d00001000sv*sd*bc*sc*i*", b"pci:v00001AF4d00001001sv00001AF4sd00000001bc02sc00i00"));
        assert!(fnmatch(b"virtio:d00000001v*", b"virtio:d00000001v00001AF4"));
        assert!(fnmatch(b"scsi:t-0x05*", b"scsi:t-0x05"));
        assert!(fnmatch(b"acpi*:LNXPWRBN:*", b"acpi:LNXPWRBN:"));
        assert!(fnmatch(b"a[0-9]b", b"a7b"));
        assert!(!fnmatch(b"a[!0-9]b", b"a7b"));
        assert!(fnmatch(b"a[!0-9]b", b"axb"));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(fnmatch(b"*", b""));
        assert!(!fnmatch(b"a", b""));
        assert!(fnmatch(b"x[y", b"x[y"));
        // Pathological patterns stay linear-ish.
        assert!(!fnmatch(&[b'*'; 64].iter().chain(b"b").copied().collect::<Vec<_>>(), &[b'a'; 4096]));
    }

    const DEP: &str = "kernel/drivers/virtio/virtio.ko:\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
kernel/fs/isofs/isofs.ko:\n";
    const ALIAS: &str = "# Aliases extracted from modules themselves.\n\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
alias virtio:d00000001v* virtio_net\n\
alias fs-iso9660 isofs\n";

    fn index() -> Index {
        Index::parse(Path::new("/lib/modules/k"), DEP, ALIAS, "kernel/drivers/ata/libata.ko\n")
    }

    #[test]
    fn dependencies_load_first_each_once() {
        let ix = index();
        let order: Vec<String> = ix.load_order("virtio-net").unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(order, ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net"]);
        let (_, path) = ix.load_order("isofs").unwrap().pop().unwrap();
        assert_eq!(path, Path::new("/lib/modules/k/kernel/fs/isofs/isofs.ko"));
        assert!(ix.load_order("libata").unwrap().is_empty(), "built in: nothing to load");
        assert!(ix.load_order("nope").unwrap_err().to_string().contains("not in modules.dep"));
    }

    struct Record(Vec<String>);
    impl Loader for &mut Record {
        fn load(&mut self, name: &str, _: &Path) -> Result<()> {
            if name == "failover" {
                return Err(Error::msg("load module failover", "Exec format error"));
            }
            self.0.push(name.to_string());
            Ok(())
        }
    }

    #[test]
    fn coldplug_matches_aliases_and_records_failures() {
        let ix = index();
        let mut rec = Record(vec![]);
        let mut c = Coldplug::new(&ix, &mut rec);
        let aliases = vec!["pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00".to_string(), "virtio:d00000001v00001AF4".into()];
        assert!(c.pass(&aliases));
        assert!(!c.pass(&aliases), "second pass is a no-op");
        assert!(c.loaded.contains("virtio_pci"));
        assert!(c.failed["virtio_net"].contains("Exec format error"));
        assert!(!c.loaded.contains("virtio_net"));
        drop(c);
        assert_eq!(rec.0, ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci"]);
    }

    #[test]
    fn modaliases_are_read_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("devices/pci0000:00/0000:00:03.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("modalias"), "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n").unwrap();
        std::os::unix::fs::symlink(d.path().join("devices"), dev.join("subsystem")).unwrap();
        std::fs::write(d.path().join("devices/modalias"), "\n").unwrap();
        assert_eq!(modaliases_at(d.path()), ["pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"]);
    }
}
