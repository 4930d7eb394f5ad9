//! flower-init as a library: every concern is a module, so tests and the fuzz target can call
//! the same code the binary runs. `main.rs` only calls [`cli::run`].
//!
//! The modules stand in layers, lowest first; a module imports only from its own layer (without
//! circles) and the layers below. The map, one line per module, is in docs/HACKING.md
//! ("Module map"); `tests/layers.rs` fails when an import breaks it.
//!
//! - base: [`vocab`], [`error`], [`secret`], [`fsutil`], [`logger`], [`status`], [`args`]
//! - machine: [`context`], [`cdrom`], [`net`], [`mount`], [`kmod`], [`acpi`], [`health`],
//!   [`supervisor`], [`power`], [`container`], [`gpu`], [`grow`]
//! - configuration: [`vars`], [`config`]
//! - services: [`tls`], [`runconfig`], [`image`], [`flower`], [`onegate`], [`oneflow`], [`gateway`]
//! - boot: [`appliance`], then the two boot scripts [`pid1`] and [`service`]
//! - commands: [`cli`] (the dispatcher), [`check`], [`supervise`], [`gpu_bundle`]

pub mod acpi;
pub mod appliance;
pub mod args;
pub mod cdrom;
pub mod check;
pub mod cli;
pub mod config;
pub mod container;
pub mod context;
pub mod error;
pub mod flower;
pub mod fsutil;
pub mod gateway;
pub mod gpu;
pub mod gpu_bundle;
pub mod grow;
pub mod health;
pub mod http;
pub mod image;
pub mod join;
pub mod kmod;
pub mod logger;
pub mod mount;
pub mod net;
pub mod nodeauth;
pub mod oneflow;
pub mod onegate;
pub mod pid1;
pub mod power;
pub mod rtc;
pub mod runconfig;
pub mod secret;
pub mod service;
pub mod status;
pub mod supervise;
pub mod supervisor;
pub mod tls;
pub mod vars;
pub mod vocab;
pub mod wg;
