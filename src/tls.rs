//! TLS material: the SuperLink CA and server certificate (rcgen), persistence and reuse,
//! operator certificates validated with rustls/webpki, SuperNode trust. Issue #5.
//!
//! - SuperLink, no operator certificates: [`superlink_generated`] makes (first boot) or reuses
//!   an ECDSA P-256 CA and server certificate in a state directory, re-issuing the server
//!   certificate when its SAN set changes or it nears expiry ([`superlink`]).
//! - SuperLink, FL_SSL_*: `config` resolves the three values (`config::operator_value`),
//!   [`superlink_operator`] validates them (chain, dates, key, SANs, a real handshake).
//! - SuperNode: [`decide_supernode`] applies DESIGN.md's decision order, [`supernode_trust`]
//!   validates the CA and writes it for `--root-certificates`.
//! - FL_TLS_ENABLED=NO: nothing is generated; [`log_insecure`] with [`insecure_warning`] says
//!   so loudly.
//!
//! The container (uid 49999, read-only root) gets copies of ca.crt, server.pem and server.key
//! in a runtime directory (tmpfs), never the CA key; see docs/tls.md.

pub mod nodekey;
mod error;
mod fsio;
mod issue;
mod names;
mod operator;
mod superlink;
mod supernode;
mod verify;
mod x509;

pub use error::{TlsError, utc};
pub use issue::{BACKDATE_SECS, CA_VALIDITY_DAYS, RENEW_BEFORE_DAYS, Renewal, SERVER_VALIDITY_DAYS};
pub use names::{parse_extra_sans, parse_san, server_sans};
pub use operator::{validate_operator, ValidOperator};
pub use superlink::{CaOutcome, ServerOutcome};
pub use supernode::{decide_supernode, CaSource, InsecureReason, SuperNodeTls, SuperNodeTrust};
pub use verify::{certs_from_pem, fingerprint, key_from_pem, server_config};

use crate::vocab::Role;
use crate::container::BindMount;
use crate::config::OperatorPem;
use crate::vocab::San;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// File names, the same in the state directory and the runtime directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";

/// The user the Flower container runs as; it owns its copy of the server key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerUser {
    pub uid: u32,
    pub gid: u32,
}

impl ContainerUser {
    /// uid/gid 49999, as in Flower's own images.
    pub const FLOWER: ContainerUser = ContainerUser { uid: 49999, gid: 49999 };
}

/// The SuperLink's TLS files for the container, on the host (in the runtime directory): bind
/// them read-only and pass them as `--ssl-ca-certfile`, `--ssl-certfile`, `--ssl-keyfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl ContainerFiles {
    /// Read-only bind mounts of the three files to `dest_dir/{ca.crt,server.pem,server.key}`.
    pub fn bind_mounts(&self, dest_dir: &str) -> Vec<BindMount> {
        [(&self.ca_cert, CA_CERT), (&self.server_cert, SERVER_CERT), (&self.server_key, SERVER_KEY)]
            .into_iter()
            .map(|(src, name)| BindMount {
                source: src.clone(),
                destination: format!("{}/{name}", dest_dir.trim_end_matches('/')),
                read_only: true,
            })
            .collect()
    }
}

/// Where the SuperLink's certificates came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// flower-init's own CA on the state disk.
    Generated { ca: CaOutcome, server: ServerOutcome },
    /// FL_SSL_CA_CERTFILE / FL_SSL_CERTFILE / FL_SSL_KEYFILE.
    Operator,
}

/// A SuperLink ready for TLS: the container's files and what to publish and log.
#[derive(Debug, Clone)]
pub struct SuperLinkTls {
    pub files: ContainerFiles,
    /// The CA certificate(s), PEM: publish as FL_CA_CERT (base64) for SuperNodes.
    pub ca_pem: String,
    /// SHA-256 of the (first) CA certificate, `AB:CD:…`, for logs and /status.
    pub ca_fingerprint: String,
    pub ca_not_after: i64,
    pub server_not_after: i64,
    /// The server certificate's DNS/IP SANs.
    pub sans: Vec<San>,
    pub origin: Origin,
}

impl SuperLinkTls {
    /// One log line: origin, fingerprint, expiry, SANs (never a key).
    pub fn summary(&self) -> String {
        let origin = match &self.origin {
            Origin::Operator => "operator certificates (FL_SSL_*)".to_string(),
            Origin::Generated { ca, server } => format!(
                "own CA {}, server certificate {}",
                match ca {
                    CaOutcome::Reused => "reused",
                    CaOutcome::Created => "created",
                    CaOutcome::Regenerated { .. } => "REGENERATED",
                },
                match server {
                    ServerOutcome::Reused => "reused",
                    ServerOutcome::Issued { .. } => "issued",
                }
            ),
        };
        format!(
            "tls: {origin}; CA SHA-256 {}; server certificate valid until {}; SANs {}",
            self.ca_fingerprint,
            error::utc(self.server_not_after),
            self.sans.iter().map(San::to_string).collect::<Vec<_>>().join(" ")
        )
    }

    /// Whether a long-running SuperLink should re-run [`superlink_generated`] (and restart
    /// Flower) because its own server certificate is within [`RENEW_BEFORE_DAYS`] of expiry.
    /// Operator certificates are the operator's to renew: always false.
    pub fn renewal_due(&self, now: i64) -> bool {
        self.renewal_due_under(now, &Renewal::default())
    }

    /// [`SuperLinkTls::renewal_due`] with the lead time of `policy`.
    pub fn renewal_due_under(&self, now: i64, policy: &Renewal) -> bool {
        matches!(self.origin, Origin::Generated { .. }) && self.server_not_after - now < policy.renew_before
    }

