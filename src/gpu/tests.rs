//! End-to-end tests of [`setup_at`] over a fake sysfs/proc/dev tree with a kernel stand-in
//! that reacts to the writes (see `fixture.rs`): the exact operations, in order, and what the
//! container gets.

use super::fixture::{Dev, Fake, FakeKernel};
use super::*;
use std::fs;

/// An image with the NVIDIA userspace at `<tmp>/nvidia-driver/{lib,bin}`.
fn nvidia_image(f: &Fake) -> PathBuf {
    let d = f.root.join("nvidia-driver");
    fs::create_dir_all(d.join("lib")).unwrap();
    fs::create_dir_all(d.join("bin")).unwrap();
    d
}

fn req(nvidia_driver: Option<PathBuf>, devices: Selection) -> Request {
    Request { enabled: true, devices, memory_fraction: 0.5, nvidia_driver, container_root: None }
}

fn node(path: &str, major: u32, minor: u32, file_mode: u32) -> DeviceNode {
    DeviceNode { path: path.into(), kind: 'c', major, minor, file_mode }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn cpu_env() -> Vec<(String, String)> {
    env(&[("NVIDIA_VISIBLE_DEVICES", "void"), ("CUDA_VISIBLE_DEVICES", ""), ("FL_GPU_AVAILABLE", "NO")])
}

/// An NVIDIA GPU held by nouveau, with its HDMI audio function, in IOMMU group 12.
fn nvidia_with_audio() -> Fake {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0").driver("nouveau").group(12).numa(0));
    f.add(Dev::hdmi_audio("0000:01:00.1").driver("snd_hda_intel").group(12).numa(0));
    f
}

#[test]
fn nvidia_gpu_is_taken_from_nouveau_and_its_nodes_made() {
    let f = nvidia_with_audio();
    let dir = nvidia_image(&f);
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&req(Some(dir.clone()), Selection::All), &f.roots(), &mut k);
    assert_eq!(
        k.log,
        vec![
            "load nvidia",
            "write /sys/bus/pci/devices/0000:01:00.0/driver_override nvidia",
            "write /sys/bus/pci/devices/0000:01:00.0/driver/unbind 0000:01:00.0",
            "write /sys/bus/pci/drivers_probe 0000:01:00.0",
            "load nvidia-uvm",
            "mknod /dev/nvidiactl c 195:255 666 0:0",
            "mknod /dev/nvidia0 c 195:0 666 0:0",
            "mknod /dev/nvidia-uvm c 508:0 666 0:0",
            "mknod /dev/nvidia-uvm-tools c 508:1 666 0:0",
        ]
    );
    assert_eq!(scan::driver_at(&f.sys, "0000:01:00.0").as_deref(), Some("nvidia"), "verified by the driver link");
    assert_eq!(scan::driver_at(&f.sys, "0000:01:00.1").as_deref(), Some("snd_hda_intel"), "audio left alone");
    assert_eq!(
        g,
        Gpus {
            available: true,
            driver: Some(Driver::Nvidia),
            model: "NVIDIA A100 80GB PCIe".into(), // the driver's own name, once bound
            gpus: vec!["0000:01:00.0".into()],
            reason: None,
            devices: vec![
                node("/dev/nvidiactl", 195, 255, 0o666),
                node("/dev/nvidia0", 195, 0, 0o666),
                node("/dev/nvidia-uvm", 508, 0, 0o666),
                node("/dev/nvidia-uvm-tools", 508, 1, 0o666),
            ],
            mounts: vec![
                BindMount { source: dir.join("lib"), destination: "/usr/local/nvidia/lib64".into(), read_only: true },
                BindMount { source: dir.join("bin"), destination: "/usr/local/nvidia/bin".into(), read_only: true },
            ],
            env: env(&[
                ("NVIDIA_VISIBLE_DEVICES", "void"),
                ("CUDA_VISIBLE_DEVICES", "0"),
                ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
                ("FL_GPU_MEMORY_FRACTION", "0.5"),
                ("TF_FORCE_GPU_ALLOW_GROWTH", "true"),
                ("LD_LIBRARY_PATH", "/usr/local/nvidia/lib64"),
                ("FL_GPU_AVAILABLE", "YES"),
            ]),
            warnings: vec![],
        }
    );
    assert_eq!(g.available_word(), "YES");
    assert_eq!(g.summary(), "NVIDIA A100 80GB PCIe on nvidia");
}

