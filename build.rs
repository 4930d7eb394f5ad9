//! Stamps the crate version and the git commit into the binary for `flower-init version`.
use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let commit = if dirty { format!("{commit}-dirty") } else { commit };
    println!("cargo:rustc-env=FLOWER_INIT_COMMIT={commit}");
    // Rebuild when HEAD moves. In a worktree `.git` is a file, so ask git where its files are:
    // HEAD, the branch ref it points to (a commit moves that, not HEAD) and the index (dirty).
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
        let head = git_dir.join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        println!("cargo:rerun-if-changed={}", git_dir.join("index").display());
        if let Some(r) = std::fs::read_to_string(&head).ok().and_then(|h| h.trim().strip_prefix("ref: ").map(String::from)) {
            let common = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from).unwrap_or(git_dir);
            println!("cargo:rerun-if-changed={}", common.join(r).display());
        }
    }
    println!("cargo:rerun-if-env-changed=FLOWER_INIT_COMMIT");
    discard_unwind_tables();
}

/// The static musl binary built with `panic = "abort"` (the release profile) never unwinds:
/// its unwind tables (~330 KB, 11 % of the file) only fed std's panic backtraces. The linker
/// drops them (link/discard-unwind.ld). Only the release profile's `bin` gets the script:
/// build scripts see the target's cfg, not the profile's panic strategy, so `PROFILE` decides
/// (the library's tests are separate targets and keep their tables; main.rs has no tests).
fn discard_unwind_tables() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    println!("cargo:rerun-if-changed=link/discard-unwind.ld");
    if env("PROFILE") != "release" || env("CARGO_CFG_TARGET_ENV") != "musl" || env("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let script = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("link/discard-unwind.ld");
    // x86_64 links through `cc` (options for ld after -Wl,); aarch64 through rust-lld directly
    // (.cargo/config.toml).
    let direct = ["rust-lld", "ld.lld", "lld"].iter().any(|l| env("RUSTC_LINKER").ends_with(l));
    for arg in ["--no-eh-frame-hdr".to_string(), format!("-T{}", script.display())] {
        if direct {
            println!("cargo:rustc-link-arg-bins={arg}");
        } else {
            println!("cargo:rustc-link-arg-bins=-Wl,{arg}");
        }
    }
}
