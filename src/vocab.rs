//! The appliance's vocabulary: the small value types every layer speaks (a role, a framework,
//! a use case, a strategy, a log level, a CIDR, a certificate name, a version). Bottom layer:
//! it imports nothing of this crate, so any module may take its words from here without
//! pulling a concern in with them.

mod cidr;
mod san;

pub use cidr::{CONTROL_ALLOW_VAR, Cidr, any_contains, canonical, loopback, parse_cidr_list};
pub use san::San;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state disk's mount point (label `FL_STATE`): Flower's database, checkpoints, the CA.
pub const STATE_DIR: &str = "/var/lib/flower";

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


/// `X.Y.Z`, decimal, no leading zeros.
pub fn semver(s: &str) -> Result<(u64, u64, u64), String> {
    let parts: Vec<&str> = s.trim().split('.').collect();
    let num = |p: &str| -> Option<u64> {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0')))
            .then(|| p.parse().ok())
            .flatten()
    };
    match parts.as_slice() {
        [a, b, c] => match (num(a), num(b), num(c)) {
            (Some(a), Some(b), Some(c)) => Ok((a, b, c)),
            _ => Err("must be a version X.Y.Z".into()),
        },
        _ => Err("must be a version X.Y.Z".into()),
    }
}

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

    #[test]
    fn semver_is_three_plain_numbers() {
        assert_eq!(semver("1.42.0"), Ok((1, 42, 0)));
        for bad in ["1.42", "1.42.0.1", "v1.42.0", "1.042.0", "1.42.0-rc1", "1..0", ""] {
            assert!(semver(bad).is_err(), "{bad}");
        }
    }

}
