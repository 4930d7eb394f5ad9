//! The SuperLink's gateway: Flower's Fleet API exposed on the NIC addresses (Flower itself
//! listens on loopback only), the Control API only to FL_CONTROL_ALLOW. Issue #10.

use super::Node;
use super::steps::{Boot, Failed, Note};
use crate::gateway::{self, GatewayConfig};
use crate::{flower, tls};
use crate::vocab::Cidr;
use std::net::{IpAddr, SocketAddr};

/// The gateway's Control port on the VM: only when FL_CONTROL_ALLOW names sources, on the NIC
/// addresses. With it empty there is none, not even on loopback: Flower's container shares
/// the VM's network namespace, so on the VM loopback's only clients are Flower (and the app
/// code of every FAB it runs) and flower-init itself, and loopback must not get rights a host
/// on the network does not have (issue #14; docs/container.md "Network").
pub(super) fn control_port(allow: Vec<Cidr>, nic_addrs: &[IpAddr]) -> Option<gateway::ControlConfig> {
    (!allow.is_empty()).then(|| gateway::ControlConfig::from_allow(allow, nic_addrs, gateway::DEFAULT_CONTROL_PORT))
}

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
            control: control_port(allow, &node.addrs),
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

#[cfg(test)]
mod tests {
    use super::control_port;
    use crate::vocab::parse_cidr_list;
    use std::net::{IpAddr, SocketAddr};

    #[test]
    fn no_control_port_for_loopback_and_the_allowed_sources_on_the_nics() {
        let nic: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(control_port(Vec::new(), &[nic]), None, "FL_CONTROL_ALLOW empty: no Control port, not even on loopback");
        let allow = parse_cidr_list("10.0.0.0/24").unwrap();
        let c = control_port(allow.clone(), &[nic]).unwrap();
        assert_eq!(c.listen, vec![SocketAddr::new(nic, crate::gateway::DEFAULT_CONTROL_PORT)]);
        assert_eq!(c.allow, allow);
    }
}
