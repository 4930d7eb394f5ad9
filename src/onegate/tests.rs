//! Pure tests: request bytes, value encoding against a port of the server's `escape_attr`,
//! response parsing over the shapes `onegate-server.rb` emits, the publication contract, the
//! discovery completeness rules. Exchanges with a server are in tests/onegate.rs.

use super::discover::superlink_from;
use super::model::{parse_service, parse_vm};
use super::wire::{self, HttpRequest};
use super::*;
use crate::config::{Address, values};
use proptest::prelude::*;

/// `escape_attr` of `onegate-server.rb` (l.512-560), char for char, with Ruby's indexing:
/// `attr[idx - 1]` at idx 0 is the *last* character, `attr[idx + 1]` past the end is nil.
fn escape_attr(attr: &str) -> String {
    let a: Vec<char> = attr.chars().collect();
    let at = |i: isize| -> Option<char> {
        if i < 0 { a.len().checked_sub(i.unsigned_abs()).map(|j| a[j]) } else { a.get(i as usize).copied() }
    };
    let mut ret = String::new();
    let mut escape = false;
    for (idx, &s) in a.iter().enumerate() {
        let i = idx as isize;
        if s == '=' && escape {
            ret.push(s);
            continue;
        }
        if s == '=' && at(i + 1) != Some('[') && at(i + 1) != Some('"') {
            ret.push_str("=\"");
            escape = true;
        } else if s == ',' && at(i - 1) != Some('"') {
            ret.push_str("\",");
        } else if s == '[' && at(i - 1) != Some('=') && at(i - 1) != Some('"') {
            ret.push_str("\"[");
        } else if s == ']' && at(i - 1) != Some('=') && at(i - 1) != Some('"') {
            ret.push_str("\"]");
            escape = false;
        } else if s == '\\' && at(i - 1) != Some('"') {
            ret.push_str("\"\\");
            escape = false;
        } else if s == '\n' && at(i - 1) != Some('"') {
            ret.push_str("\"\n");
            escape = false;
        } else {
            ret.push(s);
        }
    }
    ret = ret.replace("\\n", "\n");
    if escape && !ret.ends_with(']') && !ret.ends_with('"') {
        ret.push('"');
    }
    ret
}