#[test]
fn an_image_without_the_library_mountpoints_falls_back_to_cpu_before_touching_the_gpu() {
    // An image built before /usr/local/nvidia/{lib64,bin} were made: runc could not mount the
    // driver there (read-only root) and the whole container would fail. CPU instead, untouched.
    let f = nvidia_with_audio();
    let dir = nvidia_image(&f);
    let image = f.root.join("image");
    fs::create_dir_all(image.join("usr/local")).unwrap();
    let mut k = FakeKernel::new(&f);
    let r = Request { container_root: Some(image.clone()), ..req(Some(dir.clone()), Selection::All) };
    let g = setup_at(&r, &f.roots(), &mut k);
    assert_eq!(k.log, Vec::<String>::new(), "no module loaded, no driver bound, no node made");
    let why = format!(
        "the image has no directory /usr/local/nvidia/lib64 to mount the NVIDIA driver's {} on (its root is read-only): \
         rebuild the image, image/in-rootfs.sh makes it",
        dir.join("lib").display()
    );
    assert_eq!((g.available, g.reason.as_deref(), g.devices.len(), g.mounts.len()), (false, Some(why.as_str()), 0, 0));
    assert_eq!(g.env, cpu_env());
    assert_eq!(g.warnings, vec![why]);

    // With both mountpoints the same image gets the GPU.
    fs::create_dir_all(image.join("usr/local/nvidia/lib64")).unwrap();
    fs::create_dir_all(image.join("usr/local/nvidia/bin")).unwrap();
    let g = setup_at(&r, &f.roots(), &mut FakeKernel::new(&f));
    assert!(g.available, "{:?}", g.reason);
    assert_eq!(g.mounts.len(), 2);
}

#[test]
fn nvidia_gpu_with_audio_moves_to_vfio_as_a_group() {
    let f = nvidia_with_audio();
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&req(None, Selection::All), &f.roots(), &mut k);
    assert_eq!(
        k.log,
        vec![
            "load vfio-pci",
            "write /sys/bus/pci/devices/0000:01:00.0/driver_override vfio-pci",
            "write /sys/bus/pci/devices/0000:01:00.0/driver/unbind 0000:01:00.0",
            "write /sys/bus/pci/drivers_probe 0000:01:00.0",
            "write /sys/bus/pci/devices/0000:01:00.1/driver_override vfio-pci",
            "write /sys/bus/pci/devices/0000:01:00.1/driver/unbind 0000:01:00.1",
            "write /sys/bus/pci/drivers_probe 0000:01:00.1",
            "mknod /dev/vfio/vfio c 10:196 666 0:0",
            "mknod /dev/vfio/12 c 243:12 600 0:0",
        ]
    );
    for bdf in ["0000:01:00.0", "0000:01:00.1"] {
        assert_eq!(scan::driver_at(&f.sys, bdf).as_deref(), Some("vfio-pci"));
    }
    assert!(g.available);
    assert_eq!(g.driver, Some(Driver::VfioPci));
    assert_eq!(g.model, "NVIDIA A100 PCIe 80GB");
    assert_eq!(g.devices, vec![node("/dev/vfio/vfio", 10, 196, 0o666), node("/dev/vfio/12", 243, 12, 0o666)]);
    assert!(g.mounts.is_empty());
    assert_eq!(g.env, env(&[("NVIDIA_VISIBLE_DEVICES", "void"), ("FL_GPU_MEMORY_FRACTION", "0.5"), ("FL_GPU_AVAILABLE", "YES")]));
}

