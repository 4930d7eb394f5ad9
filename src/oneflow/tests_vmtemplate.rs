//! The roles' VM templates (`appliance/flower-*.tpl`): generated, parsed by oned's parser
//! (`template_syntax`), deployed by both OneFlow versions with the committed service templates,
//! and instantiated on their own the way `onetemplate instantiate` does it.

use super::opennebula::{
    One, Template, cli_merge_template, instantiate_vm, instantiate6, instantiate7, parse_user_inputs_enter, register7,
    role_extra_template6, role_extra_template7, server_check, vm_context,
};
use super::vmtemplate::{AAVMF_CODE, Arch, VmOptions, vm_template};
use super::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// A file of the repository.
fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The committed VM template of `role`, parsed as oned parses it.
fn committed_vm(role: &str) -> Template {
    Template::parse(&repo_file(&format!("appliance/flower-{role}.tpl"))).unwrap_or_else(|e| panic!("{role}: {e}"))
}

/// The committed aarch64 SuperNode template (issue #22), parsed as oned parses it.
fn committed_vm_aarch64() -> Template {
    Template::parse(&repo_file("appliance/flower-supernode-aarch64.tpl")).unwrap_or_else(|e| panic!("aarch64: {e}"))
}

/// The committed templates: `(file, role, options)`.
fn committed_files() -> Vec<(String, &'static str, VmOptions)> {
    let mut v: Vec<_> = ROLES.iter().map(|r| (format!("flower-{r}.tpl"), *r, VmOptions::default())).collect();
    v.push(("flower-supernode-aarch64.tpl".into(), SUPERNODE, VmOptions::for_arch(Arch::Aarch64)));
    v
}

/// The inputs (name, default Enter gives) a VM of `role` reads: the service's, then the role's.
fn role_inputs(role: &str) -> Vec<(&'static str, String)> {
    let level = if role == SUPERLINK { crate::vars::Offer::SuperLink } else { crate::vars::Offer::SuperNode };
    let of = |o| crate::vars::VARS.iter().filter(move |v| crate::vars::offer(v) == Some(o));
    of(crate::vars::Offer::Service)
        .chain(of(level))
        .map(|v| {
            let d = match v.default {
                crate::vars::DefaultValue::Value(s) => s.to_string(),
                _ => String::new(),
            };
            (v.name, d)
        })
        .collect()
}

/// flower-init accepts `ctx` (with the ETH0 keys oned's network context adds).
fn assert_accepted(mut ctx: BTreeMap<String, String>, what: &str) {
    for (k, v) in [("ETH0_MAC", "02:00:0a:00:00:05"), ("ETH0_IP", "10.0.0.5"), ("ETH0_MASK", "255.255.255.0")] {
        ctx.insert(k.into(), v.into());
    }
    let c = crate::context::Context::from_pairs(ctx).with_files(Some(crate::secret::Secret::new("tok")), None);
    if let Err(r) = crate::config::resolve(&c, &crate::config::ImageFacts::builtin(), None) {
        let p: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        panic!("{what}: flower-init refuses the context: {p:?}");
    }
}

