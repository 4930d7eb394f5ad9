//! The appliance image manifest: Flower version, framework, use cases and app baked in. Issue #6.
//!
//! `make image` writes `/etc/flower-init/image.json` (image/manifest.py). flower-init reads it
//! to check FLOWER_VERSION / ML_FRAMEWORK / FL_USE_CASE against what the image really holds,
//! and to know the bundled app: where it is and which `[tool.flwr.app.config]` keys a run
//! config may set, with their TOML types and defaults (so no TOML parser is needed at boot).
//! Every error names the file and the field.
//!
//! This is the one reader of the manifest: boot and `check` take [`load_file`]'s facts.

use crate::config::ImageFacts;
use crate::error::{Error, Result};
use crate::runconfig::{AppSchema, Value as RunValue};
use crate::vocab::{Framework, Role, UseCase};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Where the running image's manifest is (written by `make image`); `check` reads it when no
/// `--image` is given.
pub const IMAGE_MANIFEST: &str = "/etc/flower-init/image.json";

/// Where the manifest is, relative to the image root ([`IMAGE_MANIFEST`] without its `/`).
pub fn manifest_path_at(root: &Path) -> PathBuf {
    root.join(IMAGE_MANIFEST.trim_start_matches('/'))
}

/// The manifest, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Flower version, framework, use cases, role: what `config` checks the context against.
    pub facts: ImageFacts,
    /// Python of the image (Debian's), e.g. `3.11.2`.
    pub python_version: String,
    /// The venv holding Flower, e.g. `/opt/flower/venv`.
    pub venv: PathBuf,
    pub app: App,
    pub build_date: String,
    /// Bytes of the unpacked root and of the venv, if recorded.
    pub rootfs_bytes: Option<u64>,
    pub venv_bytes: Option<u64>,
    /// The NVIDIA driver the image ships (the GPU image, issue #18), or `None`: GPUs then go
    /// to vfio-pci and the container gets no CUDA.
    pub nvidia_driver: Option<NvidiaDriver>,
}

/// `nvidia_driver` of the manifest (image/nvidia-driver.sh's `driver.json` plus where it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaDriver {
    /// In the image: `lib/` (libcuda.so.1, ...), `bin/` (nvidia-smi), `modules/KERNEL/*.ko`.
    pub dir: PathBuf,
    /// The driver release, e.g. `535.309.01`.
    pub version: String,
    /// The kernel release its modules were built for (`uname -r` must say the same).
    pub kernel: String,
    /// `modinfo -F vermagic` of nvidia.ko.
    pub vermagic: String,
    /// The files of `modules/KERNEL/` in load order: the kernel's own modules nvidia.ko needs
    /// (drm, ...), then `nvidia.ko`, `nvidia-uvm.ko`.
    pub load_order: Vec<String>,
}

impl NvidiaDriver {
    /// The driver directory under `root` (the image's root as mounted now).
    pub fn dir_at(&self, root: &Path) -> PathBuf {
        root.join(self.dir.strip_prefix("/").unwrap_or(&self.dir))
    }

    /// The module file `name` (`nvidia`, `nvidia-uvm`, `drm`) for `kernel`, under `root` (the
    /// image's root as mounted now).
    pub fn module_at(&self, root: &Path, kernel: &str, name: &str) -> PathBuf {
        let file = self
            .load_order
            .iter()
            .find(|f| f.split(".ko").next() == Some(name))
            .cloned()
            .unwrap_or_else(|| format!("{name}.ko"));
        self.dir_at(root).join("modules").join(kernel).join(file)
    }

    /// The modules to load before `name`, in order (`drm` before `nvidia`; `nvidia` before
    /// `nvidia-uvm`).
    pub fn before(&self, name: &str) -> Vec<String> {
        let names: Vec<String> = self.load_order.iter().filter_map(|f| f.split(".ko").next().map(String::from)).collect();
        match names.iter().position(|n| n == name) {
            Some(i) => names[..i].to_vec(),
            None => Vec::new(),
        }
    }
}

/// The bundled Flower app.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Its source directory in the image (for `flwr run`).
    pub path: PathBuf,
    pub name: String,
    pub version: Option<String>,
    /// `[tool.flwr.app.config]`: every key a run config may set, its type and default
    /// (run configs are validated against it before submission).
    pub config: AppSchema,
    /// The app built as a FAB at image-build time by Flower's own builder, which flower-init
    /// submits over the Control API; `None` in an image built before it (then `flwr run`).
    pub fab: Option<Fab>,
}

/// The bundled app's FAB (`app.fab` of the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fab {
    /// Absolute path in the image.
    pub path: PathBuf,
    /// sha256 of the file in lowercase hex (Flower's `Fab.hash_str`).
    pub sha256: String,
    pub bytes: u64,
}

