//! The join value (`join.rs`): its format, its refusals, FL_JOIN in `resolve`, and the rule
//! "never plain text across sites".

use super::join::{Join, MAX_LEN, PREFIX, on_own_network, pem_certificates};
use super::*;
use crate::context::Context;
use crate::net::{Interface, Ipv4Net, Ipv6Net, Method, Plan};
use base64::Engine;

const CA_PEM: &str = include_str!("../tls/testdata/rsa-ca.crt");

fn addr(s: &str) -> Address {
    values::host_port(s).unwrap()
}

fn tls_join() -> Join {
    Join::new(
        vec![
            addr("203.0.113.7:8000"),
            addr("10.0.0.5:8000"),
            addr("[2001:db8::5]:8000"),
        ],
        Some(CA_PEM),
    )
    .unwrap()
}

/// A value with `json` inside, as a SuperLink would encode it.
fn raw(json: &str) -> String {
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(json)
    )
}

fn json_of(value: &str) -> serde_json::Value {
    let b = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value.strip_prefix(PREFIX).unwrap())
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn round_trip_with_tls_and_without() {
    let j = tls_join();
    let v = j.encode();
    assert!(v.starts_with("flwr1:"), "{v}");
    assert_eq!(Join::decode(&v).unwrap(), j);
    assert!(j.tls());
    assert_eq!(j.address().unwrap().to_string(), "203.0.113.7:8000");
    // The CA comes back as PEM that parses to the same certificate.
    assert_eq!(
        pem_certificates(&j.ca_pem().unwrap()).unwrap(),
        pem_certificates(CA_PEM).unwrap()
    );
    // The fingerprint is the certificate's SHA-256, as /status and openssl print it.
    let fp = &j.fingerprints()[0];
    assert_eq!(fp.len(), 32 * 3 - 1);
    assert_eq!(
        json_of(&v)["ca_sha256"][0].as_str().unwrap(),
        fp.replace(':', "").to_ascii_lowercase()
    );
    let plain = Join::new(vec![addr("10.0.0.5:8000")], None).unwrap();
    let pv = plain.encode();
    assert_eq!(Join::decode(&pv).unwrap(), plain);
    assert!(!plain.tls() && plain.ca_pem().is_none() && plain.fingerprints().is_empty());
    assert_eq!(
        json_of(&pv),
        serde_json::json!({"endpoints": ["10.0.0.5:8000"], "tls": false})
    );
}

#[test]
fn the_value_is_compact_and_plain_text_for_onegate() {
    let v = tls_join().encode();
    // An RSA-2048 CA and three endpoints: well under the bound, and about the size of the CA.
    assert!(
        v.len() < 2 * CA_PEM.len() && v.len() < MAX_LEN,
        "{} characters",
        v.len()
    );
    // Only characters OneGate publishes unchanged and a context value takes unquoted.
    assert!(
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/:".contains(&b)),
        "{v}"
    );
    assert!(crate::vocab::canonical("10.0.0.1".parse().unwrap()).is_ipv4());
}

#[test]
fn pasted_values_survive_line_breaks_padding_and_the_url_alphabet() {
    let j = tls_join();
    let v = j.encode();
    let wrapped: String = v
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned() + "\n")
        .collect();
    assert_eq!(Join::decode(&format!("  {wrapped}  ")).unwrap(), j);
    let url = v.replace('+', "-").replace('/', "_");
    assert_eq!(Join::decode(&url).unwrap(), j);
    let padded = format!("{v}{}", "=".repeat((4 - (v.len() - PREFIX.len()) % 4) % 4));
    assert_eq!(Join::decode(&padded).unwrap(), j);
}

#[test]
fn wrong_versions_and_foreign_values_are_refused_by_name() {
    let e = Join::decode("flwr2:eyJ4IjoxfQ").unwrap_err();
    assert!(e.contains("version 2") && e.contains("version 1"), "{e}");
    let long_version = format!("flwr{}:abc", "9".repeat(1000));
    for other in ["", "10.0.0.5:8000", "LS0tLS1CRUdJTi", "flwr:abc", "FLWR1:abc", &long_version] {
        let e = Join::decode(other).unwrap_err();
        assert!(e.starts_with("must start with flwr1:"), "{other:?}: {e}");
    }
}

