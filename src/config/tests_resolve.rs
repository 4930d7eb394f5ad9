//! One test (or more) per rule of `resolve`, over contexts built in memory.

use super::*;
use crate::vocab::{Framework, LogLevel, Role, Strategy, UseCase};
use crate::context::{Context, parse};
use crate::net::{Ipv4Net, Method, Route4};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn image() -> ImageFacts {
    ImageFacts::builtin()
}

fn ctx(pairs: &[(&str, &str)]) -> Context {
    Context::from_pairs(pairs.iter().copied())
}

fn ok(pairs: &[(&str, &str)]) -> Resolved {
    match resolve(&ctx(pairs), &image(), None) {
        Ok(r) => r,
        Err(e) => panic!("{:#?}", e.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
    }
}

fn problems(pairs: &[(&str, &str)]) -> Vec<String> {
    match resolve(&ctx(pairs), &image(), None) {
        Ok(r) => panic!("accepted: {:#?}", r.config),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn has(list: &[String], needle: &str) -> bool {
    list.iter().any(|l| l.contains(needle))
}

const SL: (&str, &str) = ("FL_ROLE", "superlink");
const SN: (&str, &str) = ("FL_ROLE", "supernode");
const ADDR: (&str, &str) = ("FL_SUPERLINK_ADDRESS", "10.0.0.5:8000");

#[test]
fn superlink_defaults() {
    let r = ok(&[SL]);
    let c = &r.config;
    assert_eq!(c.role(), Role::SuperLink);
    let sl = c.role.superlink().unwrap();
    assert_eq!(
        (sl.num_rounds, sl.strategy, sl.min_fit_clients, sl.min_evaluate_clients, sl.min_available_clients),
        (3, Strategy::FedAvg, 2, 2, 2)
    );
    assert_eq!((sl.proximal_mu, sl.server_lr, sl.num_malicious, sl.trim_beta), (0.1, 0.1, 0, 0.2));
    assert_eq!(sl.checkpoint, None);
    assert_eq!(sl.database, Database::File("/var/lib/flower/state.db".into()));
    assert_eq!(c.common.flower_version, "1.42.0");
    assert_eq!(c.common.framework, Framework::Sklearn);
    assert_eq!(
        (c.common.use_case, c.common.log_level, c.common.isolation, c.common.health_port),
        (UseCase::None, LogLevel::Info, Isolation::Subprocess, 8081)
    );
    assert_eq!(c.tls.enabled, None);
    assert!(c.tls.superlink_enabled());
    assert!(!c.gpu.enabled);
    assert_eq!(c.network, crate::net::Plan::default());
    assert!(!c.onegate.is_usable());
    assert!(has(
        &r.warnings,
        "OneGate is not usable (ONEGATE_ENDPOINT, VMID and the token (token.txt or ONEGATE_TOKEN) are missing)"
    ));
    let v = &r.plan["values"];
    assert_eq!(v["FL_ROLE"], serde_json::json!({"value": "superlink", "source": "context"}));
    assert_eq!(v["FLOWER_VERSION"], serde_json::json!({"value": "1.42.0", "source": "image"}));
    assert_eq!(v["FL_NUM_ROUNDS"], serde_json::json!({"value": 3, "source": "default"}));
    assert_eq!(v["FL_TLS_ENABLED"], serde_json::json!({"value": "YES", "source": "default"}));
    assert!(v.get("FL_NODE_CONFIG").is_none(), "SuperNode variables are not in a SuperLink plan");
}

#[test]
fn supernode_with_static_address() {
    let r = ok(&[
        SN,
        ("ONEAPP_FL_SUPERLINK_ADDRESS", "[2001:db8::5]:8000"),
        ("FL_NODE_CONFIG", "partition-id=1 num-partitions=3"),
        ("FL_MAX_RETRIES", "5"),
        ("FL_TLS_ENABLED", "no"),
        // Not on this VM's networks (it has none): plain text across sites needs the override.
        ("FL_ALLOW_PLAINTEXT_WAN", "YES"),
    ]);
    assert!(r.warnings.iter().any(|w| w.starts_with("PLAIN TEXT ACROSS SITES")), "{:?}", r.warnings);
    let sn = r.config.role.supernode().unwrap();
    assert_eq!(sn.superlink.as_ref().unwrap().to_string(), "[2001:db8::5]:8000");
    assert_eq!(sn.node_config.as_ref().unwrap().get("partition-id"), Some(&NodeValue::Int(1)));
    assert_eq!((sn.max_retries, sn.max_wait_time), (Some(5), None));
    assert_eq!((sn.discovery_retries, sn.discovery_interval), (30, Duration::from_secs(10)));
    assert_eq!(r.config.tls.enabled, Some(false));
    assert_eq!(
        r.plan["values"]["FL_SUPERLINK_ADDRESS"],
        serde_json::json!({"value": "[2001:db8::5]:8000", "source": "alias", "name": "ONEAPP_FL_SUPERLINK_ADDRESS"})
    );
}

#[test]
fn role_precedence_flag_context_image() {
    let c = ctx(&[SN, ADDR]);
    let mut img = image();
    let r = resolve(&c, &img, Some(Role::SuperLink)).unwrap();
    assert_eq!(r.config.role(), Role::SuperLink);
    assert!(has(&r.warnings, "--role superlink overrides FL_ROLE=supernode"));
    assert_eq!(r.plan["values"]["FL_ROLE"]["source"], "flag");
    img.role = Some(Role::SuperLink);
    let r = resolve(&c, &img, None).unwrap();
    assert_eq!(r.config.role(), Role::SuperNode);
    assert!(has(&r.warnings, "FL_ROLE=supernode overrides this image's role (superlink)"));
    let r = resolve(&Context::default(), &img, None).unwrap();
    assert_eq!(r.config.role(), Role::SuperLink);
    assert_eq!(r.plan["values"]["FL_ROLE"]["source"], "image");
    let e = resolve(&Context::default(), &image(), None).unwrap_err();
    assert_eq!(
        e.problems[0].to_string(),
        "FL_ROLE: unset, and this image does not fix a role: set FL_ROLE=superlink or FL_ROLE=supernode"
    );
    assert_eq!(problems(&[("FL_ROLE", "worker")]), vec!["FL_ROLE='worker': must be one of superlink, supernode"]);
}

#[test]
fn integer_and_float_ranges() {
    assert_eq!(
        problems(&[SL, ("FL_NUM_ROUNDS", "0")]),
        vec!["FL_NUM_ROUNDS='0': must be an integer from 1 to 1000000"]
    );
    assert_eq!(
        problems(&[SL, ("FL_MIN_FIT_CLIENTS", "two")]),
        vec!["FL_MIN_FIT_CLIENTS='two': must be an integer from 1 to 100000"]
    );
    assert_eq!(
        problems(&[SL, ("FL_STRATEGY", "FedProx"), ("FL_PROXIMAL_MU", "0")]),
        vec!["FL_PROXIMAL_MU='0': must be a number > 0"]
    );
    assert_eq!(
        problems(&[SL, ("FL_STRATEGY", "fedadam"), ("FL_SERVER_LR", "-1")]),
        vec!["FL_SERVER_LR='-1': must be a number > 0"]
    );
    assert_eq!(
        problems(&[SL, ("FL_STRATEGY", "FedTrimmedAvg"), ("FL_TRIM_BETA", "0.5")]),
        vec!["FL_TRIM_BETA='0.5': must be a number >= 0 and < 0.5"]
    );
    let r = ok(&[SL, ("FL_STRATEGY", "FedTrimmedAvg"), ("FL_TRIM_BETA", "0")]);
    assert_eq!(r.config.role.superlink().unwrap().trim_beta, 0.0);
    assert_eq!(
        problems(&[SN, ADDR, ("FL_GPU_ENABLED", "YES"), ("FL_GPU_MEMORY_FRACTION", "0")]),
        vec!["FL_GPU_MEMORY_FRACTION='0': must be a number > 0 and <= 1"]
    );
    assert_eq!(
        problems(&[SL, ("FL_HEALTH_PORT", "8000")]),
        vec!["FL_HEALTH_PORT='8000': must not be 8000 or 9094: Flower listens there"]
    );
    assert_eq!(
        problems(&[SL, ("FL_HEALTH_PORT", "70000")]),
        vec!["FL_HEALTH_PORT='70000': must be an integer from 1 to 65535"]
    );
}

#[test]
fn strategy_parameters_for_other_strategies_warn() {
    let r = ok(&[SL, ("FL_PROXIMAL_MU", "abc"), ("FL_TRIM_BETA", "0.9"), ("FL_NUM_MALICIOUS", "1")]);
    assert!(has(&r.warnings, "FL_PROXIMAL_MU applies to FedProx only; FL_STRATEGY is FedAvg: ignored"));
    assert!(has(&r.warnings, "FL_TRIM_BETA applies to FedTrimmedAvg only"));
    assert!(has(&r.warnings, "FL_NUM_MALICIOUS applies to Krum and Bulyan only"));
    assert_eq!(r.config.role.superlink().unwrap().proximal_mu, 0.1);
}

#[test]
fn byzantine_bounds_show_formula_and_numbers() {
    assert_eq!(
        problems(&[SL, ("FL_STRATEGY", "Krum"), ("FL_MIN_FIT_CLIENTS", "4"), ("FL_NUM_MALICIOUS", "1")]),
        vec![
            "FL_STRATEGY='Krum': Krum needs n >= 2f+3 = 5 SuperNodes per round, with n = FL_MIN_FIT_CLIENTS = 4 and f = FL_NUM_MALICIOUS = 1: raise FL_MIN_FIT_CLIENTS or lower FL_NUM_MALICIOUS"
        ]
    );
    ok(&[
        SL,
        ("FL_STRATEGY", "krum"),
        ("FL_MIN_FIT_CLIENTS", "5"),
        ("FL_MIN_AVAILABLE_CLIENTS", "5"),
        ("FL_NUM_MALICIOUS", "1"),
    ]);
    // Default n=2, f=0: Krum needs 3.
    assert!(problems(&[SL, ("FL_STRATEGY", "Krum")])[0].contains("n >= 2f+3 = 3"));
    assert!(
        problems(&[SL, ("FL_STRATEGY", "Bulyan"), ("FL_MIN_FIT_CLIENTS", "6"), ("FL_NUM_MALICIOUS", "1")])[0]
            .contains("Bulyan needs n >= 4f+3 = 7")
    );
    ok(&[
        SL,
        ("FL_STRATEGY", "Bulyan"),
        ("FL_MIN_FIT_CLIENTS", "7"),
        ("FL_MIN_AVAILABLE_CLIENTS", "7"),
        ("FL_NUM_MALICIOUS", "1"),
    ]);
}

#[test]
fn fit_above_available_is_a_warning() {
    let r = ok(&[SL, ("FL_MIN_FIT_CLIENTS", "5"), ("FL_MIN_AVAILABLE_CLIENTS", "3")]);
    assert!(has(&r.warnings, "FL_MIN_FIT_CLIENTS=5 is above FL_MIN_AVAILABLE_CLIENTS=3"));
}

#[test]
fn checkpoints() {
    let r = ok(&[SL, ("FL_CHECKPOINT_ENABLED", "YES"), ("FL_CHECKPOINT_INTERVAL", "5")]);
    assert_eq!(
        r.config.role.superlink().unwrap().checkpoint,
        Some(Checkpoint { interval: 5, path: "/var/lib/flower/checkpoints".into() })
    );
    assert_eq!(
        problems(&[SL, ("FL_CHECKPOINT_ENABLED", "YES"), ("FL_CHECKPOINT_PATH", "/tmp/ckpt")]),
        vec![
            "FL_CHECKPOINT_PATH='/tmp/ckpt': must be an absolute path under /var/lib/flower (the state disk; everything else is read-only or lost at power-off)"
        ]
    );
    let r = ok(&[SL, ("FL_CHECKPOINT_PATH", "/tmp/x")]);
    assert!(has(&r.warnings, "FL_CHECKPOINT_PATH is ignored: FL_CHECKPOINT_ENABLED is NO"));
    assert_eq!(
        problems(&[SL, ("FL_CHECKPOINT_ENABLED", "maybe")]),
        vec!["FL_CHECKPOINT_ENABLED='maybe': must be YES or NO"]
    );
}

#[test]
fn image_facts_are_enforced_without_fallback() {
    assert_eq!(
        problems(&[SL, ("FLOWER_VERSION", "1.41.0")]),
        vec![
            "FLOWER_VERSION='1.41.0': must equal this image's Flower version (1.42.0); nothing is downloaded at boot: use an image built for 1.41.0"
        ]
    );
    assert_eq!(
        problems(&[SL, ("ONEAPP_FLOWER_VERSION", "1.42")]),
        vec!["ONEAPP_FLOWER_VERSION='1.42': must be a version X.Y.Z"]
    );
    assert_eq!(
        problems(&[SN, ADDR, ("ONEAPP_FL_FRAMEWORK", "pytorch")]),
        vec![
            "ONEAPP_FL_FRAMEWORK='pytorch': must equal this image's framework (sklearn); nothing is downloaded at boot: use an image built for pytorch"
        ]
    );
    ok(&[SN, ADDR, ("ML_FRAMEWORK", "SKLearn"), ("FLOWER_VERSION", "1.42.0")]);
}

#[test]
fn use_case_must_fit_framework_and_image() {
    assert_eq!(
        problems(&[SL, ("FL_USE_CASE", "llm-fine-tuning")]),
        vec!["FL_USE_CASE='llm-fine-tuning': needs ML_FRAMEWORK pytorch; this image's framework is sklearn"]
    );
    let mut img = image();
    img.framework = Framework::PyTorch;
    img.use_cases = vec![UseCase::ImageClassification];
    let e = resolve(&ctx(&[SL, ("FL_USE_CASE", "tabular-classification")]), &img, None).unwrap_err();
    assert_eq!(
        e.problems[0].to_string(),
        "FL_USE_CASE='tabular-classification': needs ML_FRAMEWORK sklearn; this image's framework is pytorch"
    );
    let e = resolve(&ctx(&[SL, ("FL_USE_CASE", "llm-fine-tuning")]), &img, None).unwrap_err();
    assert_eq!(
        e.problems[0].to_string(),
        "FL_USE_CASE='llm-fine-tuning': is not shipped by this image (it has: none, image-classification)"
    );
    assert_eq!(
        ok(&[SL, ("FL_USE_CASE", "Tabular-Classification")]).config.common.use_case,
        UseCase::TabularClassification
    );
}

#[test]
fn aliases_that_disagree_name_both() {
    assert_eq!(
        problems(&[SL, ("FL_NUM_ROUNDS", "5"), ("ONEAPP_FL_NUM_ROUNDS", "7")]),
        vec!["FL_NUM_ROUNDS='5': differs from ONEAPP_FL_NUM_ROUNDS='7': both name the same variable; give one"]
    );
    assert_eq!(
        problems(&[SN, ADDR, ("ML_FRAMEWORK", "sklearn"), ("ONEAPP_FL_FRAMEWORK", "pytorch")]),
        vec![
            "ML_FRAMEWORK='sklearn': differs from ONEAPP_FL_FRAMEWORK='pytorch': both name the same variable; give one"
        ]
    );
    ok(&[SL, ("FL_TLS_ENABLED", "YES"), ("ONEAPP_FL_TLS_ENABLED", "yes")]);
}

#[test]
fn node_config_and_addresses() {
    let p = problems(&[SN, ADDR, ("FL_NODE_CONFIG", "partition-id=0 strategy=fedprox")]);
    assert!(
        p[0].starts_with("FL_NODE_CONFIG='partition-id=0 strategy=fedprox': strategy=fedprox: unquoted text"),
        "{p:?}"
    );
    assert_eq!(
        problems(&[SN, ("FL_SUPERLINK_ADDRESS", "2001:db8::5:8000")]),
        vec![
            "FL_SUPERLINK_ADDRESS='2001:db8::5:8000': must be host:port with an IPv6 address in brackets ([2001:db8::1]:8000)"
        ]
    );
    assert_eq!(
        problems(&[SN]),
        vec![
            "FL_SUPERLINK_ADDRESS: unset, and the SuperLink cannot be discovered: OneGate is not usable (ONEGATE_ENDPOINT, VMID and the token (token.txt or ONEGATE_TOKEN) are missing); give FL_JOIN (copied from the SuperLink), FL_SUPERLINK_ADDRESS=host:port, or TOKEN=YES in the VM template"
        ]
    );
}

/// A SuperNode that finds its SuperLink through OneGate.
fn onegate_pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        SN,
        ("ONEGATE_ENDPOINT", "http://169.254.16.9:5030"),
        ("VMID", "42"),
        ("TOKEN", "YES"),
        ("REPORT_READY", "YES"),
    ]
}

/// Issue #13 point 5: REPORT_READY=YES and TOKEN=YES without a token is a warning, never a
/// refusal: OneGate publication is best-effort and Flower runs without it.
#[test]
fn report_ready_without_a_token_is_a_warning() {
    for role in [SL, SN] {
        let mut pairs = vec![
            role,
            ("ONEGATE_ENDPOINT", "http://169.254.16.9:5030"),
            ("VMID", "42"),
            ("TOKEN", "YES"),
            ("REPORT_READY", "YES"),
        ];
        if role == SN {
            pairs.push(("FL_SUPERLINK_ADDRESS", "10.0.0.5:9092"));
        }
        let r = ok(&pairs);
        assert!(r.config.onegate.report_ready && !r.config.onegate.is_usable());
        let w = r.warnings.iter().find(|w| w.starts_with("REPORT_READY='YES'")).expect("a REPORT_READY warning");
        assert_eq!(
            w,
            "REPORT_READY='YES': READY=YES cannot be reported: the token (token.txt or ONEGATE_TOKEN) is missing \
             (TOKEN=YES in the VM template provides them); Flower runs anyway, but OneFlow's ready gate will not see this VM as ready"
        );
        assert!(r.warnings.iter().any(|w| w.starts_with("TOKEN=YES but there is no token.txt")), "{:?}", r.warnings);
    }
    // Usable, or not asked for: nothing to say.
    let mut usable = ok(&[SL, ("ONEGATE_ENDPOINT", "http://169.254.16.9:5030"), ("VMID", "42"), ("REPORT_READY", "YES"), ("ONEGATE_TOKEN", "t")]);
    assert_eq!(usable.config.onegate.ready_unreportable(), None);
    usable.config.onegate.token = None;
    assert!(usable.config.onegate.ready_unreportable().is_some());
    usable.config.onegate.report_ready = false;
    assert_eq!(usable.config.onegate.ready_unreportable(), None);
    // No OneGate at all: the same warning, naming everything missing.
    let r = ok(&[SL, ("REPORT_READY", "YES")]);
    assert!(r.warnings.iter().any(|w| w.starts_with(
        "REPORT_READY='YES': READY=YES cannot be reported: ONEGATE_ENDPOINT, VMID and the token (token.txt or ONEGATE_TOKEN) are missing"
    )), "{:?}", r.warnings);
}

#[test]
fn supernode_via_onegate() {
    let c = Context::from_pairs(onegate_pairs()).with_files(Some(crate::secret::Secret::new("tok")), None);
    let r = resolve(&c, &image(), None).unwrap();
    let og = &r.config.onegate;
    assert!(og.is_usable() && og.report_ready);
    assert_eq!((og.vmid, og.endpoint.as_ref().unwrap().port), (Some(42), 5030));
    assert_eq!(r.config.network.onegate_link_route, Some(Ipv4Addr::new(169, 254, 16, 9)));
    assert_eq!(r.config.role.supernode().unwrap().superlink, None);
    assert_eq!(r.plan["onegate"]["token"], "<redacted 3 bytes>");
    assert!(!r.plan.to_string().contains("\"tok\""));
    // Without the token: the SuperLink cannot be discovered (a problem: nothing to connect
    // to); READY cannot be reported (a warning only, OneGate is best-effort).
    let p = problems(&onegate_pairs());
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("FL_SUPERLINK_ADDRESS: unset, and the SuperLink cannot be discovered"), "{p:?}");
    // ONEGATE_TOKEN stands in for token.txt.
    let mut pairs = onegate_pairs();
    pairs.push(("ONEGATE_TOKEN", "vcenter-token"));
    let r = ok(&pairs);
    assert_eq!(r.config.onegate.token.as_ref().unwrap().expose(), "vcenter-token");
    assert_eq!(
        problems(&[SL, ("ONEGATE_ENDPOINT", "169.254.16.9:5030")]),
        vec!["ONEGATE_ENDPOINT='169.254.16.9:5030': must be a URL http://host:port"]
    );
}

