//! `appliance/import.sh` against fake `oneimage`, `onetemplate` and `oneflow-template`
//! commands that answer as the real CLI does: `create` prints `ID: N` (one_helper.rb
//! `create_resource`; oneflow-template `create` the same from the document's ID), `show -j NAME`
//! prints the object as JSON or fails with "... named NAME not found." and exit code 255
//! (one_helper.rb `name_to_id`, CmdParse's exit -1). What the script registers is then parsed
//! by oned's parser and deployed through the OneFlow model.

use super::opennebula::{One, Template, cli_merge_template, instantiate_vm, instantiate6, instantiate7, register7};
use super::opennebula::{role_extra_template6, role_extra_template7, server_check, vm_context};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// One fake for the three commands (its name says which). `$FAKE_ONE` holds `calls` (one line
/// per call), `registry` (kind, name, ID), the created files (`KIND-ID`) and the ID counter.
const FAKE: &str = r#"#!/bin/sh
kind=$(basename "$0")
printf '%s %s\n' "$kind" "$*" >>"$FAKE_ONE/calls"
case $kind in
    oneimage) root=IMAGE what=IMAGE ;;
    onetemplate) root=VMTEMPLATE what=TEMPLATE ;;
    oneflow-template) root=DOCUMENT what='SERVICE TEMPLATE' ;;
esac
case $1 in
show)
    [ "$2" = -j ] || exit 3
    id=$(awk -F '\t' -v k="$kind" -v n="$3" '$1 == k && $2 == n { print $3 }' "$FAKE_ONE/registry" 2>/dev/null)
    if [ -z "$id" ]; then echo "[${kind#one}id] $what named $3 not found." >&2; exit 255; fi
    printf '{\n  "%s": {\n    "ID": "%s",\n    "UID": "0",\n    "NAME": "%s"\n  }\n}\n' "$root" "$id" "$3" ;;
create)
    shift
    if [ "$kind" = oneimage ]; then
        [ "$1" = -d ] || { echo 'Datastore to save the image is mandatory: ' >&2; exit 255; }
        shift 2
    fi
    [ -r "$1" ] || { echo "file $1 not found" >&2; exit 255; }
    if [ "$kind" = oneflow-template ]; then
        name=$(sed -n 's/^  "name": "\(.*\)",$/\1/p' "$1" | head -n 1)
    else
        name=$(sed -n 's/^NAME = "\(.*\)"$/\1/p' "$1")
    fi
    n=$(cat "$FAKE_ONE/counter" 2>/dev/null || echo 20)
    echo $((n + 1)) >"$FAKE_ONE/counter"
    cp "$1" "$FAKE_ONE/$kind-$n"
    printf '%s\t%s\t%s\n' "$kind" "$name" "$n" >>"$FAKE_ONE/registry"
    echo "ID: $n" ;;
*) exit 3 ;;
esac
"#;

/// A scratch front-end: the fakes on PATH and a small stand-in for the qcow2 (the script only
/// passes its path on).
struct FrontEnd {
    dir: tempfile::TempDir,
}

