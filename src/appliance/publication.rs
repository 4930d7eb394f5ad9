//! What OneGate publication holds for the whole boot: the publisher (when OneGate is
//! configured) and who this VM is (role, Flower version) for FL_ERROR. [`super::Boot`] owns
//! the one [`Publication`] from the moment the context says where OneGate is to power-off;
//! `publish.rs` has the steps that fill and use it.

use crate::onegate::Publisher;
use crate::vocab::Role;
use std::time::Duration;

/// The publisher (when OneGate is configured) and who this VM is, for FL_ERROR.
#[derive(Default)]
pub struct Publication {
    pub(super) publisher: Option<Publisher>,
    /// Known once validated (or from a refused context, when it says).
    pub(super) role: Option<Role>,
    pub(super) flower_version: Option<String>,
}

impl Publication {
    /// The publisher, when OneGate is used.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }

    /// Queue `(name, value)` pairs (FL_RUN_*), when OneGate is used.
    pub fn set_pairs<K: AsRef<str>, V: AsRef<str>>(&self, pairs: impl IntoIterator<Item = (K, V)>) {
        if let Some(p) = &self.publisher {
            p.set_pairs(pairs);
        }
    }

    /// Let the publisher get its last PUT out (bounded), at shutdown.
    pub fn stop(self) {
        if let Some(p) = self.publisher {
            p.stop(Duration::from_secs(2));
        }
    }
}
