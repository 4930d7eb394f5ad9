//! flower-init as a library: every concern is a module, so tests and the fuzz target can call
//! the same code the binary runs. `main.rs` only calls [`cli::run`].
//!
//! Failure policy by phase (see README "How it fails"):
//! - before the workload starts, a failing step is recorded in [`status`], reported to OneGate
//!   as FL_ERROR where possible, and the init *stays up* answering 503 on the health port;
//! - once supervision has started, nothing exits: errors are logged and retried;
//! - a panic logs, syncs and powers the VM off ([`power`]) instead of a kernel panic.

pub mod acpi;
pub mod appliance;
pub mod boot;
pub mod cdrom;
pub mod cli;
pub mod config;
pub mod container;
pub mod context;
pub mod error;
pub mod flower;
pub mod fsutil;
pub mod gateway;
pub mod gpu;
pub mod health;
pub mod image;
pub mod kmod;
pub mod logger;
pub mod mount;
pub mod net;
pub mod oneflow;
pub mod onegate;
pub mod power;
pub mod runconfig;
pub mod secret;
pub mod status;
pub mod supervisor;
pub mod tls;
pub mod vars;
