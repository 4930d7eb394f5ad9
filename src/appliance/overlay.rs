//! The `wireguard` step (issue #20): the FL_WG_* overlay as `wg0`, after the network and before
//! TLS, so that its address is one of this VM's (the SuperLink's certificate SANs, its join
//! value, the gateway's listeners) before anything uses them. docs/multisite.md.

use super::report::WireGuard as Section;
use super::steps::{Boot, Failed, Note};
use crate::config::WireGuard;
use crate::error::{Ctx, Error, Result};
use crate::net::{self, RouteSpec};
use crate::wg::{self, Device, Key};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The overlay's interface.
pub const INTERFACE: &str = "wg0";
/// The key flower-init makes when FL_WG_PRIVATE_KEY is unset, under the state directory.
const KEY_FILE: &str = "wireguard/private.key";

/// Bring `wg0` up; returns its address (one of this VM's from now on).
pub fn step(boot: &mut Boot, cfg: &WireGuard) -> std::result::Result<IpAddr, Failed> {
    boot.step("wireguard", |b| {
        load_module();
        let (key, source) = match &cfg.private_key {
            Some(k) => (k.clone(), "FL_WG_PRIVATE_KEY"),
            None => state_key(&b.layout.state_dir)?,
        };
        let mut nl = net::RouteSocket::open()?;
        wg::create_link(&mut nl, 1, INTERFACE)?;
        let mut g = wg::Genl::open()?;
        g.set(&Device { name: INTERFACE.into(), private_key: key, listen_port: cfg.listen_port, peers: cfg.peers.clone() })?;
        let index = ifindex(INTERFACE)?;
        net::request(&mut nl, &net::msg_addr(2, index, IpAddr::V4(cfg.address), cfg.prefix), 2, || "add the wg0 address".into())?;
        net::request(&mut nl, &net::msg_link_up(3, index, None), 3, || "set wg0 up".into())?;
        for (seq, r) in (4..).zip(routes(cfg, index)) {
            net::request(&mut nl, &net::msg_route(seq, &r), seq, || format!("route {}/{} over wg0", r.dst, r.dst_len))?;
        }
        let shown = g.show(INTERFACE)?;
        let note = format!(
            "{INTERFACE} {}/{}, UDP port {}, {} peer(s), public key {} (private key: {source})",
            cfg.address,
            cfg.prefix,
            shown.listen_port,
            shown.peers.len(),
            shown.public_key
        );
        b.report.wireguard = Some(Section {
            interface: INTERFACE,
            address: format!("{}/{}", cfg.address, cfg.prefix),
            public_key: shown.public_key,
            listen_port: shown.listen_port,
            private_key: source,
            peers: shown.peers,
        });
        b.show();
        Ok((IpAddr::V4(cfg.address), Note::Ok(note)))
    })
}

/// `wireguard.ko` from the initramfs unless the kernel has it already (built in, loaded, or a
/// host in service mode: its own modules). A failure shows later, as the family being absent.
fn load_module() {
    if Path::new("/sys/module/wireguard").exists() {
        return;
    }
    match crate::kmod::Index::running() {
        Ok(ix) => {
            let mut c = crate::kmod::Coldplug::new(&ix, crate::kmod::Finit);
            c.load("wireguard");
            if let Some(why) = c.failed.get("wireguard") {
                log::warn!("wireguard: load wireguard.ko: {why}");
            }
        }
        Err(e) => log::debug!("wireguard: no module index ({e}); relying on the kernel's own"),
    }
}

/// The key kept on the state disk, made (0600) on first use: the same public key every boot.
fn state_key(state_dir: &Path) -> Result<(Key, &'static str)> {
    let path = state_dir.join(KEY_FILE);
    let what = || format!("read the WireGuard key {}", path.display());
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let k = Key::from_base64(&text).map_err(|why| Error::msg(what(), format!("the key {why}")))?;
            Ok((k, "the state disk's"))
        }
        // Made only when there is none: a key that cannot be read is an error, never replaced.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = Key::generate()?;
            let write = || format!("write the WireGuard key {}", path.display());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_ctx(write)?;
            }
            crate::fsutil::write_atomic(&path, format!("{}\n", k.to_base64()).as_bytes(), 0o600, None).with_ctx(write)?;
            log::info!("wireguard: made a private key at {} (kept for the next boots)", path.display());
            Ok((k, "made at this boot, kept on the state disk"))
        }
        Err(e) => Err(e).with_ctx(what),
    }
}

fn ifindex(name: &str) -> Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).with_ctx(|| format!("read the ifindex of {name}"))?;
    text.trim().parse().map_err(|_| Error::msg(format!("read the ifindex of {name}"), format!("{text:?} is not a number")))
}

/// Routes over wg0 for the peers' IPv4 networks outside wg0's own subnet (that one comes with
/// the address).
fn routes(cfg: &WireGuard, index: u32) -> Vec<RouteSpec> {
    let own = net_of(cfg.address, cfg.prefix);
    let mut out: Vec<RouteSpec> = Vec::new();
    for p in &cfg.peers {
        for (ip, len) in &p.allowed_ips {
            let IpAddr::V4(v4) = ip else { continue };
            let dst = net_of(*v4, *len);
            let inside = *len >= cfg.prefix && net_of(*v4, cfg.prefix) == own;
            if inside || out.iter().any(|r| r.dst == IpAddr::V4(dst) && r.dst_len == *len) {
                continue;
            }
            out.push(RouteSpec { dst: IpAddr::V4(dst), dst_len: *len, gateway: None, ifindex: index, metric: None, link_scope: true });
        }
    }
    out
}

fn net_of(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(a) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(peers: &str) -> WireGuard {
        WireGuard {
            address: Ipv4Addr::new(10, 99, 0, 1),
            prefix: 24,
            private_key: None,
            listen_port: 51820,
            peers: crate::config::wireguard_peers(peers).unwrap(),
        }
    }

    #[test]
    fn routes_only_for_networks_outside_the_tunnel_subnet() {
        let k = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let k2 = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        let c = cfg(&format!("{k} allowed=10.99.0.2/32,192.168.50.0/24,fd00::/64\n{k2} allowed=10.99.0.0/16,192.168.50.0/24"));
        let r: Vec<String> = routes(&c, 7).iter().map(|r| format!("{}/{} dev {} link={}", r.dst, r.dst_len, r.ifindex, r.link_scope)).collect();
        assert_eq!(r, ["192.168.50.0/24 dev 7 link=true", "10.99.0.0/16 dev 7 link=true"]);
        assert_eq!(net_of(Ipv4Addr::new(10, 99, 3, 7), 16), Ipv4Addr::new(10, 99, 0, 0));
        assert_eq!(net_of(Ipv4Addr::new(10, 99, 3, 7), 0), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn the_state_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let (k1, s1) = state_key(d.path()).unwrap();
        let (k2, s2) = state_key(d.path()).unwrap();
        assert_eq!(k1, k2, "the same key on the next boot");
        assert!(s1.starts_with("made at this boot") && s2 == "the state disk's");
        let mode = std::fs::metadata(d.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(d.path().join(KEY_FILE), "garbage\n").unwrap();
        let e = state_key(d.path()).unwrap_err().to_string();
        assert!(e.contains("private.key") && e.contains("not base64") && !e.contains("garbage"), "{e}");
    }
}
