//! The service template against the committed files and the schema rules of OpenNebula's
//! `service_template.rb`.

use super::*;
use serde_json::Value;

/// `oneflow/flower-7.json`, `flower-6.json` and `flower-6-context.txt` are the generator's
/// output (`make oneflow-templates` or FI_BLESS=1 rewrites them).
#[test]
fn committed_templates_are_the_generated_ones() {
    let files = [
        ("flower-7.json", render(Format::One7, TemplateIds::default())),
        ("flower-6.json", render(Format::One6, TemplateIds::default())),
        ("flower-6-context.txt", vm_context_6x()),
    ];
    for (file, want) in files {
        let path = format!("{}/oneflow/{file}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("FI_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "oneflow/{file} is out of date: run `make oneflow-templates`");
    }
}

/// The type names of `service_template.rb`'s schema, checked as its Validator does.
fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => false,
    }
}

/// A property list: (key, type, required, minimum, enum).
type Props = &'static [(&'static str, &'static str, bool, Option<i64>, &'static [&'static str])];

/// `SCHEMA` top level (HEAD; 6.x has custom_attrs* instead of user_inputs*).
const TOP: Props = &[
    ("name", "string", true, None, &[]),
    ("deployment", "string", false, None, &["none", "straight"]),
    ("description", "string", false, None, &[]),
    ("shutdown_action", "string", false, None, &["terminate", "terminate-hard", "shutdown", "shutdown-hard"]),
    ("roles", "array", true, None, &[]),
    ("ready_status_gate", "boolean", false, None, &[]),
    ("automatic_deletion", "boolean", false, None, &[]),
    ("networks", "object", false, None, &[]),
    ("networks_values", "array", false, None, &[]),
    ("on_hold", "boolean", false, None, &[]),
];
const TOP7: Props = &[("user_inputs", "object", false, None, &[]), ("user_inputs_values", "object", false, None, &[])];
const TOP6: Props =
    &[("custom_attrs", "object", false, None, &[]), ("custom_attrs_values", "object", false, None, &[])];

/// Role properties common to 7.x `VM_ROLE_SCHEMA` and 6.x `ROLE_SCHEMA`.
const ROLE: Props = &[
    ("name", "string", true, None, &[]),
    ("cardinality", "integer", false, Some(0), &[]),
    ("parents", "array", false, None, &[]),
    ("shutdown_action", "string", false, None, &["terminate", "terminate-hard", "shutdown", "shutdown-hard"]),
    ("min_vms", "integer", false, Some(0), &[]),
    ("max_vms", "integer", false, Some(0), &[]),
    ("cooldown", "integer", false, Some(0), &[]),
    ("on_hold", "boolean", false, None, &[]),
    ("elasticity_policies", "array", false, None, &[]),
    ("scheduled_policies", "array", false, None, &[]),
];
const ROLE7: Props = &[
    ("type", "string", true, None, &["vm"]),
    ("template_id", "integer", true, Some(0), &[]),
    ("template_contents", "object", false, None, &[]),
    ("user_inputs", "object", false, None, &[]),
    ("user_inputs_values", "object", false, None, &[]),
];
const ROLE6: Props = &[
    ("vm_template", "integer", true, Some(0), &[]),
    ("vm_template_contents", "string", false, None, &[]),
    ("custom_attrs", "object", false, None, &[]),
    ("custom_attrs_values", "object", false, None, &[]),
];

fn check_props(obj: &Value, props: &[Props], what: &str) -> Result<(), String> {
    for (key, ty, required, min, allowed) in props.iter().flat_map(|p| p.iter()) {
        match obj.get(*key) {
            None if *required => return Err(format!("{what}: missing required {key:?}")),
            None => {}
            Some(v) => {
                if !is_type(v, ty) {
                    return Err(format!("{what}: {key:?} must be {ty}, is {v}"));
                }
                if let (Some(m), Some(n)) = (min, v.as_i64()) {
                    if n < *m {
                        return Err(format!("{what}: {key:?} below {m}"));
                    }
                }
                if !allowed.is_empty() && !allowed.contains(&v.as_str().unwrap_or("")) {
                    return Err(format!("{what}: {key:?}={v} not one of {allowed:?}"));
                }
            }
        }
    }
    Ok(())
}

/// `ServiceTemplate.validate` + `validate_values`: the schema, the role name regex `^\w+$`,
/// unique names, `min_vms <= cardinality <= max_vms`; and parents that exist (straight
/// deployment would never deploy a role whose parent is missing).
fn validate(t: &Value, format: Format) -> Result<(), String> {
    let (top, role_props) = match format {
        Format::One7 => (TOP7, ROLE7),
        Format::One6 => (TOP6, ROLE6),
    };
    check_props(t, &[TOP, top], "template")?;
    let roles = t["roles"].as_array().ok_or("roles")?;
    let names: Vec<&str> = roles.iter().filter_map(|r| r["name"].as_str()).collect();
    for (i, r) in roles.iter().enumerate() {
        let name = r["name"].as_str().unwrap_or("?");
        check_props(r, &[ROLE, role_props], &format!("role {name}"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!("role name {name:?} does not match ^\\w+$"));
        }
        if names[i + 1..].contains(&name) {
            return Err(format!("Role name '{name}' is repeated"));
        }
        let card = r.get("cardinality").and_then(Value::as_i64).unwrap_or(0);
        if r.get("min_vms").and_then(Value::as_i64).is_some_and(|m| m > card) {
            return Err(format!("Role '{name}' 'cardinality' must be greater than or equal to 'min_vms'"));
        }
        if r.get("max_vms").and_then(Value::as_i64).is_some_and(|m| m < card) {
            return Err(format!("Role '{name}' 'cardinality' must be lower than or equal to 'max_vms'"));
        }
        for p in r.get("parents").and_then(Value::as_array).into_iter().flatten() {
            if !p.as_str().is_some_and(|p| names.contains(&p)) {
                return Err(format!("role {name}: parent {p} is not a role"));
            }
        }
    }
    Ok(())
}

/// `ServiceTemplate.old_format?`: every role has `vm_template` or `vm_template_contents`.
fn old_format(t: &Value) -> bool {
    t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("vm_template").is_some() || r.get("vm_template_contents").is_some())
}