#[test]
fn supernode_tls_follows_onegate_unless_explicit() {
    let mut pairs = onegate_pairs();
    pairs.push(("ONEGATE_TOKEN", "t"));
    assert_eq!(ok(&pairs).config.tls.enabled, None);
    let r = ok(&[SN, ADDR]);
    assert!(has(&r.warnings, "this SuperNode will connect WITHOUT TLS"));
    assert_eq!(
        problems(&[SN, ADDR, ("FL_TLS_ENABLED", "YES")]),
        vec![
            "FL_TLS_ENABLED='YES': no CA certificate to trust: give FL_SSL_CA_CERTFILE, or make OneGate usable (TOKEN=YES) so the SuperLink's FL_CA_CERT can be fetched"
        ]
    );
}

const CA_PEM: &str = include_str!("../../examples/superlink-tls-operator/ca.pem");
const CERT_PEM: &str = include_str!("../../examples/superlink-tls-operator/superlink.pem");
const KEY_PEM: &str = include_str!("../../examples/superlink-tls-operator/superlink.key");

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn operator_certificates_all_or_none_base64_or_files() {
    let (ca, cert) = (b64(CA_PEM), b64(CERT_PEM));
    let p = problems(&[SL, ("FL_SSL_CA_CERTFILE", &ca), ("FL_SSL_CERTFILE", &cert)]);
    assert_eq!(
        p,
        vec![
            "FL_SSL_KEYFILE: unset, but FL_SSL_CA_CERTFILE and FL_SSL_CERTFILE are set: FL_SSL_CA_CERTFILE, FL_SSL_CERTFILE and FL_SSL_KEYFILE go together (all three, or none to let the SuperLink generate its own)"
        ]
    );
    let key = b64(KEY_PEM);
    let r = ok(&[SL, ("FL_SSL_CA_CERTFILE", &ca), ("FL_SSL_CERTFILE", &cert), ("FL_SSL_KEYFILE", &key)]);
    let op = r.config.tls.operator.as_ref().unwrap();
    assert_eq!((op.ca.as_str(), op.cert.as_str(), op.key.expose()), (CA_PEM, CERT_PEM, KEY_PEM));
    let plan = r.plan.to_string();
    assert!(!plan.contains(&key) && !plan.contains("PRIVATE KEY"), "{plan}");
    // FILES_DS names, read from the context directory.
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/superlink-tls-operator"));
    let c = Context::from_pairs([
        SL,
        ("FL_SSL_CA_CERTFILE", "ca.pem"),
        ("FL_SSL_CERTFILE", "superlink.pem"),
        ("FL_SSL_KEYFILE", "superlink.key"),
    ])
    .with_files(None, Some(dir.to_path_buf()));
    let r = resolve(&c, &image(), None).unwrap();
    assert_eq!(r.plan["values"]["FL_SSL_CERTFILE"]["value"], "file superlink.pem");
    assert_eq!(r.plan["values"]["FL_SSL_KEYFILE"]["value"], "<redacted 13 bytes>");
    let c = Context::from_pairs([
        SL,
        ("FL_SSL_CA_CERTFILE", "ca.pem"),
        ("FL_SSL_CERTFILE", "missing.pem"),
        ("FL_SSL_KEYFILE", "../superlink.key"),
    ])
    .with_files(None, Some(dir.to_path_buf()));
    let p: Vec<String> = resolve(&c, &image(), None).unwrap_err().problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("FL_SSL_CERTFILE='missing.pem': \"missing.pem\" is neither base64-encoded PEM nor the name of a file on the context CD"), "{p:?}");
    assert!(p[1].starts_with("FL_SSL_KEYFILE=<redacted 16 bytes>: "), "{p:?}");
    // A SuperNode takes the CA alone.
    let r = ok(&[SN, ADDR, ("FL_SSL_CA_CERTFILE", &ca)]);
    assert_eq!(r.config.tls.ca_pem.as_deref(), Some(CA_PEM));
}