impl FrontEnd {
    fn new() -> FrontEnd {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for cmd in ["oneimage", "onetemplate", "oneflow-template"] {
            let p = dir.path().join("bin").join(cmd);
            std::fs::write(&p, FAKE).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("flower-pytorch.qcow2"), b"QFI\xfb not really").unwrap();
        FrontEnd { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `sh appliance/import.sh ARGS` with the fakes first on PATH.
    fn import(&self, args: &[&str]) -> Output {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        Command::new("sh")
            .arg(format!("{}/appliance/import.sh", env!("CARGO_MANIFEST_DIR")))
            .args(args)
            .env("PATH", path)
            .env("FAKE_ONE", self.dir.path())
            .output()
            .unwrap()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The file `create` got for object `id`, and which command.
    fn created(&self, kind: &str, id: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{kind}-{id}"))).unwrap()
    }
}

/// `ID N` of `what` in the script's summary.
fn summary_id(out: &str, what: &str) -> String {
    let line = out.lines().find(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what:?} in {out}"));
    line.rsplit("ID ").next().unwrap().to_string()
}

/// The recorded service deployed on the recorded VM templates: each role's VM.
fn deploy(body: &Value, one: One, vm_of: &dyn Fn(u64) -> Template) -> Vec<(String, Template)> {
    let stored = if one == One::V7 { register7(body.clone()) } else { body.clone() };
    let mut mt = cli_merge_template(&stored, one, &[("Private", "5")]).unwrap();
    server_check(&stored, &mut mt, one).unwrap();
    let service = if one == One::V7 { instantiate7(&stored, &mt, true).unwrap() } else { instantiate6(&stored, &mt) };
    let mut out = Vec::new();
    for role in service["roles"].as_array().unwrap() {
        let tid = role.get("template_id").or(role.get("vm_template")).and_then(Value::as_u64).unwrap();
        let vm = vm_of(tid);
        let extra = if one == One::V7 { role_extra_template7(role, &vm, 3) } else { role_extra_template6(role, &vm, 3) };
        out.push((role["name"].as_str().unwrap().to_string(), instantiate_vm(&vm, &extra).unwrap()));
    }
    out
}

/// Issue #15: the script registers the image, both VM templates (this framework's image, the
/// firmware asked for) and the service with each role on its VM template's ID; OneFlow then
/// deploys VMs with the right disk and role.
#[test]
fn import_registers_everything_and_resolves_the_ids() {
    for (one, flag) in [(One::V7, None), (One::V6, Some("--one6"))] {
        let fe = FrontEnd::new();
        let qcow = fe.path("flower-pytorch.qcow2");
        let mut args = vec!["-d", "1", "--firmware", "UEFI", qcow.to_str().unwrap()];
        args.extend(flag);
        let out = fe.import(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{one:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let calls = fe.calls();
        let creates: Vec<&String> = calls.iter().filter(|c| c.split(' ').nth(1) == Some("create")).collect();
        assert_eq!(creates.len(), 4, "{calls:?}");
        assert!(creates[0].starts_with("oneimage create -d 1 "), "{calls:?}");

        let image = Template::parse(&fe.created("oneimage", &summary_id(&stdout, "image"))).unwrap();
        assert_eq!(image.single("NAME"), Some("flower-pytorch"));
        assert_eq!(image.single("PATH"), Some(qcow.to_str().unwrap()));
        for (k, v) in [("TYPE", "OS"), ("DRIVER", "qcow2"), ("DEV_PREFIX", "vd")] {
            assert_eq!(image.single(k), Some(v), "image {k}");
        }
        let tids: Vec<(String, String)> = ["superlink", "supernode"]
            .iter()
            .map(|r| (r.to_string(), summary_id(&stdout, &format!("VM template flower-pytorch-{r}"))))
            .collect();
        for (role, id) in &tids {
            let t = Template::parse(&fe.created("onetemplate", id)).unwrap();
            assert_eq!(t.single("NAME"), Some(format!("flower-pytorch-{role}").as_str()));
            assert_eq!(t.vector("DISK").unwrap()["IMAGE"], "flower-pytorch");
            assert_eq!(t.vector("OS").unwrap()["FIRMWARE"], "UEFI");
        }
        let body: Value = serde_json::from_str(&fe.created("oneflow-template", &summary_id(&stdout, "service template"))).unwrap();
        assert_eq!(body["name"], "Flower federated learning (pytorch)");
        let vm_of = |id: u64| {
            let (_, id) = tids.iter().find(|(_, t)| t.parse::<u64>().unwrap() == id).expect("a registered template");
            Template::parse(&fe.created("onetemplate", id)).unwrap()
        };
        for (role, vm) in deploy(&body, one, &vm_of) {
            let ctx = vm_context(&vm).unwrap();
            assert_eq!(ctx.get("FL_ROLE"), Some(&role), "{one:?}");
            assert_eq!(vm.vector("DISK").unwrap()["IMAGE"], "flower-pytorch", "{one:?} {role}");
            assert_eq!(vm.vector("NIC").unwrap()["NETWORK_ID"], "5", "{one:?} {role}");
        }

        // A second run finds every object by name and creates nothing.
        let again = fe.import(&args);
        assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
        let calls2 = fe.calls();
        assert!(calls2[calls.len()..].iter().all(|c| c.contains(" show -j ")), "{calls2:?}");
        assert_eq!(String::from_utf8_lossy(&again.stdout), stdout, "the same IDs");
    }
}

/// The script's refusals: no datastore, a framework it cannot tell, an unreadable image, a
/// failing create (its message reaches the operator; nothing after it runs).
#[test]
fn import_refuses_what_it_cannot_do() {
    let fe = FrontEnd::new();
    let qcow = fe.path("flower-pytorch.qcow2");
    let q = qcow.to_str().unwrap();
    let other = fe.path("disk.qcow2");
    std::fs::write(&other, b"x").unwrap();
    for (args, says) in [
        (vec![q], "-d DATASTORE is required"),
        (vec!["-d", "1", other.to_str().unwrap()], "framework 'disk' must be"),
        (vec!["-d", "1", "/nonexistent/flower-sklearn.qcow2"], "cannot read"),
        (vec!["-d", "1", "--firmware", "a\"b", q], "--firmware"),
    ] {
        let out = fe.import(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(fe.calls().is_empty());
    // onetemplate create fails: the script stops before the service.
    std::fs::write(fe.path("bin/onetemplate"), "#!/bin/sh\n[ \"$1\" = show ] && exit 255\necho '[one.template.allocate] Parse error: syntax error'\nexit 255\n").unwrap();
    let out = fe.import(&["-d", "1", q]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("onetemplate create 'flower-pytorch-superlink' failed: [one.template.allocate] Parse error"), "{err}");
    assert!(!fe.calls().iter().any(|c| c.starts_with("oneflow-template")));
}

/// Issue #22: `--arch aarch64` registers the arm64 disk and its SuperNode VM template, and a
/// service whose SuperLink role is the x86_64 template the first import registered; OneFlow
/// deploys the SuperLink on the x86_64 disk and the SuperNodes on the arm64 one (OS ARCH
/// aarch64, `virt`, AAVMF). Without the x86_64 SuperLink, or with BIOS, it refuses and says why.
#[test]
fn import_aarch64_registers_the_edge_supernode_beside_the_x86_superlink() {
    let fe = FrontEnd::new();
    let arm = fe.path("flower-pytorch-arm.qcow2");
    std::fs::write(&arm, b"QFI\xfb arm").unwrap();
    let a = arm.to_str().unwrap();
    // Refusals first: nothing is registered yet.
    let out = fe.import(&["-d", "1", "--arch", "aarch64", "--framework", "pytorch", "--firmware", "BIOS", a]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UEFI only"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = fe.import(&["-d", "1", "--arch", "riscv64", "--framework", "pytorch", a]);
    assert_eq!(out.status.code(), Some(2));
    let out = fe.import(&["-d", "1", "--arch", "aarch64", "--framework", "pytorch", a]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs the x86_64 SuperLink template 'flower-pytorch-superlink': import the x86_64 disk first"), "{err}");
    assert!(!fe.calls().iter().any(|c| c.starts_with("oneflow-template create")), "no service without a SuperLink");

    let x86 = fe.path("flower-pytorch.qcow2");
    let first = fe.import(&["-d", "1", x86.to_str().unwrap()]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let out = fe.import(&["-d", "1", "--arch", "aarch64", "--framework", "pytorch", a]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let image = Template::parse(&fe.created("oneimage", &summary_id(&stdout, "image"))).unwrap();
    assert_eq!(image.single("NAME"), Some("flower-pytorch-aarch64"));
    assert_eq!(image.single("PATH"), Some(a));
    let sn_id = summary_id(&stdout, "VM template flower-pytorch-aarch64-supernode");
    let sl_id = summary_id(&stdout, "VM template flower-pytorch-superlink");
    let first_out = String::from_utf8_lossy(&first.stdout).to_string();
    assert_eq!(sl_id, summary_id(&first_out, "VM template flower-pytorch-superlink"), "the x86_64 SuperLink, reused");
    let sn = Template::parse(&fe.created("onetemplate", &sn_id)).unwrap();
    let os = sn.vector("OS").unwrap();
    assert_eq!((os["ARCH"].as_str(), os["MACHINE"].as_str(), os["FIRMWARE"].as_str()), ("aarch64", "virt", "/usr/share/AAVMF/AAVMF_CODE.fd"));
    let body: Value = serde_json::from_str(&fe.created("oneflow-template", &summary_id(&stdout, "service template"))).unwrap();
    assert_eq!(body["name"], "Flower federated learning (pytorch, aarch64 SuperNodes)");
    let vm_of = |id: u64| Template::parse(&fe.created("onetemplate", &id.to_string())).unwrap();
    let vms = deploy(&body, One::V7, &vm_of);
    for (role, vm) in &vms {
        let (disk, arch) = if role == "superlink" { ("flower-pytorch", "x86_64") } else { ("flower-pytorch-aarch64", "aarch64") };
        assert_eq!(vm.vector("DISK").unwrap()["IMAGE"], disk, "{role}");
        assert_eq!(vm.vector("OS").unwrap()["ARCH"], arch, "{role}");
        assert_eq!(vm_context(vm).unwrap().get("FL_ROLE"), Some(role));
    }
    assert_eq!(vms.len(), 2);
    // --firmware UEFI (OpenNebula 7.0+) replaces the AAVMF path.
    let fe2 = FrontEnd::new();
    assert!(fe2.import(&["-d", "1", fe2.path("flower-pytorch.qcow2").to_str().unwrap()]).status.success());
    std::fs::write(fe2.path("arm.qcow2"), b"x").unwrap();
    let out = fe2.import(&["-d", "1", "--arch", "aarch64", "--framework", "pytorch", "--firmware", "UEFI", fe2.path("arm.qcow2").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sn = Template::parse(&fe2.created("onetemplate", &summary_id(&stdout, "VM template flower-pytorch-aarch64-supernode"))).unwrap();
    assert_eq!(sn.vector("OS").unwrap()["FIRMWARE"], "UEFI");
}
