//! Marketplace metadata in the format of `OpenNebula/marketplace` (`appliances/*.yaml`, read
//! by appmarket-simple): per framework one disk app (`images:` with the qcow2's virtual size and
//! checksums) and one VM template app per role (`type: VMTEMPLATE`, `opennebula_template`,
//! `disks:` naming the disk app), the layout of OpenNebula's own multi-VM appliances (OneKE).
//! `make appliance-meta` measures the built images and calls `flower-init marketplace`.

use super::vmtemplate::{self, Arch, Value, VmOptions};

/// Facts about one built image, measured by the caller (`qemu-img info`, `md5sum`,
/// `sha256sum`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    /// `sklearn`, `pytorch`, `tensorflow`.
    pub framework: String,
    /// The appliance's version (`flower-init version` and the image's build).
    pub version: String,
    /// Where the marketplace downloads the qcow2 from.
    pub url: String,
    /// The disk's virtual size in bytes (`qemu-img info`: what the marketplace's `size` is).
    pub virtual_size: u64,
    pub md5: String,
    pub sha256: String,
    /// Seconds since the epoch (`creation_time`).
    pub creation_time: u64,
    /// The disk's architecture (`os-arch`; aarch64: the edge SuperNode's disk, issue #22).
    pub arch: Arch,
}

/// OpenNebula versions the templates are for (docs/oneflow.md §5: role inputs since 6.8).
pub const OPENNEBULA_VERSIONS: &str = "6.8, 6.10, 7.0, 7.2, 7.4";
const PUBLISHER: &str = "flower-init";

/// A YAML double-quoted scalar: JSON's string syntax is valid YAML.
fn y(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The head every app of `f` shares.
fn head(f: &ImageFacts, name: &str, short: &str, description: &str, tags: &[&str]) -> String {
    let mut out = format!(
        "---\nname: {}\nversion: {}\npublisher: {}\ndescription: |-\n",
        y(name),
        y(&f.version),
        y(PUBLISHER)
    );
    for l in description.lines() {
        out += &if l.is_empty() { "\n".to_string() } else { format!("  {l}\n") };
    }
    out += &format!("short_description: {}\ntags:\n", y(short));
    for t in tags {
        out += &format!("- {}\n", y(t));
    }
    out += &format!(
        "format: qcow2\ncreation_time: {}\nos-id: {}\nos-release: {}\nos-arch: {}\nhypervisor: {}\nopennebula_version: {}\n",
        f.creation_time,
        y("Debian"),
        y("12"),
        y(f.arch.as_str()),
        y("KVM"),
        y(OPENNEBULA_VERSIONS)
    );
    out
}

/// The disk app's name: what the VM template apps' `disks:` refer to.
pub fn disk_app_name(f: &ImageFacts) -> String {
    match f.arch {
        Arch::X86_64 => format!("Flower {} disk", f.framework),
        a => format!("Flower {} disk ({})", f.framework, a.as_str()),
    }
}

/// The file name stem of `f`'s apps: `flower-sklearn`, `flower-sklearn-aarch64`.
fn stem(f: &ImageFacts) -> String {
    vmtemplate::default_image(f.arch, &f.framework)
}

/// The disk app: the qcow2 with its virtual size and checksums.
pub fn disk_app(f: &ImageFacts) -> String {
    let image = stem(f);
    let description = match f.arch {
        Arch::X86_64 => format!(
            "The disk of the Flower appliance for {fw}: a boot loader (BIOS and UEFI), the kernel,\n\
             flower-init as init, the read-only image (Flower, {fw}, the bundled apps) and a state\n\
             partition. No network is needed at boot.\n\nImport it with the two VM templates and the \
             OneFlow service; see docs/appliance.md.",
            fw = f.framework
        ),
        a => format!(
            "The {a} disk of the Flower appliance for {fw}, for SuperNodes at the edge: a boot loader\n\
             (UEFI only), the kernel, flower-init as init, the read-only image (Flower, {fw}, the\n\
             bundled apps) and a state partition. No network is needed at boot. Its SuperNodes join\n\
             an x86_64 SuperLink.\n\nImport it with its SuperNode VM template on an {a} KVM host; see \
             docs/appliance.md and docs/edge.md.",
            a = a.as_str(),
            fw = f.framework
        ),
    };
    let short = match f.arch {
        Arch::X86_64 => format!("Flower federated learning appliance disk ({})", f.framework),
        a => format!("Flower federated learning appliance disk ({}, {})", f.framework, a.as_str()),
    };
    let mut tags = vec!["flower", "federated learning", &f.framework, "disk", "service"];
    if f.arch == Arch::Aarch64 {
        tags.extend(["aarch64", "edge"]);
    }
    let mut out = head(f, &disk_app_name(f), &short, &description, &tags);
    out += &format!(
        "images:\n- name: {}\n  url: {}\n  type: OS\n  dev_prefix: vd\n  driver: qcow2\n  size: {}\n  checksum:\n    md5: {}\n    sha256: {}\n",
        y(&image),
        y(&f.url),
        f.virtual_size,
        f.md5,
        f.sha256
    );
    out
}

/// A VM template app of `role`: `opennebula_template` (the role's template without its DISK,
/// which the marketplace adds from `disks:`).
pub fn vm_app(f: &ImageFacts, role: &str) -> String {
    let opts = VmOptions { image: stem(f), ..VmOptions::for_arch(f.arch) };
    let arch = match f.arch {
        Arch::X86_64 => String::new(),
        a => format!(", {}", a.as_str()),
    };
    let mut out = head(
        f,
        &format!("Flower {role} ({}{arch})", f.framework),
        &format!("Flower {role} VM template ({}{arch})", f.framework),
        &match f.arch {
            Arch::X86_64 => format!(
                "The {role} VM template of the Flower appliance for {}. Deploy it with the OneFlow\n\
                 service template (one SuperLink, N SuperNodes); see docs/appliance.md.",
                f.framework
            ),
            a => format!(
                "The {role} VM template of the Flower appliance for {fw} on {a} KVM hosts (the `virt`\n\
                 machine, UEFI from the host's AAVMF). Its SuperNodes join an x86_64 SuperLink; see\n\
                 docs/appliance.md and docs/edge.md.",
                a = a.as_str(),
                fw = f.framework
            ),
        },
        &["flower", "federated learning", &f.framework, "service"],
    );
    out = out.replacen("format: qcow2\n", "type: VMTEMPLATE\nformat: qcow2\n", 1);
    out += "opennebula_template:\n";
    for (name, v) in vmtemplate::vm_attrs(role, &opts) {
        if name == "DISK" || name == "NAME" {
            continue;
        }
        let key = name.to_lowercase();
        match v {
            Value::Single(x) => out += &format!("  {key}: {}\n", y(&x)),
            Value::Vector(kv) => {
                out += &format!("  {key}:\n");
                let upper = matches!(name, "CONTEXT" | "USER_INPUTS");
                for (k, x) in kv {
                    let k = if upper { k } else { k.to_lowercase() };
                    out += &format!("    {k}: {}\n", y(&x));
                }
            }
        }
    }
    out += &format!("disks:\n- {}\n", y(&disk_app_name(f)));
    out
}

/// Every app of `f`: `(file name, text)`.
pub fn apps(f: &ImageFacts) -> Vec<(String, String)> {
    let mut v = vec![(format!("{}.yaml", stem(f)), disk_app(f))];
    for role in f.arch.roles() {
        v.push((format!("{}-{role}.yaml", stem(f)), vm_app(f, role)));
    }
    v
}
