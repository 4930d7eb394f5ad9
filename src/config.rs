//! Typed, validated configuration for both roles, and `flower-init check`. Issue #2.
//!
//! The small enums below are shared vocabulary: other modules take them as inputs.
//! [`resolve`] turns a [`crate::context::Context`] and the [`ImageFacts`] into a [`Config`]
//! (grouped by concern: common, role, tls, gpu, network, onegate) or every problem at once;
//! variables, defaults and rules come from the table in [`crate::vars`].

mod check;
mod model;
mod network;
mod nodeconfig;
mod resolve;
mod resolver;
pub mod values;

pub use check::{cli_check, image_facts};
pub use model::{
    Address, Checkpoint, Common, Config, CudaDevices, Database, Endpoint, Gpu, Host, Isolation, OneGate, RoleConfig,
    SuperLink, SuperNode, Tls,
};
pub use nodeconfig::{NodeConfig, NodeValue};
pub use resolve::{Rejected, Resolved, resolve};
pub use resolver::{Problem, Source, show_value};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The state disk's mount point (label `FL_STATE`): Flower's database and checkpoints.
pub const STATE_DIR: &str = "/var/lib/flower";
/// The image manifest `check` reads when no `--image` is given (written by `make image`).
pub const IMAGE_MANIFEST: &str = "/etc/flower-init/image.json";

/// Which Flower component this VM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    SuperLink,
    SuperNode,
}

/// The ML framework of an image variant (ML_FRAMEWORK must match the image's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    PyTorch,
    TensorFlow,
    Sklearn,
}

/// A bundled use case (FL_USE_CASE); `None` means "idle, submit your own app with `flwr run`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UseCase {
    None,
    ImageClassification,
    TabularClassification,
    LlmFineTuning,
}

/// Aggregation strategy (FL_STRATEGY), Flower's Message-API classes of the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Strategy {
    FedAvg,
    FedProx,
    FedAdam,
    Krum,
    Bulyan,
    FedTrimmedAvg,
}

/// FL_LOG_LEVEL, also Flower's `FLWR_LOG_LEVEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

/// Defines `FromStr` (case-insensitive, listing the accepted words on error), `Display` and
/// `ALL` for a unit enum, from one table of (variant, canonical word).
macro_rules! words {
    ($t:ty { $($v:ident => $w:literal),+ $(,)? }) => {
        impl $t {
            /// Every variant, in documentation order.
            pub const ALL: &'static [$t] = &[$(<$t>::$v),+];
            /// The canonical spelling (what the README and `check` print).
            pub fn as_str(&self) -> &'static str {
                match self { $(<$t>::$v => $w),+ }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case($w) { return Ok(<$t>::$v); })+
                Err(format!("must be one of {}", [$($w),+].join(", ")))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words!(Role { SuperLink => "superlink", SuperNode => "supernode" });
words!(Framework { PyTorch => "pytorch", TensorFlow => "tensorflow", Sklearn => "sklearn" });
words!(UseCase {
    None => "none",
    ImageClassification => "image-classification",
    TabularClassification => "tabular-classification",
    LlmFineTuning => "llm-fine-tuning",
});
words!(Strategy {
    FedAvg => "FedAvg",
    FedProx => "FedProx",
    FedAdam => "FedAdam",
    Krum => "Krum",
    Bulyan => "Bulyan",
    FedTrimmedAvg => "FedTrimmedAvg",
});
words!(LogLevel { Debug => "DEBUG", Info => "INFO", Warning => "WARNING", Error => "ERROR" });

impl UseCase {
    /// Frameworks whose image variant ships this use case (no fallback between variants).
    pub fn frameworks(&self) -> &'static [Framework] {
        match self {
            UseCase::None => Framework::ALL,
            UseCase::ImageClassification => &[Framework::PyTorch, Framework::TensorFlow, Framework::Sklearn],
            UseCase::TabularClassification => &[Framework::Sklearn],
            UseCase::LlmFineTuning => &[Framework::PyTorch],
        }
    }
}

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

impl ImageFacts {
    /// Read an image manifest (JSON written by `make image`); the one reader is
    /// [`crate::image::load_file`], which validates the whole file (app schema included).
    pub fn load(path: &Path) -> crate::error::Result<ImageFacts> {
        crate::image::load_file(path).map(|m| m.facts)
    }
}

#[cfg(test)]
mod tests_resolve;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_case_insensitively_and_list_choices() {
        assert_eq!("fedprox".parse::<Strategy>(), Ok(Strategy::FedProx));
        assert_eq!("SuperNode".parse::<Role>(), Ok(Role::SuperNode));
        assert_eq!(Strategy::FedTrimmedAvg.to_string(), "FedTrimmedAvg");
        let e = "fedsgd".parse::<Strategy>().unwrap_err();
        assert_eq!(e, "must be one of FedAvg, FedProx, FedAdam, Krum, Bulyan, FedTrimmedAvg");
        assert_eq!(serde_json::to_string(&UseCase::LlmFineTuning).unwrap(), "\"llm-fine-tuning\"");
    }

    #[test]
    fn llm_needs_pytorch() {
        assert_eq!(UseCase::LlmFineTuning.frameworks(), &[Framework::PyTorch]);
    }
}
