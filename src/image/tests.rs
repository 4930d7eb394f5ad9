use super::*;
use crate::runconfig::Value as RunValue;
use serde_json::json;

/// A manifest as image/manifest.py writes it (from a real `make image` of the sklearn variant).
const REAL: &str = include_str!("testdata-image.json");

fn edit(f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(REAL).unwrap();
    f(&mut v);
    v.to_string()
}

#[test]
fn a_real_manifest_parses() {
    let m = parse(REAL).unwrap();
    assert_eq!(m.facts.flower_version, "1.42.0");
    assert_eq!(m.facts.framework, Framework::Sklearn);
    assert_eq!(m.facts.use_cases, vec![UseCase::TabularClassification, UseCase::ImageClassification]);
    assert_eq!(m.facts.role, None);
    assert_eq!(m.venv, Path::new("/opt/flower/venv"));
    assert_eq!(m.app.path, Path::new("/opt/flower/app"));
    assert_eq!(m.app.config.defaults["num-server-rounds"], RunValue::Int(3));
    assert_eq!(m.app.config.defaults["proximal-mu"], RunValue::Float(0.1));
    assert_eq!(m.app.config.defaults["strategy"], RunValue::Str("FedAvg".into()));
    assert_eq!(m.app.config.defaults["checkpoint-enabled"], RunValue::Bool(false));
    assert_eq!(m.app.name, "appliance");
    assert!(m.rootfs_bytes.unwrap() > m.venv_bytes.unwrap());
}

#[test]
fn load_at_reads_the_image_root_and_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    let e = load_at(d.path()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("read image manifest {}/etc/flower-init/image.json: ", d.path().display())), "{e}");
    std::fs::create_dir_all(d.path().join("etc/flower-init")).unwrap();
    std::fs::write(manifest_path_at(d.path()), REAL).unwrap();
    assert_eq!(load_at(d.path()).unwrap(), parse(REAL).unwrap());
    std::fs::write(manifest_path_at(d.path()), edit(|v| v["framework"] = json!("jax"))).unwrap();
    let e = load_at(d.path()).unwrap_err().to_string();
    assert!(e.contains("image.json: field framework: must be one of pytorch, tensorflow, sklearn"), "{e}");
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (edit(|v| v.as_object_mut().unwrap().remove("flower_version").map(|_| ()).unwrap()), "field flower_version: missing"),
        (edit(|v| v["flower_version"] = json!("1.42")), "field flower_version: "),
        (edit(|v| v["use_cases"] = json!(["llm-fine-tuning"])), "field use_cases[0]: llm-fine-tuning cannot run on the sklearn variant"),
        (edit(|v| v["use_cases"] = json!(["tabular-classification", 3])), "field use_cases[1]: expected a string"),
        (edit(|v| v["role"] = json!("worker")), "field role: must be one of superlink, supernode"),
        (edit(|v| v["app"]["path"] = json!("opt/app")), "field app.path: opt/app is not an absolute path"),
        (edit(|v| v["app"]["config"]["lr"] = json!({"type": "float", "default": "fast"})), "field app.config.lr.default: \"fast\" is not a float"),
        (edit(|v| v["app"]["config"]["lr"] = json!({"type": "decimal", "default": 1})), "field app.config.lr.type: \"decimal\" is not string"),
        (edit(|v| v["app"]["config"]["lr"] = json!({"type": "integer", "default": 1.5})), "field app.config.lr.default: 1.5 is not an integer"),
        (edit(|v| v["app"]["config"]["lr"] = json!({"type": "integer"})), "field app.config.lr.default: missing"),
        (edit(|v| v["app"]["name"] = json!("")), "field app.name: expected a non-empty string"),
        ("[]".to_string(), "not a JSON object"),
        ("{".to_string(), "not JSON"),
    ];
    for (text, want) in cases {
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }
}

#[test]
fn role_may_be_fixed_and_sizes_are_optional() {
    let m = parse(&edit(|v| {
        v["role"] = json!("supernode");
        v.as_object_mut().unwrap().remove("sizes");
    }))
    .unwrap();
    assert_eq!(m.facts.role, Some(Role::SuperNode));
    assert_eq!((m.rootfs_bytes, m.venv_bytes), (None, None));
}

#[test]
fn run_configs_are_checked_against_the_manifest_schema() {
    let m = parse(REAL).unwrap();
    let mut rc = crate::runconfig::RunConfig::default();
    rc.set("num-server-rounds", RunValue::Int(5)).set("strategy", RunValue::Str("FedProx".into()));
    assert_eq!(m.app.config.validate(&rc), Ok(()));
    rc.set("num-server-rounds", RunValue::Float(1.5)).set("nope", RunValue::Bool(true));
    let errs: Vec<String> = m.app.config.validate(&rc).unwrap_err().iter().map(|e| e.to_string()).collect();
    assert!(errs.iter().any(|e| e.contains("\"num-server-rounds\": value 1.5 is not of type")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("\"nope\"") && e.contains("not declared")), "{errs:?}");
}

#[test]
fn the_shared_config_loader_accepts_the_same_file() {
    // config::ImageFacts::load (used by `check`) ignores the extra keys of the full manifest.
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("image.json");
    std::fs::write(&p, REAL).unwrap();
    assert_eq!(load_file(&p).unwrap().facts, parse(REAL).unwrap().facts);
}