#[test]
fn both_formats_satisfy_the_schema() {
    let t7 = service_template(Format::One7, TemplateIds { superlink: 11, supernode: 12 });
    let t6 = service_template(Format::One6, TemplateIds::default());
    validate(&t7, Format::One7).unwrap();
    validate(&t6, Format::One6).unwrap();
    assert!(!old_format(&t7) && old_format(&t6));
    // The validator bites: a broken copy fails for the stated reason.
    let mut bad = t7.clone();
    bad["roles"][1]["cardinality"] = 11.into();
    assert!(validate(&bad, Format::One7).unwrap_err().contains("lower than or equal to 'max_vms'"));
    let mut bad = t7.clone();
    bad["roles"][1]["name"] = "superlink".into();
    assert!(validate(&bad, Format::One7).unwrap_err().contains("repeated"));
    let mut bad = t7.clone();
    bad["roles"][0]["template_id"] = "11".into();
    assert!(validate(&bad, Format::One7).is_err());
    let mut bad = t6.clone();
    bad["roles"][1]["parents"] = serde_json::json!(["nope"]);
    assert!(validate(&bad, Format::One6).is_err());
    assert!(validate(&t6, Format::One7).is_err(), "a 6.x template is not a 7.x one");
}

#[test]
fn the_template_has_the_cluster_shape() {
    let t = service_template(Format::One7, TemplateIds { superlink: 11, supernode: 12 });
    assert_eq!((t["deployment"].as_str(), t["ready_status_gate"].as_bool()), (Some("straight"), Some(true)));
    assert!(t["networks"][NETWORK].as_str().unwrap().starts_with("M|network|"));
    let (sl, sn) = (&t["roles"][0], &t["roles"][1]);
    assert_eq!((sl["name"].as_str(), sl["template_id"].as_u64()), (Some("superlink"), Some(11)));
    assert_eq!(
        (sl["cardinality"].as_u64(), sl["min_vms"].as_u64(), sl["max_vms"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        (sn["cardinality"].as_u64(), sn["min_vms"].as_u64(), sn["max_vms"].as_u64()),
        (Some(2), Some(2), Some(10))
    );
    assert_eq!(sn["parents"], serde_json::json!(["superlink"]));
    for (r, role) in [(sl, "superlink"), (sn, "supernode")] {
        let ctx = &r["template_contents"]["CONTEXT"];
        assert_eq!(ctx["FL_ROLE"], role);
        for k in ["TOKEN", "REPORT_READY", "NETWORK"] {
            assert_eq!(ctx[k], "YES", "{role} {k}");
        }
        assert_eq!(r["template_contents"]["NIC"][0]["NETWORK_ID"], "$Private");
    }
    let service: Vec<&str> = t["user_inputs"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(service, ["FLOWER_VERSION", "FL_LOG_LEVEL", "FL_TLS_ENABLED", "FL_USE_CASE"]);
    let sl_in = sl["user_inputs"].as_object().unwrap();
    for k in ["FL_NUM_ROUNDS", "FL_STRATEGY", "FL_CHECKPOINT_ENABLED", "FL_SSL_CERTFILE"] {
        assert!(sl_in.contains_key(k), "{k}");
    }
    let sn_in = sn["user_inputs"].as_object().unwrap();
    for k in ["ML_FRAMEWORK", "FL_NODE_CONFIG", "FL_GPU_ENABLED", "FL_DISCOVERY_RETRIES", "FL_SUPERLINK_ADDRESS"] {
        assert!(sn_in.contains_key(k), "{k}");
    }
}

/// Every offered variable appears once, where `vars::OFFERS` puts it, with a spec OpenNebula
/// parses: `O|type|description|options|default`, a known type, the default among list options.
#[test]
fn user_inputs_come_from_the_variable_table() {
    let t = service_template(Format::One7, TemplateIds::default());
    let mut all = t["user_inputs"].as_object().unwrap().clone();
    for r in t["roles"].as_array().unwrap() {
        for (k, v) in r["user_inputs"].as_object().unwrap() {
            assert!(all.insert(k.clone(), v.clone()).is_none(), "{k} offered twice");
        }
    }
    assert_eq!(all.len(), crate::vars::OFFERS.len());
    for (name, spec) in &all {
        let v = crate::vars::var(name).unwrap();
        let spec = spec.as_str().unwrap();
        assert_eq!(spec, input_spec(v));
        let parts: Vec<&str> = spec.split('|').collect();
        assert_eq!(parts.len(), 5, "{name}: {spec}");
        assert_eq!(parts[0], "O");
        let known = ["text", "password", "boolean", "list", "number", "number-float"];
        assert!(known.contains(&parts[1]), "{name}: type {}", parts[1]);
        assert!(!parts[2].is_empty() && !parts[2].contains('`'), "{name}: description");
        if parts[1] == "list" {
            assert!(parts[3].split(',').any(|o| o == parts[4]), "{name}: default not an option");
        }
        if ["list", "number", "number-float", "boolean"].contains(&parts[1]) {
            assert!(!parts[4].is_empty(), "{name}: a {} without a default gets no value on Enter", parts[1]);
        }
        if parts[1] == "boolean" {
            assert!(["YES", "NO"].contains(&parts[4]), "{name}");
        }
    }
    assert_eq!(all["FL_STRATEGY"], "O|list|Aggregation strategy (Flowers Message-API class of that name), any case.|FedAvg,FedProx,FedAdam,Krum,Bulyan,FedTrimmedAvg|FedAvg".replace("Flowers", "Flower's"));
    assert!(all["FL_SSL_KEYFILE"].as_str().unwrap().starts_with("O|password|"));
    assert_eq!(
        all["FL_TLS_ENABLED"],
        "O|text|SuperLink: serve TLS (default YES). SuperNode: YES requires TLS, NO forces plain text, unset follows \
         the SuperLink (a CA in FL_SSL_CA_CERTFILE also means TLS). Format: YES or NO. Empty: SuperLink: YES; \
         SuperNode: follow the SuperLink's OneGate FL_TLS.||"
    );
    assert!(all["ML_FRAMEWORK"].as_str().unwrap().starts_with("O|text|"));
    assert!(all["ML_FRAMEWORK"].as_str().unwrap().ends_with("Format: one of pytorch, tensorflow, sklearn. Empty: the image's.||"));
    assert!(
        all["FL_GPU_ENABLED"].as_str().unwrap().starts_with("O|boolean|")
            && all["FL_GPU_ENABLED"].as_str().unwrap().ends_with("|NO")
    );
}

#[test]
fn six_x_roles_set_every_input_for_the_vm_template_context() {
    let t = service_template(Format::One6, TemplateIds::default());
    let sn = &t["roles"][1];
    let contents = sn["vm_template_contents"].as_str().unwrap();
    assert!(contents.starts_with("NIC = [ NETWORK_ID = \"$Private\" ]\nFL_ROLE = \"supernode\"\n"));
    assert!(!contents.contains("CONTEXT"), "a CONTEXT here replaces the VM template's");
    let ctx = vm_context_6x();
    for k in t["custom_attrs"].as_object().unwrap().keys().chain(sn["custom_attrs"].as_object().unwrap().keys()) {
        assert!(contents.contains(&format!("\n{k} = \"${k}\"")), "{k}");
        assert!(ctx.contains(&format!("  {k} = \"${k}\"")), "{k} not in the VM template context");
    }
    assert!(!contents.contains("FL_NUM_ROUNDS"), "a SuperLink input in the SuperNode's contents");
    assert!(ctx.starts_with("CONTEXT = [\n  NETWORK = \"YES\",\n  REPORT_READY = \"YES\",\n  TOKEN = \"YES\",\n  FL_ROLE = \"$FL_ROLE\",\n"));
    assert!(ctx.contains("FL_NUM_ROUNDS = \"$FL_NUM_ROUNDS\"") && ctx.ends_with("\" ]\n"));
}

/// docs/oneflow.md explains every input the templates offer and the commands it tells
/// operators to run exist.
#[test]
fn the_operator_guide_covers_every_input() {
    let doc = std::fs::read_to_string(format!("{}/docs/oneflow.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for (name, _) in crate::vars::OFFERS {
        assert!(doc.contains(&format!("`{name}`")), "docs/oneflow.md does not explain {name}");
    }
    for cmd in ["oneflow-template --vm-context", "oneflow-template --values --network", "--one6 --values"] {
        assert!(doc.contains(cmd), "{cmd}");
    }
}
