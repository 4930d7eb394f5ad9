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
//! loaded by name: [`EARLY`] in the `modules` step, the rest by [`for_disks`] once the disks
//! are known. Every reader takes a root so tests run over fake trees.

use crate::error::{Ctx, Error, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Modules loaded by name in the `modules` step, which no device alias brings in: isofs for the
/// context CD (the next step reads it) and the ACPI button for `onevm terminate`, in case the
/// firmware describes no button device (Debian's arm64 kernel has it built in).
pub const EARLY: &[&str] = &["isofs", "button"];

/// The crc32c implementations ext4 and jbd2 ask the crypto API for (the kernel would run
/// /sbin/modprobe for them, which does not exist here), the first that loads: crc32c_intel
/// needs SSE4.2 (ENODEV without it), crc32c_generic runs everywhere. arm64 has no separate one.
#[cfg(target_arch = "x86_64")]
pub const CRC32C: &[&str] = &["crc32c_intel", "crc32c_generic"];
#[cfg(not(target_arch = "x86_64"))]
pub const CRC32C: &[&str] = &["crc32c_generic"];

/// The file-system modules for the disks found, loaded in the `image` step once their
/// superblocks are read (issue #17: nothing is loaded that no disk needs): the image's own
/// (`squashfs` or `erofs`, named as the file system), and ext4 with a crc32c when there is a
/// state or data disk. Each inner list is one need: its first module that loads meets it.
pub fn for_disks(image_fs: Option<&'static str>, ext4: bool) -> Vec<Vec<&'static str>> {
    // An image file system's module has the file system's name (squashfs, erofs).
    let mut out: Vec<Vec<&'static str>> = image_fs.map(|fs| vec![fs]).into_iter().collect();
    if ext4 {
        out.push(CRC32C.to_vec());
        out.push(vec!["ext4"]);
    }
    out
}

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

/// What loads a module file; the real one calls `finit_module(2)`, tests record. Shared by the
/// threads of a coldplug pass.
pub trait Loader: Sync {
    /// Load one module file. Already loaded (EEXIST) must be Ok.
    fn load(&self, name: &str, path: &Path) -> Result<()>;
}

/// `finit_module(2)` on the file. Compressed files are handed to the kernel with
/// MODULE_INIT_COMPRESSED_FILE (the kernel decompresses them when built to).
pub struct Finit;

/// `MODULE_INIT_COMPRESSED_FILE` from include/uapi/linux/module.h (Linux 5.17+).
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

impl Loader for Finit {
    fn load(&self, name: &str, path: &Path) -> Result<()> {
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

/// One module file's load among threads: each file is loaded once; a thread that needs a
/// file another one is loading waits for its outcome (a dependency must be in the kernel
/// before the module that needs it).
#[derive(Default)]
struct Files {
    state: std::sync::Mutex<BTreeMap<String, Option<std::result::Result<(), String>>>>,
    done: std::sync::Condvar,
}

impl Files {
    fn seeded(loaded: &BTreeSet<String>) -> Files {
        let f = Files::default();
        f.lock().extend(loaded.iter().map(|m| (m.clone(), Some(Ok(())))));
        f
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<std::result::Result<(), String>>>> {
        // A poisoned lock only means another loader thread panicked; the map stays consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Load `m` unless it is loaded or loading (then its outcome); Ok(true) if this call loaded it.
    fn load<L: Loader>(&self, loader: &L, m: &str, path: &Path) -> std::result::Result<bool, String> {
        let mut st = self.lock();
        loop {
            match st.get(m) {
                Some(Some(outcome)) => return outcome.clone().map(|()| false),
                Some(None) => st = self.done.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner),
                None => break,
            }
        }
        st.insert(m.to_string(), None);
        drop(st);
        let outcome = loader.load(m, path).map_err(|e| e.to_string());
        self.lock().insert(m.to_string(), Some(outcome.clone()));
        self.done.notify_all();
        outcome.map(|()| true)
    }
}

/// What loading one module with its dependencies did.
struct Chain {
    name: String,
    /// Files this chain loaded (dependencies first).
    loaded: Vec<String>,
    failure: Option<String>,
}

fn chain<L: Loader>(index: &Index, loader: &L, files: &Files, name: &str) -> Chain {
    let mut c = Chain { name: name.to_string(), loaded: Vec::new(), failure: None };
    match index.load_order(name) {
        Err(e) => c.failure = Some(e.to_string()),
        Ok(order) => {
            for (m, path) in order {
                match files.load(loader, &m, &path) {
                    Ok(true) => c.loaded.push(m),
                    Ok(false) => {}
                    Err(e) => {
                        c.failure = Some(e);
                        break;
                    }
                }
            }
        }
    }
    c
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

    /// Record a chain's outcome; true if it loaded anything.
    fn record(&mut self, c: Chain) -> bool {
        let any = !c.loaded.is_empty();
        self.loaded.extend(c.loaded);
        match c.failure {
            Some(e) => {
                self.failed.insert(c.name, e);
            }
            None => {
                self.loaded.insert(c.name);
            }
        }
        any
    }

    /// Load `name` after its dependencies. Idempotent; true if anything new was loaded.
    pub fn load(&mut self, name: &str) -> bool {
        let name = normalize(name);
        if self.loaded.contains(&name) || self.failed.contains_key(&name) {
            return false;
        }
        let c = chain(self.index, &self.loader, &Files::seeded(&self.loaded), &name);
        self.record(c)
    }

    /// Load the first of `names` that loads (with its dependencies); Err: why each one failed.
    /// Alternatives that failed are forgotten, so that only an unmet need stays in `failed`.
    pub fn load_first(&mut self, names: &[&str]) -> std::result::Result<String, String> {
        let mut why = Vec::new();
        for n in names {
            let n = normalize(n);
            self.load(&n);
            if self.loaded.contains(&n) {
                return Ok(n);
            }
            if let Some(e) = self.failed.remove(&n) {
                why.push(format!("{n}: {e}"));
            }
        }
        Err(why.join("; "))
    }

    /// The modules one pass asks for, grouped by device: each device's matches in alias order,
    /// each module once (under the first device that matched it), none loaded or failed before.
    pub fn groups(&self, modaliases: &[String]) -> Vec<Vec<String>> {
        let mut taken = BTreeSet::new();
        modaliases
            .iter()
            .map(|alias| {
                self.index
                    .lookup(alias)
                    .into_iter()
                    .filter(|m| !self.loaded.contains(m) && !self.failed.contains_key(m) && taken.insert(m.clone()))
                    .collect::<Vec<_>>()
            })
            .filter(|g| !g.is_empty())
            .collect()
    }

    /// One pass over the device aliases; true if it loaded something (new devices may follow).
    ///
    /// Each device's drivers load in a thread of their own (issue #17): a driver probes its
    /// device inside `finit_module`, and some probes wait on the hardware (an ATA bus reset, a
    /// PCI interrupt link) while another driver's could run. The kernel loads modules
    /// concurrently; [`Files`] loads a dependency two devices share once, the second waiting
    /// for it. Drivers that match the same device stay in one thread in alias order, so which
    /// one binds it does not depend on timing. A thread that cannot be started is done here.
    pub fn pass(&mut self, modaliases: &[String]) -> bool {
        let groups = self.groups(modaliases);
        let files = Files::seeded(&self.loaded);
        let (index, loader, files) = (self.index, &self.loader, &files);
        let run = move |g: &[String]| g.iter().map(|m| chain(index, loader, files, m)).collect::<Vec<_>>();
        let chains: Vec<Chain> = if groups.len() < 2 {
            groups.iter().flat_map(|g| run(g)).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = groups
                    .iter()
                    .map(|g| (g, std::thread::Builder::new().name("modules".into()).spawn_scoped(s, move || run(g))))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|(g, h)| match h {
                        Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                        Err(_) => run(g),
                    })
                    .collect()
            })
        };
        chains.into_iter().fold(false, |any, c| self.record(c) | any)
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
    fn only_the_found_disks_file_systems_are_loaded() {
        assert!(for_disks(None, false).is_empty());
        assert_eq!(for_disks(Some("squashfs"), false), vec![vec!["squashfs"]]);
        let both = for_disks(Some("erofs"), true);
        assert_eq!(both[0], vec!["erofs"]);
        assert_eq!(both[1], CRC32C.to_vec());
        assert_eq!(both[2], vec!["ext4"]);
        assert!(!EARLY.contains(&"ext4") && !EARLY.contains(&"squashfs") && !EARLY.contains(&"erofs"));
    }

    #[test]
    fn load_first_takes_the_first_alternative_that_loads() {
        struct FailIntel(std::sync::Mutex<Vec<String>>);
        impl Loader for FailIntel {
            fn load(&self, name: &str, _: &Path) -> Result<()> {
                if name == "crc32c_intel" {
                    return Err(Error::msg("load module crc32c_intel", "No such device"));
                }
                self.0.lock().unwrap().push(name.to_string());
                Ok(())
            }
        }
        let dep = "kernel/arch/x86/crypto/crc32c-intel.ko:\nkernel/crypto/crc32c_generic.ko:\nkernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\n";
        let ix = Index::parse(Path::new("/m"), dep, "", "");
        let mut c = Coldplug::new(&ix, FailIntel(Default::default()));
        assert_eq!(c.load_first(&["crc32c_intel", "crc32c_generic"]), Ok("crc32c_generic".to_string()));
        assert!(c.failed.is_empty(), "a failed alternative is not an unmet need: {:?}", c.failed);
        assert_eq!(c.load_first(&["ext4"]), Ok("ext4".to_string()));
        assert_eq!(*c.loader.0.lock().unwrap(), ["crc32c_generic", "jbd2", "ext4"]);
        let err = c.load_first(&["crc32c_intel", "nope"]).unwrap_err();
        assert!(err.contains("crc32c_intel: ") && err.contains("No such device") && err.contains("nope: "), "{err}");
    }

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

    #[derive(Default)]
    struct Record(std::sync::Mutex<Vec<String>>);
    impl Loader for &Record {
        fn load(&self, name: &str, _: &Path) -> Result<()> {
            if name == "failover" {
                return Err(Error::msg("load module failover", "Exec format error"));
            }
            self.0.lock().unwrap().push(name.to_string());
            Ok(())
        }
    }

    #[test]
    fn coldplug_matches_aliases_and_records_failures() {
        let ix = index();
        let rec = Record::default();
        let mut c = Coldplug::new(&ix, &rec);
        let aliases = vec!["pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00".to_string(), "virtio:d00000001v00001AF4".into()];
        assert_eq!(c.groups(&aliases), [vec!["virtio_pci".to_string()], vec!["virtio_net".to_string()]]);
        assert!(c.pass(&aliases));
        assert!(c.groups(&aliases).is_empty(), "nothing left to load or retry");
        assert!(!c.pass(&aliases), "second pass is a no-op");
        assert!(c.loaded.contains("virtio_pci"));
        assert!(c.failed["virtio_net"].contains("Exec format error"));
        assert!(!c.loaded.contains("virtio_net"));
        drop(c);
        // The two devices' drivers loaded in two threads: each file once, whichever thread
        // came first, and every module after its dependencies.
        let got = rec.0.lock().unwrap().clone();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, ["virtio", "virtio_pci", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_ring"], "{got:?}");
        let at = |m: &str| got.iter().position(|x| x == m).unwrap();
        assert!(at("virtio_ring") < at("virtio") && at("virtio") < at("virtio_pci_modern_dev"), "{got:?}");
        assert!(at("virtio_pci_modern_dev") < at("virtio_pci") && at("virtio_pci_legacy_dev") < at("virtio_pci"), "{got:?}");
    }

    /// A loader that takes its time, so that the threads of a pass overlap.
    struct Slow(std::sync::Mutex<Vec<(String, &'static str)>>);
    impl Loader for Slow {
        fn load(&self, name: &str, _: &Path) -> Result<()> {
            self.0.lock().unwrap().push((name.to_string(), "start"));
            std::thread::sleep(std::time::Duration::from_millis(30));
            self.0.lock().unwrap().push((name.to_string(), "end"));
            Ok(())
        }
    }

    #[test]
    fn a_shared_dependency_is_loaded_once_and_before_both_users() {
        // Two devices whose drivers both need `core`: one loads it, the other waits for it.
        let dep = "kernel/a.ko: kernel/core.ko\nkernel/b.ko: kernel/core.ko\nkernel/c.ko:\nkernel/core.ko:\n";
        let alias = "alias pci:v0001* a\nalias pci:v0002* b\nalias pci:v0002* c\n";
        let ix = Index::parse(Path::new("/m"), dep, alias, "");
        let slow = Slow(Default::default());
        let mut c = Coldplug::new(&ix, slow);
        let aliases = vec!["pci:v0001d1".to_string(), "pci:v0002d2".to_string()];
        assert_eq!(c.groups(&aliases), [vec!["a".to_string()], vec!["b".to_string(), "c".to_string()]], "b and c match one device: one thread, alias order");
        assert!(c.pass(&aliases));
        assert!(c.failed.is_empty(), "{:?}", c.failed);
        let ev = c.loader.0.lock().unwrap().clone();
        let at = |m: &str, what: &str| ev.iter().position(|(n, w)| n == m && *w == what).unwrap_or_else(|| panic!("{m} {what}: {ev:?}"));
        assert_eq!(ev.iter().filter(|(n, w)| n == "core" && *w == "start").count(), 1, "{ev:?}");
        assert!(at("core", "end") < at("a", "start") && at("core", "end") < at("b", "start"), "{ev:?}");
        assert!(at("b", "end") < at("c", "start"), "same device: in order: {ev:?}");
        for m in ["a", "b", "c", "core"] {
            assert!(c.loaded.contains(m), "{m}");
        }
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
