//! SuperNode discovery: FL_SUPERLINK_ADDRESS > OneGate > fail, FL_DISCOVERY_RETRIES attempts
//! FL_DISCOVERY_INTERVAL apart; the partition comes from the same answers.
//!
//! One attempt is a constant number of requests, whatever the size of the service:
//! `GET /service` (the reduced node records, one flow-document read and one `vm.info` on the
//! server) to find the `superlink` role's VM, then `GET /vms/<that id>` for its USER_TEMPLATE
//! (FL_ENDPOINT, FL_TLS, FL_CA_CERT, FL_VERSION). The alternative, one `GET /service?extended=true`,
//! is a single request but makes the server call `vm.info` for *every* node and send every full
//! VM (`build_service_hash` with `extended`, `onegate-server.rb` l.685-692): with 1,000
//! SuperNodes booting, a million oned calls and hundreds of megabytes. Two small requests win.
//!
//! A SuperLink's answer is complete when it says READY=YES, or FL_READY=YES together with
//! FL_TLS: flower-init publishes everything in one PUT, while the older public appliance
//! publishes one attribute per request (FL_READY first, FL_CA_CERT last) and READY=YES at the
//! very end, so a half-published SuperLink is waited for, not taken as "no TLS".

use super::client::Client;
use super::model::{self, VmInfo};
use super::wire::HttpRequest;
use super::{OneGateError, SUPERLINK_ROLE};
use crate::config::{Address, values};
use super::partition::{Partition, PartitionOutcome, partition_for};
use std::fmt;
use std::time::Duration;

/// What the SuperNode's configuration says about finding the SuperLink.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryInput<'a> {
    /// FL_SUPERLINK_ADDRESS: skips looking the SuperLink up.
    pub static_address: Option<&'a Address>,
    /// FL_NODE_CONFIG is empty: compute partition-id/num-partitions from the OneFlow role.
    pub want_partition: bool,
    /// FL_DISCOVERY_RETRIES: attempts before giving up (at least 1).
    pub attempts: u32,
    /// FL_DISCOVERY_INTERVAL: pause between attempts.
    pub interval: Duration,
}

/// Where the SuperLink's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperLinkSource {
    Static,
    OneGate { vmid: u64 },
}

/// The SuperLink as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperLinkInfo {
    pub address: Address,
    pub source: SuperLinkSource,
    /// Its FL_TLS (`None`: not published, or a static address) — `tls::decide_supernode`'s
    /// `onegate_tls`.
    pub tls: Option<bool>,
    /// Its FL_CA_CERT, base64-decoded to PEM — `tls::decide_supernode`'s `onegate_ca`.
    pub ca_pem: Option<Vec<u8>>,
    /// Its FL_VERSION.
    pub version: Option<String>,
    /// Its FL_NODE_AUTH: whether it requires SuperNode authentication (`None`: not said).
    pub auth: Option<bool>,
}

/// The result of [`discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub superlink: SuperLinkInfo,
    pub partition: PartitionOutcome,
    /// Attempts made and requests sent (0 with a static address and no partition to compute).
    pub attempts: u32,
    pub requests: u32,
}

/// Why there is no SuperLink to connect to (all fatal for the boot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// No FL_SUPERLINK_ADDRESS and OneGate is not usable.
    NoOneGate,
    /// OneGate says this VM is not in a OneFlow service (`Empty or invalid SERVICE_ID`).
    NotInService(String),
    /// The service has no role named `superlink`.
    NoSuperLinkRole { roles: Vec<String> },
    /// The SuperLink's FL_CA_CERT is not base64.
    BadCa { vmid: u64, why: String },
    /// Every attempt failed; the last reason.
    Exhausted { attempts: u32, last: String },
    /// The pump asked to stop (SIGTERM during boot).
    Aborted,
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::NoOneGate => f.write_str(
                "FL_SUPERLINK_ADDRESS is unset and OneGate is not usable (ONEGATE_ENDPOINT, VMID or token missing): \
                 give FL_SUPERLINK_ADDRESS=host:port, or TOKEN=YES in the VM template",
            ),
            DiscoveryError::NotInService(body) => write!(
                f,
                "FL_SUPERLINK_ADDRESS is unset and this VM is not part of a OneFlow service (OneGate: {body:?}): \
                 deploy it with the Flower service template, or give FL_SUPERLINK_ADDRESS=host:port"
            ),
            DiscoveryError::NoSuperLinkRole { roles } => write!(
                f,
                "the OneFlow service has no role named {SUPERLINK_ROLE:?} (roles: {}); name the SuperLink's role \
                 {SUPERLINK_ROLE:?} or give FL_SUPERLINK_ADDRESS",
                roles.join(", ")
            ),
            DiscoveryError::BadCa { vmid, why } => {
                write!(f, "the SuperLink (VM {vmid}) publishes an FL_CA_CERT that is not base64: {why}")
            }
            DiscoveryError::Exhausted { attempts, last } => {
                write!(f, "no SuperLink found through OneGate after {attempts} attempts; last: {last}")
            }
            DiscoveryError::Aborted => f.write_str("SuperLink discovery interrupted"),
        }
    }
}

