//! PCI vendor ids and a small table of GPU model names, so logs and FL_GPU_AVAILABLE's model
//! read "NVIDIA A100 PCIe 80GB" rather than "10de:20b5".
//!
//! Names are from the PCI ID Repository (`pci.ids`, Debian package `pci.ids` 0.0~2023.04.11;
//! newer ids from the 2025.07.11 copy embedded in `NVIDIA/nvrc: src/pci_ids_embedded.txt`).
//! Only common data-centre and workstation parts are listed; anything else is named by its id.
//! Once the NVIDIA driver is bound, the driver's own name (`Model:` in
//! `/proc/driver/nvidia/gpus/<BDF>/information`) replaces the table's.

/// PCI vendor ids of the GPU makers flower-init binds (`include/linux/pci_ids.h`).
pub const NVIDIA: u16 = 0x10de;
pub const AMD: u16 = 0x1002;
pub const INTEL: u16 = 0x8086;

/// The vendor's short name, for GPU makers; `None` for anything else (e.g. QEMU's emulated VGA,
/// 1234:1111, which is a display controller but not a GPU to bind).
pub fn vendor_name(vendor: u16) -> Option<&'static str> {
    match vendor {
        NVIDIA => Some("NVIDIA"),
        AMD => Some("AMD"),
        INTEL => Some("Intel"),
        _ => None,
    }
}

/// (vendor, device, name).
const MODELS: &[(u16, u16, &str)] = &[
    // NVIDIA data centre
    (NVIDIA, 0x1db4, "Tesla V100 PCIe 16GB"),
    (NVIDIA, 0x1db5, "Tesla V100 SXM2 32GB"),
    (NVIDIA, 0x1db6, "Tesla V100 PCIe 32GB"),
    (NVIDIA, 0x1db1, "Tesla V100 SXM2 16GB"),
    (NVIDIA, 0x1df6, "Tesla V100S PCIe 32GB"),
    (NVIDIA, 0x1b38, "Tesla P40"),
    (NVIDIA, 0x1bb3, "Tesla P4"),
    (NVIDIA, 0x15f7, "Tesla P100 PCIe 12GB"),
    (NVIDIA, 0x15f8, "Tesla P100 PCIe 16GB"),
    (NVIDIA, 0x1eb8, "Tesla T4"),
    (NVIDIA, 0x20b0, "A100 SXM4 40GB"),
    (NVIDIA, 0x20b1, "A100 PCIe 40GB"),
    (NVIDIA, 0x20b2, "A100 SXM4 80GB"),
    (NVIDIA, 0x20b5, "A100 PCIe 80GB"),
    (NVIDIA, 0x20f1, "A100 PCIe 40GB"),
    (NVIDIA, 0x20b7, "A30 PCIe"),
    (NVIDIA, 0x2235, "A40"),
    (NVIDIA, 0x2236, "A10"),
    (NVIDIA, 0x2237, "A10G"),
    (NVIDIA, 0x25b6, "A2 / A16"),
    (NVIDIA, 0x26b5, "L40"),
    (NVIDIA, 0x26b9, "L40S"),
    (NVIDIA, 0x27b8, "L4"),
    (NVIDIA, 0x2330, "H100 SXM5 80GB"),
    (NVIDIA, 0x2331, "H100 PCIe"),
    (NVIDIA, 0x2321, "H100 NVL 94GB"),
    (NVIDIA, 0x2335, "H200 SXM 141GB"),
    (NVIDIA, 0x233b, "H200 NVL"),
    (NVIDIA, 0x2901, "B200"),
    // NVIDIA workstation / consumer
    (NVIDIA, 0x2230, "RTX A6000"),
    (NVIDIA, 0x2231, "RTX A5000"),
    (NVIDIA, 0x24b0, "RTX A4000"),
    (NVIDIA, 0x2204, "GeForce RTX 3090"),
    (NVIDIA, 0x2203, "GeForce RTX 3090 Ti"),
    (NVIDIA, 0x2684, "GeForce RTX 4090"),
    (NVIDIA, 0x2704, "GeForce RTX 4080"),
    (NVIDIA, 0x2b85, "GeForce RTX 5090"),
    // AMD
    (AMD, 0x66a1, "Radeon Pro VII / Instinct MI50"),
    (AMD, 0x738c, "Instinct MI100"),
    (AMD, 0x740c, "Instinct MI250X / MI250"),
    (AMD, 0x740f, "Instinct MI210"),
    (AMD, 0x74a1, "Instinct MI300X"),
    (AMD, 0x73a1, "Radeon Pro V620"),
    (AMD, 0x744c, "Radeon RX 7900 XT / XTX"),
];

/// "NVIDIA A100 PCIe 80GB", or "NVIDIA device 0x20b5" for an id not in the table, or
/// "device 1234:1111" for a vendor that is not a GPU maker.
pub fn model_name(vendor: u16, device: u16) -> String {
    let known = MODELS.iter().find(|(v, d, _)| *v == vendor && *d == device).map(|(_, _, n)| *n);
    match (vendor_name(vendor), known) {
        (Some(v), Some(n)) => format!("{v} {n}"),
        (Some(v), None) => format!("{v} device {device:#06x}"),
        (None, _) => format!("device {vendor:04x}:{device:04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_unknown_and_foreign_ids_are_named() {
        assert_eq!(model_name(NVIDIA, 0x20b5), "NVIDIA A100 PCIe 80GB");
        assert_eq!(model_name(AMD, 0x74a1), "AMD Instinct MI300X");
        assert_eq!(model_name(NVIDIA, 0x1234), "NVIDIA device 0x1234");
        assert_eq!(model_name(INTEL, 0x56c0), "Intel device 0x56c0");
        assert_eq!(model_name(0x1234, 0x1111), "device 1234:1111");
    }

    #[test]
    fn table_has_no_duplicate_ids() {
        for (i, (v, d, _)) in MODELS.iter().enumerate() {
            assert!(!MODELS[i + 1..].iter().any(|(v2, d2, _)| v2 == v && d2 == d), "{v:04x}:{d:04x} twice");
        }
    }
}
