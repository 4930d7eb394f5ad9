//! `gpu bundle` over the GPU module's fake `/sys` + `/proc` + `/dev` (src/gpu/fixture.rs) set up
//! as a host whose NVIDIA driver is loaded: the bundle holds exactly what the boot's GPU step
//! and SuperNode spec give, and every host that cannot give it is refused with the reason.

use super::*;
use crate::container::{BindMount, DeviceNode, config_json};
use crate::gpu::fixture::{Dev, Fake, FakeKernel};
use crate::gpu::{Ops, scan, setup_at};
use crate::vocab::Framework;
use serde_json::{Value, json};
use std::fs;

/// The test manifest (sklearn), optionally with the image's own NVIDIA driver.
const MANIFEST: &str = include_str!("../image/testdata-image.json");
const HOST_RELEASE: &str = "550.90.07";

/// A host: an A100 with its audio function, the driver loaded and bound (the module's id table
/// claimed the GPU), nvidia-uvm loaded, `/proc/driver/nvidia/version` saying `release`.
fn loaded_host(release: &str) -> Fake {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0").group(12).numa(0));
    f.add(Dev::hdmi_audio("0000:01:00.1").driver("snd_hda_intel").group(12).numa(0));
    let mut k = FakeKernel::new(&f);
    k.load_module("nvidia").unwrap();
    k.load_module("nvidia-uvm").unwrap();
    write_version(&f, release);
    f
}

fn write_version(f: &Fake, release: &str) {
    fs::create_dir_all(f.proc.join("driver/nvidia")).unwrap();
    let line = format!("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {release}  Release Build  (dvs-builder@U16-I3-B03-4-3)  Fri May 31 09:30:47 UTC 2024\n");
    fs::write(f.proc.join("driver/nvidia/version"), line).unwrap();
}

/// An image root: the manifest (with `nvidia_driver` when `image_driver` names a release, and
/// that driver's directory) and, when `mountpoints`, the directories the libraries mount on.
fn image(f: &Fake, image_driver: Option<&str>, mountpoints: bool) -> PathBuf {
    let root = f.root.join("image");
    let mut m: Value = serde_json::from_str(MANIFEST).unwrap();
    if let Some(v) = image_driver {
        m["nvidia_driver"] = json!({"dir": "/opt/nvidia-driver", "version": v, "kernel": "6.1.0-56-amd64",
            "vermagic": "6.1.0-56-amd64 SMP preempt mod_unload modversions ", "modules": ["nvidia", "nvidia-uvm"],
            "load_order": ["nvidia.ko", "nvidia-uvm.ko"]});
        driver_dir(&root.join("opt/nvidia-driver"), v);
    }
    fs::create_dir_all(root.join("etc/flower-init")).unwrap();
    fs::write(root.join("etc/flower-init/image.json"), m.to_string()).unwrap();
    if mountpoints {
        fs::create_dir_all(root.join("usr/local/nvidia/lib64")).unwrap();
        fs::create_dir_all(root.join("usr/local/nvidia/bin")).unwrap();
    }
    root
}

/// A driver directory as device-check.sh assembles it: lib/, bin/nvidia-smi, driver.json.
fn driver_dir(d: &Path, release: &str) -> PathBuf {
    fs::create_dir_all(d.join("lib")).unwrap();
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::write(d.join(format!("lib/libcuda.so.{release}")), "").unwrap();
    fs::write(d.join("bin/nvidia-smi"), "").unwrap();
    fs::write(d.join("driver.json"), json!({"version": release}).to_string()).unwrap();
    d.to_path_buf()
}

fn command() -> Vec<String> {
    ["/opt/flower/venv/bin/python3", "-c", "import torch; print(torch.cuda.is_available())"].map(String::from).to_vec()
}

fn options(f: &Fake, rootfs: &Path, driver: Option<PathBuf>) -> Options {
    Options {
        rootfs: rootfs.to_path_buf(),
        out: f.root.join("bundle"),
        driver_dir: driver,
        devices: Selection::All,
        id: "gpu-check".into(),
        roots: f.roots(),
        command: command(),
    }
}

fn read_config(w: &Written) -> Value {
    serde_json::from_slice(&fs::read(&w.config).unwrap()).unwrap()
}

/// The error of `bundle`, with the tempdir's prefix removed.
fn refused(f: &Fake, o: &Options) -> String {
    let e = bundle(o).expect_err("refused").to_string();
    assert!(!o.out.exists(), "no bundle written when refused");
    f.rel(&e)
}