impl std::error::Error for DiscoveryError {}

/// What one attempt concluded.
enum Step {
    Done(Option<SuperLinkInfo>, Option<Partition>),
    Retry(String),
    NotInService(String),
    Fatal(DiscoveryError),
}

/// Find the SuperLink (and the partition). `pump(d)` is called between attempts to wait `d`
/// while the caller keeps serving health probes and watching for SIGTERM; it returns false to
/// stop (→ [`DiscoveryError::Aborted`]). Each attempt sends at most two requests, each a single
/// try bounded by the client's timeout.
pub fn discover(
    client: Option<&Client>,
    input: &DiscoveryInput<'_>,
    pump: &mut dyn FnMut(Duration) -> bool,
) -> Result<Discovered, DiscoveryError> {
    let fixed = input.static_address.map(|a| SuperLinkInfo {
        address: a.clone(),
        source: SuperLinkSource::Static,
        tls: None,
        ca_pem: None,
        version: None,
        auth: None,
    });
    let Some(client) = client else {
        return match fixed {
            Some(superlink) => Ok(Discovered {
                superlink,
                partition: if input.want_partition {
                    PartitionOutcome::Skipped("OneGate is not usable, so the OneFlow role is unknown".into())
                } else {
                    PartitionOutcome::NotWanted
                },
                attempts: 0,
                requests: 0,
            }),
            None => Err(DiscoveryError::NoOneGate),
        };
    };
    if let (Some(superlink), false) = (&fixed, input.want_partition) {
        return Ok(Discovered {
            superlink: superlink.clone(),
            partition: PartitionOutcome::NotWanted,
            attempts: 0,
            requests: 0,
        });
    }
    let tries = input.attempts.max(1);
    let mut requests = 0;
    let mut last = String::new();
    for n in 1..=tries {
        if n > 1 && !pump(input.interval) {
            return Err(DiscoveryError::Aborted);
        }
        let step = attempt(client, fixed.is_none(), input.want_partition, &mut requests);
        let partition = |p: Option<Partition>| match p {
            _ if !input.want_partition => PartitionOutcome::NotWanted,
            Some(p) => PartitionOutcome::Assigned(p),
            None => PartitionOutcome::Skipped("this VM is not listed in its OneFlow role".into()),
        };
        match step {
            Step::Done(found, p) => {
                // An attempt without a static address only ends Done with the SuperLink found.
                let Some(superlink) = found.or_else(|| fixed.clone()) else { continue };
                return Ok(Discovered { superlink, partition: partition(p), attempts: n, requests });
            }
            Step::NotInService(body) => match &fixed {
                Some(s) => {
                    let why = format!("this VM is not part of a OneFlow service (OneGate: {body:?})");
                    return Ok(Discovered {
                        superlink: s.clone(),
                        partition: PartitionOutcome::Skipped(why),
                        attempts: n,
                        requests,
                    });
                }
                None => return Err(DiscoveryError::NotInService(body)),
            },
            Step::Fatal(e) => return Err(e),
            Step::Retry(why) => {
                log::info!(
                    "onegate: discovery attempt {n}/{tries}: {why}{}",
                    if n < tries { format!("; next in {} s", input.interval.as_secs()) } else { String::new() }
                );
                last = why;
            }
        }
    }
    match fixed {
        Some(superlink) => Ok(Discovered {
            superlink,
            partition: PartitionOutcome::Skipped(format!("OneFlow role not readable after {tries} attempts: {last}")),
            attempts: tries,
            requests,
        }),
        None => Err(DiscoveryError::Exhausted { attempts: tries, last }),
    }
}

