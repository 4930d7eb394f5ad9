//! `flower-init check [--role superlink|supernode] [--image MANIFEST_JSON] PATH`.
//!
//! Exit 0: the resolved plan as JSON on stdout (warnings also on stderr). Exit 2: one line
//! per problem on stderr (syntax errors with their line, then every validation problem),
//! followed by the warnings. Exit 1: a file could not be read.

use crate::args::{Args, EXIT_USAGE};
use crate::config::{ImageFacts, Problem, Rejected, Resolved, resolve};
use crate::context::{Context, LoadError, context_paths};
use crate::image::IMAGE_MANIFEST;
use crate::vocab::{Role, San};
use serde_json::json;
use std::path::Path;

const USAGE: &str = "usage: flower-init check [--role superlink|supernode] [--image MANIFEST_JSON] PATH
  PATH: a context.sh (any name) or a directory holding context.sh; token.txt and FILES_DS
  files are read from the same directory.
  --image: the image manifest to check against (default: /etc/flower-init/image.json if
  present, else the facts of the image this flower-init was built for).
Exit status: 0 valid (plan as JSON on stdout), 2 invalid (one problem per line on stderr),
1 unreadable input.";

/// Run `check`; returns the exit code.
pub fn cli(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    let parsed = (|| -> Result<(Option<Role>, Option<String>, String), String> {
        let role =
            args.opt("--role")?.map(|s| s.parse::<Role>().map_err(|e| format!("--role {s:?}: {e}"))).transpose()?;
        let image = args.opt("--image")?;
        let path = args.positional().ok_or("PATH is missing")?;
        args.finish()?;
        Ok((role, image, path))
    })();
    let (role, image, path) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flower-init check: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    let (facts, image_source) = match image_facts(image.as_deref(), Path::new(IMAGE_MANIFEST)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("flower-init check: {e}");
            return 1;
        }
    };
    let (file, dir) = match context_paths(Path::new(&path)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flower-init check: {e}");
            return 1;
        }
    };
    let ctx = match Context::load(&file, &dir) {
        Ok(c) => c,
        Err(LoadError::Io(e)) => {
            eprintln!("flower-init check: {e}");
            return 1;
        }
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    match resolve(&ctx, &facts, role).and_then(validate_operator_certs).and_then(validate_supernode_ca).map(check_node_keys) {
        Ok(res) => {
            let mut plan = res.plan;
            plan["context"] = json!(file.display().to_string());
            plan["image"] = json!({ "source": image_source, "facts": facts });
            match serde_json::to_string_pretty(&plan) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("flower-init check: write the plan: {e}");
                    return 1;
                }
            }
            for w in &res.warnings {
                eprintln!("warning: {w}");
            }
            0
        }
        Err(rej) => {
            eprintln!("{rej}");
            for w in &rej.warnings {
                eprintln!("warning: {w}");
            }
            2
        }
    }
}

/// FL_SUPERNODE_KEYS' entries, parsed as the SuperLink's registrar will: a bad one is a
/// warning naming it (it is skipped at boot, the others registered: docs/node-auth.md).
fn check_node_keys(mut res: Resolved) -> Resolved {
    let Some(sl) = res.config.role.superlink().filter(|s| s.node_auth) else { return res };
    let bad: Vec<String> = sl
        .node_keys
        .iter()
        .filter_map(|(n, k)| crate::tls::nodekey::NodePublicKey::parse_openssh(k).err().map(|e| format!("FL_SUPERNODE_KEYS entry {n}: {e}: skipped (the other keys are registered)")))
        .collect();
    res.warnings.extend(bad);
    res
}