/// Decode `application/x-www-form-urlencoded` (what Rack does before `params[:data]`).
fn form_decode(s: &str) -> Vec<(String, String)> {
    let dec = |t: &str| {
        let b = t.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&t[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    s.split('&').map(|kv| kv.split_once('=').unwrap()).map(|(k, v)| (dec(k), dec(v))).collect()
}

#[test]
fn ready_goes_on_the_wire_as_onegate_rb_sends_it() {
    // `onegate vm update --data READY=YES` = URI.encode_www_form({data: "READY=YES", type: 1}).
    let req = HttpRequest::put_vm_update(&[("READY".into(), "YES".into())]);
    assert_eq!((req.method.as_str(), req.path.as_str()), ("PUT", "/vm"));
    assert_eq!(req.body, "data=READY%3DYES&type=1");
    assert_eq!(req.content_type, Some("application/x-www-form-urlencoded"));
}

#[test]
fn several_attributes_travel_in_one_body_separated_by_newlines() {
    let req = HttpRequest::put_vm_update(&[
        ("FL_ENDPOINT".into(), "10.0.0.5:9092".into()),
        ("FL_CA_CERT".into(), "LS0+/w==".into()),
        ("READY".into(), "YES".into()),
    ]);
    assert_eq!(req.body, "data=FL_ENDPOINT%3D10.0.0.5%3A9092%0AFL_CA_CERT%3DLS0%2B%2Fw%3D%3D%0AREADY%3DYES&type=1");
    let form = form_decode(&req.body);
    assert_eq!(form[0], ("data".into(), "FL_ENDPOINT=10.0.0.5:9092\nFL_CA_CERT=LS0+/w==\nREADY=YES".into()));
    assert_eq!(form[1], ("type".into(), "1".into()));
    assert_eq!(HttpRequest::put_vm_delete("FL_ERROR").body, "data=FL_ERROR&type=2");
}

#[test]
fn form_encoding_is_rubys_encode_www_form_component() {
    assert_eq!(wire::form_component("a b*-._~!'()"), "a+b*-._%7E%21%27%28%29");
    assert_eq!(wire::form_component("é"), "%C3%A9");
}

#[test]
fn requests_carry_the_vm_identity_and_only_puts_a_content_type() {
    let get = HttpRequest::get_service(true);
    assert_eq!(get.path, "/service?extended=true");
    assert_eq!(get.route(), "/service");
    let h = wire::headers(&get, 42, "tok+en==");
    assert!(h.contains(&("X-ONEGATE-TOKEN", "tok+en==".into())));
    assert!(h.contains(&("X-ONEGATE-VMID", "42".into())));
    assert!(!h.iter().any(|(k, _)| *k == "Content-Type"));
    let put = HttpRequest::put_vm_delete("X");
    assert!(wire::headers(&put, 1, "t").contains(&("Content-Type", wire::FORM_CONTENT_TYPE.into())));
    assert_eq!(HttpRequest::get_vm_by_id(7).path, "/vms/7");
    assert_eq!(HttpRequest::get_vm().path, "/vm");
}

#[test]
fn plain_values_are_kept_and_others_base64() {
    for v in ["superlink", "10.0.0.5:9092", "1.42.0", "YES", "a@b/c+d=e-f_g.h", "3/5"] {
        assert_eq!(wire::encode_value(v), v);
    }
    for v in ["two words", "a,b", "[x]", "back\\slash", "line\nbreak", "q\"uote", "", "READY=YES", "xREADY=YESy"] {
        assert!(!wire::is_plain(v), "{v:?}");
    }
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    use base64::Engine;
    let enc = wire::encode_value(pem);
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(enc).unwrap(), pem.as_bytes());
}

#[test]
fn error_texts_stay_readable_and_safe() {
    let t = wire::readable_text("validate: FL_NUM_ROUNDS='0': must be [1, 10]\tand \"x\" \\ READY=YES é");
    assert_eq!(t, "validate: FL_NUM_ROUNDS='0': must be (1; 10) and 'x' / READY:YES ?");
    // `=` stays (escape_attr keeps it inside the quoted value): `>=` arrives as `>=` (issue #13).
    let t = wire::readable_text("FL_NUM_ROUNDS='0': must be >= 1; FL_X=a=b");
    assert_eq!(t, "FL_NUM_ROUNDS='0': must be >= 1; FL_X=a=b");
    assert_eq!(escape_attr(&format!("FL_ERROR={t}")), format!("FL_ERROR=\"{t}\""));
    // Only an `=` that would spell READY=YES for OneFlow (quotes and spaces stripped) changes.
    assert_eq!(wire::readable_text("NOT READY = YES >= x"), "NOT READY : YES >= x");
}

#[test]
fn error_text_is_bounded_but_whole() {
    // One problem that fits: as is.
    assert_eq!(wire::error_text("flower: exited 1"), "flower: exited 1");
    // Several: counted, each whole.
    assert_eq!(wire::error_text("A: bad\nB: worse\n\nC: >= 1"), "3 problems: A: bad | B: worse | C: >= 1");
    // Too many for the bound: the first ones whole, the count of the rest and where to read them.
    let lines: Vec<String> =
        (1..=30).map(|i| format!("FL_VAR_{i:02}='x': must be one of alpha beta gamma delta epsilon")).collect();
    let t = wire::error_text(&lines.join("\n"));
    assert!(t.len() <= wire::MAX_TEXT, "{} > {}", t.len(), wire::MAX_TEXT);
    assert!(t.starts_with("30 problems: FL_VAR_01='x': must be one of alpha beta gamma delta epsilon | FL_VAR_02="), "{t}");
    let shown = t.matches("FL_VAR_").count();
    assert!(shown >= 3, "{t}");
    assert!(t.ends_with(&format!(" | {} more: see /health", 30 - shown)), "{t}");
    for part in t.trim_start_matches("30 problems: ").split(" | ").take(shown) {
        assert!(lines.iter().any(|l| l == part), "cut problem {part:?} in {t}");
    }
    // One problem longer than the bound: cut at a word's end, marked, and where to read it.
    let long = format!("run failed: {}", "word ".repeat(200));
    let t = wire::error_text(&long);
    assert!(t.len() <= wire::MAX_TEXT && t.ends_with("word … (whole text: /health)"), "{t}");
    let t = wire::error_text(&format!("{long}\nsecond"));
    assert!(t.len() <= wire::MAX_TEXT && t.starts_with("2 problems: run failed: word"), "{t}");
    assert!(t.ends_with("word … | 1 more: see /health"), "{t}");
    assert_eq!(wire::error_text(""), "");
    // What the publisher stores for FL_ERROR is this text.
    let a = Attributes::from_pairs([("FL_ERROR", "A: must be >= 1\nB: bad")]);
    assert_eq!(a.get("FL_ERROR"), Some("2 problems: A: must be >= 1 | B: bad"));
}

#[test]
fn escape_attr_port_reproduces_the_servers_quirks() {
    assert_eq!(escape_attr("READY=YES"), "READY=\"YES\"");
    assert_eq!(escape_attr("A=1\\nB=2"), "A=\"1\"\nB=\"2\"");
    assert_eq!(escape_attr("K=value with spaces"), "K=\"value with spaces\"");
    assert_eq!(escape_attr("K=[A=b]"), "K=[A=\"b\"]");
    // A comma closes the quote early; an empty value at the end stays unterminated.
    assert_eq!(escape_attr("K=a,b"), "K=\"a\",b\"");
    assert_eq!(escape_attr("K="), "K=\"");
    assert_eq!(escape_attr("K=\nL=1"), "K=\"\"\nL=\"1\"");
}

proptest! {
    /// Whatever the value, what we publish comes out of `escape_attr` as one quoted value
    /// holding exactly what we sent (so the template parser stores it unchanged).
    #[test]
    fn every_encoded_value_survives_escape_attr(v in any::<String>()) {
        let enc = wire::encode_value(&v);
        prop_assume!(!enc.is_empty());
        prop_assert_eq!(escape_attr(&format!("FL_X={enc}\nREADY=YES")), format!("FL_X=\"{enc}\"\nREADY=\"YES\""));
        let text = wire::error_text(&v);
        prop_assume!(!text.is_empty());
        prop_assert!(text.len() <= wire::MAX_TEXT);
        prop_assert_eq!(escape_attr(&format!("FL_ERROR={text}")), format!("FL_ERROR=\"{text}\""));
        prop_assert!(!text.replace([' ', '"'], "").contains("READY=YES"));
    }
}

fn addr(s: &str) -> Address {
    values::host_port(s).unwrap()
}

#[test]
fn superlink_publishes_everything_and_ready_last_in_one_set() {
    let ep = addr("10.0.0.5:9092");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let f = SuperLinkFacts { flower_version: "1.42.0", endpoint: &ep, ca_pem: Some(pem), join: None, ready: true, error: None };
    let a = superlink_attributes(&f, true);
    assert_eq!(a.keys(), ["FL_ROLE", "FL_VERSION", "FL_ENDPOINT", "FL_TLS", "FL_CA_CERT", "FL_READY", "READY"]);
    assert_eq!(a.get("FL_ENDPOINT"), Some("10.0.0.5:9092"));
    assert_eq!(a.get("FL_TLS"), Some("YES"));
    use base64::Engine;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(a.get("FL_CA_CERT").unwrap()).unwrap(), pem.as_bytes());
    // REPORT_READY=NO: the same attributes, no READY.
    let quiet = superlink_attributes(&f, false);
    assert_eq!(quiet.keys(), &a.keys()[..6]);
    // No TLS: FL_TLS=NO and no CA.
    let plain = superlink_attributes(&SuperLinkFacts { ca_pem: None, ..f }, true);
    assert_eq!((plain.get("FL_TLS"), plain.get("FL_CA_CERT")), (Some("NO"), None));
    // The join value goes with them, in the same PUT, as is: it is plain text on the wire
    // (`flwr1:` and base64 without `_`, `-` or padding), so OneGate shows what FL_JOIN takes.
    let join = "flwr1:eyJlbmRwb2ludHMiOlsiMTAuMC4wLjU6ODAwMCJdLCJ0bHMiOmZhbHNlfQ";
    let joined = superlink_attributes(&SuperLinkFacts { join: Some(join), ..f }, true);
    assert_eq!(joined.keys(), ["FL_ROLE", "FL_VERSION", "FL_ENDPOINT", "FL_TLS", "FL_CA_CERT", "FL_JOIN", "FL_READY", "READY"]);
    assert_eq!(joined.get("FL_JOIN"), Some(join));
}

