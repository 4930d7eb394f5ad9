//! Marketplace metadata in the format of `OpenNebula/marketplace` (`appliances/*.yaml`, read
//! by appmarket-simple): per framework one disk app (`images:` with the qcow2's virtual size and
//! checksums) and one VM template app per role (`type: VMTEMPLATE`, `opennebula_template`,
//! `disks:` naming the disk app), the layout of OpenNebula's own multi-VM appliances (OneKE).
//! `make appliance-meta` measures the built images and calls `flower-init marketplace`.

use super::vmtemplate::{self, ROLES, Value, VmOptions};

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
        y("x86_64"),
        y("KVM"),
        y(OPENNEBULA_VERSIONS)
    );
    out
}

/// The disk app's name: what the VM template apps' `disks:` refer to.
pub fn disk_app_name(f: &ImageFacts) -> String {
    format!("Flower {} disk", f.framework)
}

/// The disk app: the qcow2 with its virtual size and checksums.
pub fn disk_app(f: &ImageFacts) -> String {
    let image = format!("flower-{}", f.framework);
    let mut out = head(
        f,
        &disk_app_name(f),
        &format!("Flower federated learning appliance disk ({})", f.framework),
        &format!(
            "The disk of the Flower appliance for {fw}: a boot loader (BIOS and UEFI), the kernel,\n\
             flower-init as init, the read-only image (Flower, {fw}, the bundled apps) and a state\n\
             partition. No network is needed at boot.\n\nImport it with the two VM templates and the \
             OneFlow service; see docs/appliance.md.",
            fw = f.framework
        ),
        &["flower", "federated learning", &f.framework, "disk", "service"],
    );
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
    let opts = VmOptions { image: format!("flower-{}", f.framework), ..VmOptions::default() };
    let mut out = head(
        f,
        &format!("Flower {role} ({})", f.framework),
        &format!("Flower {role} VM template ({})", f.framework),
        &format!(
            "The {role} VM template of the Flower appliance for {}. Deploy it with the OneFlow\n\
             service template (one SuperLink, N SuperNodes); see docs/appliance.md.",
            f.framework
        ),
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
    let mut v = vec![(format!("flower-{}.yaml", f.framework), disk_app(f))];
    for role in ROLES {
        v.push((format!("flower-{}-{role}.yaml", f.framework), vm_app(f, role)));
    }
    v
}
