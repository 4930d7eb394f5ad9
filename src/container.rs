//! The OCI bundle (config.json) and the runc lifecycle: create/start, kill, delete. Issue #6.

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
