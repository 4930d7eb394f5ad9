//! The registrar's plan: what is registered and unregistered for which deployment. The
//! cycle itself runs against a real Flower and the OneGate stand-in in `make e2e`.

use super::*;

fn w(source: KeySource, pem: &str) -> Wanted {
    Wanted { source, pem: pem.into(), fingerprint: format!("SHA256:{pem}") }
}

fn p(node_id: u64, pem: &str) -> Present {
    Present { node_id, pem: pem.into() }
}

#[test]
fn missing_keys_are_registered_once_whatever_their_sources() {
    let wanted = [w(KeySource::Vm(11), "A"), w(KeySource::Context(1), "A"), w(KeySource::Vm(12), "B"), w(KeySource::Context(2), "C")];
    let actions = plan(&wanted, &[p(5, "B")], &Record::default());
    let regs: Vec<(KeySource, String)> = actions
        .iter()
        .map(|a| match a {
            Action::Register { source, pem, .. } => (source.clone(), pem.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(regs, vec![(KeySource::Vm(11), "A".to_string()), (KeySource::Context(2), "C".to_string())]);
}

#[test]
fn only_keys_recorded_for_vms_that_left_are_unregistered() {
    let mut ours = Record::default();
    ours.vms.insert("A".into(), 11); // still in the service
    ours.vms.insert("B".into(), 12); // left
    ours.vms.insert("D".into(), 14); // left, and Flower no longer has it
    // E: registered by an operator with `flwr supernode register`: never touched.
    let present = [p(1, "A"), p(2, "B"), p(3, "E")];
    let actions = plan(&[w(KeySource::Vm(11), "A")], &present, &ours);
    assert_eq!(actions, vec![Action::Unregister { node_id: 2, vmid: 12, pem: "B".into() }]);
}

#[test]
fn a_key_that_moved_from_a_vm_to_the_context_stays_registered() {
    let mut ours = Record::default();
    ours.vms.insert("A".into(), 11);
    let actions = plan(&[w(KeySource::Context(1), "A")], &[p(1, "A")], &ours);
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn sources_are_named_for_messages() {
    assert_eq!(KeySource::Vm(12).to_string(), "VM 12's FL_NODE_PUBKEY");
    assert_eq!(KeySource::Context(3).to_string(), "FL_SUPERNODE_KEYS entry 3");
}

#[test]
fn the_keys_file_round_trips_and_keeps_positions() {
    let keys = vec![(1, "ecdsa-sha2-nistp256 AAAA one".to_string()), (3, "bad\tkey\nwith breaks".to_string())];
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("keys");
    std::fs::write(&f, keys_file_text(&keys)).unwrap();
    let back = read_keys_file(&f).unwrap();
    assert_eq!(back, vec![(1, "ecdsa-sha2-nistp256 AAAA one".to_string()), (3, "bad key with breaks".to_string())]);
}

#[test]
fn options_are_checked_and_named() {
    let parse_of = |v: &[&str]| parse(&mut Args::new(v.iter().map(|s| s.to_string()).collect())).err();
    assert_eq!(parse_of(&["--record", "/x"]).as_deref(), Some("--control is required"));
    let e = parse_of(&["--control", "127.0.0.1:8000", "--record", "/x", "--onegate", "http://10.0.0.1:5030"]).unwrap();
    assert!(e.contains("go together"), "{e}");
    let e = parse_of(&["--control", "127.0.0.1:8000", "--record", "/x", "--every", "0"]).unwrap();
    assert!(e.contains("--every"), "{e}");
}

/// What a service VM published: a key (the blob, as SuperNodes publish it, or a whole line),
/// nothing yet, or something that is not a key, refused with the rule and never quoted whole.
#[test]
fn a_vms_published_key_is_read_or_refused_with_the_rule() {
    let blob = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD4McU2jmQBryAxB71j8119v0Kmz3Ix/+XWcYUKibZGn7Exp7nFhwkksUPFCd2mip2TUeO704OhKotDslA0KGLQ=";
    let vm = |v: Option<&str>| {
        let mut vm = crate::onegate::VmInfo { id: 104, ..Default::default() };
        if let Some(v) = v {
            vm.user_template.insert(PUBKEY_ATTR.into(), v.into());
        }
        vm
    };
    assert!(read_vm_key(&vm(None)).is_none(), "not published yet: wait");
    let Some(VmKey::Key(k)) = read_vm_key(&vm(Some(blob))) else { panic!("the blob is a key") };
    assert_eq!(k.fingerprint(), "SHA256:5Mn+JugTrdxl6yv93o1IFjY2A2caPzijbfg4mC+D8xE");
    let line = format!("ecdsa-sha2-nistp256 {blob} vm104");
    assert!(matches!(read_vm_key(&vm(Some(&line))), Some(VmKey::Key(_))));
    let evil = format!("ssh-rsa {} $(reboot)", "A".repeat(300));
    let Some(VmKey::Bad(why)) = read_vm_key(&vm(Some(&evil))) else { panic!("refused") };
    assert!(why.contains("NIST curve") && !why.contains("reboot") && why.len() < 200, "{why}");
}