#[test]
fn gpu_already_on_vfio_is_only_checked() {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:06:00.0").driver("vfio-pci").overridden("vfio-pci").group(3));
    f.module("vfio_pci");
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&req(None, Selection::All), &f.roots(), &mut k);
    assert_eq!(k.log, vec!["mknod /dev/vfio/vfio c 10:196 666 0:0", "mknod /dev/vfio/3 c 243:3 600 0:0"]);
    assert!(g.available);
    assert_eq!(g.devices, vec![node("/dev/vfio/vfio", 10, 196, 0o666), node("/dev/vfio/3", 243, 3, 0o666)]);
}

#[test]
fn gpu_on_vfio_goes_back_to_nvidia_when_the_image_has_the_driver() {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:06:00.0").driver("vfio-pci").overridden("vfio-pci").group(3));
    f.module("vfio_pci");
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&req(Some(nvidia_image(&f)), Selection::All), &f.roots(), &mut k);
    assert_eq!(
        k.log[..5],
        [
            "load nvidia",
            "write /sys/bus/pci/devices/0000:06:00.0/driver_override nvidia",
            "write /sys/bus/pci/devices/0000:06:00.0/driver/unbind 0000:06:00.0",
            "write /sys/bus/pci/drivers_probe 0000:06:00.0",
            "load nvidia-uvm",
        ]
    );
    assert!(g.available, "{g:?}");
    assert_eq!(scan::driver_at(&f.sys, "0000:06:00.0").as_deref(), Some("nvidia"));
}

#[test]
fn amd_gpu_goes_to_vfio() {
    let f = Fake::new();
    f.add(Dev::new("0000:03:00.0", 0x030000, 0x1002, 0x74a1).driver("amdgpu").group(7).numa(1));
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&req(None, Selection::All), &f.roots(), &mut k);
    assert_eq!(
        k.log,
        vec![
            "load vfio-pci",
            "write /sys/bus/pci/devices/0000:03:00.0/driver_override vfio-pci",
            "write /sys/bus/pci/devices/0000:03:00.0/driver/unbind 0000:03:00.0",
            "write /sys/bus/pci/drivers_probe 0000:03:00.0",
            "mknod /dev/vfio/vfio c 10:196 666 0:0",
            "mknod /dev/vfio/7 c 243:7 600 0:0",
        ]
    );
    assert_eq!((g.available, g.model.as_str()), (true, "AMD Instinct MI300X"));
}

#[test]
fn no_gpu_falls_back_to_cpu_with_the_reason() {
    let f = Fake::new();
    f.add(Dev::new("0000:00:02.0", 0x030000, 0x1234, 0x1111).driver("bochs-drm"));
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&req(Some(nvidia_image(&f)), Selection::All), &f.roots(), &mut k);
    assert!(k.log.is_empty(), "nothing touched: {:?}", k.log);
    let reason = format!("no GPU found (no NVIDIA, AMD or Intel display controller in {}/bus/pci/devices)", f.sys.display());
    assert_eq!(
        g,
        Gpus {
            available: false,
            driver: None,
            model: String::new(),
            gpus: vec![],
            reason: Some(reason.clone()),
            devices: vec![],
            mounts: vec![],
            env: cpu_env(),
            warnings: vec![reason],
        }
    );
    assert_eq!(g.available_word(), "NO");
}

#[test]
fn disabled_touches_nothing_and_warns_nothing() {
    let f = nvidia_with_audio();
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&Request { enabled: false, ..req(None, Selection::All) }, &f.roots(), &mut k);
    assert!(k.log.is_empty());
    assert_eq!((g.available, g.reason.as_deref(), g.warnings.len()), (false, Some("FL_GPU_ENABLED=NO"), 0));
    assert_eq!(g.env, cpu_env());
}