impl Fab {
    /// The FAB's bytes from the image whose root is `root`, refused unless their size and
    /// sha256 are the manifest's: a run is never started from a file that changed since the
    /// image was built.
    pub fn read_at(&self, root: &Path) -> Result<Vec<u8>> {
        let file = root.join(self.path.strip_prefix("/").unwrap_or(&self.path));
        let what = || format!("read the app's FAB {}", file.display());
        let content = std::fs::read(&file).map_err(|e| Error { what: what(), cause: e.into() })?;
        if content.len() as u64 != self.bytes {
            return Err(Error::msg(what(), format!("{} bytes, the image manifest says {}", content.len(), self.bytes)));
        }
        let sha = sha256_hex(&content).map_err(|e| Error::msg(what(), e))?;
        if sha != self.sha256 {
            return Err(Error::msg(what(), format!("sha256 {sha}, the image manifest says {}", self.sha256)));
        }
        Ok(content)
    }
}

/// sha256 in lowercase hex, by the ring provider rustls links (SHA-256 is the hash of the TLS
/// 1.3 suite TLS13_AES_128_GCM_SHA256): no hashing crate of our own.
pub fn sha256_hex(data: &[u8]) -> std::result::Result<String, String> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let tls13 = suite.tls13().ok_or("no TLS 1.3 suite for SHA-256")?;
    let out = tls13.common.hash_provider.hash(data);
    Ok(out.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Read the manifest of the image whose root is `root` (tests, the host's unpacked rootfs).
pub fn load_at(root: &Path) -> Result<Manifest> {
    load_file(&manifest_path_at(root))
}

/// Read the manifest file `path` (`check --image FILE`); errors name the file and the field.
pub fn load_file(path: &Path) -> Result<Manifest> {
    let what = || format!("read image manifest {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| Error { what: what(), cause: e.into() })?;
    parse(&text).map_err(|e| Error::msg(what(), e))
}

/// Parse and validate manifest text; errors name the field (`app.config.lr.default: …`).
pub fn parse(text: &str) -> std::result::Result<Manifest, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let top = v.as_object().ok_or("not a JSON object")?;
    let f = Fields { obj: top, at: "" };
    let flower_version = f.string("flower_version")?;
    crate::vocab::semver(&flower_version).map_err(|e| format!("field flower_version: {e}"))?;
    let framework: Framework = f.word("framework")?;
    let mut use_cases = Vec::new();
    for (i, u) in f.array("use_cases")?.iter().enumerate() {
        let uc: UseCase = u
            .as_str()
            .ok_or(format!("field use_cases[{i}]: expected a string"))?
            .parse()
            .map_err(|e| format!("field use_cases[{i}]: {e}"))?;
        if !uc.frameworks().contains(&framework) {
            return Err(format!("field use_cases[{i}]: {uc} cannot run on the {framework} variant"));
        }
        use_cases.push(uc);
    }
    let role: Option<Role> = match top.get("role") {
        None | Some(Value::Null) => None,
        Some(_) => Some(f.word("role")?),
    };
    let app = f.object("app")?;
    let app = Fields { obj: app, at: "app." };
    let path = PathBuf::from(app.string("path")?);
    if !path.is_absolute() {
        return Err(format!("field app.path: {} is not an absolute path", path.display()));
    }
    let mut config = AppSchema::default();
    for (key, entry) in app.object("config")? {
        let default = config_entry(key, entry)?;
        config.keys.insert(key.clone(), default.value_type());
        config.defaults.insert(key.clone(), default);
    }
    let fab = match app.obj.get("fab") {
        None | Some(Value::Null) => None,
        Some(_) => Some(fab_entry(&Fields { obj: app.object("fab")?, at: "app.fab." })?),
    };
    let venv = PathBuf::from(f.string("venv")?);
    let sizes = top.get("sizes").and_then(Value::as_object);
    let size = |k: &str| sizes.and_then(|s| s.get(k)).and_then(Value::as_u64);
    Ok(Manifest {
        facts: ImageFacts { flower_version, framework, use_cases, role },
        python_version: f.string("python_version")?,
        venv,
        app: App { path, name: app.string("name")?, version: app.opt_string("version")?, config, fab },
        build_date: f.string("build_date")?,
        rootfs_bytes: size("rootfs_bytes"),
        venv_bytes: size("venv_bytes"),
        nvidia_driver: match top.get("nvidia_driver") {
            None | Some(Value::Null) => None,
            Some(_) => Some(nvidia_entry(&Fields { obj: f.object("nvidia_driver")?, at: "nvidia_driver." })?),
        },
    })
}

/// `nvidia_driver`: an absolute directory, the release, the kernel and the vermagic.
fn nvidia_entry(f: &Fields) -> std::result::Result<NvidiaDriver, String> {
    let dir = PathBuf::from(f.string("dir")?);
    if !dir.is_absolute() {
        return Err(format!("field nvidia_driver.dir: {} is not an absolute path", dir.display()));
    }
    let kernel = f.string("kernel")?;
    if kernel.contains('/') {
        return Err(format!("field nvidia_driver.kernel: {kernel:?} is not a kernel release"));
    }
    let mut load_order = Vec::new();
    for (i, v) in f.array("load_order")?.iter().enumerate() {
        match v.as_str() {
            Some(name) if !name.contains('/') && (name.ends_with(".ko") || name.ends_with(".ko.xz")) => load_order.push(name.to_string()),
            _ => return Err(format!("field nvidia_driver.load_order[{i}]: expected a module file name (x.ko), found {v}")),
        }
    }
    if !load_order.iter().any(|f| f == "nvidia.ko") {
        return Err("field nvidia_driver.load_order: nvidia.ko is not in it".into());
    }
    Ok(NvidiaDriver { dir, version: f.string("version")?, kernel, vermagic: f.string("vermagic")?, load_order })
}

/// `app.fab`: an absolute path, a sha256 in lowercase hex, a size.
fn fab_entry(f: &Fields) -> std::result::Result<Fab, String> {
    let path = PathBuf::from(f.string("path")?);
    if !path.is_absolute() {
        return Err(format!("field app.fab.path: {} is not an absolute path", path.display()));
    }
    let sha256 = f.string("sha256")?;
    if sha256.len() != 64 || !sha256.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("field app.fab.sha256: {sha256:?} is not a sha256 in lowercase hex"));
    }
    let bytes = f.get("bytes")?.as_u64().ok_or("field app.fab.bytes: expected a byte count")?;
    Ok(Fab { path, sha256, bytes })
}