#[test]
fn extra_sans_name_every_bad_entry() {
    let r = ok(&[SL, ("FL_CERT_EXTRA_SANS", "203.0.113.7, flower.example.org [2001:db8::7]")]);
    assert_eq!(r.config.tls.extra_sans.len(), 3);
    let p = problems(&[SL, ("FL_CERT_EXTRA_SANS", "*.example.org, 10.0.0, ok.example")]);
    assert!(p[0].starts_with("FL_CERT_EXTRA_SANS='*.example.org, 10.0.0, ok.example': \"*.example.org\": wildcards are not supported; list each name; \"10.0.0\": looks like an IP address"), "{p:?}");
}

#[test]
fn gpu_settings() {
    let r = ok(&[
        SN,
        ADDR,
        ("FL_GPU_ENABLED", "YES"),
        ("FL_CUDA_VISIBLE_DEVICES", "0,1"),
        ("FL_GPU_MEMORY_FRACTION", "0.5"),
    ]);
    assert_eq!(r.config.gpu, Gpu { enabled: true, devices: CudaDevices::Indices(vec![0, 1]), memory_fraction: 0.5 });
    assert_eq!(
        problems(&[SN, ADDR, ("FL_GPU_ENABLED", "YES"), ("FL_CUDA_VISIBLE_DEVICES", "gpu0")]),
        vec!["FL_CUDA_VISIBLE_DEVICES='gpu0': must be all, or a comma-separated list of GPU indices (0,1)"]
    );
    let r = ok(&[SN, ADDR, ("FL_CUDA_VISIBLE_DEVICES", "1")]);
    assert!(has(&r.warnings, "FL_CUDA_VISIBLE_DEVICES is ignored: FL_GPU_ENABLED is NO"));
    // The defaults, as a OneFlow service sends them when nobody chose, warn about nothing.
    let r = ok(&[SN, ADDR, ("FL_CUDA_VISIBLE_DEVICES", "all"), ("FL_GPU_MEMORY_FRACTION", "1.0"), ("FL_GPU_ENABLED", "NO")]);
    assert!(!r.warnings.iter().any(|w| w.contains("ignored")), "{:?}", r.warnings);
    let r = ok(&[SN, ADDR, ("FL_GPU_MEMORY_FRACTION", "1")]);
    assert!(!r.warnings.iter().any(|w| w.contains("ignored")), "{:?}", r.warnings);
    let r = ok(&[SN, ADDR, ("FL_GPU_MEMORY_FRACTION", "0.5")]);
    assert!(has(&r.warnings, "FL_GPU_MEMORY_FRACTION is ignored: FL_GPU_ENABLED is NO"));
}