#[test]
fn probe_that_does_not_bind_is_caught_by_reading_the_link_back() {
    let f = nvidia_with_audio();
    let mut k = FakeKernel::new(&f);
    k.refuse.push("0000:01:00.1".into()); // vfio-pci leaves the audio function unbound
    let g = setup_at(&req(None, Selection::All), &f.roots(), &mut k);
    assert_eq!(
        k.log,
        vec![
            "load vfio-pci",
            "write /sys/bus/pci/devices/0000:01:00.0/driver_override vfio-pci",
            "write /sys/bus/pci/devices/0000:01:00.0/driver/unbind 0000:01:00.0",
            "write /sys/bus/pci/drivers_probe 0000:01:00.0",
            "write /sys/bus/pci/devices/0000:01:00.1/driver_override vfio-pci",
            "write /sys/bus/pci/devices/0000:01:00.1/driver/unbind 0000:01:00.1",
            "write /sys/bus/pci/drivers_probe 0000:01:00.1",
        ],
        "no node once the only GPU is dropped"
    );
    let link = format!("{}/bus/pci/devices/0000:01:00.1/driver", f.sys.display());
    assert_eq!(
        g.warnings,
        vec![
            format!("0000:01:00.0 not used: check {link}: 0000:01:00.1 has no driver, expected vfio-pci"),
            "binding to vfio-pci failed: the GPU could not be bound".to_string(),
        ]
    );
    assert_eq!((g.available, g.reason.as_deref()), (false, Some("binding to vfio-pci failed: the GPU could not be bound")));
    assert!(g.devices.is_empty());
    assert_eq!(g.env, cpu_env());
}

#[test]
fn a_failed_write_names_file_and_value_and_drops_only_that_gpu() {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0").driver("nouveau"));
    f.add(Dev::nvidia_gpu("0000:02:00.0"));
    let mut k = FakeKernel::new(&f);
    k.fail_write = Some("bus/pci/devices/0000:01:00.0/driver_override".into());
    let g = setup_at(&req(Some(nvidia_image(&f)), Selection::All), &f.roots(), &mut k);
    assert_eq!(
        k.log,
        vec![
            "load nvidia",
            "write /sys/bus/pci/devices/0000:01:00.0/driver_override nvidia",
            "load nvidia-uvm",
            "mknod /dev/nvidiactl c 195:255 666 0:0",
            "mknod /dev/nvidia0 c 195:0 666 0:0",
            "mknod /dev/nvidia-uvm c 508:0 666 0:0",
            "mknod /dev/nvidia-uvm-tools c 508:1 666 0:0",
        ]
    );
    let file = format!("{}/bus/pci/devices/0000:01:00.0/driver_override", f.sys.display());
    assert_eq!(g.warnings, vec![format!("0000:01:00.0 not used: write \"nvidia\" to {file}: Permission denied (os error 13)")]);
    assert_eq!(g.gpus, vec!["0000:02:00.0"]);
    // The surviving GPU is CUDA device 0 in the container, and only its node is there.
    assert_eq!(g.devices.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(), ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]);
    assert_eq!(g.env[1], ("CUDA_VISIBLE_DEVICES".to_string(), "0".to_string()));
}

#[test]
fn only_the_selected_gpus_nodes_reach_the_container() {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0"));
    f.add(Dev::nvidia_gpu("0000:02:00.0"));
    f.add(Dev::nvidia_gpu("0000:03:00.0"));
    let mut k = FakeKernel::new(&f);
    let g = setup_at(&req(Some(nvidia_image(&f)), Selection::Indices(vec![1, 2])), &f.roots(), &mut k);
    // The module claims all three by id (minors 0, 1, 2); only GPUs 1 and 2 are handed over.
    assert_eq!(
        k.log,
        vec![
            "load nvidia",
            "load nvidia-uvm",
            "mknod /dev/nvidiactl c 195:255 666 0:0",
            "mknod /dev/nvidia1 c 195:1 666 0:0",
            "mknod /dev/nvidia2 c 195:2 666 0:0",
            "mknod /dev/nvidia-uvm c 508:0 666 0:0",
            "mknod /dev/nvidia-uvm-tools c 508:1 666 0:0",
        ]
    );
    assert_eq!(
        g.devices,
        vec![
            node("/dev/nvidiactl", 195, 255, 0o666),
            node("/dev/nvidia1", 195, 1, 0o666),
            node("/dev/nvidia2", 195, 2, 0o666),
            node("/dev/nvidia-uvm", 508, 0, 0o666),
            node("/dev/nvidia-uvm-tools", 508, 1, 0o666),
        ]
    );
    assert_eq!(g.gpus, vec!["0000:02:00.0", "0000:03:00.0"]);
    assert_eq!(g.model, "2 x NVIDIA A100 80GB PCIe");
    assert_eq!(g.env[1], ("CUDA_VISIBLE_DEVICES".to_string(), "0,1".to_string()));
}

