//! Stamps the crate version and the git commit into the binary for `flower-init version`.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let commit = if dirty { format!("{commit}-dirty") } else { commit };
    println!("cargo:rustc-env=FLOWER_INIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // A commit moves the branch ref, not HEAD itself.
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{r}");
        }
    }
    println!("cargo:rerun-if-changed=.git/index");
    println!("cargo:rerun-if-env-changed=FLOWER_INIT_COMMIT");
}
