//! The OneFlow service template (7.x and 6.x formats). Issue #4.
//!
//! [`template`]: `flower-init oneflow-template [--one6]`, generated from `crate::vars`; the
//! committed `oneflow/flower-7.json`, `oneflow/flower-6.json` and `oneflow/flower-6-context.txt`
//! are its output (a test keeps them equal and checks them against `service_template.rb`'s
//! schema rules); `opennebula` (tests) models what OpenNebula 6.x and 7.x do with them. The partition a
//! SuperNode trains on is computed from OneGate's service view: `crate::onegate::partition`.

mod market;
mod template;
mod vmtemplate;

pub use market::{ImageFacts, apps as marketplace_apps};
pub use vmtemplate::{ROLES, VmOptions, vm_template};

pub use template::{
    Format, NETWORK, SUPERLINK, SUPERNODE, SUPERNODES, TemplateIds, input_spec, render, service_template, values_template,
    vm_context_6x,
};

use crate::args::{Args, EXIT_USAGE};

const USAGE: &str = "\
usage: flower-init oneflow-template [--one6] [--superlink-template ID] [--supernode-template ID]
       flower-init oneflow-template [--one6] --values --network ID
       flower-init oneflow-template --vm-context
Print the OneFlow service template of a Flower cluster (JSON) on stdout: OpenNebula 7.x format,
or 6.x with --one6. The IDs are the VM templates of the SuperLink and SuperNode appliances
(default 0: edit before registering it with `oneflow-template create`).
--values prints a file for `oneflow-template instantiate TEMPLATE_ID FILE`: every user input at
its default and the network ID (given a file, the CLI asks nothing, and OneFlow wants a value
for every input).
--vm-context prints the CONTEXT the appliance's VM templates need for the 6.x service template
(add its keys to the VM templates' CONTEXT; see docs/oneflow.md).";

/// Say what is wrong with the command line, then the usage; the usage exit code.
fn usage_error(what: String) -> i32 {
    eprintln!("flower-init oneflow-template: {what}\n{USAGE}");
    EXIT_USAGE
}

/// `flower-init oneflow-template [--one6] [--superlink-template ID] [--supernode-template ID]`.
pub fn cli_template(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    let one6 = args.flag("--one6");
    if args.flag("--vm-context") {
        if let Err(e) = args.finish() {
            return usage_error(e.to_string());
        }
        print!("{}", vm_context_6x());
        return 0;
    }
    if args.flag("--values") {
        let network = match args.opt("--network") {
            Ok(Some(n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n,
            Ok(Some(n)) => {
                return usage_error(format!("--network {n:?} is not a network ID (a number)"));
            }
            Ok(None) => {
                return usage_error("--values needs --network ID (the Private network)".into());
            }
            Err(e) => {
                return usage_error(e.to_string());
            }
        };
        if let Err(e) = args.finish() {
            return usage_error(e.to_string());
        }
        let format = if one6 { Format::One6 } else { Format::One7 };
        let mut s = serde_json::to_string_pretty(&values_template(format, &network)).unwrap_or_default();
        s.push('\n');
        print!("{s}");
        return 0;
    }
    let mut ids = TemplateIds::default();
    for (opt, slot) in [("--superlink-template", &mut ids.superlink), ("--supernode-template", &mut ids.supernode)] {
        match args.opt(opt) {
            Ok(None) => {}
            Ok(Some(v)) => match v.parse() {
                Ok(id) => *slot = id,
                Err(_) => {
                    return usage_error(format!("{opt} {v:?} is not a template ID (a number)"));
                }
            },
            Err(e) => {
                return usage_error(e.to_string());
            }
        }
    }
    if let Err(e) = args.finish() {
        return usage_error(e.to_string());
    }
    print!("{}", render(if one6 { Format::One6 } else { Format::One7 }, ids));
    0
}

const VM_USAGE: &str = "\
usage: flower-init vm-template --role superlink|supernode [--arch x86_64|aarch64] [--image NAME]
                               [--firmware BIOS|UEFI|PATH]
Print the VM template of a role for `onetemplate create FILE` (appliance/flower-ROLE.tpl is the
default output, appliance/flower-supernode-aarch64.tpl the aarch64 one). --arch: the disk's
architecture (default x86_64); aarch64 is the edge SuperNode's disk (supernode only: OS ARCH
aarch64, MACHINE virt, UEFI). --image: the OpenNebula image of the appliance disk (default
flower-sklearn, flower-sklearn-aarch64 with --arch aarch64). --firmware: OS/FIRMWARE, BIOS
(x86_64's default), UEFI (OpenNebula 7.0+) or the path of a UEFI firmware listed in the host's
OVMF_UEFIS (/usr/share/OVMF/OVMF_CODE.fd; aarch64's default /usr/share/AAVMF/AAVMF_CODE.fd).";

/// `flower-init vm-template --role ROLE [--image NAME] [--firmware F]`.
pub fn cli_vm_template(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{VM_USAGE}");
        return 0;
    }
    let parsed = (|| -> Result<(String, VmOptions), String> {
        let role = args.opt("--role")?.ok_or("--role is required")?;
        if !ROLES.contains(&role.as_str()) {
            return Err(format!("--role {role:?}: must be superlink or supernode"));
        }
        let arch = match args.opt("--arch")? {
            Some(a) => a.parse::<vmtemplate::Arch>().map_err(|e| format!("--arch {e}"))?,
            None => vmtemplate::Arch::X86_64,
        };
        if !arch.roles().contains(&role.as_str()) {
            return Err(format!(
                "--role {role} --arch {}: the {} disk is offered for the {} role only (docs/edge.md)",
                arch.as_str(),
                arch.as_str(),
                arch.roles().join(", ")
            ));
        }
        let mut o = VmOptions::for_arch(arch);
        if let Some(i) = args.opt("--image")? {
            o.image = i;
        }
        if let Some(f) = args.opt("--firmware")? {
            o.firmware = f;
        }
        for (opt, v) in [("--image", &o.image), ("--firmware", &o.firmware)] {
            if v.is_empty() || v.contains(['"', '\\', '\n']) {
                return Err(format!("{opt} {v:?}: must be non-empty, without quotes, backslashes or newlines"));
            }
        }
        if let Some(p) = o.problem() {
            return Err(format!("--firmware {}: {p}", o.firmware));
        }
        args.finish()?;
        Ok((role, o))
    })();
    match parsed {
        Ok((role, o)) => {
            print!("{}", vm_template(&role, &o));
            0
        }
        Err(e) => {
            eprintln!("flower-init vm-template: {e}\n{VM_USAGE}");
            EXIT_USAGE
        }
    }
}

const MARKET_USAGE: &str = "\
usage: flower-init marketplace --framework F --version V --url URL --virtual-size BYTES
                               --md5 HEX --sha256 HEX --creation-time EPOCH --out DIR
                               [--arch x86_64|aarch64]
Write the OpenNebula marketplace metadata (OpenNebula/marketplace appliances/*.yaml format) of
one built image: DIR/flower-F.yaml (the disk: size and checksums) and DIR/flower-F-superlink.yaml,
DIR/flower-F-supernode.yaml (the VM templates). --arch aarch64: the arm64 disk, as
DIR/flower-F-aarch64.yaml and DIR/flower-F-aarch64-supernode.yaml (os-arch aarch64; the SuperNode
role only). `make appliance-meta` measures and calls this.";

/// `flower-init marketplace ...`: the marketplace apps of one image, written to `--out`.
pub fn cli_marketplace(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{MARKET_USAGE}");
        return 0;
    }
    let parsed = (|| -> Result<(ImageFacts, String), String> {
        let mut need = |opt: &str| -> Result<String, String> {
            args.opt(opt)?.filter(|v| !v.is_empty()).ok_or(format!("{opt} is required"))
        };
        let number = |opt: &str, v: String| v.parse::<u64>().map_err(|_| format!("{opt} {v:?}: not a number"));
        let hex = |opt: &str, v: String, n: usize| {
            if v.len() == n && v.bytes().all(|b| b.is_ascii_hexdigit()) { Ok(v.to_ascii_lowercase()) } else { Err(format!("{opt} {v:?}: not {n} hex digits")) }
        };
        let framework = need("--framework")?
            .parse::<crate::vocab::Framework>()
            .map_err(|e| format!("--framework: {e}"))?
            .to_string();
        let mut f = ImageFacts {
            framework,
            version: need("--version")?,
            url: need("--url")?,
            virtual_size: number("--virtual-size", need("--virtual-size")?)?,
            md5: hex("--md5", need("--md5")?, 32)?,
            sha256: hex("--sha256", need("--sha256")?, 64)?,
            creation_time: number("--creation-time", need("--creation-time")?)?,
            arch: vmtemplate::Arch::X86_64,
        };
        let out = need("--out")?;
        if let Some(a) = args.opt("--arch")? {
            f.arch = a.parse().map_err(|e| format!("--arch {e}"))?;
        }
        args.finish()?;
        Ok((f, out))
    })();
    let (facts, out) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flower-init marketplace: {e}\n{MARKET_USAGE}");
            return EXIT_USAGE;
        }
    };
    for (file, text) in marketplace_apps(&facts) {
        let path = std::path::Path::new(&out).join(&file);
        if let Err(e) = std::fs::create_dir_all(&out).and_then(|()| std::fs::write(&path, text)) {
            eprintln!("flower-init marketplace: write {}: {e}", path.display());
            return 1;
        }
        println!("{}", path.display());
    }
    0
}

#[cfg(test)]
mod opennebula;
#[cfg(test)]
mod template_syntax;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_import;
#[cfg(test)]
mod tests_instantiate;
#[cfg(test)]
mod tests_vmtemplate;