#[test]
fn module_load_failure_is_a_fallback() {
    let f = nvidia_with_audio();
    let mut k = FakeKernel::new(&f);
    k.fail_load = Some("nvidia".into());
    let g = setup_at(&req(Some(nvidia_image(&f)), Selection::All), &f.roots(), &mut k);
    assert_eq!(k.log, vec!["load nvidia"]);
    assert_eq!(g.reason.as_deref(), Some("binding to nvidia failed: load module nvidia: Exec format error"));
    assert!(!g.available && g.devices.is_empty() && g.mounts.is_empty());
}

#[test]
fn missing_driver_libraries_fall_back_before_touching_anything() {
    let f = nvidia_with_audio();
    let mut k = FakeKernel::new(&f);
    let dir = f.root.join("no-such-driver");
    let g = setup_at(&req(Some(dir.clone()), Selection::All), &f.roots(), &mut k);
    assert!(k.log.is_empty());
    assert_eq!(
        g.reason,
        Some(format!("the image's NVIDIA driver libraries are missing: {} is not a directory", dir.join("lib").display()))
    );
}

#[test]
fn nvidia_params_set_mode_and_group_of_gpu_nodes() {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0"));
    let mut k = FakeKernel::new(&f);
    k.nvidia_params = "DeviceFileGID: 44\nDeviceFileMode: 432\n".into();
    let g = setup_at(&req(Some(nvidia_image(&f)), Selection::All), &f.roots(), &mut k);
    assert_eq!(
        k.log[2..],
        [
            "mknod /dev/nvidiactl c 195:255 660 0:44",
            "mknod /dev/nvidia0 c 195:0 660 0:44",
            "mknod /dev/nvidia-uvm c 508:0 666 0:0",
            "mknod /dev/nvidia-uvm-tools c 508:1 666 0:0",
        ]
    );
    assert_eq!(g.devices[1], node("/dev/nvidia0", 195, 0, 0o660));
}

