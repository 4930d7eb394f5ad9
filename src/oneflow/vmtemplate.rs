//! The VM templates of the two roles in `onetemplate create` syntax, generated from the
//! variable table like the OneFlow templates (`appliance/flower-superlink.tpl` and
//! `flower-supernode.tpl` are this output; a test keeps them equal).
//!
//! Each carries the appliance disk by image name, `NIC_DEFAULT` virtio (the NICs come from the
//! service, or `onetemplate instantiate --nic`), `CPU_MODEL` host-passthrough, the firmware, and a
//! CONTEXT with NETWORK, TOKEN, REPORT_READY, SSH_PUBLIC_KEY, the role, and `KEY = "$KEY"` for
//! every input the role reads, each with its USER_INPUTS line. That CONTEXT is what the 6.x
//! service template needs (`super::vm_context_6x`, for the role's keys) and serves 7.x as
//! well; outside a service, `onetemplate instantiate` asks the USER_INPUTS itself.

use super::template::{SUPERLINK, SUPERNODE, input_spec};
use crate::vars::{self, Offer};

/// The VM template's attributes in order: a single value or a vector of `(key, value)`.
pub type Attrs = Vec<(&'static str, Value)>;

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Single(String),
    Vector(Vec<(String, String)>),
}

/// The CPU architecture of the disk a template boots (issue #22: the aarch64 SuperNode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The roles an image of this architecture is offered for: the aarch64 image is the edge
    /// SuperNode's (docs/edge.md); its SuperLink runs on x86_64.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &ROLES,
            Arch::Aarch64 => &[SUPERNODE],
        }
    }

    /// `OS/FIRMWARE` when the operator names none: SeaBIOS on x86_64; on aarch64 the AAVMF
    /// path OpenNebula's KVM guide recommends for ARM64 hosts (it must be in the host's
    /// `OVMF_UEFIS`; 7.0+ also takes `UEFI`).
    pub fn default_firmware(self) -> &'static str {
        match self {
            Arch::X86_64 => "BIOS",
            Arch::Aarch64 => AAVMF_CODE,
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        match s {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => Err(format!("{s:?}: must be x86_64 or aarch64")),
        }
    }
}

/// Debian's (and OpenNebula's ARM64 host guide's) AAVMF firmware: `qemu-efi-aarch64`.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";

/// What varies between the templates an operator registers.
#[derive(Debug, Clone, PartialEq)]
pub struct VmOptions {
    /// The OpenNebula image with the appliance disk (`oneimage create --name`).
    pub image: String,
    /// `OS/FIRMWARE`: `BIOS`, `UEFI` (OpenNebula 7.0+, libvirt picks the OVMF), or the path
    /// of a UEFI firmware listed in the host's `OVMF_UEFIS` (6.x: `/usr/share/OVMF/OVMF_CODE.fd`).
    pub firmware: String,
    /// The disk's architecture: `OS/ARCH` (and `MACHINE` `virt` on aarch64).
    pub arch: Arch,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions::for_arch(Arch::X86_64)
    }
}

impl VmOptions {
    /// The defaults for a disk of `arch`: its image name and firmware.
    pub fn for_arch(arch: Arch) -> VmOptions {
        VmOptions { image: default_image(arch, "sklearn"), firmware: arch.default_firmware().into(), arch }
    }

    /// Why these options cannot make a template that boots (`None`: they can).
    pub fn problem(&self) -> Option<String> {
        if self.arch == Arch::Aarch64 && self.firmware.eq_ignore_ascii_case("BIOS") {
            return Some("aarch64 VMs boot with UEFI only (the arm64 disk has no BIOS loader): --firmware UEFI or an AAVMF path".into());
        }
        None
    }
}

/// The OpenNebula image name of `framework`'s disk for `arch`: `flower-sklearn`, and
/// `flower-sklearn-aarch64` for the arm64 disk (both may live in one datastore).
pub fn default_image(arch: Arch, framework: &str) -> String {
    match arch {
        Arch::X86_64 => format!("flower-{framework}"),
        Arch::Aarch64 => format!("flower-{framework}-aarch64"),
    }
}

/// The template name for `role` on `image`: `flower-sklearn-superlink`.
pub fn template_name(image: &str, role: &str) -> String {
    format!("{image}-{role}")
}

