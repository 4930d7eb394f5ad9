//! net.rs against the real kernel: a network namespace with a veth whose MAC is in the plan;
//! flower-init's netlink code configures it (inside `ip netns exec`, which also remounts /sys
//! for that namespace), then `ip -j` reads back what the kernel holds.
//! Run by `make net-test` (root; creates and deletes namespace fi-net-t).

use flower_init::net::{self, Interface, Ipv4Net, Ipv6Net, Method, Plan, Route4};
use std::process::Command;

const NS: &str = "fi-net-t";
const MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0x5c, 0x00, 0x0a];

fn plan() -> Plan {
    Plan {
        interfaces: vec![Interface {
            context_name: "ETH0".into(),
            mac: MAC,
            method: Method::Static,
            ipv4: Some(Ipv4Net { addr: "10.92.0.10".parse().unwrap(), prefix: 24 }),
            gateway4: Some("10.92.0.1".parse().unwrap()),
            metric: Some(50),
            mtu: Some(1400),
            ipv6: vec![Ipv6Net { addr: "fd00:92::10".parse().unwrap(), prefix: 64 }],
            gateway6: None,
            routes: vec![Route4 { dst: Ipv4Net { addr: "10.93.0.0".parse().unwrap(), prefix: 16 }, via: "10.92.0.254".parse().unwrap() }],
        }],
        dns: vec!["10.92.0.1".parse().unwrap()],
        search: vec![],
        hostname: None,
        onegate_link_route: Some("169.254.16.9".parse().unwrap()),
    }
}

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The half that runs inside the namespace (started by `applies_a_plan_in_a_namespace`).
#[test]
#[ignore]
fn inner_apply() {
    if std::env::var("FI_NET_INNER").is_err() {
        return; // only meaningful when started inside the namespace by the outer test
    }
    let mut nl = net::RouteSocket::open().unwrap();
    let sys = std::path::Path::new("/sys");
    net::loopback_up(&mut nl, sys).unwrap();
    let a = net::apply_at(&mut nl, sys, &plan()).unwrap();
    // Idempotent: a second application changes nothing and does not fail.
    net::apply_at(&mut nl, sys, &plan()).unwrap();
    println!("APPLIED {}", serde_json::to_string(&a).unwrap());
}

#[test]
#[ignore]
fn applies_a_plan_in_a_namespace() {
    let _ = Command::new("ip").args(["netns", "del", NS]).status();
    ip(&["netns", "add", NS]);
    let cleanup = scopeguard(|| {
        let _ = Command::new("ip").args(["netns", "del", NS]).status();
    });
    ip(&["-n", NS, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    ip(&["-n", NS, "link", "set", "eth0", "address", &net::format_mac(&MAC)]);
    ip(&["-n", NS, "link", "set", "peer0", "up"]);
    let me = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", NS])
        .arg(&me)
        .args(["--ignored", "--exact", "inner_apply", "--nocapture"])
        .env("FI_NET_INNER", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("APPLIED"), "inner run failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let addrs = ip(&["-n", NS, "-j", "addr", "show", "eth0"]);
    assert!(addrs.contains("\"10.92.0.10\"") && addrs.contains("\"prefixlen\":24"), "{addrs}");
    assert!(addrs.contains("\"fd00:92::10\""), "{addrs}");
    assert!(addrs.contains("\"mtu\":1400"), "{addrs}");
    let lo = ip(&["-n", NS, "-j", "link", "show", "lo"]);
    assert!(lo.contains("\"UP\""), "{lo}");
    let routes = ip(&["-n", NS, "-j", "route", "show"]);
    assert!(routes.contains("\"dst\":\"default\"") && routes.contains("\"gateway\":\"10.92.0.1\"") && routes.contains("\"metric\":50"), "{routes}");
    assert!(routes.contains("\"dst\":\"10.93.0.0/16\"") && routes.contains("\"gateway\":\"10.92.0.254\""), "{routes}");
    assert!(routes.contains("\"dst\":\"169.254.16.9\"") && routes.contains("\"scope\":\"link\""), "{routes}");
    drop(cleanup);
}

struct Guard<F: FnMut()>(F);
impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
fn scopeguard<F: FnMut()>(f: F) -> Guard<F> {
    Guard(f)
}