#[test]
fn other_roles_variables_unknown_names_and_start_script_warn() {
    let r = ok(&[
        SN,
        ADDR,
        ("FL_NUM_ROUNDS", "5"),
        ("ONEAPP_FL_STRATEGY", "Krum"),
        ("FL_NUM_ROUND", "5"),
        ("fl_log_level", "DEBUG"),
        ("FL_FOO_BAR_BAZ_QUX", "1"),
        ("START_SCRIPT", "echo hi"),
        ("DISK_ID", "1"),
    ]);
    assert!(
        has(&r.warnings, "FL_NUM_ROUNDS, ONEAPP_FL_STRATEGY apply to the superlink only: ignored on this supernode"),
        "{:?}",
        r.warnings
    );
    assert!(has(&r.warnings, "FL_NUM_ROUND is not a flower-init variable (did you mean FL_NUM_ROUNDS?): ignored"));
    assert!(has(&r.warnings, "fl_log_level is not a flower-init variable (did you mean FL_LOG_LEVEL?)"));
    assert!(has(&r.warnings, "FL_FOO_BAR_BAZ_QUX is not a flower-init variable: ignored"));
    assert!(has(&r.warnings, "START_SCRIPT is set but cannot run: the appliance has no shell"));
    assert!(!has(&r.warnings, "DISK_ID"));
}