#[test]
fn an_error_withholds_ready() {
    let ep = addr("10.0.0.5:9092");
    let f = SuperLinkFacts {
        flower_version: "1.42.0",
        endpoint: &ep,
        ca_pem: None,
        join: None,
        ready: true,
        error: Some("flower: exited 1"),
    };
    let a = superlink_attributes(&f, true);
    assert_eq!((a.get("FL_READY"), a.get("FL_ERROR"), a.get("READY")), (Some("NO"), Some("flower: exited 1"), None));
    let s = supernode_attributes(
        &SuperNodeFacts {
            flower_version: "1.42.0",
            partition_id: Some(3),
            gpu_available: false,
            ready: true,
            error: None,
        },
        true,
    );
    assert_eq!(s.keys(), ["FL_ROLE", "FL_VERSION", "FL_PARTITION_ID", "FL_GPU_AVAILABLE", "FL_READY", "READY"]);
    assert_eq!(
        (s.get("FL_ROLE"), s.get("FL_PARTITION_ID"), s.get("FL_GPU_AVAILABLE")),
        (Some("supernode"), Some("3"), Some("NO"))
    );
    let fail = failure_attributes(Some(crate::vocab::Role::SuperNode), None, "context: FL_NUM_ROUNDS='0'");
    assert_eq!(fail.keys(), ["FL_ROLE", "FL_READY", "FL_ERROR"]);
}

