//! `flower-init oneflow-template --vm-context` and `--values`: what docs/oneflow.md tells an
//! operator to run (the templates themselves: tests/onegate.rs and src/oneflow/tests*.rs).

use serde_json::Value;
use std::process::{Command, Output};

/// `flower-init oneflow-template ARGS`.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flower-init")).arg("oneflow-template").args(args).output().unwrap()
}

#[test]
fn vm_context_prints_the_committed_context() {
    let out = run(&["--vm-context"]);
    assert!(out.status.success());
    let want = std::fs::read_to_string(format!("{}/oneflow/flower-6-context.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    assert_eq!(run(&["--vm-context", "--bogus"]).status.code(), Some(2));
}

#[test]
fn values_prints_every_input_and_the_network() {
    for (args, key, inputs) in [
        (&["--values", "--network", "5"][..], "user_inputs_values", "user_inputs"),
        (&["--one6", "--values", "--network=5"][..], "custom_attrs_values", "custom_attrs"),
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["networks_values"], serde_json::json!([{ "Private": { "id": "5" } }]));
        let t: Value = serde_json::from_slice(&run(if key == "custom_attrs_values" { &["--one6"] } else { &[] }).stdout).unwrap();
        let names = |o: &Value| o.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&v[key]), names(&t[inputs]), "{args:?}");
        for (i, r) in v["roles"].as_array().unwrap().iter().enumerate() {
            assert_eq!(r["name"], t["roles"][i]["name"]);
            assert_eq!(names(&r[key]), names(&t["roles"][i][inputs]), "{args:?} role {i}");
        }
        assert_eq!(v[key]["FL_LOG_LEVEL"], "INFO");
        assert_eq!(v[key]["FL_TLS_ENABLED"], "");
    }
    for (args, msg) in [
        (&["--values"][..], "needs --network ID"),
        (&["--values", "--network", "private"][..], "is not a network ID"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(msg), "{args:?}");
    }
}

/// `flower-init vm-template`: the committed VM templates are its default output; the image and
/// firmware options reach the text; a bad role or a value that would break the template's
/// quoting is refused with the usage's exit code.
#[test]
fn vm_template_prints_the_committed_templates() {
    let vm = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_flower-init")).arg("vm-template").args(args).output().unwrap();
    for role in ["superlink", "supernode"] {
        let out = vm(&["--role", role]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want = std::fs::read_to_string(format!("{}/appliance/flower-{role}.tpl", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "{role}");
    }
    let out = String::from_utf8(vm(&["--role", "supernode", "--image", "flower-pytorch", "--firmware=UEFI"]).stdout).unwrap();
    assert!(out.contains("  IMAGE = \"flower-pytorch\" ]") && out.contains("  FIRMWARE = \"UEFI\" ]"), "{out}");
    // Issue #22: the aarch64 SuperNode's template is the committed one.
    let out = vm(&["--role", "supernode", "--arch", "aarch64"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = std::fs::read_to_string(format!("{}/appliance/flower-supernode-aarch64.tpl", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want, "aarch64");
    for (args, says) in [
        (&["--role", "superlink", "--arch", "aarch64"][..], "offered for the supernode role only"),
        (&["--role", "supernode", "--arch", "aarch64", "--firmware", "BIOS"][..], "UEFI only"),
        (&["--role", "supernode", "--arch", "mips"][..], "--arch \"mips\": must be x86_64 or aarch64"),
        (&["--role", "worker"][..], "--role \"worker\": must be superlink or supernode"),
        (&[][..], "--role is required"),
        (&["--role", "superlink", "--firmware", "a\"b"][..], "--firmware"),
        (&["--role", "superlink", "--bogus"][..], "unexpected argument"),
    ] {
        let out = vm(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
