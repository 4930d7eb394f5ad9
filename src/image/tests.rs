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
