//! Typed, validated configuration for both roles. Issue #2.
//!
//! [`resolve`] turns a [`crate::context::Context`] and the [`ImageFacts`] into a [`Config`]
//! (grouped by concern: common, role, tls, gpu, network, onegate) or every problem at once;
//! variables, defaults and rules come from the table in [`crate::vars`].

pub mod join;
mod model;
mod network;
mod nodeconfig;
mod pem;
mod resolve;
mod reader;
mod wireguard;
pub mod values;

pub use join::{Join, on_own_network, own_networks, sha256};
pub use model::{
    Address, Checkpoint, Common, Config, CudaDevices, Database, Endpoint, Gpu, Host, Isolation, OneGate, RoleConfig,
    SuperLink, SuperNode, Tls,
};
pub use nodeconfig::{NodeConfig, NodeValue};
pub use pem::{OperatorPem, OperatorVar, decode_base64_pem, operator_value};
pub use resolve::{Rejected, Resolved, plaintext_refusal, resolve};
pub use reader::{Problem, Source, show_value};
pub use wireguard::{WireGuard, peers as wireguard_peers};

use crate::vocab::{Framework, Role, UseCase};
use serde::{Deserialize, Serialize};

/// What the appliance image provides; FLOWER_VERSION and ML_FRAMEWORK are checked against it.
/// Read from the image manifest (see `image.rs`); `check` without an image uses [`ImageFacts::builtin`].
/// As JSON (the manifest): `{"flower_version": "1.42.0", "framework": "sklearn", "use_cases":
/// ["image-classification"], "role": null}`; other keys are ignored, `role` may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    pub flower_version: String,
    pub framework: Framework,
    pub use_cases: Vec<UseCase>,
    /// A role-specific image may fix the role; the shared image leaves it to FL_ROLE.
    #[serde(default)]
    pub role: Option<Role>,
}

/// Flower version this source tree pins (python/flwr-version.txt).
pub const PINNED_FLOWER_VERSION: &str = "1.42.0";

impl ImageFacts {
    /// The default image variant built by `make image` (FRAMEWORK=sklearn).
    pub fn builtin() -> Self {
        ImageFacts {
            flower_version: PINNED_FLOWER_VERSION.into(),
            framework: Framework::Sklearn,
            use_cases: vec![UseCase::ImageClassification, UseCase::TabularClassification],
            role: None,
        }
    }
}

#[cfg(test)]
mod tests_resolve;
#[cfg(test)]
mod tests_join;