#[test]
fn every_problem_at_once() {
    let p = problems(&[
        SL,
        ("FL_NUM_ROUNDS", "0"),
        ("FL_STRATEGY", "FedSGD"),
        ("FL_LOG_LEVEL", "verbose"),
        ("FL_MIN_FIT_CLIENTS", "-1"),
        ("FLOWER_VERSION", "2"),
        ("FL_SSL_KEYFILE", "key.pem"),
        ("ETH0_MAC", "zz"),
        ("ETH1_IP", "10.0.0.300"),
        ("ETH1_MAC", "02:00:00:00:00:01"),
    ]);
    assert_eq!(p.len(), 10, "{p:#?}");
    let all =
        resolve(&ctx(&[SL, ("FL_NUM_ROUNDS", "0"), ("FL_STRATEGY", "x")]), &image(), None).unwrap_err().to_string();
    assert_eq!(all.lines().count(), 2, "{all}");
    for needle in [
        "FL_SSL_KEYFILE=<redacted 7 bytes>: the value is neither base64-encoded PEM nor the name of a file on the context CD",
        "FL_NUM_ROUNDS='0'",
        "FL_STRATEGY='FedSGD': must be one of FedAvg",
        "FL_LOG_LEVEL='verbose'",
        "FL_MIN_FIT_CLIENTS='-1'",
        "FLOWER_VERSION='2'",
        "FL_SSL_CA_CERTFILE: unset",
        "FL_SSL_CERTFILE: unset",
        "ETH0_MAC='zz': must be a MAC address",
        "ETH1_IP='10.0.0.300': must be an IPv4 address",
    ] {
        assert!(has(&p, needle), "{needle}: {p:#?}");
    }
}