#[test]
fn malformed_values_are_refused_without_quoting_them() {
    let cases = [
        ("flwr1:not base64!", "not flwr1: followed by base64"),
        (
            &raw("[1,2]") as &str,
            "does not hold a version 1 join value",
        ),
        (
            &raw(r#"{"endpoints":["10.0.0.5:8000"],"tls":false,"extra":1}"#),
            "unknown field",
        ),
        (&raw(r#"{"endpoints":[],"tls":false}"#), "lists 0 endpoints"),
        (
            &raw(r#"{"endpoints":["10.0.0.5"],"tls":false}"#),
            "endpoint \"10.0.0.5\": must be host:port",
        ),
        (
            &raw(r#"{"endpoints":["10.0.0.5:8000"],"tls":true}"#),
            "TLS is on but carries no CA",
        ),
        (
            &raw(r#"{"endpoints":["10.0.0.5:8000"],"tls":false,"ca":["MAo="],"ca_sha256":["00"]}"#),
            "TLS is off but carries a CA",
        ),
        (
            &raw(r#"{"endpoints":["10.0.0.5:8000"],"tls":true,"ca":["MAo="]}"#),
            "1 CA certificates but 0 SHA-256",
        ),
        (
            &raw(r#"{"endpoints":["10.0.0.5:8000"],"tls":true,"ca":["AAo="],"ca_sha256":["00"]}"#),
            "not a DER certificate",
        ),
    ];
    for (v, want) in cases {
        let e = Join::decode(v).unwrap_err();
        assert!(e.contains(want), "{v}: {e}");
        assert!(e.len() < 300, "{e}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("\"10.0.0.{i}:8000\"")).collect();
    let e = Join::decode(&raw(&format!(
        r#"{{"endpoints":[{}],"tls":false}}"#,
        many.join(",")
    )))
    .unwrap_err();
    assert!(e.contains("lists 17 endpoints; it needs 1 to 16"), "{e}");
    // A long unknown field name is not quoted whole either.
    let name = "y".repeat(500);
    let e = Join::decode(&raw(&format!(r#"{{"endpoints":["10.0.0.5:8000"],"tls":false,"{name}":1}}"#))).unwrap_err();
    assert!(!e.contains(&name) && e.len() < 300, "{e}");
    // A long bad endpoint is shown cut, not whole.
    let long = "x".repeat(500);
    let e = Join::decode(&raw(&format!(
        r#"{{"endpoints":["{long}:1"],"tls":false}}"#
    )))
    .unwrap_err();
    assert!(!e.contains(&long) && e.contains('…'), "{e}");
}

#[test]
fn oversize_values_are_refused_before_decoding() {
    let e = Join::decode(&format!("{PREFIX}{}", "A".repeat(MAX_LEN))).unwrap_err();
    assert!(
        e.contains(&format!("a join value is at most {MAX_LEN}")),
        "{e}"
    );
    let five = format!("{CA_PEM}{CA_PEM}{CA_PEM}{CA_PEM}{CA_PEM}");
    assert!(
        Join::new(vec![addr("10.0.0.5:8000")], Some(&five))
            .unwrap_err()
            .contains("at most 4")
    );
}

#[test]
fn an_altered_ca_is_caught_by_its_fingerprint() {
    let v = tls_join().encode();
    let mut json = json_of(&v);
    let ca = json["ca"][0].as_str().unwrap().to_string();
    // Change one character in the middle of the certificate's base64.
    let mid = ca.len() / 2;
    let swapped = if &ca[mid..=mid] == "A" { "B" } else { "A" };
    json["ca"][0] = format!("{}{swapped}{}", &ca[..mid], &ca[mid + 1..]).into();
    let e = Join::decode(&raw(&json.to_string())).unwrap_err();
    assert!(e.contains("does not match its SHA-256 fingerprint"), "{e}");
}

#[test]
fn only_certificates_go_in_never_a_key() {
    let key = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";
    let pem = format!("{CA_PEM}-----BEGIN PRIVATE KEY-----\n{key}\n-----END PRIVATE KEY-----\n");
    let j = Join::new(vec![addr("10.0.0.5:8000")], Some(&pem)).unwrap();
    assert_eq!(j.ca_der.len(), 1);
    let shown = format!("{} {} {}", j.encode(), json_of(&j.encode()), j.summary());
    for piece in key.as_bytes().chunks(16) {
        assert!(!shown.contains(std::str::from_utf8(piece).unwrap()));
    }
    assert!(
        Join::new(
            vec![addr("10.0.0.5:8000")],
            Some("-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n")
        )
        .is_err()
    );
}

fn plan(v4: &[(&str, u8)], v6: &[(&str, u8)]) -> Plan {
    let iface = Interface {
        context_name: "ETH0".into(),
        mac: [0x02, 0, 0, 0, 0, 1],
        method: Method::Static,
        ipv4: v4.first().map(|(a, p)| Ipv4Net {
            addr: a.parse().unwrap(),
            prefix: *p,
        }),
        gateway4: None,
        metric: None,
        mtu: None,
        ipv6: v6
            .iter()
            .map(|(a, p)| Ipv6Net {
                addr: a.parse().unwrap(),
                prefix: *p,
            })
            .collect(),
        gateway6: None,
        routes: Vec::new(),
    };
    Plan {
        interfaces: vec![iface],
        ..Plan::default()
    }
}

#[test]
fn own_networks_are_the_nic_prefixes_loopback_and_link_local() {
    let p = plan(&[("10.0.0.7", 24)], &[("2001:db8:1::7", 64)]);
    let local = |s: &str| on_own_network(&addr(s).host, &p);
    assert!(local("10.0.0.5:8000") && local("10.0.0.255:1") && local("[2001:db8:1::5]:8000"));
    assert!(
        local("127.0.0.1:8000")
            && local("[::1]:8000")
            && local("169.254.1.1:8000")
            && local("[fe80::1]:8000")
    );
    assert!(local("localhost:8000") && local("[::ffff:10.0.0.9]:8000"));
    assert!(
        !local("10.0.1.5:8000") && !local("203.0.113.7:8000") && !local("[2001:db8:2::5]:8000")
    );
    assert!(
        !local("superlink.example.org:8000"),
        "a name cannot be shown to be local"
    );
    assert!(!on_own_network(
        &addr("10.0.0.5:8000").host,
        &Plan::default()
    ));
}

fn resolve_sn(pairs: &[(&str, &str)]) -> Result<Resolved, Vec<String>> {
    let mut all = vec![
        ("FL_ROLE", "supernode"),
        ("FL_NODE_CONFIG", "partition-id=0 num-partitions=1"),
    ];
    all.extend_from_slice(pairs);
    resolve(&Context::from_pairs(all), &ImageFacts::builtin(), None)
        .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
}

const NET: [(&str, &str); 4] = [
    ("NETWORK", "YES"),
    ("ETH0_MAC", "02:00:0a:00:00:07"),
    ("ETH0_IP", "10.0.0.7"),
    ("ETH0_MASK", "255.255.255.0"),
];

#[test]
fn fl_join_replaces_address_ca_and_tls_flag() {
    let v = tls_join().encode();
    let r = resolve_sn(&[("FL_JOIN", &v)]).unwrap();
    let sn = r.config.role.supernode().unwrap();
    assert_eq!(
        sn.superlink.as_ref().unwrap().to_string(),
        "203.0.113.7:8000"
    );
    assert_eq!(sn.join.as_ref().unwrap(), &tls_join());
    assert_eq!(r.config.tls.enabled, Some(true));
    assert_eq!(r.config.tls.ca_pem, tls_join().ca_pem());
    // The plan shows what it holds, not the whole value.
    let shown = &r.plan["values"]["FL_JOIN"];
    assert_eq!(shown["value"]["endpoints"][0], "203.0.113.7:8000");
    assert_eq!(shown["value"]["ca_sha256"][0], tls_join().fingerprints()[0]);
    assert!(!r.plan.to_string().contains(&v));
    // What it stands for is shown where those variables would be, from "join".
    let values = &r.plan["values"];
    assert_eq!(values["FL_SUPERLINK_ADDRESS"], serde_json::json!({"value": "203.0.113.7:8000", "source": "join"}));
    assert_eq!(values["FL_TLS_ENABLED"], serde_json::json!({"value": "YES", "source": "join"}));
    assert_eq!(values["FL_SSL_CA_CERTFILE"]["source"], "join");
    // Under its one-apps name too; FL_TLS_ENABLED may agree.
    let r = resolve_sn(&[("ONEAPP_FL_JOIN", &v), ("FL_TLS_ENABLED", "YES")]).unwrap();
    assert_eq!(r.config.role.supernode().unwrap().join, Some(tls_join()));
    // No OneGate needed: no "cannot be discovered" problem, no "WITHOUT TLS" warning.
    assert!(
        r.warnings.iter().all(|w| !w.contains("WITHOUT TLS")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn fl_join_conflicts_are_named_all_at_once() {
    let v = tls_join().encode();
    let p = resolve_sn(&[
        ("FL_JOIN", &v),
        ("FL_SUPERLINK_ADDRESS", "10.0.0.5:8000"),
        (
            "FL_SSL_CA_CERTFILE",
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
        ),
        ("FL_TLS_ENABLED", "NO"),
        ("FL_NUM_ROUNDS", "0"),
    ])
    .unwrap_err();
    let has = |s: &str| p.iter().any(|l| l.contains(s));
    assert!(
        has("FL_JOIN: given together with FL_SUPERLINK_ADDRESS"),
        "{p:#?}"
    );
    assert!(
        has("FL_JOIN: given together with FL_SSL_CA_CERTFILE"),
        "{p:#?}"
    );
    assert!(
        has("FL_TLS_ENABLED='NO': contradicts FL_JOIN, whose SuperLink serves TLS"),
        "{p:#?}"
    );
    // A bad value: named with its rule, shown shortened.
    let p = resolve_sn(&[("FL_JOIN", &format!("flwr1:{}", "x".repeat(200)))]).unwrap_err();
    assert!(
        p[0].starts_with("FL_JOIN='flwr1:xxx")
            && p[0].contains("… (206 bytes): does not hold a version 1 join value"),
        "{p:#?}"
    );
    let p = resolve_sn(&[("FL_JOIN", "flwr9:abc")]).unwrap_err();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("version 9"), "{p:#?}");
    // A join value with TLS off and FL_TLS_ENABLED=YES contradict each other too.
    let plain = Join::new(vec![addr("10.0.0.5:8000")], None)
        .unwrap()
        .encode();
    let p = resolve_sn(&[("FL_JOIN", &plain), ("FL_TLS_ENABLED", "YES")]).unwrap_err();
    assert!(
        p.iter()
            .any(|l| l.contains("contradicts FL_JOIN, whose SuperLink serves plain text")),
        "{p:#?}"
    );
}

#[test]
fn static_address_and_ca_keep_working() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(CA_PEM);
    let r = resolve_sn(&[
        ("FL_SUPERLINK_ADDRESS", "203.0.113.7:8000"),
        ("FL_SSL_CA_CERTFILE", &b64),
    ])
    .unwrap();
    let sn = r.config.role.supernode().unwrap();
    assert_eq!(
        (
            sn.superlink.as_ref().unwrap().to_string(),
            sn.join.is_none()
        ),
        ("203.0.113.7:8000".into(), true)
    );
    assert!(r.config.tls.ca_pem.is_some());
}

#[test]
fn plain_text_across_sites_is_refused_unless_overridden() {
    let mut ctx = NET.to_vec();
    ctx.extend([
        ("FL_SUPERLINK_ADDRESS", "203.0.113.7:8000"),
        ("FL_TLS_ENABLED", "NO"),
    ]);
    let p = resolve_sn(&ctx).unwrap_err();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("FL_TLS_ENABLED='NO': the SuperLink 203.0.113.7:8000 is not on this VM's networks (10.0.0.7/24)")
            && p[0].contains("FL_ALLOW_PLAINTEXT_WAN=YES"),
        "{p:#?}"
    );
    // The override: accepted, with a loud warning.
    ctx.push(("FL_ALLOW_PLAINTEXT_WAN", "YES"));
    let r = resolve_sn(&ctx).unwrap();
    assert!(r.config.tls.allow_plaintext_wan);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.starts_with("PLAIN TEXT ACROSS SITES: the SuperLink 203.0.113.7:8000")),
        "{:?}",
        r.warnings
    );
    // On its own network, plain text stays allowed (the LAN case the e2e drills use).
    let mut lan = NET.to_vec();
    lan.extend([
        ("FL_SUPERLINK_ADDRESS", "10.0.0.5:8000"),
        ("FL_TLS_ENABLED", "NO"),
    ]);
    let r = resolve_sn(&lan).unwrap();
    assert!(
        r.warnings
            .iter()
            .all(|w| !w.contains("PLAIN TEXT ACROSS SITES")),
        "{:?}",
        r.warnings
    );
    // A name cannot be shown to be on this VM's networks.
    let mut named = NET.to_vec();
    named.extend([
        ("FL_SUPERLINK_ADDRESS", "superlink.example.org:8000"),
        ("FL_TLS_ENABLED", "NO"),
    ]);
    let p = resolve_sn(&named).unwrap_err();
    assert!(
        p.iter().any(|l| l.starts_with(
            "FL_TLS_ENABLED='NO': the SuperLink superlink.example.org:8000 is not on"
        )),
        "{p:#?}"
    );
    // Nothing saying TLS at all keeps its existing warning (not refused here).
    let mut unset = NET.to_vec();
    unset.push(("FL_SUPERLINK_ADDRESS", "203.0.113.7:8000"));
    assert!(
        resolve_sn(&unset)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("WITHOUT TLS"))
    );
    // An invalid override is a problem of its own.
    let p = resolve_sn(&[
        ("FL_SUPERLINK_ADDRESS", "10.0.0.5:8000"),
        ("FL_ALLOW_PLAINTEXT_WAN", "maybe"),
    ])
    .unwrap_err();
    assert!(
        p.iter()
            .any(|l| l.starts_with("FL_ALLOW_PLAINTEXT_WAN='maybe'")),
        "{p:#?}"
    );
}

#[test]
fn a_join_value_with_tls_off_follows_the_same_rule() {
    let plain = Join::new(vec![addr("203.0.113.7:8000")], None)
        .unwrap()
        .encode();
    let mut ctx = NET.to_vec();
    ctx.push(("FL_JOIN", &plain));
    let p = resolve_sn(&ctx).unwrap_err();
    assert!(
        p.iter().any(|l| l
            .starts_with("FL_JOIN: the SuperLink 203.0.113.7:8000 is not on this VM's networks")),
        "{p:#?}"
    );
    ctx.push(("FL_ALLOW_PLAINTEXT_WAN", "YES"));
    assert!(
        resolve_sn(&ctx)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.starts_with("PLAIN TEXT ACROSS SITES"))
    );
    // Same site: fine.
    let lan = Join::new(vec![addr("10.0.0.5:8000")], None)
        .unwrap()
        .encode();
    let mut ctx = NET.to_vec();
    ctx.push(("FL_JOIN", &lan));
    assert_eq!(resolve_sn(&ctx).unwrap().config.tls.enabled, Some(false));
}

#[test]
fn plaintext_refusal_is_what_boot_applies_to_a_discovered_superlink() {
    let p = plan(&[("10.0.0.7", 24)], &[]);
    assert_eq!(
        plaintext_refusal(&addr("10.0.0.5:8000"), false, &p),
        Ok(None)
    );
    assert!(
        plaintext_refusal(&addr("10.9.0.5:8000"), false, &p)
            .unwrap_err()
            .contains("TLS is required across sites")
    );
    assert!(
        plaintext_refusal(&addr("10.9.0.5:8000"), true, &p)
            .unwrap()
            .unwrap()
            .contains("PLAIN TEXT ACROSS SITES")
    );
    let e = plaintext_refusal(&addr("10.9.0.5:8000"), false, &Plan::default()).unwrap_err();
    assert!(e.contains("(none configured in the context)"), "{e}");
}