/// One attempt: `GET /service`, then (when the SuperLink is needed) `GET /vms/<id>`.
fn attempt(client: &Client, need_superlink: bool, want_partition: bool, requests: &mut u32) -> Step {
    *requests += 1;
    let service = match client.get_once(&HttpRequest::get_service(false), model::parse_service) {
        Ok(s) => s,
        // get_service() with no SERVICE_ID in the VM's USER_TEMPLATE (onegate-server.rb).
        Err(OneGateError::Http { status: 400, body, .. }) if body.contains("Empty or invalid SERVICE_ID") => {
            return Step::NotInService(body.trim().to_string());
        }
        Err(e) => return Step::Retry(e.to_string()),
    };
    let partition = partition_for(&service, client.vmid());
    if want_partition && partition.is_none() {
        return Step::Retry(format!("VM {} is not yet listed in the service's roles", client.vmid()));
    }
    if !need_superlink {
        return Step::Done(None, partition);
    }
    let Some(role) = service.role(SUPERLINK_ROLE) else {
        return Step::Fatal(DiscoveryError::NoSuperLinkRole {
            roles: service.roles.iter().map(|r| r.name.clone()).collect(),
        });
    };
    let Some(id) = role.nodes.iter().map(|n| n.deploy_id).min() else {
        return Step::Retry(format!("the {SUPERLINK_ROLE:?} role has no VM yet"));
    };
    *requests += 1;
    match client.get_once(&HttpRequest::get_vm_by_id(id), model::parse_vm) {
        Ok(vm) => match superlink_from(&vm) {
            Ok(Some(info)) => Step::Done(Some(info), partition),
            Ok(None) => Step::Retry(not_ready_reason(&vm)),
            Err(e) => Step::Fatal(e),
        },
        Err(e) => Step::Retry(e.to_string()),
    }
}

/// The SuperLink's published facts, `None` while incomplete (see the module documentation).
pub(super) fn superlink_from(vm: &VmInfo) -> Result<Option<SuperLinkInfo>, DiscoveryError> {
    let Some(address) = vm.attr("FL_ENDPOINT").and_then(endpoint) else { return Ok(None) };
    let tls = match vm.attr("FL_TLS").map(str::to_ascii_uppercase).as_deref() {
        Some("YES") => Some(true),
        Some("NO") => Some(false),
        _ => None,
    };
    let complete = vm.attr("READY") == Some("YES") || (vm.attr("FL_READY") == Some("YES") && tls.is_some());
    if !complete {
        return Ok(None);
    }
    let ca_pem = match vm.attr("FL_CA_CERT") {
        None => None,
        Some(b64) => {
            use base64::Engine;
            let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(clean.as_bytes()) {
                Ok(pem) => Some(pem),
                Err(e) => return Err(DiscoveryError::BadCa { vmid: vm.id, why: e.to_string() }),
            }
        }
    };
    Ok(Some(SuperLinkInfo {
        address,
        source: SuperLinkSource::OneGate { vmid: vm.id },
        tls,
        ca_pem,
        version: vm.attr("FL_VERSION").map(str::to_string),
        auth: match vm.attr("FL_NODE_AUTH").map(str::to_ascii_uppercase).as_deref() {
            Some("YES") => Some(true),
            Some("NO") => Some(false),
            _ => None,
        },
    }))
}

/// FL_ENDPOINT as host:port; a value that is not (an IPv6 `[addr]:port` has brackets, which
/// `escape_attr` mangles, so it is published base64) is tried as base64.
fn endpoint(v: &str) -> Option<Address> {
    use base64::Engine;
    values::host_port(v).ok().or_else(|| {
        let raw = base64::engine::general_purpose::STANDARD.decode(v.trim()).ok()?;
        values::host_port(std::str::from_utf8(&raw).ok()?).ok()
    })
}

/// Why a SuperLink VM does not count as found yet, for the attempt's log line.
fn not_ready_reason(vm: &VmInfo) -> String {
    let id = vm.id;
    let error = vm.attr("FL_ERROR").map(|e| format!(" (its FL_ERROR: {e})")).unwrap_or_default();
    match vm.attr("FL_ENDPOINT") {
        None => format!("the SuperLink (VM {id}) has not published FL_ENDPOINT yet{error}"),
        Some(e) if endpoint(e).is_none() => {
            format!("the SuperLink (VM {id}) publishes FL_ENDPOINT={e:?}, which is not host:port{error}")
        }
        Some(_) if vm.attr("FL_READY") == Some("NO") => format!("the SuperLink (VM {id}) reports FL_READY=NO{error}"),
        Some(_) => format!(
            "the SuperLink (VM {id}) has not finished publishing (no READY=YES, or FL_READY without FL_TLS){error}"
        ),
    }
}