/// One `app.config` entry: `{"type": …, "default": …}` with a default of that type.
fn config_entry(key: &str, entry: &Value) -> std::result::Result<RunValue, String> {
    let at = format!("app.config.{key}");
    let e = entry.as_object().ok_or(format!("field {at}: expected an object with type and default"))?;
    let e = Fields { obj: e, at: &format!("{at}.") };
    let ty = e.string("type")?;
    let d = e.obj.get("default").ok_or(format!("field {at}.default: missing"))?;
    let value = match (ty.as_str(), d) {
        ("string", Value::String(s)) => RunValue::Str(s.clone()),
        ("boolean", Value::Bool(b)) => RunValue::Bool(*b),
        ("integer", Value::Number(n)) if n.as_i64().is_some() => RunValue::Int(n.as_i64().unwrap_or(0)),
        ("float", Value::Number(n)) if n.as_f64().is_some() => RunValue::Float(n.as_f64().unwrap_or(0.0)),
        ("string" | "boolean" | "integer" | "float", other) => {
            let a = match ty.as_str() {
                "integer" => "an integer",
                "boolean" => "a boolean",
                "float" => "a float",
                _ => "a string",
            };
            return Err(format!("field {at}.default: {other} is not {a}"));
        }
        _ => return Err(format!("field {at}.type: {ty:?} is not string, integer, float or boolean")),
    };
    Ok(value)
}

/// Typed access to the fields of one JSON object, naming `at` + field in errors.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: &'a str,
}

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> std::result::Result<&'a Value, String> {
        self.obj.get(k).ok_or_else(|| format!("field {}{k}: missing", self.at))
    }
    fn string(&self, k: &str) -> std::result::Result<String, String> {
        match self.get(k)? {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            other => Err(format!("field {}{k}: expected a non-empty string, found {other}", self.at)),
        }
    }
    fn opt_string(&self, k: &str) -> std::result::Result<Option<String>, String> {
        match self.obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(k).map(Some),
        }
    }
    fn array(&self, k: &str) -> std::result::Result<&'a Vec<Value>, String> {
        self.get(k)?.as_array().ok_or_else(|| format!("field {}{k}: expected an array", self.at))
    }
    fn object(&self, k: &str) -> std::result::Result<&'a Map<String, Value>, String> {
        self.get(k)?.as_object().ok_or_else(|| format!("field {}{k}: expected an object", self.at))
    }
    /// A field holding one of an enum's words (`FromStr` lists the choices on error).
    fn word<T: std::str::FromStr<Err = String>>(&self, k: &str) -> std::result::Result<T, String> {
        self.string(k)?.parse().map_err(|e| format!("field {}{k}: {e}", self.at))
    }
}

#[cfg(test)]
mod tests;
