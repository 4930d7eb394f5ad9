use super::*;
use std::net::Ipv4Addr;

fn key(b: u8) -> Key {
    Key([b; 32])
}

fn device() -> Device {
    Device {
        name: "wg0".into(),
        private_key: key(7),
        listen_port: 51820,
        peers: vec![
            Peer {
                public_key: key(1),
                allowed_ips: vec![(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)), 32), ("fd00:99::2".parse().unwrap(), 128)],
                endpoint: Some("203.0.113.10:51820".parse().unwrap()),
                keepalive: Some(25),
            },
            Peer { public_key: key(2), allowed_ips: vec![(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 3)), 32)], endpoint: None, keepalive: None },
        ],
    }
}

/// Attributes of `buf` as (type, value), flag bits removed; `nested` tells whether
/// NLA_F_NESTED was set.
fn raw_attrs(buf: &[u8]) -> Vec<(u16, bool, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]);
        out.push((ty & 0x3fff, ty & NLA_F_NESTED != 0, rest[4..len].to_vec()));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

#[test]
fn set_device_is_the_kernels_layout() {
    let m = msg_set_device(0x1c, 9, &device());
    assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize, m.len(), "nlmsg_len");
    assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x1c, "the family id is the message type");
    assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 9);
    assert_eq!(&m[16..20], &[WG_CMD_SET_DEVICE, 1, 0, 0], "genlmsghdr: cmd, version 1");
    let top = raw_attrs(&m[20..]);
    let kinds: Vec<u16> = top.iter().map(|a| a.0).collect();
    assert_eq!(kinds, [WGDEVICE_A_IFNAME, WGDEVICE_A_PRIVATE_KEY, WGDEVICE_A_LISTEN_PORT, WGDEVICE_A_FLAGS, WGDEVICE_A_PEERS]);
    assert_eq!(top[0].2, b"wg0\0");
    assert_eq!(top[1].2, [7u8; 32]);
    assert_eq!(top[2].2, 51820u16.to_ne_bytes());
    assert_eq!(top[3].2, WGDEVICE_F_REPLACE_PEERS.to_ne_bytes());
    assert!(top[4].1, "peers are nested");
    let peers = raw_attrs(&top[4].2);
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.1));
    let p0 = raw_attrs(&peers[0].2);
    let get = |attrs: &[(u16, bool, Vec<u8>)], t: u16| attrs.iter().find(|a| a.0 == t).map(|a| a.2.clone());
    assert_eq!(get(&p0, WGPEER_A_PUBLIC_KEY).unwrap(), [1u8; 32]);
    assert_eq!(get(&p0, WGPEER_A_FLAGS).unwrap(), WGPEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes());
    assert_eq!(get(&p0, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL).unwrap(), 25u16.to_ne_bytes());
    // struct sockaddr_in: family (host order), port and address (network order), 8 zeros.
    let mut sin = (libc::AF_INET as u16).to_ne_bytes().to_vec();
    sin.extend_from_slice(&[0xca, 0x6c, 203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(get(&p0, WGPEER_A_ENDPOINT).unwrap(), sin);
    let allowed = raw_attrs(&get(&p0, WGPEER_A_ALLOWEDIPS).unwrap());
    assert_eq!(allowed.len(), 2);
    let a0 = raw_attrs(&allowed[0].2);
    assert_eq!(get(&a0, WGALLOWEDIP_A_FAMILY).unwrap(), (libc::AF_INET as u16).to_ne_bytes());
    assert_eq!(get(&a0, WGALLOWEDIP_A_IPADDR).unwrap(), [10, 99, 0, 2]);
    assert_eq!(get(&a0, WGALLOWEDIP_A_CIDR_MASK).unwrap(), [32]);
    let a1 = raw_attrs(&allowed[1].2);
    assert_eq!(get(&a1, WGALLOWEDIP_A_IPADDR).unwrap().len(), 16);
    assert_eq!(get(&a1, WGALLOWEDIP_A_CIDR_MASK).unwrap(), [128]);
    // The second peer: no endpoint, keepalive off (0 turns it off in the kernel).
    let p1 = raw_attrs(&peers[1].2);
    assert!(get(&p1, WGPEER_A_ENDPOINT).is_none());
    assert_eq!(get(&p1, WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL).unwrap(), 0u16.to_ne_bytes());
}

#[test]
fn a_get_device_reply_reads_back() {
    // A reply as the kernel builds it: the device, its public key, port and one peer.
    let mut b = Vec::new();
    attr(&mut b, WGDEVICE_A_PUBLIC_KEY, &[3u8; 32]);
    attr(&mut b, WGDEVICE_A_LISTEN_PORT, &51821u16.to_ne_bytes());
    nested(&mut b, WGDEVICE_A_PEERS, |b| {
        nested(b, 0, |b| {
            attr(b, WGPEER_A_PUBLIC_KEY, &[4u8; 32]);
            attr(b, WGPEER_A_ENDPOINT, &sockaddr(&"127.0.0.1:51820".parse().unwrap()));
            let mut ts = 1_700_000_000i64.to_ne_bytes().to_vec();
            ts.extend_from_slice(&5i64.to_ne_bytes());
            attr(b, WGPEER_A_LAST_HANDSHAKE_TIME, &ts);
            attr(b, WGPEER_A_RX_BYTES, &1234u64.to_ne_bytes());
            attr(b, WGPEER_A_TX_BYTES, &5678u64.to_ne_bytes());
            nested(b, WGPEER_A_ALLOWEDIPS, |b| {
                nested(b, 0, |b| {
                    attr(b, WGALLOWEDIP_A_FAMILY, &(libc::AF_INET as u16).to_ne_bytes());
                    attr(b, WGALLOWEDIP_A_IPADDR, &[10, 99, 0, 1]);
                    attr(b, WGALLOWEDIP_A_CIDR_MASK, &[32]);
                });
            });
        });
    });
    let m = genl_msg(0x1c, 0x2, 4, WG_CMD_GET_DEVICE, &b);
    let mut done = Vec::new();
    done.extend_from_slice(&20u32.to_ne_bytes());
    done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    done.extend_from_slice(&[0, 0]);
    done.extend_from_slice(&4u32.to_ne_bytes());
    done.extend_from_slice(&[0; 8]);
    let shown = parse_device(&[m, done], 0x1c).unwrap();
    assert_eq!(shown.public_key, Key([3; 32]).to_base64());
    assert_eq!(shown.listen_port, 51821);
    assert_eq!(shown.peers.len(), 1);
    let p = &shown.peers[0];
    assert_eq!(p.public_key, Key([4; 32]).to_base64());
    assert_eq!(p.endpoint.as_deref(), Some("127.0.0.1:51820"));
    assert_eq!(p.allowed_ips, ["10.99.0.1/32"]);
    assert_eq!((p.last_handshake_unix, p.rx_bytes, p.tx_bytes), (Some(1_700_000_000), 1234, 5678));
    assert!(parse_device(&[], 0x1c).is_err());
}

#[test]
fn keys_are_base64_of_32_bytes_and_private_ones_never_print() {
    // `wg genkey` output and its `wg pubkey` (the kernel derives the latter; here only the form).
    let k = Key::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
    assert_eq!(k.to_base64(), "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=");
    assert!(Key::from_base64("not base64!").unwrap_err().contains("not base64"));
    assert!(Key::from_base64("AAAA").unwrap_err().contains("3 bytes"));
    assert_eq!(format!("{k:?}"), "Key(<32 bytes>)");
    assert!(!format!("{:?}", device()).contains("7, 7"), "no key bytes in a Debug of the device");
    let g = Key::generate().unwrap();
    assert_eq!(g.0[0] & 7, 0, "clamped: low bits clear");
    assert_eq!(g.0[31] & 0xc0, 0x40, "clamped: top bit clear, next set");
    assert_ne!(g, Key::generate().unwrap());
}

#[test]
fn new_link_asks_for_the_kind() {
    let m = crate::net::msg_new_link(3, "wg0", "wireguard");
    let attrs_at = 16 + 16; // nlmsghdr + ifinfomsg
    let top = raw_attrs(&m[attrs_at..]);
    assert_eq!(top[0], (3, false, b"wg0\0".to_vec()), "IFLA_IFNAME");
    assert_eq!(top[1].0, 18, "IFLA_LINKINFO");
    assert_eq!(raw_attrs(&top[1].2), [(1, false, b"wireguard".to_vec())], "IFLA_INFO_KIND");
    assert_eq!(u16::from_ne_bytes([m[6], m[7]]) & 0x600, 0x600, "NLM_F_CREATE | NLM_F_EXCL");
}

/// On the pinned kernel with wireguard.ko (tests/vm/in_guest.py wg): two devices made and
/// configured by this module, one moved into a network namespace of its own (its UDP socket
/// stays in the first, as `ip netns` setups do), a TCP exchange between the two namespaces
/// through the tunnel, and `show` reading the handshake and the byte counters back.
#[test]
#[ignore = "needs wireguard.ko: tests/vm/in_guest.py wg"]
fn vm_two_devices_talk_through_the_tunnel() {
    use crate::net::{self, Netlink, RouteSocket};
    use std::io::{Read, Write};
    use std::sync::mpsc;
    assert!(std::env::var_os("FI_WG_VM").is_some(), "run by tests/vm/in_guest.py wg");
    let sys = std::path::Path::new("/sys");
    let mut nl = RouteSocket::open().unwrap();
    net::loopback_up(&mut nl, sys).unwrap();
    create_link(&mut nl, 1, "wga").unwrap();
    create_link(&mut nl, 2, "wgb").unwrap();
    create_link(&mut nl, 3, "wga").expect("creating an existing device is not an error");
    let mut g = Genl::open().unwrap();
    let (ka, kb) = (Key::generate().unwrap(), Key::generate().unwrap());
    let bare = |name: &str, k: &Key, port| Device { name: name.into(), private_key: k.clone(), listen_port: port, peers: vec![] };
    g.set(&bare("wga", &ka, 51820)).unwrap();
    g.set(&bare("wgb", &kb, 51821)).unwrap();
    let (pa, pb) = (g.show("wga").unwrap().public_key, g.show("wgb").unwrap().public_key);
    assert_ne!(pa, pb);
    assert_ne!(pa, ka.to_base64(), "the kernel derived a public key");
    let v4 = |d| IpAddr::V4(Ipv4Addr::new(10, 99, 0, d));
    let peer = |pk: &str, d, port| Peer {
        public_key: Key::from_base64(pk).unwrap(),
        allowed_ips: vec![(v4(d), 32)],
        endpoint: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        keepalive: Some(25),
    };
    g.set(&Device { peers: vec![peer(&pb, 2, 51821)], ..bare("wga", &ka, 51820) }).unwrap();
    g.set(&Device { peers: vec![peer(&pa, 1, 51820)], ..bare("wgb", &kb, 51821) }).unwrap();

    // wgb into a network namespace of its own: a thread's (unshare affects the calling thread).
    let (ns_tx, ns_rx) = mpsc::channel();
    let (moved_tx, moved_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        ns_tx.send(ns).unwrap();
        moved_rx.recv().unwrap();
        let mut nl = RouteSocket::open().unwrap();
        let idx = nix::net::if_::if_nametoindex("wgb").unwrap();
        assert_eq!(nl.request(&net::msg_addr(10, idx, v4(2), 24), 10).unwrap(), 0);
        assert_eq!(nl.request(&net::msg_link_up(11, idx, None), 11).unwrap(), 0);
        let l = std::net::TcpListener::bind("10.99.0.2:7000").unwrap();
        ready_tx.send(()).unwrap();
        let (mut c, from) = l.accept().unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        c.write_all(format!("pong {} from {from}", String::from_utf8_lossy(&buf)).as_bytes()).unwrap();
    });
    let ns = ns_rx.recv().unwrap();
    let idx_b: u32 = std::fs::read_to_string("/sys/class/net/wgb/ifindex").unwrap().trim().parse().unwrap();
    assert_eq!(nl.request(&net::msg_link_netns(20, idx_b, ns.as_raw_fd()), 20).unwrap(), 0, "move wgb");
    moved_tx.send(()).unwrap();
    let idx_a: u32 = std::fs::read_to_string("/sys/class/net/wga/ifindex").unwrap().trim().parse().unwrap();
    assert_eq!(nl.request(&net::msg_addr(21, idx_a, v4(1), 24), 21).unwrap(), 0);
    assert_eq!(nl.request(&net::msg_link_up(22, idx_a, None), 22).unwrap(), 0);
    ready_rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let t = std::time::Instant::now();
    let mut c = std::net::TcpStream::connect_timeout(&"10.99.0.2:7000".parse().unwrap(), std::time::Duration::from_secs(20)).unwrap();
    c.write_all(b"ping").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    server.join().unwrap();
    assert_eq!(answer, "pong ping from 10.99.0.1:".to_string() + &c.local_addr().unwrap().port().to_string());
    let shown = g.show("wga").unwrap();
    println!("WG-VM: {answer:?} through the tunnel in {:?}; wga: {shown:?}", t.elapsed());
    assert_eq!(shown.listen_port, 51820);
    assert_eq!(shown.peers.len(), 1);
    let p = &shown.peers[0];
    assert_eq!(p.public_key, pb);
    assert_eq!(p.endpoint.as_deref(), Some("127.0.0.1:51821"));
    assert_eq!(p.allowed_ips, ["10.99.0.2/32"]);
    assert!(p.last_handshake_unix.is_some() && p.rx_bytes > 0 && p.tx_bytes > 0, "{p:?}");
    // The peer list is replaced, not added to: an empty set leaves none.
    g.set(&bare("wga", &ka, 51820)).unwrap();
    assert!(g.show("wga").unwrap().peers.is_empty());
}