#[test]
fn attributes_replace_by_key_and_skip_empty_values() {
    let mut a = Attributes::from_pairs([("FL_RUN_STATUS", "running"), ("FL_RUN_ROUND", "1/3")]);
    a.set("FL_RUN_STATUS", "completed").set("FL_RUN_ERROR", "").set("accuracy@val", "0.9");
    assert_eq!(
        a.pairs(),
        [
            ("FL_RUN_STATUS".to_string(), "completed".to_string()),
            ("FL_RUN_ROUND".to_string(), "1/3".to_string()),
            ("ACCURACY_VAL".to_string(), "0.9".to_string()),
        ]
    );
}

/// `GET /vm` as `build_vm_hash` writes it (fixture values from one-apps OneKE onegate_spec.rb).
const VM: &str = r#"{"VM":{"NAME":"master_0_(service_21)","ID":"49","STATE":"3","LCM_STATE":"3",
  "USER_TEMPLATE":{"READY":"YES","ROLE_NAME":"master","SERVICE_ID":"21","USER_INPUTS":{"K":"O|text|x"}},
  "TEMPLATE":{"NIC":[{"IP":"172.20.0.100","MAC":"02:00:ac:14:00:64","NAME":"_NIC0","NETWORK":"service"}],"NIC_ALIAS":[]}}}"#;