    /// For operator certificates within `policy`'s lead time of expiry: the warning to log
    /// (flower-init cannot renew them). `None` for its own certificates or when far from expiry.
    pub fn operator_expiry_warning(&self, now: i64, policy: &Renewal) -> Option<String> {
        (matches!(self.origin, Origin::Operator) && self.server_not_after - now < policy.renew_before).then(|| {
            format!(
                "tls: the operator's server certificate (FL_SSL_CERTFILE) expires on {}{}: flower-init renews only its own \
                 certificates; give a new FL_SSL_CA_CERTFILE/FL_SSL_CERTFILE/FL_SSL_KEYFILE and reboot the SuperLink",
                error::utc(self.server_not_after),
                if self.server_not_after <= now { " (it HAS EXPIRED: SuperNodes cannot connect)" } else { "" }
            )
        })
    }
}

/// Now, as Unix seconds (the time argument of the `_at` functions).
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// SuperLink with flower-init's own CA: generate or reuse in `state_dir` (a directory on the
/// state disk that is *not* bind-mounted into the container), copy what Flower needs into
/// `runtime_dir` (tmpfs). `sans` comes from [`server_sans`].
pub fn superlink_generated(
    state_dir: &Path,
    runtime_dir: &Path,
    sans: &[San],
    user: ContainerUser,
) -> Result<SuperLinkTls, TlsError> {
    superlink::provision_at(state_dir, runtime_dir, sans, user, unix_now(), &Renewal::default())
}

/// [`superlink_generated`] under `policy`: at boot, and when the daily check of a running
/// SuperLink finds its server certificate due ([`SuperLinkTls::renewal_due_under`]).
pub fn superlink_generated_under(
    state_dir: &Path,
    runtime_dir: &Path,
    sans: &[San],
    user: ContainerUser,
    policy: &Renewal,
) -> Result<SuperLinkTls, TlsError> {
    superlink::provision_at(state_dir, runtime_dir, sans, user, unix_now(), policy)
}

/// SuperLink with operator certificates: validate them (see [`validate_operator`]; the SANs
/// must cover 127.0.0.1 and every address in `endpoints`, the ones published to OneGate) and
/// copy them into `runtime_dir`.
pub fn superlink_operator(
    pem: &OperatorPem,
    endpoints: &[San],
    runtime_dir: &Path,
    user: ContainerUser,
) -> Result<SuperLinkTls, TlsError> {
    operator::provision_at(pem, endpoints, runtime_dir, user, unix_now())
}

/// SuperNode: validate the CA (parseable CA certificates, in their validity period) and
/// write it to `runtime_dir/ca.crt` for `--root-certificates`. `ca_pem` may also be the
/// base64 of the PEM, as OneGate's FL_CA_CERT carries it.
pub fn supernode_trust(ca_pem: &[u8], source: CaSource, runtime_dir: &Path) -> Result<SuperNodeTrust, TlsError> {
    supernode::trust_at(ca_pem, source, runtime_dir, unix_now())
}

/// Check a SuperNode's CA as [`supernode_trust`] will (parses, is a CA, in date now) without
/// writing it; the SHA-256 of each certificate.
pub fn check_supernode_ca(ca_pem: &[u8], source: CaSource) -> Result<Vec<String>, TlsError> {
    Ok(supernode::check_ca_at(ca_pem, source, unix_now())?.iter().map(|c| fingerprint(c)).collect())
}

/// What to log when FL_TLS_ENABLED=NO on `role`: traffic in clear text, `--insecure` on both
/// sides. For a SuperNode that is insecure for another reason, see [`InsecureReason::warning`].
pub fn insecure_warning(role: Role) -> String {
    match role {
        Role::SuperLink => "TLS IS DISABLED (FL_TLS_ENABLED=NO): flower-superlink runs with --insecure and \
            SuperNodes must use --insecure too; model updates travel in clear text, and anyone who reaches \
            the port can use the unauthenticated Control API to start runs (= run code on this VM)"
            .to_string(),
        Role::SuperNode => InsecureReason::Disabled.warning(),
    }
}

/// Log an insecure-mode warning ([`insecure_warning`] or [`InsecureReason::warning`]) at
/// warning level, framed so it stands out on the console.
pub fn log_insecure(warning: &str) {
    log::warn!("tls: ********************************************************************");
    log::warn!("tls: {warning}");
    log::warn!("tls: ********************************************************************");
}

/// Write the container's copies: certificates 0644 root, the server key 0400 owned by
/// `user`, in `runtime_dir` (created 0755). Replaced atomically, so a container restart never
/// reads half a file.
fn install_for_container(
    runtime_dir: &Path,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    user: ContainerUser,
) -> Result<ContainerFiles, TlsError> {
    fsio::ensure_dir(runtime_dir, 0o755)?;
    let files = ContainerFiles {
        ca_cert: runtime_dir.join(CA_CERT),
        server_cert: runtime_dir.join(SERVER_CERT),
        server_key: runtime_dir.join(SERVER_KEY),
    };
    fsio::write_atomic(&files.ca_cert, ca_pem.as_bytes(), fsio::CERT_MODE, None)?;
    fsio::write_atomic(&files.server_cert, cert_pem.as_bytes(), fsio::CERT_MODE, None)?;
    fsio::write_atomic(&files.server_key, key_pem.as_bytes(), fsio::CONTAINER_KEY_MODE, Some((user.uid, user.gid)))?;
    Ok(files)
}

/// DER certificates as PEM text (64-column base64), for files rewritten from what was
/// validated.
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests;