/// `appliance/flower-superlink.tpl`, `flower-supernode.tpl` and `flower-supernode-aarch64.tpl`
/// are the generator's output (`make appliance-templates` or FI_BLESS=1 rewrites them).
#[test]
fn committed_vm_templates_are_the_generated_ones() {
    for (file, role, opts) in committed_files() {
        let path = format!("{}/appliance/{file}", env!("CARGO_MANIFEST_DIR"));
        let want = vm_template(role, &opts);
        if std::env::var_os("FI_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "appliance/{file} is out of date: run `make appliance-templates`");
    }
}

/// Issue #22: the aarch64 SuperNode template is the x86_64 one (same CONTEXT and USER_INPUTS)
/// on the arm64 disk, with what OpenNebula's KVM guide gives ARM64 VMs: ARCH aarch64, the
/// `virt` machine, the AAVMF firmware; BIOS is refused, and there is no aarch64 SuperLink.
#[test]
fn the_aarch64_supernode_template_is_the_supernode_on_arm() {
    let (arm, x86) = (committed_vm_aarch64(), committed_vm(SUPERNODE));
    let os = arm.vector("OS").unwrap();
    assert_eq!((os["ARCH"].as_str(), os["MACHINE"].as_str(), os["FIRMWARE"].as_str()), ("aarch64", "virt", AAVMF_CODE));
    assert_eq!(arm.single("NAME"), Some("flower-sklearn-aarch64-supernode"));
    assert_eq!(arm.vector("DISK").unwrap()["IMAGE"], "flower-sklearn-aarch64");
    assert_eq!(arm.vector("CPU_MODEL").unwrap()["MODEL"], "host-passthrough");
    for k in ["CONTEXT", "USER_INPUTS", "NIC_DEFAULT"] {
        assert_eq!(arm.vector(k), x86.vector(k), "{k}");
    }
    assert_eq!(arm.single("INPUTS_ORDER"), x86.single("INPUTS_ORDER"));
    assert_eq!(x86.vector("OS").unwrap().get("MACHINE"), None, "x86_64 keeps the host's default machine");
    let bios = VmOptions { firmware: "BIOS".into(), ..VmOptions::for_arch(Arch::Aarch64) };
    assert!(bios.problem().unwrap().contains("UEFI only"));
    assert_eq!(VmOptions::default().problem(), None);
    assert_eq!(Arch::Aarch64.roles(), &[SUPERNODE]);
    assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
    assert!("riscv64".parse::<Arch>().unwrap_err().contains("x86_64 or aarch64"));
    // Instantiated on its own (Enter at every input), flower-init accepts its context.
    let ui = arm.vector("USER_INPUTS").unwrap();
    let inputs: serde_json::Map<String, Value> = ui.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let mut extra = String::new();
    for (k, v) in parse_user_inputs_enter(&inputs).unwrap() {
        if let Some(v) = v.as_str() {
            extra += &format!("{k} = \"{}\"\n", v.replace('"', "\\\""));
        }
    }
    extra += "NIC = [ NETWORK_ID = \"5\" ]\n";
    let t = instantiate_vm(&arm, &extra).unwrap();
    assert_eq!(t.vector("OS").unwrap()["ARCH"], "aarch64");
    assert_accepted(vm_context(&t).unwrap(), "aarch64 supernode");
}

/// Issue #15: disk by image name, virtio NICs, host-passthrough, BIOS firmware, and a CONTEXT
/// with NETWORK, TOKEN, REPORT_READY, SSH_PUBLIC_KEY, the role and `$KEY` for every input of the
/// role, each with its USER_INPUTS line (the generator's spec) in INPUTS_ORDER.
#[test]
fn vm_templates_have_what_the_appliance_needs() {
    for role in ROLES {
        let t = committed_vm(role);
        assert_eq!(t.single("NAME"), Some(format!("flower-sklearn-{role}").as_str()));
        assert_eq!(t.vector("DISK").unwrap()["IMAGE"], "flower-sklearn");
        assert_eq!(t.vector("NIC_DEFAULT").unwrap()["MODEL"], "virtio");
        assert_eq!(t.vector("CPU_MODEL").unwrap()["MODEL"], "host-passthrough");
        assert_eq!(t.vector("OS").unwrap()["FIRMWARE"], "BIOS");
        assert_eq!(t.count("NIC"), 0, "{role}: the NICs come from the service");
        let ctx = t.vector("CONTEXT").unwrap();
        for (k, v) in [("NETWORK", "YES"), ("TOKEN", "YES"), ("REPORT_READY", "YES"), ("SSH_PUBLIC_KEY", "$USER[SSH_PUBLIC_KEY]"), ("FL_ROLE", role)] {
            assert_eq!(ctx.get(k).map(String::as_str), Some(v), "{role}: CONTEXT {k}");
        }
        let ui = t.vector("USER_INPUTS").unwrap();
        let inputs = role_inputs(role);
        for (k, _) in &inputs {
            assert_eq!(ctx.get(*k), Some(&format!("${k}")), "{role}: CONTEXT {k}");
            let v = crate::vars::VARS.iter().find(|v| v.name == *k).unwrap();
            assert_eq!(ui.get(*k), Some(&input_spec(v)), "{role}: USER_INPUTS {k}");
        }
        assert_eq!(ui.len(), inputs.len(), "{role}: USER_INPUTS has only the role's inputs");
        let order: Vec<&str> = inputs.iter().map(|(k, _)| *k).collect();
        assert_eq!(t.single("INPUTS_ORDER"), Some(order.join(",").as_str()));
    }
    // The other firmware and image, as `flower-init vm-template` writes them for the operator.
    let uefi = VmOptions { image: "flower-pytorch".into(), firmware: "UEFI".into(), ..VmOptions::default() };
    let t = Template::parse(&vm_template(SUPERNODE, &uefi)).unwrap();
    assert_eq!((t.vector("OS").unwrap()["FIRMWARE"].as_str(), t.vector("DISK").unwrap()["IMAGE"].as_str()), ("UEFI", "flower-pytorch"));
    assert_eq!(t.single("NAME"), Some("flower-pytorch-supernode"));
}

/// The 6.x service template sets each role's inputs as VM attributes: the role's VM template
/// must reference every one of them in its CONTEXT (`flower-6-context.txt`'s keys for the role).
#[test]
fn vm_templates_carry_the_six_x_context_keys_of_their_role() {
    let six = Template::parse(&vm_context_6x()).unwrap();
    let all6 = six.vector("CONTEXT").unwrap();
    let body: Value = serde_json::from_str(&repo_file("oneflow/flower-6.json")).unwrap();
    for role in body["roles"].as_array().unwrap() {
        let name = role["name"].as_str().unwrap();
        let ctx = committed_vm(name).vector("CONTEXT").unwrap().clone();
        let contents = Template::parse(role["vm_template_contents"].as_str().unwrap()).unwrap();
        for (attr, _) in contents.attrs.iter().filter(|(n, _)| n != "NIC") {
            assert!(ctx.contains_key(attr), "{name}: the role sets {attr}, the VM template's CONTEXT lacks it");
            assert!(all6.contains_key(attr), "{attr} missing from flower-6-context.txt");
        }
    }
}

/// The committed service template deployed with the committed VM templates (one per role):
/// `Ok(role -> VM)`, or what the operator would see.
fn deploy(body: &Value, one: One) -> Result<BTreeMap<String, Template>, String> {
    let stored = if one == One::V7 { register7(body.clone()) } else { body.clone() };
    let mut mt = cli_merge_template(&stored, one, &[("Private", "5")])?;
    server_check(&stored, &mut mt, one)?;
    let service = if one == One::V7 { instantiate7(&stored, &mt, true)? } else { instantiate6(&stored, &mt) };
    let mut vms = BTreeMap::new();
    for role in service["roles"].as_array().unwrap() {
        let name = role["name"].as_str().unwrap();
        let vm = committed_vm(name);
        let extra = if one == One::V7 { role_extra_template7(role, &vm, 17) } else { role_extra_template6(role, &vm, 17) };
        vms.insert(name.to_string(), instantiate_vm(&vm, &extra)?);
    }
    Ok(vms)
}

/// Issue #15: OneFlow 6.x and 7.x deploy the committed service templates on the committed VM
/// templates: each VM has its role, every input at its default, one virtio NIC on the chosen
/// network, the appliance disk, and flower-init accepts its context.
#[test]
fn the_service_deploys_on_the_vm_templates() {
    for (file, one) in [("flower-7.json", One::V7), ("flower-6.json", One::V6), ("flower-6.json", One::V7)] {
        let body: Value = serde_json::from_str(&repo_file(&format!("oneflow/{file}"))).unwrap();
        let vms = deploy(&body, one).unwrap_or_else(|e| panic!("{file} on {one:?}: {e}"));
        assert_eq!(vms.len(), 2);
        for (role, vm) in &vms {
            let what = format!("{file} on {one:?}, {role}");
            let ctx = vm_context(vm).unwrap();
            assert_eq!(ctx.get("FL_ROLE"), Some(role), "{what}");
            for (k, d) in role_inputs(role) {
                assert_eq!(ctx.get(k), Some(&d), "{what}: {k}");
            }
            assert_eq!(vm.count("NIC"), 1, "{what}");
            assert_eq!(vm.vector("NIC").unwrap()["NETWORK_ID"], "5", "{what}");
            assert_eq!(vm.vector("NIC_DEFAULT").unwrap()["MODEL"], "virtio", "{what}");
            assert_eq!(vm.vector("DISK").unwrap()["IMAGE"], "flower-sklearn", "{what}");
            assert_eq!(ctx.get("SSH_PUBLIC_KEY").map(String::as_str), Some("$USER[SSH_PUBLIC_KEY]"), "{what}");
            assert_accepted(ctx, &what);
        }
    }
}

/// Outside a service: `onetemplate instantiate ID` asks the USER_INPUTS (Enter at each) and
/// sends the answers as attributes (`OneTemplateHelper.get_user_inputs`,
/// src/cli/one_helper/onetemplate_helper.rb L143-162 in 6.10.5: `KEY = "value"`, `"` escaped),
/// which the CONTEXT's `$KEY`s pick up. flower-init accepts the result.
#[test]
fn a_vm_template_instantiates_on_its_own() {
    for role in ROLES {
        let vm = committed_vm(role);
        let ui = vm.vector("USER_INPUTS").unwrap();
        let inputs: serde_json::Map<String, Value> = ui.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let answers = parse_user_inputs_enter(&inputs).unwrap_or_else(|e| panic!("{role}: {e}"));
        let mut extra = String::new();
        for (k, v) in &answers {
            let Some(v) = v.as_str() else { continue }; // `next unless val`
            extra += &format!("{k} = \"{}\"\n", v.replace('"', "\\\""));
        }
        extra += "NIC = [ NETWORK_ID = \"5\" ]\n"; // --nic
        let t = instantiate_vm(&vm, &extra).unwrap();
        let ctx = vm_context(&t).unwrap();
        assert_eq!(ctx.get("FL_ROLE").map(String::as_str), Some(role));
        for (k, d) in role_inputs(role) {
            assert_eq!(ctx.get(k), Some(&d), "{role}: {k}");
        }
        assert_accepted(ctx, role);
    }
}
