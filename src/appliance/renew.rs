//! The running SuperLink's certificates (issue #14 item 2): checked by a timer of the
//! supervision loop (daily in a VM, `Layout::tls_check_every`). flower-init's own server
//! certificate is re-issued ahead of expiry (same CA, so SuperNodes are unaffected), the
//! gateway process reloads it (SIGHUP) for new connections without dropping the open ones, and Flower's
//! container, which holds the certificate, is restarted. Operator certificates only warn.

use super::Node;
use super::steps::Boot;
use crate::tls;

/// What the check did; `Reissued` asks the loop to restart Flower's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checked {
    /// No TLS, or nothing due.
    Nothing,
    /// Operator certificates near or past expiry: logged.
    Warned,
    /// A new server certificate is in place and the gateway serves it.
    Reissued,
    /// Renewal was due and failed (logged); the old certificate stays until the next check.
    Failed,
}

/// One check at `now` (Unix seconds) under the layout's policy.
pub(super) fn check(b: &mut Boot, node: &mut Node, now: i64) -> Checked {
    let policy = b.layout.tls_renewal;
    let Some(t) = &node.superlink_tls else { return Checked::Nothing };
    if let Some(w) = t.operator_expiry_warning(now, &policy) {
        log::warn!("{w}");
        return Checked::Warned;
    }
    if !t.renewal_due_under(now, &policy) {
        return Checked::Nothing;
    }
    let sans = t.sans.clone();
    let old_until = t.server_not_after;
    let state = b.layout.state_dir.join("tls");
    let runtime = b.layout.run_dir.join("tls");
    let new = match tls::superlink_generated_under(&state, &runtime, &sans, tls::ContainerUser::FLOWER, &policy) {
        Ok(new) => new,
        Err(e) => {
            log::error!("tls: renewing the server certificate (valid until {}) failed: {e}; trying again at the next check", tls::utc(old_until));
            return Checked::Failed;
        }
    };
    log::info!("tls: renewed the server certificate ahead of expiry: {}", new.summary());
    if let Some(g) = &node.gateway {
        g.reload();
    }
    b.report.tls = Some((&new).into());
    node.superlink_tls = Some(new);
    Checked::Reissued
}