#[test]
fn the_fab_is_optional_and_checked() {
    assert_eq!(parse(REAL).unwrap().app.fab, None, "an image built before the FAB: flwr run");
    let sha = "f6bf2db9fdbfb302267dd9a7be73e2c314052cdf4429060e22cc1d6f8868e4cb";
    let m = parse(&edit(|v| v["app"]["fab"] = json!({"path": "/opt/flower/app.fab", "sha256": sha, "bytes": 62629}))).unwrap();
    assert_eq!(m.app.fab, Some(Fab { path: "/opt/flower/app.fab".into(), sha256: sha.into(), bytes: 62629 }));
    assert_eq!(parse(&edit(|v| v["app"]["fab"] = Value::Null)).unwrap().app.fab, None);
    let cases = [
        (json!({"path": "app.fab", "sha256": sha, "bytes": 1}), "field app.fab.path: app.fab is not an absolute path"),
        (json!({"path": "/a.fab", "sha256": sha.to_uppercase(), "bytes": 1}), "field app.fab.sha256: "),
        (json!({"path": "/a.fab", "sha256": &sha[1..], "bytes": 1}), "field app.fab.sha256: "),
        (json!({"path": "/a.fab", "sha256": sha}), "field app.fab.bytes: missing"),
        (json!({"path": "/a.fab", "sha256": sha, "bytes": -1}), "field app.fab.bytes: expected a byte count"),
        (json!("/a.fab"), "field app.fab: expected an object"),
    ];
    for (fab, want) in cases {
        let e = parse(&edit(|v| v["app"]["fab"] = fab)).unwrap_err();
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }
}

#[test]
fn the_fab_is_read_only_when_it_matches_the_manifest() {
    // sha256 of "abc" (FIPS 180-2 test vector) and of nothing.
    assert_eq!(sha256_hex(b"abc").unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(sha256_hex(b"").unwrap(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("opt/flower")).unwrap();
    std::fs::write(d.path().join("opt/flower/app.fab"), b"abc").unwrap();
    let fab = Fab { path: "/opt/flower/app.fab".into(), sha256: sha256_hex(b"abc").unwrap(), bytes: 3 };
    assert_eq!(fab.read_at(d.path()).unwrap(), b"abc");
    let e = Fab { bytes: 4, ..fab.clone() }.read_at(d.path()).unwrap_err().to_string();
    assert!(e.ends_with("app.fab: 3 bytes, the image manifest says 4"), "{e}");
    std::fs::write(d.path().join("opt/flower/app.fab"), b"abd").unwrap();
    let e = fab.read_at(d.path()).unwrap_err().to_string();
    assert!(e.contains("app.fab: sha256 a52d159f"), "{e}");
    let e = fab.read_at(&d.path().join("nowhere")).unwrap_err().to_string();
    assert!(e.starts_with("read the app's FAB ") && e.contains("No such file"), "{e}");
}

/// Issue #18: the GPU image's `nvidia_driver` (image/nvidia-driver.sh's driver.json and where
/// it is); absent or null in the other images; each field checked with its name.
#[test]
fn the_nvidia_driver_is_optional_and_checked() {
    assert_eq!(parse(REAL).unwrap().nvidia_driver, None);
    let d = json!({"dir": "/opt/nvidia-driver", "version": "535.309.01", "kernel": "6.1.0-56-amd64",
                   "vermagic": "6.1.0-56-amd64 SMP preempt mod_unload modversions ", "modules": ["nvidia", "nvidia-uvm"],
                   "load_order": ["drm.ko", "nvidia.ko", "nvidia-uvm.ko"]});
    let m = parse(&edit(|v| v["nvidia_driver"] = d.clone())).unwrap();
    let n = m.nvidia_driver.unwrap();
    assert_eq!((n.version.as_str(), n.kernel.as_str()), ("535.309.01", "6.1.0-56-amd64"));
    assert_eq!(n.module_at(Path::new("/newroot"), "6.1.0-56-amd64", "nvidia-uvm"),
               Path::new("/newroot/opt/nvidia-driver/modules/6.1.0-56-amd64/nvidia-uvm.ko"));
    assert_eq!(n.before("nvidia"), vec!["drm"]);
    assert_eq!(n.before("nvidia-uvm"), vec!["drm", "nvidia"]);
    assert_eq!(n.module_at(Path::new("/"), "k", "drm"), Path::new("/opt/nvidia-driver/modules/k/drm.ko"));
    assert_eq!(parse(&edit(|v| v["nvidia_driver"] = Value::Null)).unwrap().nvidia_driver, None);
    for (field, bad, want) in [
        ("dir", json!("opt/nvidia"), "field nvidia_driver.dir: opt/nvidia is not an absolute path"),
        ("kernel", json!("../x"), "field nvidia_driver.kernel: \"../x\" is not a kernel release"),
        ("version", json!(""), "field nvidia_driver.version: expected a non-empty string"),
        ("load_order", json!(["../x.ko"]), "field nvidia_driver.load_order[0]: expected a module file name"),
        ("load_order", json!(["drm.ko"]), "field nvidia_driver.load_order: nvidia.ko is not in it"),
    ] {
        let mut d2 = d.clone();
        d2[field] = bad;
        let e = parse(&edit(|v| v["nvidia_driver"] = d2)).unwrap_err();
        assert!(e.starts_with(want), "{e:?} should start with {want:?}");
    }
}