#[test]
fn scan_report_for_the_cli() {
    let f = nvidia_with_audio();
    f.add(Dev::new("0000:00:02.0", 0x030000, 0x1234, 0x1111).driver("bochs-drm"));
    let s = scan::scan_at(&f.sys).unwrap();
    let r = req(Some("/opt/nvidia-driver".into()), Selection::All);
    let p = plan::plan(&s, &r);
    let text = f.rel(&cli::render(&s, &p, &r, &container_env(&r, Some(Driver::Nvidia), 1)));
    let expected = "\
GPUs in /sys/bus/pci/devices:
  BDF           CLASS ID      MODEL                  DRIVER   IOMMU  NUMA  GROUP ALSO HOLDS
  0000:01:00.0  3D 10de:20b5  NVIDIA A100 PCIe 80GB  nouveau  12     0     0000:01:00.1 audio (snd_hda_intel)
Ignored: 0000:00:02.0 device 1234:1111 (bochs-drm): not a GPU maker's (an emulated display?)
Modules already loaded: none

Plan for FL_GPU_ENABLED=YES, an image with the NVIDIA driver, FL_CUDA_VISIBLE_DEVICES=all:
  use GPU 0: 0000:01:00.0 NVIDIA A100 PCIe 80GB
   1. load module nvidia
   2. write nvidia > /sys/bus/pci/devices/0000:01:00.0/driver_override
   3. write 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind
   4. write 0000:01:00.0 > /sys/bus/pci/drivers_probe
   5. load module nvidia-uvm
   6. check 0000:01:00.0 is bound to nvidia (driver link)
   7. mknod /dev/nvidiactl c 195:255
   8. mknod /dev/nvidiaN c 195:N (N: Device Minor in /proc/driver/nvidia/gpus/0000:01:00.0/information)
   9. mknod /dev/nvidia-uvm c M:0 (M: nvidia-uvm in /proc/devices)
  10. mknod /dev/nvidia-uvm-tools c M:1
  mount /opt/nvidia-driver/lib read-only at /usr/local/nvidia/lib64
  container env: NVIDIA_VISIBLE_DEVICES=void CUDA_VISIBLE_DEVICES=0 CUDA_DEVICE_ORDER=PCI_BUS_ID FL_GPU_MEMORY_FRACTION=0.5 TF_FORCE_GPU_ALLOW_GROWTH=true LD_LIBRARY_PATH=/usr/local/nvidia/lib64 FL_GPU_AVAILABLE=YES
Nothing was changed (scan only reads sysfs).
";
    assert_eq!(text, expected);
}

#[test]
fn devices_option_parses_like_fl_cuda_visible_devices() {
    assert_eq!(cli::parse_devices("all"), Ok(Selection::All));
    assert_eq!(cli::parse_devices("0, 2"), Ok(Selection::Indices(vec![0, 2])));
    assert!(cli::parse_devices("0,x").is_err());
}

/// On a real kernel (qemu q35 + intel-iommu, `make gpu-vm-test`): an emulated ATI VGA (vendor
/// AMD) and an HD-audio function in the same slot, both held by pci-stub, share an IOMMU group;
/// `setup` must move both to vfio-pci through the real sysfs files, find the group's node that
/// devtmpfs made, and hand exactly those nodes over. QEMU's standard VGA (1234:1111) is ignored.
#[test]
#[ignore = "runs inside a qemu VM: make gpu-vm-test"]
fn vm_moves_a_real_display_function_and_its_audio_to_vfio() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert_eq!(std::env::var("FI_GPU_VM").as_deref(), Ok("1"), "run through make gpu-vm-test (changes drivers)");
    let (gpu, audio) = ("0000:00:05.0", "0000:00:05.1");
    let s = scan::scan().unwrap();
    let r = Request { enabled: true, devices: Selection::All, memory_fraction: 1.0, nvidia_driver: None, container_root: None };
    let p = plan::plan(&s, &r);
    print!("{}", cli::render(&s, &p, &r, &container_env(&r, Some(Driver::VfioPci), p.gpus.len())));
    assert_eq!(s.gpus.len(), 1, "{s:?}");
    let g = &s.gpus[0];
    assert_eq!((g.bdf.as_str(), g.vendor, g.class >> 8, g.driver.as_deref()), (gpu, 0x1002, 0x0300, Some("pci-stub")));
    let group = g.iommu_group.expect("an IOMMU group (intel_iommu=on)");
    assert_eq!(g.group_members.iter().map(|m| (m.bdf.as_str(), m.class >> 8)).collect::<Vec<_>>(), [(audio, 0x0403)]);
    assert!(s.ignored.iter().any(|i| i.vendor == 0x1234), "QEMU's standard VGA is not a GPU: {:?}", s.ignored);
    assert!(s.is_loaded("vfio-pci"), "the VM's init loads vfio-pci");

    // With the NVIDIA driver in the image, an AMD GPU is a CPU fallback, and nothing changes.
    let mut no_load = |name: &str| -> Result<()> { Err(crate::error::Error::msg(format!("load module {name}"), "not expected")) };
    let n = setup(&Request { nvidia_driver: Some("/nonexistent".into()), ..r.clone() }, &mut no_load);
    assert_eq!((n.available, n.reason.as_deref()), (false, Some("no NVIDIA GPU for the image's NVIDIA driver")));
    assert_eq!(scan::driver_at(Path::new("/sys"), gpu).as_deref(), Some("pci-stub"));

    let out = setup(&r, &mut no_load);
    assert!(out.available, "{out:?}");
    assert_eq!(out.warnings, Vec::<String>::new());
    for bdf in [gpu, audio] {
        assert_eq!(scan::driver_at(Path::new("/sys"), bdf).as_deref(), Some("vfio-pci"), "{bdf}");
        assert_eq!(fs::read_to_string(format!("/sys/bus/pci/devices/{bdf}/driver_override")).unwrap().trim(), "vfio-pci");
    }
    let node_of = |p: &str| {
        let m = fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(m.file_type().is_char_device(), "{p}");
        (nix::sys::stat::major(m.rdev()) as u32, nix::sys::stat::minor(m.rdev()) as u32)
    };
    let gpath = format!("/dev/vfio/{group}");
    let (gmaj, gmin) = node_of(&gpath);
    let (cmaj, cmin) = node_of("/dev/vfio/vfio");
    assert_eq!((cmaj, cmin), (10, 196));
    assert_eq!(out.devices, vec![node("/dev/vfio/vfio", 10, 196, 0o666), node(&gpath, gmaj, gmin, 0o666)]);
    assert_eq!(out.model, "AMD device 0x5046");
    println!("gpu-vm: {} ({}) on vfio-pci, group {group}: {:?}", out.model, out.gpus.join(", "), out.devices);
}

