//! The OCI bundle (config.json) and the runc lifecycle: create/start, kill, delete. Issue #6.
//!
//! flower-init runs Flower in a container by invoking the `runc` binary directly. This module
//! holds the pieces, all of them plain and testable; the supervisor owns every process:
//! - [`oci`]: the container [`Spec`] (host network, read-only root, uid 49999, no
//!   capabilities, the mounts) and its pure translation to `config.json`; [`write_bundle`].
//! - [`runc`]: runc command lines as argument vectors, `runc state`/`list` parsing, and the
//!   stale-container clean-up at boot.
//! - [`output`]: the container's stdout/stderr split into lines with a role prefix, kept in a
//!   bounded ring for `/status`.
//! - [`rootfs`]: the read-only bind of the image that runc uses as the container's root.
//!
//! Layout inside the container (the image provides every mountpoint, its root is read-only):
//! `/app` = HOME (tmpfs, owned by the container user), `/state` = the state directory
//! (read-write), `/app/data` = the data directory (read-only), `/certs` = TLS files
//! (read-only, one bind per file), `/tmp` and `/run` = tmpfs.

pub mod oci;
pub mod output;
pub mod rootfs;
pub mod runc;

pub use oci::{Controllers, Limits, NICE_BACK_TO_ZERO, Spec, config_json, mem_total_at, memory_limit, nice_raisable, nofile_hard, seccomp_profile, write_bundle};
pub use output::OutputRing;
pub use rootfs::{DataAccess, ROOTFS_DIR, STATE_DB_TEMPLATE, bind_rootfs, data_access, prepare_state_dir, seed_state_db};
pub use runc::{Runc, State, Status, cleanup_stale, parse_list, parse_state};

/// A device node given to the container: an entry in `linux.devices` plus an allow rule in
/// `linux.resources.devices` (everything else stays denied). Produced by `gpu` for GPU nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceNode {
    /// Path inside the container, e.g. `/dev/nvidia0`.
    pub path: String,
    /// `'c'` (character) or `'b'` (block).
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    /// Permission bits of the node, e.g. `0o666`.
    pub file_mode: u32,
}

/// A read-only or read-write bind mount from the VM into the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BindMount {
    pub source: std::path::PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// uid and gid of the container's processes: user `app` of the image, as in Flower's images.
pub const CONTAINER_UID: u32 = 49999;
pub const CONTAINER_GID: u32 = 49999;
/// HOME inside the container (a tmpfs owned by [`CONTAINER_UID`]).
pub const HOME_DIR: &str = "/app";
/// The state directory inside the container (Flower's `--database`, checkpoints); on the host
/// it is `vocab::STATE_DIR`'s `flower/` subdirectory.
pub const CONTAINER_STATE_DIR: &str = "/state";
/// The data directory inside the container (read-only).
pub const DATA_DIR: &str = "/app/data";
/// The directory of the TLS files inside the container.
pub const CERTS_DIR: &str = "/certs";
/// The venv's bin directory in the image (first on PATH: flower-superlink starts
/// `flower-superexec` by name).
pub const VENV_BIN: &str = "/opt/flower/venv/bin";
/// The container's init: reaps the orphans Flower leaves (flower-superexec, flwr-serverapp,
/// flwr-clientapp are re-parented to the namespace's pid 1), forwards signals, exits with
/// Flower's status. Debian's `tini` package, in the image.
pub const CONTAINER_INIT: &str = "/usr/bin/tini";

/// The container's cgroup (`linux.cgroupsPath`): `/flower-init/<id>` under the cgroup root, where
/// `/status` reads its memory use.
pub fn cgroup_path(id: &str) -> String {
    format!("/flower-init/{id}")
}

#[cfg(test)]
mod tests;
