use super::oci::{Controllers, Limits, Spec, config_json, write_bundle};
use super::output::{OutputRing, clean};
use super::runc::{Runc, Status, cleanup_stale, last_log_error, parse_list, parse_state};
use super::{BindMount, DeviceNode};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn spec() -> Spec {
    let mut s = Spec::new("flower-superlink", Path::new("/img/rootfs"), vec!["/opt/flower/venv/bin/flower-superlink".into()]);
    s.state_dir = Some("/var/lib/flower/superlink".into());
    s.data_dir = Some("/var/lib/flower-data".into());
    s.resolv_conf = Some("/run/flower-init/resolv.conf".into());
    s.hosts = Some("/run/flower-init/hosts".into());
    s.certs = vec![BindMount { source: "/run/flower-init/tls/ca.crt".into(), destination: "/certs/ca.crt".into(), read_only: true }];
    s
}

fn mount<'a>(c: &'a Value, dest: &str) -> &'a Value {
    c["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == dest).unwrap_or_else(|| panic!("no mount {dest}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect()
}

#[test]
fn policy_read_only_root_user_49999_no_caps_no_new_privileges_host_network() {
    let c = config_json(&spec());
    assert_eq!(c["root"]["readonly"], true);
    assert_eq!(c["root"]["path"], "/img/rootfs");
    assert_eq!(c["process"]["user"]["uid"], 49999);
    assert_eq!(c["process"]["user"]["gid"], 49999);
    assert_eq!(c["process"]["noNewPrivileges"], true);
    assert_eq!(c["process"]["terminal"], false);
    for set in ["bounding", "effective", "inheritable", "permitted", "ambient"] {
        assert_eq!(c["process"]["capabilities"][set], serde_json::json!([]), "{set}");
    }
    let ns: Vec<&str> = c["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
    assert!(!ns.contains(&"network"), "host network: no network namespace");
    assert!(ns.contains(&"pid") && ns.contains(&"mount"));
    assert!(ns.contains(&"uts"), "its own UTS namespace (issue #14)");
    assert_eq!(c["process"]["args"][0], "/usr/bin/tini");
    assert_eq!(c["process"]["args"][1], "--");
    assert_eq!(c["process"]["args"][2], "/opt/flower/venv/bin/flower-superlink");
    assert_eq!(c["linux"]["cgroupsPath"], "/flower-init/flower-superlink");
    assert!(strs(&c["linux"]["maskedPaths"]).contains(&"/proc/kcore"));
    assert!(strs(&c["linux"]["readonlyPaths"]).contains(&"/proc/sysrq-trigger"));
}

#[test]
fn mounts_state_rw_data_ro_certs_ro_files_resolv_hosts_ro_tmpfs() {
    let c = config_json(&spec());
    let state = mount(&c, "/state");
    assert_eq!(state["source"], "/var/lib/flower/superlink");
    assert!(strs(&state["options"]).contains(&"rw"));
    for ro in ["/app/data", "/certs/ca.crt", "/etc/resolv.conf", "/etc/hosts"] {
        let m = mount(&c, ro);
        assert_eq!(m["type"], "bind");
        let o = strs(&m["options"]);
        assert!(o.contains(&"ro") && o.contains(&"nosuid") && o.contains(&"nodev"), "{ro}: {o:?}");
    }
    assert_eq!(mount(&c, "/tmp")["type"], "tmpfs");
    let home = strs(&mount(&c, "/app")["options"]);
    assert!(home.contains(&"uid=49999") && home.contains(&"mode=700"), "{home:?}");
    // A bind inside a tmpfs must come after it.
    let order: Vec<&str> = c["mounts"].as_array().unwrap().iter().map(|m| m["destination"].as_str().unwrap()).collect();
    let pos = |d: &str| order.iter().position(|x| *x == d).unwrap();
    assert!(pos("/app") < pos("/app/data") && pos("/certs") < pos("/certs/ca.crt") && pos("/run") < pos("/etc/resolv.conf"));
}

#[test]
fn optional_mounts_are_absent_when_not_given() {
    let s = Spec::new("x", Path::new("/r"), vec!["a".into()]);
    let c = config_json(&s);
    let dests: Vec<&str> = c["mounts"].as_array().unwrap().iter().map(|m| m["destination"].as_str().unwrap()).collect();
    for absent in ["/state", "/app/data", "/certs", "/etc/resolv.conf", "/etc/hosts"] {
        assert!(!dests.contains(&absent), "{absent}");
    }
}

#[test]
fn devices_are_denied_except_those_listed() {
    let mut s = spec();
    s.devices = vec![
        DeviceNode { path: "/dev/nvidia0".into(), kind: 'c', major: 195, minor: 0, file_mode: 0o666 },
        DeviceNode { path: "/dev/nvidiactl".into(), kind: 'c', major: 195, minor: 255, file_mode: 0o666 },
    ];
    let c = config_json(&s);
    let rules = c["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules[0], serde_json::json!({"allow": false, "access": "rwm"}), "deny-all first");
    let allowed: Vec<(u64, u64)> = rules[1..]
        .iter()
        .map(|r| {
            assert_eq!(r["allow"], true);
            (r["major"].as_u64().unwrap(), r["minor"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(allowed, vec![(195, 0), (195, 255)]);
    let nodes = c["linux"]["devices"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["path"], "/dev/nvidia0");
    assert_eq!(nodes[0]["type"], "c");
    assert_eq!(nodes[0]["fileMode"], 0o666);
    // Without devices: only the deny rule.
    let c = config_json(&spec());
    assert_eq!(c["linux"]["resources"]["devices"].as_array().unwrap().len(), 1);
    assert_eq!(c["linux"]["devices"], serde_json::json!([]));
}

#[test]
fn environment_is_offline_unbuffered_with_the_venv_first_on_path() {
    let mut s = spec();
    s.log_level = crate::vocab::LogLevel::Debug;
    s.env.push(("CUDA_VISIBLE_DEVICES".into(), "0,1".into()));
    let c = config_json(&s);
    let env = strs(&c["process"]["env"]);
    assert!(env[0].starts_with("PATH=/opt/flower/venv/bin:"));
    for want in [
        "FLWR_TELEMETRY_ENABLED=0",
        "FLWR_DISABLE_UPDATE_CHECK=1",
        "FLWR_LOG_LEVEL=DEBUG",
        "PYTHONUNBUFFERED=1",
        "HOME=/app",
        "FLWR_HOME=/app/.flwr",
        "CUDA_VISIBLE_DEVICES=0,1",
    ] {
        assert!(env.contains(&want), "{want} in {env:?}");
    }
}

#[test]
fn limits_follow_the_available_controllers() {
    let mut l = Limits { memory: Some(1 << 30), ..Limits::default() };
    assert!(l.restrict_to(Controllers { memory: true, pids: true }).is_empty());
    assert_eq!(l.restrict_to(Controllers { memory: false, pids: true }), vec!["memory"]);
    assert_eq!(l.memory, None);
    assert_eq!(l.pids, Some(super::oci::PIDS));
    assert!(l.cap_nofile(20_000));
    assert_eq!(l.nofile, 20_000);
    assert!(!l.cap_nofile(1 << 20));
    assert_eq!(l.nofile, 20_000);
    assert!(super::oci::nofile_hard().unwrap() > 0);
    let mut s = spec();
    s.limits = Limits { nofile: 1024, pids: Some(64), memory: Some(1 << 30), nice: Some(20) };
    let c = config_json(&s);
    assert_eq!(c["linux"]["resources"]["memory"]["limit"], 1 << 30);
    assert_eq!(c["linux"]["resources"]["pids"]["limit"], 64);
    assert_eq!(c["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    assert_eq!(c["process"]["rlimits"][0]["hard"], 1024);
    assert_eq!(c["process"]["rlimits"][1], serde_json::json!({"type": "RLIMIT_NICE", "hard": 20, "soft": 20}));
    s.limits = Limits { nofile: 1024, pids: None, memory: None, nice: None };
    let c = config_json(&s);
    assert_eq!(c["process"]["rlimits"].as_array().unwrap().len(), 1, "no RLIMIT_NICE where runc could not raise it");
    assert!(c["linux"]["resources"].get("memory").is_none() && c["linux"]["resources"].get("pids").is_none());
}

#[test]
fn seccomp_is_dockers_default_profile_for_no_capabilities() {
    let c = config_json(&spec());
    let sc = &c["linux"]["seccomp"];
    assert_eq!(sc["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(sc["defaultErrnoRet"], 1, "EPERM, as Docker");
    // The machine's own architecture (a filter for another one would leave native calls to
    // libseccomp's default); the x86_64 list is dockerd's for amd64.
    let native = match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64"],
        other => panic!("no seccomp architectures for {other}"),
    };
    assert_eq!(strs(&sc["architectures"]), native);
    let rules = sc["syscalls"].as_array().unwrap();
    let allowed = |name: &str| rules.iter().any(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none() && strs(&r["names"]).contains(&name));
    // aarch64 has no epoll_wait (only epoll_pwait): both are in the list, which runc reads by name.
    for ok in ["read", "execve", "epoll_wait", "epoll_pwait", "futex", "mmap", "socketpair", "arch_prctl", "prctl"] {
        assert!(allowed(ok), "{ok} is allowed");
    }
    // The capability-gated rules are absent: no capabilities in the container.
    for refused in ["unshare", "setns", "mount", "keyctl", "add_key", "bpf", "ptrace_attach", "reboot", "init_module", "perf_event_open", "sethostname"] {
        assert!(!rules.iter().any(|r| strs(&r["names"]).contains(&refused)), "{refused} is refused");
    }
    let clone = rules.iter().find(|r| strs(&r["names"]) == ["clone"]).unwrap();
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ", "clone only without namespace flags");
    assert_eq!(clone["args"][0]["value"], 0x7E02_0000u64);
    let clone3 = rules.iter().find(|r| strs(&r["names"]) == ["clone3"]).unwrap();
    assert_eq!((clone3["action"].as_str(), clone3["errnoRet"].as_u64()), (Some("SCMP_ACT_ERRNO"), Some(38)), "ENOSYS: glibc falls back to clone");
    let names: usize = rules.iter().map(|r| r["names"].as_array().unwrap().len()).sum();
    assert!(names > 350, "{names} names: the whole allow list");
}

#[test]
fn memory_limit_leaves_room_for_the_init() {
    use super::oci::{mem_total_at, memory_limit};
    const MIB: u64 = 1 << 20;
    let mib = |m: u64| i64::try_from(m * MIB).unwrap();
    assert_eq!(memory_limit(2048 * MIB), mib(2048 - 256), "2 GiB: one eighth");
    assert_eq!(memory_limit(512 * MIB), mib(512 - 128), "512 MiB: the 128 MiB floor");
    assert_eq!(memory_limit(467 * MIB), mib(467 - 128), "an arm64 512 MiB VM's MemTotal");
    assert_eq!(memory_limit(4096 * MIB), mib(4096 - 512), "4 GiB: one eighth");
    assert_eq!(memory_limit(16384 * MIB), mib(16384 - 1024), "16 GiB: the 1 GiB cap");
    assert_eq!(memory_limit(200 * MIB), mib(100), "a tiny VM: never under half");
    assert_eq!(memory_limit(u64::MAX), i64::MAX);
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("proc")).unwrap();
    std::fs::write(d.path().join("proc/meminfo"), "MemTotal:        2035480 kB\nMemFree:         1 kB\n").unwrap();
    assert_eq!(mem_total_at(d.path()), Some(2_035_480 * 1024));
    std::fs::write(d.path().join("proc/meminfo"), "MemFree: 1 kB\n").unwrap();
    assert_eq!(mem_total_at(d.path()), None);
    assert!(mem_total_at(Path::new("/")).is_some_and(|m| m > 64 * MIB));
}

#[test]
fn controllers_from_a_fake_sysfs_v1_hybrid_and_v2() {
    let d = tempfile::tempdir().unwrap();
    let cg = d.path().join("sys/fs/cgroup");
    std::fs::create_dir_all(cg.join("memory")).unwrap();
    assert_eq!(Controllers::detect_at(d.path()), Controllers { memory: true, pids: false });
    std::fs::write(cg.join("cgroup.controllers"), "cpuset cpu io pids\n").unwrap();
    assert_eq!(Controllers::detect_at(d.path()), Controllers { memory: false, pids: true });
    let none = tempfile::tempdir().unwrap();
    assert_eq!(Controllers::detect_at(none.path()), Controllers { memory: false, pids: false });
}

#[test]
fn validate_rejects_bad_ids_relative_paths_and_cert_escapes() {
    let ok = spec();
    assert_eq!(ok.validate(), Ok(()));
    let mut s = spec();
    s.id = "a/b".into();
    assert!(s.validate().unwrap_err().contains("container id"));
    let mut s = spec();
    s.rootfs = "rootfs".into();
    assert!(s.validate().unwrap_err().contains("absolute"));
    for bad in ["/certs/../etc/shadow", "/certs/", "/etc/x", "/certs/a/b", "/certsx"] {
        let mut s = spec();
        s.certs[0].destination = bad.into();
        assert!(s.validate().is_err(), "{bad}");
    }
    let mut s = spec();
    s.state_dir = Some("relative".into());
    assert!(s.validate().is_err());
    let mut s = spec();
    s.args.clear();
    assert!(s.validate().is_err());
    let mut s = spec();
    s.args.push("a\0b".into());
    assert!(s.validate().unwrap_err().contains("NUL byte"));
    for (k, v) in [("A=B", "1"), ("", "1"), ("X", "a\0")] {
        let mut s = spec();
        s.env.push((k.into(), v.into()));
        assert!(s.validate().unwrap_err().starts_with("environment variable"), "{k:?}={v:?}");
    }
    // Shell metacharacters and newlines are fine: they are data, one argv element each.
    let mut s = spec();
    s.args.push("x; rm -rf /\n$(id)".into());
    assert_eq!(s.validate(), Ok(()));
    assert_eq!(config_json(&s)["process"]["args"].as_array().unwrap().last().unwrap(), "x; rm -rf /\n$(id)");
}

#[test]
fn write_bundle_is_atomic_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let b = d.path().join("bundle");
    assert_eq!(write_bundle(&b, &spec()).unwrap(), b);
    let text = std::fs::read_to_string(b.join("config.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v, config_json(&spec()));
    assert_eq!(std::fs::metadata(b.join("config.json")).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!b.join(".config.json.tmp").exists());
    let mut bad = spec();
    bad.id = String::new();
    let e = write_bundle(&b, &bad).unwrap_err().to_string();
    assert!(e.starts_with(&format!("write OCI bundle {}", b.display())), "{e}");
}

#[test]
fn runc_command_lines() {
    let r = Runc { binary: "/usr/sbin/runc".into(), root: "/run/r".into(), log: "/run/r/log".into() };
    let s = |v: Vec<std::ffi::OsString>| v.into_iter().map(|a| a.into_string().unwrap()).collect::<Vec<_>>().join(" ");
    let g = "/usr/sbin/runc --root /run/r --log /run/r/log --log-format json";
    assert_eq!(s(r.create(Path::new("/b"), Path::new("/b/pid"), "c1")), format!("{g} create --bundle /b --pid-file /b/pid c1"));
    assert_eq!(s(r.start("c1")), format!("{g} start c1"));
    assert_eq!(s(r.kill("c1", "TERM")), format!("{g} kill c1 TERM"));
    assert_eq!(s(r.delete("c1", false)), format!("{g} delete c1"));
    assert_eq!(s(r.delete("c1", true)), format!("{g} delete --force c1"));
    assert_eq!(s(r.state("c1")), format!("{g} state c1"));
    assert_eq!(s(r.list()), format!("{g} list --format json"));
    assert_eq!(Runc::new(Path::new("/x")).log, PathBuf::from("/x/runc.log"));
}

#[test]
fn runc_state_and_list_parse() {
    // As printed by runc 1.1.5.
    let state = r#"{
  "ociVersion": "1.0.2-dev", "id": "c1", "pid": 4242, "status": "running",
  "bundle": "/run/b", "rootfs": "/img/rootfs", "created": "2026-11-22T10:00:00.1Z", "owner": ""
}"#;
    let s = parse_state(state).unwrap();
    assert_eq!((s.id.as_str(), s.pid, &s.status, s.bundle.as_path()), ("c1", 4242, &Status::Running, Path::new("/run/b")));
    assert_eq!(parse_list("null").unwrap(), vec![]);
    let list = format!("[{state},{}]", state.replace("\"c1\"", "\"c2\"").replace("running", "stopped"));
    let l = parse_list(&list).unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[1].status, Status::Stopped);
    assert!(parse_state("{}").unwrap_err().contains("runc state output"));
    assert!(parse_list("[1]").is_err());
}

#[test]
fn stale_cleanup_deletes_only_our_id_and_reports_failures() {
    let r = Runc::new(Path::new("/run/r"));
    let listed = r#"[{"id":"other","pid":0,"status":"stopped","bundle":"/b2"},{"id":"sl","pid":77,"status":"created","bundle":"/b"}]"#;
    let mut calls = Vec::new();
    let removed = cleanup_stale(&r, "sl", |argv| {
        calls.push(argv.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "));
        Ok(if calls.len() == 1 { listed.to_string() } else { String::new() })
    })
    .unwrap()
    .unwrap();
    assert_eq!((removed.pid, removed.status), (77, Status::Created));
    assert_eq!(calls.len(), 2);
    assert!(calls[1].ends_with("delete --force sl"), "{}", calls[1]);
    // Nothing of ours: no delete. runc failing: the error says what was being done.
    let mut n = 0;
    assert_eq!(cleanup_stale(&r, "sn", |_| { n += 1; Ok("null".into()) }).unwrap(), None);
    assert_eq!(n, 1);
    let e = cleanup_stale(&r, "sl", |_| Err("exit status: 1: permission denied".into())).unwrap_err();
    assert_eq!(e.to_string(), "list runc containers: exit status: 1: permission denied");
}

#[test]
fn runc_log_last_error() {
    let log = r#"{"level":"info","msg":"hi","time":"t"}
{"level":"error","msg":"first","time":"t"}
{"level":"error","msg":"container_linux.go: starting container process caused: exec: \"x\": not found","time":"t"}
not json
"#;
    assert_eq!(last_log_error(log).unwrap(), "container_linux.go: starting container process caused: exec: \"x\": not found");
    assert_eq!(last_log_error("{\"level\":\"info\",\"msg\":\"x\"}\n"), None);
}

#[test]
fn output_lines_are_prefixed_cleaned_and_bounded() {
    let mut r = OutputRing::new("superlink", 3);
    assert_eq!(r.push(b"\x1b[32mINFO \x1b[0m:      Starting"), Vec::<String>::new());
    assert_eq!(r.push(b" Flower SuperLink\r\nsecond\n"), vec!["superlink: INFO :      Starting Flower SuperLink", "superlink: second"]);
    r.push(b"3\n4\n");
    assert_eq!(r.lines().collect::<Vec<_>>(), vec!["superlink: second", "superlink: 3", "superlink: 4"]);
    r.push(b"tail");
    assert_eq!(r.finish().as_deref(), Some("superlink: tail"));
    assert_eq!(r.finish(), None);
    let long = vec![b'x'; super::output::MAX_LINE * 3];
    let mut r = OutputRing::new("p", 2);
    r.push(&long);
    let out = r.push(b"\n");
    assert_eq!(out[0].len(), "p: ".len() + super::output::MAX_LINE);
    assert_eq!(clean(b"a\x07b\xffc\t"), "ab\u{fffd}c");
}

#[test]
fn rlimit_nice_is_given_only_where_runc_can_raise_it() {
    use super::oci::nice_settable;
    const SYS_RESOURCE: u64 = 1 << 24;
    assert!(nice_settable(Some(0), Some(0x1ff_ffff_ffff)), "a VM's PID 1: every capability");
    assert!(!nice_settable(Some(0), Some(0x1ff_feff_ffff)), "this development machine's root: all but CAP_SYS_RESOURCE");
    assert!(nice_settable(Some(20), Some(0)), "the hard limit already allows it");
    assert!(!nice_settable(Some(19), Some(!SYS_RESOURCE)));
    assert!(!nice_settable(None, None));
    // And the running process agrees with its own /proc/self/status and getrlimit.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|v| u64::from_str_radix(v.trim(), 16).unwrap()).unwrap();
    if eff & SYS_RESOURCE != 0 {
        assert!(super::nice_raisable());
    }
}