#[test]
fn real_network_context_builds_the_plan() {
    let c = parse(crate::context::tests::REAL_NETWORK_CONTEXT).unwrap();
    let r = resolve(&c, &image(), Some(Role::SuperLink)).unwrap();
    let n = &r.config.network;
    assert_eq!(n.interfaces.len(), 1);
    let i = &n.interfaces[0];
    assert_eq!((i.context_name.as_str(), i.mac, i.method), ("ETH0", [2, 0, 0xac, 0x14, 0, 0x13], Method::Static));
    assert_eq!(i.ipv4, Some(Ipv4Net { addr: Ipv4Addr::new(172, 20, 0, 19), prefix: 16 }));
    assert_eq!((i.gateway4, i.metric, i.mtu), (Some(Ipv4Addr::new(172, 20, 0, 1)), None, None));
    assert!(i.ipv6.is_empty() && i.routes.is_empty() && i.gateway6.is_none());
    assert_eq!(n.dns, vec![IpAddr::V4(Ipv4Addr::new(172, 20, 0, 1))]);
    assert_eq!(n.hostname.as_deref(), Some("one-apps-11114"));
    assert_eq!(n.onegate_link_route, None);
    assert_eq!(r.config.common.ssh_public_keys.len(), 2);
    assert_eq!(r.plan["network"]["interfaces"][0]["ipv4"], serde_json::json!({"addr": "172.20.0.19", "prefix": 16}));
}

#[test]
fn network_rules() {
    let r = ok(&[
        SL,
        ("DNS", "10.0.0.53 10.0.0.54"),
        ("SEARCH_DOMAIN", "corp.example"),
        ("SET_HOSTNAME", "Flower_SuperLink.lab.example"),
        ("ETH0_MAC", "02:00:0A:00:00:05"),
        ("ETH0_IP", "10.0.0.5"),
        ("ETH0_MASK", ""),
        ("ETH0_DNS", "10.0.0.54 10.0.1.53"),
        ("ETH0_SEARCH_DOMAIN", "lab.example"),
        ("ETH0_ROUTES", "192.168.0.0/16 via 10.0.0.1, 172.16.0.0 255.240.0.0 10.0.0.2"),
        ("ETH0_MTU", "9000"),
        ("ETH0_METRIC", "100"),
        ("ETH0_IP6", "2001:db8::5"),
        ("ETH0_IP6_ULA", "fd00::5"),
        ("ETH0_GATEWAY6", "2001:db8::1"),
        ("ETH1_MAC", "02:00:0a:00:01:05"),
        ("ETH1_METHOD", "dhcp"),
        ("ETH1_IP", "10.0.1.5"),
        ("ETH2_MAC", "02:00:0a:00:02:05"),
        ("ETH2_METHOD", "skip"),
        ("ETH2_IP", "not-checked"),
        ("ETH10_MAC", "02:00:0a:00:0a:05"),
        ("ETH0_ALIAS0_IP", "10.0.0.6"),
    ]);
    let n = &r.config.network;
    let names: Vec<&str> = n.interfaces.iter().map(|i| i.context_name.as_str()).collect();
    assert_eq!(names, ["ETH0", "ETH1", "ETH2", "ETH10"], "numeric order, not OpenNebula's byte order");
    let e0 = &n.interfaces[0];
    assert_eq!(e0.ipv4.unwrap().prefix, 24, "MASK defaults to 255.255.255.0");
    assert_eq!((e0.mtu, e0.metric), (Some(9000), Some(100)));
    assert_eq!(
        e0.routes[1],
        Route4 { dst: Ipv4Net { addr: Ipv4Addr::new(172, 16, 0, 0), prefix: 12 }, via: Ipv4Addr::new(10, 0, 0, 2) }
    );
    assert_eq!(
        e0.ipv6.iter().map(|a| (a.addr.to_string(), a.prefix)).collect::<Vec<_>>(),
        [("2001:db8::5".into(), 64), ("fd00::5".into(), 64)]
    );
    assert_eq!(e0.gateway6.map(|g| g.to_string()).as_deref(), Some("2001:db8::1"));
    assert_eq!(n.interfaces[1].ipv4.unwrap().addr, Ipv4Addr::new(10, 0, 1, 5));
    assert!(has(
        &r.warnings,
        "ETH1_METHOD=dhcp: flower-init has no DHCP client; configuring the address OpenNebula leased (ETH1_IP=10.0.1.5) statically"
    ));
    assert_eq!(n.interfaces[2].method, Method::Skip);
    let dns: Vec<String> = n.dns.iter().map(|d| d.to_string()).collect();
    assert_eq!(dns, ["10.0.0.53", "10.0.0.54", "10.0.1.53"], "global first, then per NIC, without duplicates");
    assert_eq!(n.search, ["corp.example", "lab.example"]);
    assert_eq!(n.hostname.as_deref(), Some("Flower-SuperLink"));
    assert!(has(&r.warnings, "ETH0_ALIAS0_*: NIC alias addresses are not configured"));
}