/// Issue #18, inside a VM on the pinned kernel (`make nvidia-vm-test`): the GPU image's
/// `nvidia.ko`, built by DKMS at image-build time, is one this kernel accepts. A module built
/// for another kernel is refused before its code runs: a wrong vermagic or a symbol version
/// that differs gives EINVAL/ENOEXEC ("Invalid module format"), a missing symbol ENOENT. With
/// no NVIDIA GPU in the VM, the module's own init then ends with ENODEV ("NVRM: No NVIDIA GPU
/// found"): it was linked into the kernel and ran, which is what the GPU step's CPU fallback
/// sees on a machine without the device.
#[test]
#[ignore = "runs inside a qemu VM: make nvidia-vm-test"]
fn vm_the_image_nvidia_module_fits_the_pinned_kernel() {
    if std::env::var_os("FI_NVIDIA_VM").is_none() {
        return;
    }
    use crate::kmod::Loader;
    // What nvidia.ko needs from the kernel's tree (drm), shipped beside it, first.
    let order = fs::read_to_string("/nvidia/order").unwrap();
    for f in order.lines().take_while(|f| *f != "nvidia.ko") {
        let name = f.split(".ko").next().unwrap();
        crate::kmod::Finit.load(name, &Path::new("/nvidia").join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        println!("loaded {f} (the pinned kernel's, shipped with the driver)");
    }
    let e = crate::kmod::Finit.load("nvidia", Path::new("/nvidia/nvidia.ko")).expect_err("no NVIDIA GPU in this VM");
    let msg = e.to_string();
    println!("finit_module(nvidia.ko): {msg}");
    // The kernel's ring buffer (syslog(2) SYSLOG_ACTION_READ_ALL).
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: klogctl writes at most `len` bytes into the buffer it is given, which lives on.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
    let kmsg = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
    for l in kmsg.lines().filter(|l| l.contains("NVRM") || l.contains("nvidia")) {
        println!("kernel: {l}");
    }
    assert!(msg.contains("ENODEV") || msg.contains("No such device"), "refused before its init ran: {msg}");
    assert!(kmsg.contains("NVRM"), "the driver's own init logged nothing: {kmsg}");
    assert!(!kmsg.contains("disagrees about version of symbol") && !kmsg.contains("Unknown symbol"), "{kmsg}");
}