/// The inputs a VM of `role` reads: the service's, then the role's, in table order.
fn role_inputs(role: &str) -> impl Iterator<Item = &'static vars::Var> {
    let level = if role == SUPERLINK { Offer::SuperLink } else { Offer::SuperNode };
    let of = move |o: Offer| vars::VARS.iter().filter(move |v| vars::offer(v) == Some(o));
    of(Offer::Service).chain(of(level))
}

/// The attributes of `role`'s VM template.
pub fn vm_attrs(role: &str, opts: &VmOptions) -> Attrs {
    let s = |v: &str| Value::Single(v.to_string());
    let vec = |kv: &[(&str, &str)]| Value::Vector(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let what = if role == SUPERLINK {
        "Flower SuperLink (the federation's coordinator)"
    } else {
        "Flower SuperNode (trains next to its data)"
    };
    let mut context = vec![
        ("NETWORK".to_string(), "YES".to_string()),
        ("TOKEN".into(), "YES".into()),
        ("REPORT_READY".into(), "YES".into()),
        ("SSH_PUBLIC_KEY".into(), "$USER[SSH_PUBLIC_KEY]".into()),
        ("FL_ROLE".into(), role.to_string()),
    ];
    let mut inputs = Vec::new();
    for v in role_inputs(role) {
        context.push((v.name.to_string(), format!("${}", v.name)));
        inputs.push((v.name.to_string(), input_spec(v)));
    }
    let order: Vec<String> = inputs.iter().map(|(k, _)| k.clone()).collect();
    vec![
        ("NAME", s(&template_name(&opts.image, role))),
        ("DESCRIPTION", s(&match opts.arch {
            Arch::X86_64 => format!("{what}, run by flower-init. Deploy both roles with the OneFlow service (docs/appliance.md)."),
            a => format!("{what} on {}, run by flower-init; joins an x86_64 SuperLink (docs/edge.md).", a.as_str()),
        })),
        ("HYPERVISOR", s("kvm")),
        ("CPU", s("1")),
        ("VCPU", s("2")),
        // The edge profile: a SuperNode boots and trains in 1 GiB (docs/edge.md, measured).
        ("MEMORY", s(if opts.arch == Arch::Aarch64 { "1024" } else { "2048" })),
        ("CPU_MODEL", vec(&[("MODEL", "host-passthrough")])),
        ("OS", match opts.arch {
            Arch::X86_64 => vec(&[("ARCH", "x86_64"), ("FIRMWARE", &opts.firmware)]),
            // OpenNebula's KVM guide, "ARM64 Specifics": the `virt` machine, UEFI.
            Arch::Aarch64 => vec(&[("ARCH", "aarch64"), ("FIRMWARE", &opts.firmware), ("MACHINE", "virt")]),
        }),
        ("DISK", vec(&[("IMAGE", &opts.image)])),
        ("NIC_DEFAULT", vec(&[("MODEL", "virtio")])),
        ("GRAPHICS", vec(&[("LISTEN", "0.0.0.0"), ("TYPE", "VNC")])),
        ("CONTEXT", Value::Vector(context)),
        ("USER_INPUTS", Value::Vector(inputs)),
        ("INPUTS_ORDER", s(&order.join(","))),
    ]
}

/// A value in double quotes, `"` escaped as oned's parser unescapes it (`\"`). A value
/// ending in a backslash would escape its closing quote: flower-init's values never do.
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\\\""))
}

/// `role`'s VM template as `onetemplate create FILE` reads it.
pub fn vm_template(role: &str, opts: &VmOptions) -> String {
    let arch = match opts.arch {
        Arch::X86_64 => String::new(),
        a => format!(" --arch {}", a.as_str()),
    };
    let mut out = format!(
        "# The {role} VM template of the Flower appliance (flower-init vm-template --role {role}{arch}).\n\
         # Generated from the variable table: edit src/vars.rs, then `make appliance-templates`.\n"
    );
    for (name, v) in vm_attrs(role, opts) {
        match v {
            Value::Single(x) => out += &format!("{name} = {}\n", quote(&x)),
            Value::Vector(kv) => {
                let inner: Vec<String> = kv.iter().map(|(k, x)| format!("  {k} = {}", quote(x))).collect();
                out += &format!("{name} = [\n{} ]\n", inner.join(",\n"));
            }
        }
    }
    out
}

/// Both roles, in service order.
pub const ROLES: [&str; 2] = [SUPERLINK, SUPERNODE];