#[test]
fn network_problems_name_the_variable() {
    let p = problems(&[
        SL,
        ("ETH0_MAC", "02:00:0a:00:00:05"),
        ("ETH0_MASK", "255.0.255.0"),
        ("ETH0_IP", "10.0.0.5"),
        ("ETH0_GATEWAY", "10.0.0.256"),
        ("ETH0_ROUTES", "10.0.0.0/8 192.168.1.1"),
        ("ETH0_MTU", "20"),
        ("ETH1_IP", "10.0.1.5"),
        ("ETH2_MAC", "02:00:0a:00:02:05"),
        ("ETH2_METHOD", "dhcp"),
        ("ETH3_MAC", "02:00:0a:00:03:05"),
        ("ETH3_METHOD", "bootp"),
        ("DNS", "8.8.8.8 dns.google"),
        ("SET_HOSTNAME", "---"),
    ]);
    let want = [
        "DNS='8.8.8.8 dns.google': \"dns.google\" is not an IP address",
        "ETH1_MAC: unset, but ETH1_IP is set: a NIC is found by its MAC",
        "ETH0_MASK='255.0.255.0': must be a netmask like 255.255.255.0 (contiguous ones) or a prefix length 0-32",
        "ETH0_GATEWAY='10.0.0.256': must be an IPv4 address",
        "ETH0_MTU='20': must be an integer from 68 to 65535",
        "ETH0_ROUTES='10.0.0.0/8 192.168.1.1': route \"10.0.0.0/8 192.168.1.1\" must be \"DST via GW\" or \"DST MASK GW\"",
        "ETH2_METHOD='dhcp': flower-init has no DHCP client and ETH2_IP is unset: give a static address or METHOD=skip",
        "ETH3_METHOD='bootp': must be one of static, skip, dhcp",
        "SET_HOSTNAME='---': must give a host name of 1 to 63 letters, digits and '-' (after sanitising)",
    ];
    let mut got = p.clone();
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
}

/// Every row of the table is read by `resolve` for some role (no dead rows), and an empty
/// context with a role resolves with defaults only: every literal default obeys its rule.
#[test]
fn every_table_row_is_read_and_defaults_are_valid() {
    let mut seen = std::collections::BTreeSet::new();
    for role in [Role::SuperLink, Role::SuperNode] {
        let mut pairs: Vec<(&str, &str)> =
            vec![("FL_CHECKPOINT_ENABLED", "YES"), ("FL_GPU_ENABLED", "YES"), ADDR, ("SET_HOSTNAME", "x")];
        pairs.push(("ONEGATE_TOKEN", "t"));
        let r = resolve(&ctx(&pairs), &image(), Some(role)).unwrap();
        seen.extend(r.plan["values"].as_object().unwrap().keys().cloned());
    }
    for v in crate::vars::VARS.iter().filter(|v| !v.name.contains('<')) {
        let reads_elsewhere = [
            "FL_PROXIMAL_MU",
            "FL_SERVER_LR",
            "FL_TRIM_BETA",
            "FL_NUM_MALICIOUS",
            "HOSTNAME",
            "START_SCRIPT",
            "START_SCRIPT_BASE64",
        ];
        assert!(seen.contains(v.name) || reads_elsewhere.contains(&v.name), "{} is never read", v.name);
    }
}

/// Issue #14 item 4: FL_STATUS_ALLOW, else FL_CONTROL_ALLOW's networks, else none (loopback
/// only, added by the health port); a bad entry is a problem naming FL_STATUS_ALLOW.
#[test]
fn status_allow_defaults_to_the_control_allow_list() {
    let list = |r: &Resolved| r.config.common.status_allow.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert!(ok(&[SL]).config.common.status_allow.is_empty());
    assert_eq!(list(&ok(&[SL, ("FL_CONTROL_ALLOW", "10.0.0.0/24")])), ["10.0.0.0/24"]);
    let r = ok(&[SL, ("FL_CONTROL_ALLOW", "10.0.0.0/24"), ("FL_STATUS_ALLOW", "192.168.1.7, 2001:db8::/32")]);
    assert_eq!(list(&r), ["192.168.1.7/32", "2001:db8::/32"]);
    assert_eq!(r.plan["values"]["FL_STATUS_ALLOW"]["value"], serde_json::json!(["192.168.1.7/32", "2001:db8::/32"]));
    assert_eq!(list(&ok(&[SN, ADDR, ("ONEAPP_FL_STATUS_ALLOW", "10.1.0.0/16")])), ["10.1.0.0/16"]);
    let p = problems(&[SL, ("FL_STATUS_ALLOW", "10.0.0.5/24")]);
    assert!(has(&p, "FL_STATUS_ALLOW='10.0.0.5/24': \"10.0.0.5/24\": host bits are set"), "{p:#?}");
    assert!(!has(&p, "FL_CONTROL_ALLOW"), "{p:#?}");
}