#[test]
fn vm_hash_parses_with_string_ids_and_nested_attributes() {
    let vm = parse_vm(VM).unwrap();
    assert_eq!((vm.id, vm.name.as_str(), vm.state, vm.lcm_state), (49, "master_0_(service_21)", Some(3), Some(3)));
    assert_eq!(vm.attr("READY"), Some("YES"));
    assert_eq!(vm.attr("USER_INPUTS"), Some(r#"{"K":"O|text|x"}"#));
    assert_eq!(vm.nics[0].ip.as_deref(), Some("172.20.0.100"));
}

#[test]
fn vm_tolerates_missing_templates_and_a_nic_object() {
    let vm = parse_vm(r#"{"VM":{"ID":7,"NAME":"x"}}"#).unwrap();
    assert!(vm.user_template.is_empty() && vm.nics.is_empty());
    let vm = parse_vm(r#"{"VM":{"ID":"7","TEMPLATE":{"NIC":{"IP":"10.0.0.7"}},"USER_TEMPLATE":{}}}"#).unwrap();
    assert_eq!(vm.nics.len(), 1);
    for bad in ["", "<html>", "{\"VM\":", "{}", r#"{"VM":{"NAME":"no id"}}"#, "[1]"] {
        assert!(parse_vm(bad).is_err(), "{bad:?}");
    }
}

/// `GET /service` as `build_service_hash` writes it: id a string, deploy_id an int,
/// running null, the reduced vm_info; one node whose vm_info OneFlow lost (null).
const SERVICE: &str = r#"{"SERVICE":{"name":"flower","id":"21","state":2,"roles":[
  {"name":"superlink","cardinality":1,"state":2,"nodes":[{"deploy_id":49,"running":null,
    "vm_info":{"VM":{"ID":"49","UID":"0","GID":"0","UNAME":"oneadmin","GNAME":"oneadmin","NAME":"superlink_0_(service_21)"}}}]},
  {"name":"supernode","cardinality":"2","state":1,"nodes":[{"deploy_id":"51","running":null,"vm_info":null},
    {"deploy_id":50,"running":null,"vm_info":{"VM":{"ID":"50","NAME":"supernode_0_(service_21)"}}}]},
  {"name":"empty","cardinality":0,"state":0}]}}"#;

#[test]
fn service_hash_parses_reduced_nodes() {
    let s = parse_service(SERVICE).unwrap();
    assert_eq!((s.id, s.name.as_str(), s.state), (21, "flower", Some(2)));
    let sn = s.role("supernode").unwrap();
    assert_eq!((sn.cardinality, sn.nodes.len()), (2, 2));
    assert_eq!(sn.nodes[0].deploy_id, 51);
    assert!(sn.nodes[0].vm.is_none());
    assert_eq!(sn.nodes[1].vm.as_ref().unwrap().name, "supernode_0_(service_21)");
    assert!(s.role("empty").unwrap().nodes.is_empty());
    assert_eq!(s.role_of(50).unwrap().name, "supernode");
    assert!(s.role_of(99).is_none());
    assert!(parse_service(r#"{"VM":{}}"#).is_err());
    assert!(parse_service(r#"{"SERVICE":{"roles":[{"nodes":[]}]}}"#).is_err());
}

#[test]
fn extended_service_nodes_carry_full_vms_with_a_nic_object() {
    let ext = r#"{"SERVICE":{"name":"f","id":"1","state":2,"roles":[{"name":"superlink","cardinality":1,"state":2,
      "nodes":[{"deploy_id":3,"running":null,"vm_info":{"VM":{"ID":"3","NAME":"s","UID":"0",
      "TEMPLATE":{"NIC":{"IP":"10.0.0.3","NIC_ID":"0"},"CONTEXT":{"FL_ROLE":"superlink"}},
      "USER_TEMPLATE":{"FL_ENDPOINT":"10.0.0.3:9092"}}}}]}]}}"#;
    let s = parse_service(ext).unwrap();
    let vm = s.roles[0].nodes[0].vm.as_ref().unwrap();
    assert_eq!((vm.attr("FL_ENDPOINT"), vm.nics[0].ip.as_deref()), (Some("10.0.0.3:9092"), Some("10.0.0.3")));
}

fn vm_with(attrs: &[(&str, &str)]) -> VmInfo {
    VmInfo {
        id: 12,
        user_template: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

#[test]
fn a_superlink_counts_as_found_only_once_complete() {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode("PEM");
    // flower-init's own SuperLink: everything in one PUT.
    let full = vm_with(&[
        ("FL_ENDPOINT", "10.0.0.5:9092"),
        ("FL_TLS", "YES"),
        ("FL_CA_CERT", &ca),
        ("FL_READY", "YES"),
        ("FL_VERSION", "1.42.0"),
    ]);
    let info = superlink_from(&full).unwrap().unwrap();
    assert_eq!(info.address.to_string(), "10.0.0.5:9092");
    assert_eq!(
        (info.tls, info.ca_pem.as_deref(), info.version.as_deref()),
        (Some(true), Some(&b"PEM"[..]), Some("1.42.0"))
    );
    assert_eq!(info.source, SuperLinkSource::OneGate { vmid: 12 });
    // The older appliance mid-way: FL_READY and FL_ENDPOINT, FL_TLS not yet.
    assert!(superlink_from(&vm_with(&[("FL_ENDPOINT", "10.0.0.5:9092"), ("FL_READY", "YES")])).unwrap().is_none());
    // … until READY=YES says it is done (here without TLS).
    let done = superlink_from(&vm_with(&[("FL_ENDPOINT", "10.0.0.5:9092"), ("READY", "YES")])).unwrap().unwrap();
    assert_eq!((done.tls, done.ca_pem), (None, None));
    assert!(superlink_from(&vm_with(&[("READY", "YES")])).unwrap().is_none());
    // An IPv6 endpoint travels base64 (brackets are not plain).
    let v6 = wire::encode_value("[fd00::5]:9092");
    assert_ne!(v6, "[fd00::5]:9092");
    let found = superlink_from(&vm_with(&[("FL_ENDPOINT", &v6), ("READY", "YES")])).unwrap().unwrap();
    assert_eq!(found.address.to_string(), "[fd00::5]:9092");
    assert!(superlink_from(&vm_with(&[("FL_ENDPOINT", "nonsense"), ("READY", "YES")])).unwrap().is_none());
    let bad = vm_with(&[("FL_ENDPOINT", "10.0.0.5:9092"), ("READY", "YES"), ("FL_CA_CERT", "not base64!")]);
    assert!(matches!(superlink_from(&bad), Err(DiscoveryError::BadCa { vmid: 12, .. })));
}

#[test]
fn static_address_needs_no_request() {
    let a = addr("10.1.1.1:9092");
    let input = DiscoveryInput {
        static_address: Some(&a),
        want_partition: false,
        attempts: 3,
        interval: std::time::Duration::from_secs(1),
    };
    let d = discover(None, &input, &mut |_| panic!("no waiting")).unwrap();
    assert_eq!(
        (d.superlink.source, d.requests, &d.partition),
        (SuperLinkSource::Static, 0, &PartitionOutcome::NotWanted)
    );
    let d = discover(None, &DiscoveryInput { want_partition: true, ..input }, &mut |_| true).unwrap();
    assert!(matches!(d.partition, PartitionOutcome::Skipped(_)));
    let none = DiscoveryInput { static_address: None, ..input };
    assert_eq!(discover(None, &none, &mut |_| true), Err(DiscoveryError::NoOneGate));
}

#[test]
fn policy_bounds_every_call() {
    let p = Policy {
        timeout: std::time::Duration::from_millis(1500),
        attempts: 4,
        backoff: std::time::Duration::from_secs(1),
        backoff_max: std::time::Duration::from_secs(3),
    };
    let s = |n| std::time::Duration::from_secs(n);
    assert_eq!((p.pause(1), p.pause(2), p.pause(3), p.pause(40)), (s(1), s(2), s(3), s(3)));
    // 4 tries of 1.5 s + pauses 1 + 2 + 3.
    assert_eq!(p.bound(), s(12));
    assert_eq!(p.bound_of_one_try(), std::time::Duration::from_millis(1500));
}

#[test]
fn errors_name_the_request_and_the_answer() {
    let e = OneGateError::TokenRejected { method: "PUT", path: "/vm".into(), vmid: 7, body: "Not authorized".into() };
    let m = e.to_string();
    assert!(m.starts_with("PUT /vm: token rejected (HTTP 401 \"Not authorized\")") && m.contains("VMID 7"), "{m}");
    assert!(!e.is_transient());
    let e = OneGateError::Http {
        method: "GET",
        path: "/service".into(),
        status: 400,
        body: "Empty or invalid SERVICE_ID".into(),
    };
    assert_eq!(e.to_string(), "GET /service: HTTP 400: Empty or invalid SERVICE_ID");
    assert!(!e.is_transient());
    assert!(OneGateError::Http { method: "GET", path: "/vm".into(), status: 503, body: String::new() }.is_transient());
    let t = OneGateError::Transport {
        method: "GET",
        path: "/vm".into(),
        url: "http://h:5030".into(),
        cause: "refused".into(),
    };
    assert_eq!(t.to_string(), "GET /vm: cannot reach OneGate at http://h:5030: refused");
    assert!(t.is_transient());
}

#[test]
fn client_urls_ignore_the_endpoint_path_and_never_show_the_token() {
    let ep = values::url("http://onegate.example:5030/some/prefix").unwrap();
    let c = Client::new(&ep, 3, crate::secret::Secret::new("s3cret"));
    assert_eq!(c.base_url(), "http://onegate.example:5030");
    assert!(!format!("{c:?}").contains("s3cret"));
    let v6 = values::url("https://[fd00::1]").unwrap();
    let c6 = Client::new(&v6, 3, crate::secret::Secret::new("t"));
    assert_eq!(c6.base_url(), "https://[fd00::1]:443");
}
