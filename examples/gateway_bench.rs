//! Benchmark helpers for the gateway's design decision (docs/gateway.md, "Threads or epoll"),
//! driven by bench/gateway-models.sh. Not part of the appliance.
//!
//!   gateway_bench certs DIR
//!       A CA and a server certificate for 127.0.0.1/127.0.0.2 made by flower_init::tls, in
//!       DIR/run/{ca.crt,server.pem,server.key}.
//!   gateway_bench upstream LISTEN
//!       A stand-in for Flower: answers every request `200` with a 2-byte body, keep-alive.
//!   gateway_bench thread-proxy LISTEN UPSTREAM CERT KEY
//!       The alternative design: one blocking thread per client connection (256 KiB stack,
//!       like the gateway's workers), TLS with rustls, the same head parser, forwarding to
//!       UPSTREAM over one kept-alive connection per client. Bodiless requests only.
//!   gateway_bench idle-client TARGET CA N SERVER_PID
//!       Latency of fresh (TCP + TLS + GET /health) and keep-alive requests, then N idle TLS
//!       keep-alive connections (each after one request), then the latencies again, and the
//!       server's RSS, threads and CPU time, and the kernel's stack and slab memory, before
//!       and after. Prints one JSON object.

use flower_init::gateway::http;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    match args.first().map(String::as_str) {
        Some("certs") => certs(&a(1)),
        Some("upstream") => upstream(&a(1)),
        Some("thread-proxy") => thread_proxy(&a(1), &a(2), &a(3), &a(4)),
        Some("idle-client") => idle_client(&a(1), &a(2), a(3).parse().unwrap_or_else(|_| usage()), a(4).parse().unwrap_or_else(|_| usage())),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: gateway_bench certs DIR | upstream LISTEN | thread-proxy LISTEN UPSTREAM CERT KEY | idle-client TARGET CA N SERVER_PID");
    std::process::exit(2)
}

const LIMITS: http::HeadLimits = http::HeadLimits { max_line: 8192, max_head: 32768, max_headers: 100 };

/// Read one head from `s` into `buf`; returns its end, or None at end of stream.
fn read_head(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<usize> {
    let mut scanner = http::HeadScanner::default();
    let mut tmp = [0u8; 16384];
    loop {
        if !buf.is_empty() {
            if let Some(end) = scanner.scan(buf, &LIMITS).ok()? {
                return Some(end);
            }
        }
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn certs(dir: &str) {
    use flower_init::tls;
    let dir = std::path::Path::new(dir);
    let sans = tls::server_sans(&["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()], None, &[]);
    // SAFETY: getuid/getgid take no arguments and cannot fail.
    let me = tls::ContainerUser { uid: unsafe { libc::getuid() }, gid: unsafe { libc::getgid() } };
    let sl = tls::superlink_generated(&dir.join("state"), &dir.join("run"), &sans, me).expect("certificates");
    println!("{}", sl.summary());
}

/// Bind, and say where (LISTEN may use port 0).
fn bind(listen: &str) -> TcpListener {
    let l = TcpListener::bind(listen).expect("bind");
    println!("listening {}", l.local_addr().expect("address"));
    let _ = std::io::stdout().flush();
    l
}

fn upstream(listen: &str) {
    let l = bind(listen);
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let _ = s.set_nodelay(true);
            let mut buf = Vec::new();
            while let Some(end) = read_head(&mut s, &mut buf) {
                buf.drain(..end);
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                    return;
                }
            }
        });
    }
}

fn server_config(cert: &str, key: &str) -> Arc<rustls::ServerConfig> {
    let chain = flower_init::tls::certs_from_pem(cert, &std::fs::read(cert).expect("cert")).expect("cert pem");
    let key_der = flower_init::tls::key_from_pem(key, &std::fs::read(key).expect("key")).expect("key pem");
    Arc::new(flower_init::tls::server_config(cert, key, chain, key_der).expect("server config"))
}

fn thread_proxy(listen: &str, up: &str, cert: &str, key: &str) {
    let cfg = server_config(cert, key);
    let up: SocketAddr = up.parse().expect("upstream address");
    let l = bind(listen);
    for s in l.incoming().flatten() {
        let cfg = cfg.clone();
        let _ = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
            let _ = s.set_nodelay(true);
            let Ok(conn) = rustls::ServerConnection::new(cfg) else { return };
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut upstream: Option<TcpStream> = None;
            let (mut buf, mut ubuf) = (Vec::new(), Vec::new());
            while let Some(end) = read_head(&mut tls, &mut buf) {
                let Ok(head) = http::parse_request_head(&buf[..end], &LIMITS) else { return };
                buf.drain(..end);
                if upstream.is_none() {
                    upstream = TcpStream::connect(up).ok();
                    if let Some(u) = &upstream {
                        let _ = u.set_nodelay(true);
                    }
                }
                let Some(u) = upstream.as_mut() else { return };
                if u.write_all(&http::forward_request_head(&head, http::BodyLen::Empty, "127.0.0.1", "https")).is_err() {
                    return;
                }
                let Some(rend) = read_head(u, &mut ubuf) else { return };
                let Ok(resp) = http::parse_response_head(&ubuf[..rend], 100) else { return };
                ubuf.drain(..rend);
                let len = match http::response_body(&head.method, &resp) {
                    Ok(http::BodyLen::Length(n)) => n as usize,
                    _ => 0,
                };
                while ubuf.len() < len {
                    let mut tmp = [0u8; 4096];
                    match u.read(&mut tmp) {
                        Ok(n) if n > 0 => ubuf.extend_from_slice(&tmp[..n]),
                        _ => return,
                    }
                }
                let mut out = http::forward_response_head(&resp, http::BodyLen::Length(len as u64), false);
                out.extend(ubuf.drain(..len));
                if tls.write_all(&out).and_then(|_| tls.flush()).is_err() {
                    return;
                }
            }
        });
    }
}