/// Issue #14 item 5: thousands of unknown FL_* names give 21 warnings, not thousands.
#[test]
fn unknown_variable_warnings_are_capped() {
    let names: Vec<String> = (0..5000).map(|i| format!("FL_MADE_UP_{i}")).collect();
    let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    pairs.push(SL);
    let r = ok(&pairs);
    assert_eq!(r.warnings.iter().filter(|w| w.contains("FL_MADE_UP_")).count(), 20, "{:#?}", r.warnings);
    assert!(has(&r.warnings, "4980 more names starting FL_/FLOWER_/ML_ are not flower-init variables: ignored"));
}

/// Issue #19: SuperNode authentication on by default; it needs TLS.
#[test]
fn supernode_authentication_is_on_by_default_and_needs_tls() {
    let r = ok(&[SL]);
    let sl = r.config.role.superlink().unwrap();
    assert!(sl.node_auth && sl.node_keys.is_empty());
    assert!(!r.warnings.iter().any(|w| w.contains("AUTHENTICATION")), "{:?}", r.warnings);
    // Off on purpose: loud.
    let r = ok(&[SL, ("FL_SUPERNODE_AUTH", "NO")]);
    assert!(!r.config.role.superlink().unwrap().node_auth);
    assert!(has(&r.warnings, "SUPERNODE AUTHENTICATION IS OFF"), "{:?}", r.warnings);
    // Without TLS: off by default with a warning, an error when asked for.
    let r = ok(&[SL, ("FL_TLS_ENABLED", "NO"), ("FL_SUPERNODE_KEYS", "ecdsa-sha2-nistp256 AAAA x")]);
    assert!(!r.config.role.superlink().unwrap().node_auth);
    assert!(has(&r.warnings, "SuperNode authentication is off because FL_TLS_ENABLED is NO"), "{:?}", r.warnings);
    assert!(has(&r.warnings, "FL_SUPERNODE_KEYS is ignored"), "{:?}", r.warnings);
    let p = problems(&[SL, ("FL_TLS_ENABLED", "NO"), ("FL_SUPERNODE_AUTH", "YES")]);
    assert!(has(&p, "FL_SUPERNODE_AUTH") && has(&p, "needs TLS"), "{p:?}");
    // A SuperNode keeps what it was told (None: follow the SuperLink).
    let r = ok(&[SN, ("FL_SUPERLINK_ADDRESS", "10.0.0.5:8000"), ("FL_SUPERNODE_AUTH", "no")]);
    assert_eq!(r.config.role.supernode().unwrap().node_auth, Some(false));
}

#[test]
fn supernode_keys_are_split_on_newlines_and_commas_with_their_positions() {
    let r = ok(&[SL, ("FL_SUPERNODE_KEYS", "ecdsa-sha2-nistp256 AAAA a\n\n , ecdsa-sha2-nistp384 BBBB b,x")]);
    let keys = &r.config.role.superlink().unwrap().node_keys;
    let want: Vec<(usize, String)> = vec![(1, "ecdsa-sha2-nistp256 AAAA a".into()), (2, "ecdsa-sha2-nistp384 BBBB b".into()), (3, "x".into())];
    assert_eq!(keys, &want);
}

/// FL_WG_*: the overlay typed, its keys parsed; the other variables without FL_WG_ADDRESS are
/// each named, and the private key's value is never shown.
#[test]
fn wireguard_overlay() {
    const PRIV: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const PEER: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
    let r = ok(&[SL, ("FL_WG_ADDRESS", "10.99.0.1/24"), ("FL_WG_PRIVATE_KEY", PRIV), ("FL_WG_PEERS", &format!("{PEER} allowed=10.99.0.2/32"))]);
    let w = r.config.wireguard.as_ref().unwrap();
    assert_eq!((w.address, w.prefix, w.listen_port), (Ipv4Addr::new(10, 99, 0, 1), 24, 51820));
    assert_eq!(w.private_key.as_ref().unwrap().to_base64(), PRIV);
    assert_eq!(w.peers[0].allowed_ips, [(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)), 32)]);
    let plan = r.plan.to_string();
    assert!(!plan.contains(PRIV) && plan.contains(PEER), "the plan shows the peer's public key, never the private one");
    assert!(ok(&[SL]).config.wireguard.is_none());
    let p = problems(&[SN, ADDR, ("FL_WG_PRIVATE_KEY", PRIV), ("FL_WG_LISTEN_PORT", "51821")]);
    assert!(has(&p, "FL_WG_PRIVATE_KEY: is set but FL_WG_ADDRESS is not") || has(&p, "FL_WG_PRIVATE_KEY") && has(&p, "FL_WG_ADDRESS is not"), "{p:#?}");
    assert!(has(&p, "FL_WG_LISTEN_PORT='51821': is set but FL_WG_ADDRESS is not"), "{p:#?}");
    assert!(!p.iter().any(|l| l.contains(PRIV)), "the key's value in a problem: {p:#?}");
    let p = problems(&[SN, ADDR, ("FL_WG_ADDRESS", "10.99.0.2"), ("FL_WG_LISTEN_PORT", "0")]);
    assert!(has(&p, "FL_WG_ADDRESS='10.99.0.2': has no /PREFIX"), "{p:#?}");
    assert!(has(&p, "FL_WG_LISTEN_PORT='0'"), "{p:#?}");
}