#[test]
fn the_bundle_holds_the_boots_devices_mounts_env_and_the_given_command() {
    let f = loaded_host(HOST_RELEASE);
    let root = image(&f, None, true);
    let drv = driver_dir(&f.root.join("host-driver"), HOST_RELEASE);
    let w = bundle(&options(&f, &root, Some(drv.clone()))).unwrap();
    assert_eq!(w.config, f.root.join("bundle/config.json"));
    let c = read_config(&w);

    let mut args = vec!["/usr/bin/tini".to_string(), "--".to_string()];
    args.extend(command());
    assert_eq!(c["process"]["args"], json!(args), "CMD under tini, as Flower runs");
    assert_eq!(c["process"]["user"]["uid"], 49999, "the Flower user, not root");

    let node = |p: &str, major: u32, minor: u32| json!({"path": p, "type": "c", "major": major, "minor": minor, "fileMode": 0o666, "uid": 0, "gid": 0});
    assert_eq!(
        c["linux"]["devices"],
        json!([node("/dev/nvidiactl", 195, 255), node("/dev/nvidia0", 195, 0), node("/dev/nvidia-uvm", 508, 0), node("/dev/nvidia-uvm-tools", 508, 1)])
    );
    let allow = |major: u32, minor: u32| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    assert_eq!(
        c["linux"]["resources"]["devices"],
        json!([{"allow": false, "access": "rwm"}, allow(195, 255), allow(195, 0), allow(508, 0), allow(508, 1)]),
        "everything else denied"
    );

    let binds: Vec<&Value> = c["mounts"].as_array().unwrap().iter().filter(|m| m["destination"].as_str().unwrap().starts_with("/usr/local/nvidia")).collect();
    assert_eq!(
        binds,
        [
            &json!({"destination": "/usr/local/nvidia/lib64", "type": "bind", "source": drv.join("lib"), "options": ["rbind", "ro", "nosuid", "nodev"]}),
            &json!({"destination": "/usr/local/nvidia/bin", "type": "bind", "source": drv.join("bin"), "options": ["rbind", "ro", "nosuid", "nodev"]}),
        ]
    );

    let env: Vec<&str> = c["process"]["env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let after_fixed = env.iter().position(|e| *e == "LANG=C.UTF-8").unwrap() + 1;
    assert_eq!(
        env[after_fixed..],
        [
            "FL_ML_FRAMEWORK=sklearn",
            "NVIDIA_VISIBLE_DEVICES=void",
            "CUDA_VISIBLE_DEVICES=0",
            "CUDA_DEVICE_ORDER=PCI_BUS_ID",
            "FL_GPU_MEMORY_FRACTION=1",
            "TF_FORCE_GPU_ALLOW_GROWTH=true",
            "LD_LIBRARY_PATH=/usr/local/nvidia/lib64",
            "FL_GPU_AVAILABLE=YES",
        ]
    );
    assert!(env.contains(&"PATH=/opt/flower/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    assert_eq!(c["root"], json!({"path": root.canonicalize().unwrap(), "readonly": true}));
    assert_eq!(c["linux"]["seccomp"], container::seccomp_profile(), "Docker's profile, as Flower's container");

    // Nothing changed on the host: no node made, the bindings as they were.
    assert_eq!(fs::read_dir(&f.dev).unwrap().count(), 0);
    assert_eq!(scan::driver_at(&f.sys, "0000:01:00.0").as_deref(), Some("nvidia"));
    assert_eq!(scan::driver_at(&f.sys, "0000:01:00.1").as_deref(), Some("snd_hda_intel"));
    assert_eq!(w.notes.len(), 4, "{:?}", w.notes);
    assert_eq!(f.rel(&w.notes[1]), "/dev/nvidia0 is not on this host: runc makes the container's node (c 195:0) from its numbers");

    let text = f.rel(&report(&w));
    assert!(text.starts_with("GPU: NVIDIA A100 80GB PCIe (0000:01:00.0) on nvidia, driver 550.90.07 (kernel module and libraries of /host-driver)\n"), "{text}");
    assert!(text.contains("  device /dev/nvidia0 c 195:0 mode 0666\n"), "{text}");
    assert!(text.contains("  mount /host-driver/lib at /usr/local/nvidia/lib64 (read-only)\n"), "{text}");
    assert!(text.ends_with("Wrote /bundle/config.json: /usr/bin/tini -- /opt/flower/venv/bin/python3 -c import torch; print(torch.cuda.is_available())\n"), "{text}");
    let script = Written { spec: Spec { args: vec!["python3".into(), "-c".into(), "import torch\nprint(1)\n".into()], ..w.spec.clone() }, ..w };
    assert!(report(&script).ends_with(": /usr/bin/tini -- python3 -c <22 bytes>\n"), "{}", report(&script));
}

/// By construction: the boot's own GPU step on a VM (the driver loaded from the image, the GPU
/// taken from nouveau) and the boot's SuperNode spec give the same config.json as `gpu bundle`
/// on a host where that driver is already up.
#[test]
fn the_bundle_is_the_config_the_boot_writes_for_the_same_gpu() {
    let host = loaded_host(HOST_RELEASE);
    let root = image(&host, None, true);
    let drv = driver_dir(&host.root.join("host-driver"), HOST_RELEASE);
    let w = bundle(&options(&host, &root, Some(drv.clone()))).unwrap();

    let vm = Fake::new();
    vm.add(Dev::nvidia_gpu("0000:01:00.0").driver("nouveau").group(12).numa(0));
    vm.add(Dev::hdmi_audio("0000:01:00.1").driver("snd_hda_intel").group(12).numa(0));
    let mut k = FakeKernel::new(&vm);
    let req = Request { enabled: true, devices: Selection::All, memory_fraction: 1.0, nvidia_driver: Some(drv.clone()), container_root: None };
    let booted = setup_at(&req, &vm.roots(), &mut k);
    assert!(k.log.iter().any(|l| l == "load nvidia"), "the VM's step did load and bind: {:?}", k.log);
    assert_eq!((booted.devices.clone(), booted.mounts.clone(), booted.env.clone()), (w.gpus.devices.clone(), w.gpus.mounts.clone(), w.gpus.env.clone()));

    let mut spec = appliance::supernode_spec("gpu-check", &root.canonicalize().unwrap(), command(), Framework::Sklearn, Some(&booted));
    spec.limits = appliance::machine_limits();
    assert_eq!(read_config(&w), config_json(&spec));
    assert_eq!(
        w.spec.mounts,
        vec![
            BindMount { source: drv.join("lib"), destination: "/usr/local/nvidia/lib64".into(), read_only: true },
            BindMount { source: drv.join("bin"), destination: "/usr/local/nvidia/bin".into(), read_only: true },
        ]
    );
    assert_eq!(w.spec.devices[1], DeviceNode { path: "/dev/nvidia0".into(), kind: 'c', major: 195, minor: 0, file_mode: 0o666 });
}

#[test]
fn selected_gpus_only_and_their_nodes_numbered_by_the_driver() {
    let f = Fake::new();
    for b in ["0000:01:00.0", "0000:02:00.0", "0000:03:00.0"] {
        f.add(Dev::nvidia_gpu(b));
    }
    let mut k = FakeKernel::new(&f);
    k.load_module("nvidia").unwrap();
    k.load_module("nvidia-uvm").unwrap();
    write_version(&f, HOST_RELEASE);
    let root = image(&f, None, true);
    let drv = driver_dir(&f.root.join("host-driver"), HOST_RELEASE);
    let w = bundle(&Options { devices: Selection::Indices(vec![2]), ..options(&f, &root, Some(drv)) }).unwrap();
    let paths: Vec<&str> = w.spec.devices.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/dev/nvidiactl", "/dev/nvidia2", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]);
    assert!(w.spec.env.contains(&("CUDA_VISIBLE_DEVICES".into(), "0".into())), "{:?}", w.spec.env);
    assert_eq!(w.gpus.gpus, ["0000:03:00.0"]);
}

#[test]
fn no_gpu_is_refused_with_the_reason() {
    let f = Fake::new();
    f.add(Dev::new("0000:00:02.0", 0x030000, 0x1234, 0x1111).driver("bochs-drm"));
    write_version(&f, HOST_RELEASE);
    let root = image(&f, None, true);
    let drv = driver_dir(&f.root.join("host-driver"), HOST_RELEASE);
    assert_eq!(
        refused(&f, &options(&f, &root, Some(drv))),
        "hand the GPUs over: no GPU found (no NVIDIA, AMD or Intel display controller in /sys/bus/pci/devices)"
    );
}

#[test]
fn no_driver_loaded_is_refused_before_anything_is_scanned() {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0"));
    let root = image(&f, None, true);
    let drv = driver_dir(&f.root.join("host-driver"), HOST_RELEASE);
    assert_eq!(
        refused(&f, &options(&f, &root, Some(drv))),
        "read the NVIDIA kernel module's release: no NVIDIA driver is loaded on this host: no /proc/driver/nvidia/version"
    );
}

#[test]
fn the_images_own_driver_is_the_default_and_must_be_the_hosts_release() {
    let f = loaded_host(HOST_RELEASE);
    let root = image(&f, Some("535.309.01"), true);
    assert_eq!(
        refused(&f, &options(&f, &root, None)),
        "match the NVIDIA libraries to the kernel module: the libraries in /image/opt/nvidia-driver are 535.309.01, \
         this host's kernel module is 550.90.07: CUDA needs the same release (--driver-dir DIR with the host's; device-check.sh assembles one)"
    );
    // The same release: the image's own directory is mounted.
    let f = loaded_host("535.309.01");
    let root = image(&f, Some("535.309.01"), true);
    let w = bundle(&options(&f, &root, None)).unwrap();
    assert_eq!(w.spec.mounts[0].source, root.canonicalize().unwrap().join("opt/nvidia-driver/lib"));
    // No driver in the image and none given.
    let f = loaded_host(HOST_RELEASE);
    let root = image(&f, None, true);
    let e = refused(&f, &options(&f, &root, None));
    assert_eq!(e, "find the NVIDIA userspace: the image at /image ships no NVIDIA driver (no nvidia_driver in its manifest) and no --driver-dir was given");
}

#[test]
fn a_gpu_on_another_driver_is_not_rebound_and_a_missing_uvm_not_loaded() {
    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0").driver("vfio-pci").overridden("vfio-pci").group(3));
    f.module("nvidia");
    f.module("nvidia_uvm");
    write_version(&f, HOST_RELEASE);
    let root = image(&f, None, true);
    let drv = driver_dir(&f.root.join("host-driver"), HOST_RELEASE);
    let e = refused(&f, &options(&f, &root, Some(drv.clone())));
    assert_eq!(
        e,
        "hand the GPUs over: binding to nvidia failed: the GPU could not be bound (0000:01:00.0 not used: write \"nvidia\" to \
         /sys/bus/pci/devices/0000:01:00.0/driver_override: `gpu bundle` changes no driver binding on a host: the GPU must \
         already be bound to nvidia here (the boot would rebind it))"
    );
    assert_eq!(scan::driver_at(&f.sys, "0000:01:00.0").as_deref(), Some("vfio-pci"), "left as it was");

    let f = Fake::new();
    f.add(Dev::nvidia_gpu("0000:01:00.0"));
    FakeKernel::new(&f).load_module("nvidia").unwrap();
    write_version(&f, HOST_RELEASE);
    let root = image(&f, None, true);
    let drv = driver_dir(&f.root.join("host-driver"), HOST_RELEASE);
    assert_eq!(
        refused(&f, &options(&f, &root, Some(drv))),
        "hand the GPUs over: binding to nvidia failed: load module nvidia-uvm: nvidia-uvm is not loaded on this host, \
         and `gpu bundle` loads no module: load it first (modprobe nvidia-uvm)"
    );
}

#[test]
fn an_image_without_the_library_mountpoints_is_refused() {
    let f = loaded_host(HOST_RELEASE);
    let root = image(&f, None, false);
    let drv = driver_dir(&f.root.join("host-driver"), HOST_RELEASE);
    assert_eq!(
        refused(&f, &options(&f, &root, Some(drv))),
        "hand the GPUs over: the image has no directory /usr/local/nvidia/lib64 to mount the NVIDIA driver's /host-driver/lib on \
         (its root is read-only): rebuild the image, image/in-rootfs.sh makes it"
    );
}

#[test]
fn options_and_exit_codes() {
    let a = |v: &[&str]| Args::new(v.iter().map(|s| s.to_string()).collect());
    let o = parse(&mut a(&["--rootfs", "/mnt", "--out=/b", "--devices", "0,2", "--sysfs", "/s", "--", "python3", "--out", "x"])).unwrap();
    assert_eq!(o.command, ["python3", "--out", "x"], "the command keeps its own options");
    assert_eq!((o.rootfs.as_path(), o.out.as_path(), o.id.as_str()), (Path::new("/mnt"), Path::new("/b"), "gpu-check"));
    assert_eq!(o.devices, Selection::Indices(vec![0, 2]));
    assert_eq!(o.roots, Roots { sys: "/s".into(), proc: "/proc".into(), dev: "/dev".into() });
    assert_eq!(o.driver_dir, None);
    assert_eq!(parse(&mut a(&["--rootfs", "/mnt", "--out", "/b"])).unwrap_err(), "no command: give it after --");
    assert_eq!(parse(&mut a(&["--rootfs", "/mnt", "--out", "/b", "--"])).unwrap_err(), "no command: give it after --");
    assert_eq!(parse(&mut a(&["--out", "/b", "--", "true"])).unwrap_err(), "--rootfs DIR is required");
    assert!(parse(&mut a(&["--rootfs", "/m", "--out", "/b", "--bogus", "--", "true"])).unwrap_err().contains("--bogus"));
    assert_eq!(cli(&mut a(&["--rootfs", "/mnt"])), EXIT_USAGE);
    assert_eq!(cli(&mut a(&["--help"])), 0);
    let f = Fake::new();
    let missing = f.root.join("no-such-image").display().to_string();
    assert_eq!(cli(&mut a(&["--rootfs", &missing, "--out", "/nonexistent/b", "--", "true"])), 1);
}