struct Client {
    cfg: Arc<rustls::ClientConfig>,
    target: SocketAddr,
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Client {
    fn connect(&self) -> Tls {
        let s = TcpStream::connect(self.target).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let name = ServerName::IpAddress(self.target.ip().into());
        rustls::StreamOwned::new(rustls::ClientConnection::new(self.cfg.clone(), name).expect("tls"), s)
    }

    fn get(&self, tls: &mut Tls) {
        tls.write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", self.target).as_bytes()).expect("write");
        tls.flush().expect("flush");
        let mut buf = Vec::new();
        let end = read_head(tls, &mut buf).expect("response");
        let resp = http::parse_response_head(&buf[..end], 100).expect("response head");
        assert_eq!(resp.status, 200, "{resp:?}");
        let len = match http::response_body("GET", &resp) {
            Ok(http::BodyLen::Length(n)) => n as usize,
            _ => 0,
        };
        let mut have = buf.len() - end;
        let mut tmp = [0u8; 4096];
        while have < len {
            have += tls.read(&mut tmp).expect("body");
        }
    }
}

/// (median, p90, p99) in microseconds.
fn percentiles(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    serde_json::json!({ "p50_us": at(0.5).round(), "p90_us": at(0.9).round(), "p99_us": at(0.99).round(), "n": v.len() })
}

fn latencies(c: &Client) -> serde_json::Value {
    let fresh: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let mut tls = c.connect();
            c.get(&mut tls);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let mut tls = c.connect();
    c.get(&mut tls);
    let keep: Vec<f64> = (0..1000)
        .map(|_| {
            let t = Instant::now();
            c.get(&mut tls);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    serde_json::json!({ "fresh_connection": percentiles(fresh), "keep_alive": percentiles(keep) })
}

/// VmRSS (KiB), threads, CPU seconds (user + system) of a process.
fn proc_usage(pid: u32) -> serde_json::Value {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    serde_json::json!({ "rss_kib": field("VmRSS:"), "threads": field("Threads:"), "cpu_s": (ticks(11) + ticks(12)) / hz.max(1.0) })
}

/// KernelStack and Slab (KiB) from /proc/meminfo: what kernel memory the connections cost.
fn kernel_memory() -> serde_json::Value {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        m.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    serde_json::json!({ "kernel_stack_kib": field("KernelStack:"), "slab_kib": field("Slab:") })
}

fn idle_client(target: &str, ca: &str, n: usize, pid: u32) {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one rlimit we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&std::fs::read(ca).expect("ca")) {
        roots.add(c.expect("ca pem")).expect("ca");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let c = Client { cfg: Arc::new(cfg), target: target.parse().expect("target") };
    let (usage0, kernel0) = (proc_usage(pid), kernel_memory());
    let lat0 = latencies(&c);
    let t = Instant::now();
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tls = c.connect();
        c.get(&mut tls);
        idle.push(tls);
    }
    let open_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let (usage1, kernel1) = (proc_usage(pid), kernel_memory());
    let lat1 = latencies(&c);
    let usage2 = proc_usage(pid);
    println!(
        "{}",
        serde_json::json!({
            "idle_connections": n,
            "open_idle_s": (open_s * 100.0).round() / 100.0,
            "server_before": usage0, "server_with_idle": usage1, "server_after_latency_runs": usage2,
            "kernel_before": kernel0, "kernel_with_idle": kernel1,
            "latency_no_idle": lat0, "latency_with_idle": lat1,
        })
    );
    drop(idle);
}
