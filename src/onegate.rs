//! OneGate client: READY and attribute publication, `GET /vm`, `/service`, `/vms/:id`;
//! SuperNode discovery of the SuperLink. Issue #4.
//!
//! The server side is OpenNebula's `src/onegate/onegate-server.rb` (a Sinatra app); the client
//! we copy on the wire is one-apps' `context-linux/src/usr/bin/onegate.rb`. Layers:
//! - [`wire`]: pure request building and value encoding (tests compare bytes);
//! - [`model`]: tolerant parsing of the JSON shapes `build_vm_hash`/`build_service_hash` emit;
//! - [`Client`]: one HTTP exchange per try ([`crate::http`]), named timeouts, bounded retries;
//! - [`publish`]: the attribute contract of DESIGN.md; [`publisher`]: the background
//!   [`Publisher`] thread (publication failure is degraded, never fatal; one failing attribute
//!   never holds back the others; only what USER_TEMPLATE holds is deleted);
//! - [`discover`]: SuperNode discovery (FL_SUPERLINK_ADDRESS > OneGate > fail) with a constant
//!   number of requests per attempt, and partition assignment from the same answer.
//!
//! The token is a [`Secret`]: it leaves the program only in the `X-ONEGATE-TOKEN` header.

mod client;
mod discover;
mod error;
pub mod model;
mod partition;
mod publish;
mod publisher;
pub mod wire;

pub use client::{Client, Policy, Reply};
pub use discover::{Discovered, DiscoveryError, DiscoveryInput, SuperLinkInfo, SuperLinkSource, discover};
pub use partition::{Partition, PartitionOutcome, node_config, partition_for};
pub use error::OneGateError;
pub use model::{Nic, Node, RoleInfo, ServiceInfo, VmInfo};
pub use publish::{
    Attributes, SuperLinkFacts, SuperNodeFacts, error_text, failure_attributes, superlink_attributes, supernode_attributes,
};
pub use publisher::{AttributeFailure, Publisher, PublisherState, Waker};

use std::time::Duration;

/// Wall-clock limit of one HTTP exchange (connect, send, read), DNS included. The Ruby client
/// has none of its own (Net::HTTP's 60 s defaults); a PID 1 must not wait that long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer body accepted (a bigger one is an error, retried like a 5xx). `GET
/// /service?extended=true` is the biggest answer: a few KiB of JSON per VM of the service.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Tries of one call ([`Client::call`]) before its error is returned.
pub const CALL_ATTEMPTS: u32 = 3;
/// First pause between tries; doubled after each failure up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest pause between tries of a call.
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Longest pause between the background publisher's tries: it retries forever, this often at
/// worst, so a OneGate that comes back is noticed within a minute.
pub const PUBLISH_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The OneFlow role whose VM is the SuperLink (the name both appliances' templates use).
pub const SUPERLINK_ROLE: &str = "superlink";

/// Where this VM reaches OneGate, as the context gives it: endpoint, VMID and token.
/// `None` when one of them is missing (see `config::OneGate::is_usable`).
pub fn client_from_config(og: &crate::config::OneGate) -> Option<Client> {
    match (&og.endpoint, og.vmid, &og.token) {
        (Some(e), Some(vmid), Some(token)) => Some(Client::new(e, vmid, token.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
