//! The committed templates instantiated the way OpenNebula 6.x and 7.x do it (the CLI with
//! every question answered by Enter, oneflow-server's checks, the service document, the role's
//! extra template, oned's merge into the VM template), modelled in `opennebula.rs` from
//! OpenNebula's source; the VM's context then goes through flower-init's own validation.

use super::opennebula::{
    self as one, One, Template, cli_merge_template, instantiate_vm, instantiate6, instantiate7, parse_user_inputs_enter,
    register7, role_extra_template6, role_extra_template7, server_check, vm_context,
};
use super::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A committed file, as an operator registers it.
fn committed(file: &str) -> Value {
    let path = format!("{}/oneflow/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The CONTEXT of an appliance VM template as an operator has it: network, OneGate, an SSH
/// key and a FILES_DS file (their own certificates), plus `extra` keys.
fn vm_template(extra: &str) -> Template {
    let text = format!(
        "NAME = \"flower\"\nCPU = \"1\"\nMEMORY = \"2048\"\nDISK = [ IMAGE_ID = \"7\" ]\n\
         NIC = [ NETWORK_ID = \"3\" ]\n\
         CONTEXT = [\n  NETWORK = \"YES\",\n  TOKEN = \"YES\",\n  REPORT_READY = \"YES\",\n  \
         SSH_PUBLIC_KEY = \"$USER[SSH_PUBLIC_KEY]\",\n  FILES_DS = \"$FILE[IMAGE_ID=9]\"{extra} ]\n"
    );
    Template::parse(&text).unwrap()
}

/// The VM template prepared for the 6.x service template: its CONTEXT plus
/// `oneflow/flower-6-context.txt`'s keys.
fn vm_template_6x() -> Template {
    let ctx = Template::parse(&vm_context_6x()).unwrap();
    let Some(v) = ctx.vector("CONTEXT") else { panic!("no CONTEXT in vm_context_6x") };
    let extra: String = v.iter().map(|(k, x)| format!(",\n  {k} = \"{x}\"")).collect();
    vm_template(&extra)
}

/// Everything up to the VMs of each role: `Ok(role name -> VM template)`, or the error the
/// operator would see (the CLI's exit, oneflow-server's 400, the service's FAILED_DEPLOYING).
fn deploy(body: &Value, one: One, vm: &Template, uniq7: bool) -> Result<BTreeMap<String, Template>, String> {
    let stored = match one {
        One::V6 => body.clone(),
        One::V7 => register7(body.clone()),
    };
    let mut mt = cli_merge_template(&stored, one, &[("Private", "5")])?;
    server_check(&stored, &mut mt, one)?;
    let service = match one {
        One::V6 => instantiate6(&stored, &mt),
        One::V7 => instantiate7(&stored, &mt, uniq7)?,
    };
    let mut vms = BTreeMap::new();
    for role in service["roles"].as_array().unwrap() {
        let extra = match one {
            One::V6 => role_extra_template6(role, vm, 17),
            One::V7 => role_extra_template7(role, vm, 17),
        };
        vms.insert(role["name"].as_str().unwrap().to_string(), instantiate_vm(vm, &extra)?);
    }
    Ok(vms)
}

/// The context oned writes for `vm`, with the ETH0_* keys its network context would add.
fn context_of(vm: &Template) -> BTreeMap<String, String> {
    let mut c = vm_context(vm).expect("the VM has a CONTEXT");
    for (k, v) in [("ETH0_MAC", "02:00:0a:00:00:05"), ("ETH0_IP", "10.0.0.5"), ("ETH0_MASK", "255.255.255.0")] {
        c.insert(k.into(), v.into());
    }
    c
}

/// What each offered input must arrive as when Enter was pressed: its default, or empty.
fn expected_defaults(role: &str) -> Vec<(&'static str, String)> {
    let level = if role == SUPERLINK { crate::vars::Offer::SuperLink } else { crate::vars::Offer::SuperNode };
    crate::vars::VARS
        .iter()
        .filter(|v| matches!(crate::vars::offer(v), Some(o) if o == level || o == crate::vars::Offer::Service))
        .map(|v| {
            let d = match v.default {
                crate::vars::DefaultValue::Value(s) => s.to_string(),
                _ => String::new(),
            };
            (v.name, d)
        })
        .collect()
}

/// The VM of each role has the VM template's own CONTEXT (FILES_DS, SSH_PUBLIC_KEY), its role,
/// every input at its default, and flower-init accepts that context.
fn assert_vms_are_right(vms: &BTreeMap<String, Template>, what: &str) {
    assert_eq!(vms.len(), 2, "{what}");
    for (role, vm) in vms {
        assert_eq!(vm.count("CONTEXT"), 1, "{what} {role}: one CONTEXT");
        let raw = vm.vector("CONTEXT").unwrap();
        assert_eq!(raw.get("FILES_DS").map(String::as_str), Some("$FILE[IMAGE_ID=9]"), "{what} {role}: FILES_DS lost");
        let ctx = context_of(vm);
        assert_eq!(ctx.get("SSH_PUBLIC_KEY").map(String::as_str), Some("$USER[SSH_PUBLIC_KEY]"), "{what} {role}");
        assert_eq!(ctx.get("FL_ROLE"), Some(role), "{what}: FL_ROLE");
        for k in ["NETWORK", "TOKEN", "REPORT_READY"] {
            assert_eq!(ctx.get(k).map(String::as_str), Some("YES"), "{what} {role}: {k}");
        }
        for (k, d) in expected_defaults(role) {
            assert_eq!(ctx.get(k), Some(&d), "{what} {role}: {k}");
        }
        assert_eq!(vm.count("NIC"), 1, "{what} {role}: NICs");
        assert_eq!(vm.vector("NIC").unwrap().get("NETWORK_ID").map(String::as_str), Some("5"), "{what} {role}");
        let c = crate::context::Context::from_pairs(ctx.clone())
            .with_files(Some(crate::secret::Secret::new("tok")), None);
        if let Err(r) = crate::config::resolve(&c, &crate::config::ImageFacts::builtin(), None) {
            let p: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
            panic!("{what} {role}: flower-init refuses the context: {p:?}");
        }
    }
}

/// The model answers as the CLI does (one_helper.rb `parse_user_inputs`): an optional list or
/// number with an empty default gets no value, a boolean without one exits, text sends "".
#[test]
fn the_cli_model_answers_enter_as_the_cli_does() {
    let inputs = json!({
        "L": "O|list|d|YES,NO|", "LD": "O|list|d|YES,NO|NO", "N": "O|number|d||", "ND": "O|number|d||3",
        "T": "O|text|d||", "TD": "O|text|d||x", "P": "O|password|d||", "F": "O|number-float|d||0.5",
        "R": "O|range|d|1..5|2",
    });
    let a = parse_user_inputs_enter(inputs.as_object().unwrap()).unwrap();
    let got: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
    assert_eq!(got, [("F", "0.5"), ("LD", "NO"), ("ND", "3"), ("P", ""), ("R", "2"), ("T", ""), ("TD", "x")]);
    let b = json!({ "B": "O|boolean|d||" });
    assert!(parse_user_inputs_enter(b.as_object().unwrap()).unwrap_err().contains("Invalid boolean"));
    let m = json!({ "M": "M|list|d|a,b|" });
    assert!(parse_user_inputs_enter(m.as_object().unwrap()).unwrap_err().contains("forever"));
    // ...and the server refuses what lacks a value.
    let body = json!({ "user_inputs": inputs, "roles": [] });
    let mut mt = json!({ "user_inputs_values": a });
    assert_eq!(server_check(&body, &mut mt, One::V7).unwrap_err(), "Verify that every User Input have its corresponding value defined");
    let body6 = json!({ "custom_attrs": { "L": "O|list|d|YES,NO|" }, "roles": [] });
    let mut mt6 = json!({ "custom_attrs_values": {} });
    assert!(server_check(&body6, &mut mt6, One::V6).unwrap_err().contains("custom attribute have its corresponding value"));
}

/// Issue #13 (4): `oneflow-template instantiate` with every default accepted works on both
/// versions and both files (the 6.x file also registered on 7.x).
#[test]
fn every_input_is_instantiable_by_pressing_enter() {
    for (file, one) in [("flower-7.json", One::V7), ("flower-6.json", One::V6), ("flower-6.json", One::V7)] {
        let body = match one {
            One::V6 => committed(file),
            One::V7 => register7(committed(file)),
        };
        let mut mt = cli_merge_template(&body, one, &[("Private", "5")]).unwrap_or_else(|e| panic!("{file} on {one:?}: {e}"));
        server_check(&body, &mut mt, one).unwrap_or_else(|e| panic!("{file} on {one:?}: oneflow-server says {e:?}"));
    }
    // Every single spec the generator can write, not only today's inputs.
    for v in crate::vars::VARS {
        let spec = input_spec(v);
        let one = json!({ v.name: spec });
        let a = parse_user_inputs_enter(one.as_object().unwrap()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert!(a.get(v.name).is_some_and(Value::is_string), "{}: Enter sends no value for {spec}", v.name);
    }
}

/// Issue #13 (4): 7.x keeps the VM template's CONTEXT (deep merge) and adds the inputs.
#[test]
fn seven_x_vms_keep_the_template_context_and_get_the_inputs() {
    let vms = deploy(&committed("flower-7.json"), One::V7, &vm_template(""), true).unwrap();
    assert_vms_are_right(&vms, "flower-7.json on 7.x");
    // The VM template prepared for 6.x serves the 7.x file as well.
    let vms = deploy(&committed("flower-7.json"), One::V7, &vm_template_6x(), true).unwrap();
    assert_vms_are_right(&vms, "flower-7.json on 7.x, 6.x VM template");
}

/// Issue #13 (4): in 6.x the role's contents must not replace the VM template's CONTEXT.
#[test]
fn six_x_vms_keep_the_template_context_and_get_the_inputs() {
    let vms = deploy(&committed("flower-6.json"), One::V6, &vm_template_6x(), true).unwrap();
    assert_vms_are_right(&vms, "flower-6.json on 6.x");
}

/// The 6.x file needs the VM templates' CONTEXT to reference its values: without
/// `flower-6-context.txt`'s keys the VMs get no role and no inputs (docs/oneflow.md says so).
#[test]
fn six_x_needs_the_prepared_vm_template() {
    for one in [One::V6, One::V7] {
        let vms = deploy(&committed("flower-6.json"), one, &vm_template(""), true).unwrap();
        for vm in vms.values() {
            let ctx = vm_context(vm).unwrap();
            assert!(!ctx.contains_key("FL_ROLE") && ctx.contains_key("SSH_PUBLIC_KEY"), "{one:?}: {ctx:?}");
            assert!(vm.single("FL_ROLE").is_some(), "{one:?}: the role is a VM attribute");
        }
    }
}

/// Issue #13 (4): a 6.x file registered on 7.x (converted by `convert_template`) instantiates
/// and deploys.
#[test]
fn a_six_x_file_registered_on_seven_x_deploys() {
    let stored = register7(committed("flower-6.json"));
    assert!(stored["roles"].as_array().unwrap().iter().all(|r| r["template_contents"]["NIC"].is_array()));
    let vms = deploy(&committed("flower-6.json"), One::V7, &vm_template_6x(), true).unwrap();
    assert_vms_are_right(&vms, "flower-6.json on 7.x");
}

/// Why there is no CONTEXT in the 6.x contents: without APPEND it replaces the VM template's
/// CONTEXT; with `APPEND="CONTEXT"` the VM has two and oned uses the VM template's, dropping
/// the role's; and 7.x cannot convert it ("Error generating VM template contents").
#[test]
fn a_context_vector_in_six_x_contents_cannot_work() {
    let role = |append: &str| {
        json!({ "name": "superlink", "vm_template": 0,
            "vm_template_contents": format!("{append}NIC = [ NETWORK_ID = \"5\" ]\nCONTEXT = [\n  FL_ROLE = \"superlink\",\n  TOKEN = \"YES\" ]") })
    };
    let vm = vm_template("");
    let replaced = instantiate_vm(&vm, &role_extra_template6(&role(""), &vm, 1)).unwrap();
    assert_eq!(replaced.count("CONTEXT"), 1);
    assert!(replaced.vector("CONTEXT").unwrap().get("FILES_DS").is_none(), "the VM template's CONTEXT is replaced");
    let appended = instantiate_vm(&vm, &role_extra_template6(&role("APPEND=\"CONTEXT\"\n"), &vm, 1)).unwrap();
    assert_eq!(appended.count("CONTEXT"), 2);
    let ctx = vm_context(&appended).unwrap();
    assert!(ctx.contains_key("SSH_PUBLIC_KEY") && !ctx.contains_key("FL_ROLE"), "APPEND keeps the first CONTEXT: {ctx:?}");
    // 7.x: the converted CONTEXT is an array, which generate_template_contents cannot fill.
    let body = json!({ "name": "x", "custom_attrs": { "A": "O|text|d||" },
        "roles": [ { "name": "superlink", "vm_template": 0, "custom_attrs": { "B": "O|text|d||" },
            "vm_template_contents": role("")["vm_template_contents"] } ] });
    let stored = register7(body);
    assert!(stored["roles"][0]["template_contents"]["CONTEXT"].is_array());
    let mut mt = cli_merge_template(&stored, One::V7, &[]).unwrap();
    server_check(&stored, &mut mt, One::V7).unwrap();
    assert!(instantiate7(&stored, &mt, true).unwrap_err().starts_with("Error generating VM template contents"));
}

/// OpenNebula 7.0.0's `deep_merge` (no `uniq`): the CLI sends each role back whole, so its NIC
/// is merged twice and every VM gets two NICs on the network (OpenNebula/one#7192, "Fix role
/// merge function", in 7.0.1). docs/oneflow.md.
#[test]
fn seven_zero_zero_doubles_the_role_nic() {
    let vms = deploy(&committed("flower-7.json"), One::V7, &vm_template(""), false).unwrap();
    assert!(vms.values().all(|vm| vm.count("NIC") == 2));
}

/// The oned template model parses what the flow code writes and keeps the first of two equal
/// vector keys (template_syntax.y `map::insert`).
#[test]
fn the_template_model_parses_as_oned() {
    let t = Template::parse("A = \"x \\\"q\\\"\"\nB =\nV = [ k = \"1\", K = \"2\", L = u ]\n# c\nW = [ ]\n").unwrap();
    assert_eq!(t.single("A"), Some("x \"q\""));
    assert_eq!(t.single("B"), Some(""));
    let v = t.vector("V").unwrap();
    assert_eq!((v["K"].as_str(), v["L"].as_str()), ("1", "u"));
    let mut base = Template::parse("W = [ A = \"1\" ]\nV = [ A = \"0\" ]").unwrap();
    base.merge(&t);
    assert_eq!(base.count("V"), 1);
    assert_eq!(base.count("W"), 0, "an empty vector erases and is not set");
    // flex's STRING rule takes an unterminated quote as part of an unquoted value
    assert_eq!(Template::parse("A = \"open").unwrap().single("A"), Some("\"open"));
    assert!(Template::parse("A = \"open two").is_err());
    let raw = one::to_raw(&json!({ "S": "a\"b", "C": { "X": "1", "Y": "$Y" }, "N": [ { "I": "1" }, { "I": "2" } ] }));
    let back = Template::parse(&raw).unwrap();
    assert_eq!((back.single("S"), back.count("N"), back.vector("C").unwrap()["Y"].as_str()), (Some("a\"b"), 2, "$Y"));
}

/// `flower-init oneflow-template --values`: the file an operator passes to `oneflow-template
/// instantiate ID FILE` holds exactly what Enter would answer, and deploys on both versions.
#[test]
fn the_values_file_instantiates_as_enter_does() {
    for (file, format, one) in [("flower-7.json", Format::One7, One::V7), ("flower-6.json", Format::One6, One::V6)] {
        let body = committed(file);
        let entered = cli_merge_template(&body, one, &[("Private", "5")]).unwrap();
        let values = values_template(format, "5");
        let key = if one == One::V7 { "user_inputs_values" } else { "custom_attrs_values" };
        assert_eq!(values[key], entered[key], "{file}");
        for (i, r) in values["roles"].as_array().unwrap().iter().enumerate() {
            assert_eq!(r["name"], entered["roles"][i]["name"], "{file}: role order");
            assert_eq!(r[key], entered["roles"][i][key], "{file}: role {i}");
        }
        assert_eq!(values["networks_values"], entered["networks_values"]);
        let mut mt = values.clone();
        server_check(&body, &mut mt, one).unwrap();
        let vm = if one == One::V7 { vm_template("") } else { vm_template_6x() };
        let service = match one {
            One::V6 => instantiate6(&body, &mt),
            One::V7 => instantiate7(&body, &mt, true).unwrap(),
        };
        for role in service["roles"].as_array().unwrap() {
            let extra = match one {
                One::V6 => role_extra_template6(role, &vm, 3),
                One::V7 => role_extra_template7(role, &vm, 3),
            };
            let ctx = vm_context(&instantiate_vm(&vm, &extra).unwrap()).unwrap();
            assert_eq!(ctx.get("FL_ROLE"), role["name"].as_str().map(str::to_string).as_ref(), "{file}");
        }
        // One value missing: oneflow-server refuses, as it does for the CLI.
        let mut short = values.clone();
        short[key].as_object_mut().unwrap().remove("FL_LOG_LEVEL");
        assert!(server_check(&body, &mut short, one).unwrap_err().contains("corresponding value"));
    }
}

/// 6.x substitutes values with Ruby's `gsub`, which reads backslashes in the value, and a
/// value naming a later input is substituted again: docs/oneflow.md tells operators so.
#[test]
fn six_x_values_go_through_ruby_gsub() {
    assert_eq!(one::ruby_gsub("A=\"$A\" B=\"$A\"", "$A", "x"), "A=\"x\" B=\"x\"");
    assert_eq!(one::ruby_gsub("V=\"$A\"", "$A", "a\\\\b\\0c\\qd"), "V=\"a\\b$Ac\\qd\"");
    let body = json!({ "name": "x", "custom_attrs": { "A": "O|text|d||", "B": "O|text|d||" }, "roles": [
        { "name": "r", "vm_template": 0, "vm_template_contents": "A = \"$A\"\nB = \"$B\"" } ] });
    let mt = json!({ "custom_attrs_values": { "A": "p\\\\q $B", "B": "b" } });
    let t = instantiate6(&body, &mt);
    assert_eq!(t["roles"][0]["vm_template_contents"], "A = \"p\\q b\"\nB = \"b\"");
}
