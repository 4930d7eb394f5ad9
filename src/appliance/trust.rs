//! Whom to trust: the SuperLink's certificates (the operator's, or its own CA kept on the
//! state disk), or for a SuperNode, where its SuperLink is (static or OneGate discovery), its
//! data partition, and the CA it verifies the SuperLink with.

use super::Node;
use super::steps::{Boot, Failed, Note};
use crate::error::{Ctx, Error};
use crate::vocab::{Role, San};
use crate::{config, container, flower, onegate, tls};

/// SuperLink TLS: operator certificates, or our own CA and server certificate (reused across
/// boots from the state disk), or `--insecure` (loudly).
pub fn superlink(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    let sl_tls = boot.step("tls", |b| {
        if !node.cfg.tls.superlink_enabled() {
            tls::log_insecure(&tls::insecure_warning(Role::SuperLink));
            return Ok((None, Note::Warn("FL_TLS_ENABLED=NO: --insecure, traffic unencrypted".into())));
        }
        let runtime = b.layout.run_dir.join("tls");
        let hostname = node.cfg.network.hostname.clone();
        let t = match &node.cfg.tls.operator {
            Some(pem) => {
                let endpoints: Vec<San> = node.addrs.iter().map(|a| San::Ip(*a)).collect();
                tls::superlink_operator(pem, &endpoints, &runtime, tls::ContainerUser::FLOWER).ctx("use the operator certificates (FL_SSL_*)")?
            }
            None => {
                let sans = tls::server_sans(&node.addrs, hostname.as_deref(), &node.cfg.tls.extra_sans);
                tls::superlink_generated_under(&b.layout.state_dir.join("tls"), &runtime, &sans, tls::ContainerUser::FLOWER, &b.layout.tls_renewal)
                    .ctx("make the SuperLink certificate")?
            }
        };
        let note = t.summary();
        Ok((Some(t), Note::Ok(note)))
    })?;
    if let Some(t) = sl_tls {
        boot.report.tls = Some((&t).into());
        boot.show();
        node.tls = Some((t.ca_pem.clone(), t.files.bind_mounts(container::CERTS_DIR)));
        node.superlink_tls = Some(t);
    }
    Ok(())
}

/// SuperNode: find the SuperLink (static address or OneGate), the partition, and whom to trust.
pub fn supernode(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    let found = boot.step("discovery", |b| {
        let sn = node.cfg.role.supernode().ok_or_else(|| Error::msg("discover the SuperLink", "not a SuperNode"))?;
        let client = onegate::client_from_config(&node.cfg.onegate);
        let input = onegate::DiscoveryInput {
            static_address: sn.superlink.as_ref(),
            want_partition: sn.node_config.is_none(),
            attempts: sn.discovery_retries,
            interval: sn.discovery_interval,
        };
        let sv = &mut b.sv;
        let found = onegate::discover(client.as_ref(), &input, &mut |d| sv.sleep(d))
            .map_err(|e| Error::msg("discover the SuperLink", e.to_string()))?;
        if let onegate::PartitionOutcome::Skipped(why) = &found.partition {
            log::warn!("FL_NODE_CONFIG is empty and no partition could be computed: {why}");
        }
        let source = if sn.join.is_some() { "FL_JOIN".to_string() } else { format!("{:?}", found.superlink.source) };
        let note = format!("SuperLink {} ({source}), {} requests", found.superlink.address, found.requests);
        Ok((found, Note::Ok(note)))
    })?;
    let sn = node.cfg.role.supernode().cloned();
    let (nc, pid) = onegate::node_config(sn.as_ref().and_then(|s| s.node_config.as_ref()), &found.partition);
    node.node_config = nc.map(|c| c.to_arg());
    node.partition_id = pid;
    node.participation.partition_id = pid;
    node.superlink = Some(found.superlink.address.clone());
    let trust = boot.step("tls", |b| {
        let decision = tls::decide_supernode(
            node.cfg.tls.enabled,
            found.superlink.tls,
            node.cfg.tls.ca_pem.as_deref().map(str::as_bytes),
            found.superlink.ca_pem.as_deref(),
        )
        .ctx("decide the SuperNode's TLS")?;
        let joined = node.cfg.role.supernode().is_some_and(|s| s.join.is_some());
        match decision {
            tls::SuperNodeTls::Verify { ca_pem, source } => {
                let source = if joined && source == tls::CaSource::Context { tls::CaSource::Join } else { source };
                let t = tls::supernode_trust(&ca_pem, source, &b.layout.run_dir.join("tls")).ctx("trust the SuperLink's CA")?;
                let note = format!("trusting the CA from {} (SHA-256 {})", t.source.name(), t.fingerprints.join(", "));
                let pem = String::from_utf8_lossy(&ca_pem).into_owned();
                Ok((Some((pem, vec![t.bind_mount(&flower::supernode_ca_path())])), Note::Ok(note)))
            }
            tls::SuperNodeTls::Insecure { reason } => {
                // Never plain text across sites: `config` refused it for a static or joined
                // address; a SuperLink found through OneGate is checked here, the same way.
                // Nothing saying TLS at all (Unspecified) keeps its warning, as in `check`.
                let wan = if reason == tls::InsecureReason::Unspecified {
                    None
                } else {
                    config::plaintext_refusal(&found.superlink.address, node.cfg.tls.allow_plaintext_wan, &node.cfg.network)
                        .map_err(|why| Error::msg("decide the SuperNode's TLS", why))?
                };
                let w = reason.warning();
                tls::log_insecure(&w);
                let w = match wan {
                    Some(wan) => {
                        tls::log_insecure(&wan);
                        format!("{w}; {wan}")
                    }
                    None => w,
                };
                Ok((None, Note::Warn(w)))
            }
        }
    })?;
    node.tls = trust;
    // SuperNode authentication: the key, published before Flower starts (the SuperLink
    // registers it from OneGate; Flower refuses an unregistered key at connection).
    let on_onegate = matches!(found.superlink.source, onegate::SuperLinkSource::OneGate { .. });
    super::admit::node_key(boot, node, found.superlink.auth, on_onegate)
}
