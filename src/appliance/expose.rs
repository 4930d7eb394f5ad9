//! The SuperLink's gateway: Flower's Fleet API exposed on the NIC addresses (Flower itself
//! listens on loopback only), the Control API only to FL_CONTROL_ALLOW. Issue #10.

use super::Node;
use super::steps::{Boot, Failed, Note};
use crate::gateway::{self, GatewayConfig};
use crate::{flower, tls};
use std::net::SocketAddr;

/// SuperLink: the Fleet-only gateway on the NIC addresses (issue #10).
pub(super) fn start(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    let sl = node.cfg.role.superlink().cloned();
    let gw = boot.step("gateway", |b| {
        let listen: Vec<SocketAddr> = node.addrs.iter().map(|ip| SocketAddr::new(*ip, flower::SUPERLINK_PORT)).collect();
        if listen.is_empty() {
            return Ok((None, Note::Skip("no NIC address: Flower is reachable on loopback only".into())));
        }
        let allow = sl.map(|s| s.control_allow).unwrap_or_default();
        let runtime = b.layout.run_dir.join("tls");
        let tls_files = node.tls.as_ref().map(|_| gateway::ServerTlsFiles { cert: runtime.join(tls::SERVER_CERT), key: runtime.join(tls::SERVER_KEY) });
        let upstream_ca = node.tls.as_ref().map(|_| runtime.join(tls::CA_CERT));
        let cfg = GatewayConfig {
            listen: listen.clone(),
            control: Some(gateway::ControlConfig::from_allow(allow, &node.addrs, gateway::DEFAULT_CONTROL_PORT)),
            tls: tls_files,
            upstream: SocketAddr::from(([127, 0, 0, 1], flower::SUPERLINK_PORT)),
            upstream_ca,
            limits: gateway::Limits::default(),
        };
        let h = gateway::start(cfg)?;
        let addrs: Vec<String> = h.local_addrs().iter().map(|(p, a)| format!("{p:?} {a}")).collect();
        Ok((Some(h), Note::Ok(addrs.join(", "))))
    })?;
    node.gateway = gw;
    Ok(())
}