/// Operator certificates (FL_SSL_*) are checked as boot will: chain, dates, key, and SANs
/// covering the NICs' static addresses, with a real handshake (`tls::validate_operator`).
#[allow(clippy::result_large_err)] // once per boot or `check`: the size of Rejected does not matter
fn validate_operator_certs(res: Resolved) -> Result<Resolved, Rejected> {
    let Some(pem) = res.config.tls.operator.as_ref().filter(|_| res.config.tls.superlink_enabled()) else {
        return Ok(res);
    };
    let mut endpoints: Vec<San> = Vec::new();
    for i in &res.config.network.interfaces {
        endpoints.extend(i.ipv4.map(|n| San::Ip(n.addr.into())));
        endpoints.extend(i.ipv6.iter().map(|n| San::Ip(n.addr.into())));
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    match crate::tls::validate_operator(pem, &endpoints, now) {
        Ok(_) => Ok(res),
        Err(e) => {
            // tls errors name their variable first ("FL_SSL_KEYFILE: …"); keep one name.
            let text = e.to_string();
            let (var, msg) = match text.split_once(": ") {
                Some((v, m)) if v.starts_with("FL_SSL_") && !v.contains(' ') => (v.to_string(), m.to_string()),
                _ => ("FL_SSL_CERTFILE".to_string(), text),
            };
            let c = res.config;
            Err(Rejected {
                problems: vec![Problem { var, value: None, msg }],
                warnings: res.warnings,
                role: Some(c.role()),
                network: c.network,
                onegate: c.onegate,
            })
        }
    }
}

/// A SuperNode's CA (FL_JOIN's, or FL_SSL_CA_CERTFILE) is checked as its trust step will:
/// every certificate parses, is a CA, and is in date (`tls::check_supernode_ca`).
#[allow(clippy::result_large_err)] // once per `check`: the size of Rejected does not matter
fn validate_supernode_ca(res: Resolved) -> Result<Resolved, Rejected> {
    let Some(sn) = res.config.role.supernode() else { return Ok(res) };
    let Some(pem) = res.config.tls.ca_pem.as_ref().filter(|_| res.config.tls.enabled != Some(false)) else {
        return Ok(res);
    };
    let source = if sn.join.is_some() { crate::tls::CaSource::Join } else { crate::tls::CaSource::Context };
    match crate::tls::check_supernode_ca(pem.as_bytes(), source) {
        Ok(_) => Ok(res),
        Err(e) => {
            let var = source.name().to_string();
            let text = e.to_string();
            let msg = text.strip_prefix(&format!("{var}: ")).unwrap_or(&text).to_string();
            let c = res.config;
            Err(Rejected {
                problems: vec![Problem { var, value: None, msg }],
                warnings: res.warnings,
                role: Some(c.role()),
                network: c.network,
                onegate: c.onegate,
            })
        }
    }
}

/// The image facts to check against, and where they came from: `--image`, else the installed
/// manifest when present, else [`ImageFacts::builtin`].
pub fn image_facts(flag: Option<&str>, installed: &Path) -> crate::error::Result<(ImageFacts, String)> {
    match flag {
        Some(p) => Ok((crate::image::load_file(Path::new(p))?.facts, p.to_string())),
        None if installed.exists() => Ok((crate::image::load_file(installed)?.facts, installed.display().to_string())),
        None => Ok((ImageFacts::builtin(), "builtin".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Framework, UseCase};

    #[test]
    fn image_manifest_json() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("image.json");
        // A full manifest as `make image` writes it (image.rs is the one reader), edited.
        let mut m: serde_json::Value = serde_json::from_str(include_str!("image/testdata-image.json")).unwrap();
        m["framework"] = "pytorch".into();
        m["use_cases"] = serde_json::json!(["llm-fine-tuning"]);
        m["role"] = "supernode".into();
        std::fs::write(&p, m.to_string()).unwrap();
        let f = crate::image::load_file(&p).map(|m| m.facts).unwrap();
        assert_eq!(
            (f.framework, f.role, f.use_cases),
            (Framework::PyTorch, Some(Role::SuperNode), vec![UseCase::LlmFineTuning])
        );
        m["flower_version"] = "1.42".into();
        std::fs::write(&p, m.to_string()).unwrap();
        assert!(crate::image::load_file(&p).map(|m| m.facts).unwrap_err().to_string().contains("flower_version: must be a version X.Y.Z"));
        assert_eq!(image_facts(None, &d.path().join("none")).unwrap().1, "builtin");
        assert!(image_facts(None, &p).map(|x| x.1).unwrap_err().to_string().contains("image.json"));
    }
}
