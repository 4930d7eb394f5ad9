//! SuperNode authentication (issue #19, docs/node-auth.md), both sides:
//!
//! - **SuperNode**, step `node-key`: its key pair, made at first boot and kept on the state
//!   disk (`node-auth/node.key`, mode 0600); the private key is copied to the runtime
//!   directory for the container only (read-only bind at [`flower::NODE_KEY_PATH`], owned by
//!   the container's user) and never logged; the public key is published at once as
//!   FL_NODE_PUBKEY, before Flower starts, since the SuperLink must register it before this
//!   node can connect.
//! - **SuperLink**, step `node-auth`: the registrar child (`flower-init node-auth`, see
//!   [`crate::nodeauth`]) started once Flower's Control API answers, supervised like the
//!   gateway: restarted with back-off, its last `state` line kept for `/status`.

use super::Node;
use super::report::NodeAuth;
use super::steps::{Boot, Failed, Note};
use crate::container::{self, BindMount};
use crate::error::{Ctx, Error};
use super::helper::Helper;
use crate::supervisor::Stream;
use crate::tls::nodekey::NodeKey;
use crate::{flower, nodeauth};
use std::path::PathBuf;
use std::time::Duration;

/// Seconds between the registrar's cycles (a `GET /service` each, and a `GET /vms/<id>` per
/// new SuperNode VM): how long a new SuperNode waits for its key to be registered, at most.
const CYCLE_EVERY: &str = "5";
/// Grace between SIGTERM and SIGKILL at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The SuperNode's key as the container uses it, and what `/status` says of it.
#[derive(Debug, Clone)]
pub(super) struct NodeKeyUse {
    pub(super) bind: BindMount,
    pub(super) public_key: String,
    pub(super) fingerprint: String,
}

/// Whether a SuperNode signs with its key: the SuperLink's own word first (its OneGate
/// FL_NODE_AUTH, or FL_JOIN's `auth`: a SuperLink found through OneGate that publishes none,
/// or a join value made before there was one, does not run authentication), then
/// FL_SUPERNODE_AUTH, else YES; never without TLS (Flower refuses a key over plain text).
/// The reason says which.
fn supernode_decision(superlink: Option<(bool, &'static str)>, context: Option<bool>, tls: bool) -> (bool, String) {
    if !tls {
        return (false, "off: the connection to the SuperLink is plain text (Flower needs TLS for SuperNode authentication)".into());
    }
    let (on, why) = match (superlink, context) {
        (Some((on, why)), ctx) => {
            if ctx.is_some_and(|c| c != on) {
                log::warn!("FL_SUPERNODE_AUTH={} is overridden: {why} says {}", yes(ctx == Some(true)), yes(on));
            }
            (on, why)
        }
        (None, Some(on)) => (on, "FL_SUPERNODE_AUTH"),
        (None, None) => (true, "the default (nothing says otherwise)"),
    };
    (on, format!("{} ({why})", if on { "on" } else { "off" }))
}

/// What the SuperLink says about authentication: its OneGate FL_NODE_AUTH when it was found
/// there (`found_on_onegate`), or the join value's.
fn superlink_word(published: Option<bool>, found_on_onegate: bool, join: Option<&crate::config::Join>) -> Option<(bool, &'static str)> {
    match (published, found_on_onegate, join) {
        (Some(on), _, _) => Some((on, "the SuperLink's FL_NODE_AUTH")),
        (None, true, _) => Some((false, "the SuperLink publishes no FL_NODE_AUTH: it runs without SuperNode authentication")),
        (None, false, Some(j)) => Some(match j.node_auth {
            Some(on) => (on, "FL_JOIN"),
            None => (false, "FL_JOIN, made by a SuperLink without SuperNode authentication"),
        }),
        (None, false, None) => None,
    }
}

fn yes(b: bool) -> &'static str {
    if b { "YES" } else { "NO" }
}

/// SuperNode: make or load the key, hand it to the container, publish the public half.
pub(super) fn node_key(boot: &mut Boot, node: &mut Node, published: Option<bool>, found_on_onegate: bool) -> std::result::Result<(), Failed> {
    let sn = node.cfg.role.supernode().cloned();
    let word = superlink_word(published, found_on_onegate, sn.as_ref().and_then(|s| s.join.as_ref()));
    let (on, reason) = supernode_decision(word, sn.as_ref().and_then(|s| s.node_auth), node.tls.is_some());
    let used = boot.step("node-key", |b| {
        if !on {
            return Ok((None, Note::Skip(format!("SuperNode authentication {reason}"))));
        }
        let dir = b.layout.state_dir.join("node-auth");
        std::fs::create_dir_all(&dir).with_ctx(|| format!("create {}", dir.display()))?;
        let comment = match node.cfg.onegate.vmid {
            Some(id) => format!("flower-supernode-vm{id}"),
            None => "flower-supernode".to_string(),
        };
        let (key, created) = NodeKey::load_or_create(&dir.join("node.key"), &comment)?;
        let run = b.layout.run_dir.join("node-auth");
        std::fs::create_dir_all(&run).with_ctx(|| format!("create {}", run.display()))?;
        let copy = run.join("node.key");
        crate::fsutil::write_atomic(&copy, key.private_openssh().expose().as_bytes(), 0o400, Some((container::CONTAINER_UID, container::CONTAINER_GID)))
            .with_ctx(|| format!("write {}", copy.display()))?;
        let public_key = key.public().to_openssh(&comment);
        let fingerprint = key.public().fingerprint();
        // The blob alone: plain on OneGate's wire (a line's spaces would make it base64).
        b.onegate.set_pairs([(nodeauth::PUBKEY_ATTR, key.public().to_openssh_blob())]);
        let note = format!(
            "{} key {fingerprint}, published as {}; SuperNode authentication {reason}",
            if created { "made a new" } else { "kept the" },
            nodeauth::PUBKEY_ATTR
        );
        let bind = BindMount { source: copy, destination: flower::NODE_KEY_PATH.into(), read_only: true };
        Ok((Some(NodeKeyUse { bind, public_key, fingerprint }), Note::Ok(note)))
    })?;
    boot.report.node_auth = Some(NodeAuth {
        enabled: used.is_some(),
        reason,
        public_key: used.as_ref().map(|u| u.public_key.clone()),
        fingerprint: used.as_ref().map(|u| u.fingerprint.clone()),
        refused: None,
        registrar: None,
    });
    node.node_key = used;
    Ok(())
}

/// The words of Flower 1.42's SuperNode when the SuperLink refuses its key
/// (`fleet_http_connection.py`: ActivateNode answered 412, code 2004, then `flwr_exit`).
pub(super) fn refused_by_superlink(line: &str) -> bool {
    line.contains("Failed to activate SuperNode") || line.contains("[code: 2004]")
}

/// A SuperNode's reason, for `/status`, FL_ERROR and the console, when the SuperLink refused
/// its key.
pub(super) fn refusal_reason(k: &NodeKeyUse) -> String {
    format!(
        "the SuperLink refused to activate this SuperNode (key {}; Flower's 412, code 2004): either the key is not registered there (the SuperLink registers its own OneFlow service's SuperNodes by itself; for a SuperNode elsewhere its operator adds this node's FL_NODE_PUBKEY to FL_SUPERNODE_KEYS or runs `flwr supernode register`), or this node's previous session, before a crash, has not expired yet (up to 2 x the 120 s heartbeat interval); retrying every {} s",
        k.fingerprint,
        REFUSED_RETRY.as_secs()
    )
}

/// A SuperNode whose Flower just exited because the SuperLink refused its key: the reason
/// (from the container's last lines, which hold Flower's refusal).
pub(super) fn refused_now(node: &Node) -> Option<String> {
    let k = node.node_key.as_ref()?;
    let lines: Vec<&str> = node.ring.lines().collect();
    lines[lines.len().saturating_sub(15)..].iter().any(|l| refused_by_superlink(l)).then(|| refusal_reason(k))
}

/// Say it everywhere an operator looks: `/status`'s `node_auth.refused`, FL_ERROR, the console
/// (once per streak).
pub(super) fn report_refusal(b: &mut Boot, why: &str) {
    let first = b.report.node_auth.as_ref().is_none_or(|s| s.refused.is_none());
    if first {
        log::warn!("{why}");
        b.onegate.set_pairs([("FL_ERROR", why)]);
    }
    if let Some(s) = b.report.node_auth.as_mut() {
        s.refused = Some(why.to_string());
    }
}

/// Flower runs again after a refusal: the key was registered.
pub(super) fn clear_refusal(b: &mut Boot) {
    let was = b.report.node_auth.as_mut().and_then(|s| s.refused.take());
    if was.is_some() {
        log::info!("node-auth: the SuperLink accepts this SuperNode's key now");
        if let Some(p) = b.onegate.publisher() {
            p.delete("FL_ERROR");
        }
    }
}

/// How long a refused SuperNode waits before Flower tries again (a Python start each time).
pub(super) const REFUSED_RETRY: Duration = Duration::from_secs(10);

/// The registrar child: the helper process and its last state.
pub(super) struct AdmitProc {
    pub(super) proc: Helper,
    state: Option<serde_json::Value>,
    /// Sources whose refusal was logged (each once).
    logged: std::collections::BTreeSet<String>,
}

impl AdmitProc {
    /// `/status`'s registrar part: the last cycle and the process.
    pub(super) fn section(&self) -> serde_json::Value {
        let mut v = self.state.clone().unwrap_or_else(|| serde_json::json!({}));
        if let Some(o) = v.as_object_mut() {
            o.insert("process".into(), serde_json::json!({"pid": self.proc.pid.map(|p| p.as_raw()), "restarts": self.proc.restarts}));
        }
        v
    }

    /// A line of the child: its state is kept (a refused key logged once), the rest logged.
    pub(super) fn on_line(&mut self, stream: Stream, line: &str) {
        match (stream, line.strip_prefix("state ")) {
            (Stream::Stdout, Some(json)) => {
                let st: Option<serde_json::Value> = serde_json::from_str(json).ok();
                if let Some(refused) = st.as_ref().and_then(|s| s["refused"].as_array()) {
                    for r in refused {
                        let src = r["source"].as_str().unwrap_or("?").to_string();
                        if self.logged.insert(src.clone()) {
                            log::warn!("node-auth: skipped {src}: {}", r["reason"].as_str().unwrap_or("?"));
                        }
                    }
                }
                self.state = st;
            }
            _ => {
                let msg = line.strip_prefix('[').and_then(|r| r.split_once("] ")).map_or(line, |(_, r)| r);
                log::info!("node-auth[{}]: {}", self.proc.pid.map(|p| p.as_raw()).unwrap_or(0), msg.strip_prefix("flower-init: ").unwrap_or(msg));
            }
        }
    }
}

/// SuperLink: start the registrar when SuperNode authentication is on.
pub(super) fn start(boot: &mut Boot, node: &mut Node) -> std::result::Result<(), Failed> {
    let Some(sl) = node.cfg.role.superlink().cloned() else { return Ok(()) };
    let on = sl.node_auth && node.tls.is_some();
    let reason = if on {
        "on: only SuperNodes whose key is registered may join".to_string()
    } else if node.tls.is_none() {
        "off: TLS is off (any host that reaches the Fleet port can join)".to_string()
    } else {
        "off: FL_SUPERNODE_AUTH=NO (any host that reaches the Fleet port can join)".to_string()
    };
    let proc = boot.step("node-auth", |b| {
        if !on {
            return Ok((None, Note::Warn(format!("SuperNode authentication {reason}"))));
        }
        let run = b.layout.run_dir.join("node-auth");
        std::fs::create_dir_all(&run).with_ctx(|| format!("create {}", run.display()))?;
        let state = b.layout.state_dir.join("node-auth");
        std::fs::create_dir_all(&state).with_ctx(|| format!("create {}", state.display()))?;
        let mut argv = vec![
            "node-auth".to_string(),
            "--control".into(),
            format!("127.0.0.1:{}", flower::SUPERLINK_PORT),
            "--record".into(),
            state.join("registered.json").display().to_string(),
            "--every".into(),
            CYCLE_EVERY.into(),
        ];
        if node.tls.is_some() {
            argv.extend(["--control-ca".into(), b.layout.run_dir.join("tls").join(crate::tls::CA_CERT).display().to_string()]);
        }
        if !sl.node_keys.is_empty() {
            let keys = run.join("keys");
            crate::fsutil::write_atomic(&keys, nodeauth::keys_file_text(&sl.node_keys).as_bytes(), 0o600, None).with_ctx(|| format!("write {}", keys.display()))?;
            argv.extend(["--keys".into(), keys.display().to_string()]);
        }
        let og = &node.cfg.onegate;
        let mut source = "FL_SUPERNODE_KEYS only: OneGate is not usable".to_string();
        if let (Some(ep), Some(vmid), Some(token)) = (&og.endpoint, og.vmid, &og.token) {
            // The token goes through a file only root reads, never argv or the environment.
            let tf: PathBuf = run.join("onegate-token");
            crate::fsutil::write_atomic(&tf, token.expose().as_bytes(), 0o600, None).with_ctx(|| format!("write {}", tf.display()))?;
            argv.extend(["--onegate".into(), ep.url.clone(), "--vmid".into(), vmid.to_string(), "--token-file".into(), tf.display().to_string()]);
            source = format!("the OneFlow service's {} VMs", nodeauth::SUPERNODE_ROLE);
        }
        let mut p = AdmitProc { proc: Helper::new("node-auth", argv, STOP_GRACE), state: None, logged: Default::default() };
        let pid = p.proc.spawn(&mut b.sv).map_err(|e| Error::msg("start the key registrar", e.to_string()))?;
        let extra = if sl.node_keys.is_empty() { String::new() } else { format!(" and {} FL_SUPERNODE_KEYS entr(ies)", sl.node_keys.len()) };
        Ok((Some(p), Note::Ok(format!("registrar pid {pid}: keys of {source}{extra}, every {CYCLE_EVERY}s"))))
    })?;
    boot.report.node_auth = Some(NodeAuth { enabled: on, reason, public_key: None, fingerprint: None, refused: None, registrar: None });
    node.admit = proc;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_superlink_decides_then_the_context() {
        let sl = |on| Some((on, "the SuperLink's FL_NODE_AUTH"));
        assert!(!supernode_decision(sl(false), Some(true), true).0, "the SuperLink decides");
        assert!(supernode_decision(sl(true), None, true).1.contains("FL_NODE_AUTH"));
        assert_eq!(supernode_decision(None, Some(false), true), (false, "off (FL_SUPERNODE_AUTH)".into()));
        assert!(supernode_decision(None, None, true).0, "on by default");
        let (on, why) = supernode_decision(sl(true), Some(true), false);
        assert!(!on && why.contains("plain text"), "{why}");
    }

    #[test]
    fn what_the_superlink_says_comes_from_onegate_or_the_join_value() {
        assert_eq!(superlink_word(Some(true), true, None).map(|w| w.0), Some(true));
        // Found on OneGate without the attribute: a SuperLink that does not run it (the older
        // public appliance, an older flower-init).
        assert_eq!(superlink_word(None, true, None).map(|w| w.0), Some(false));
        let ep = crate::config::values::host_port("10.0.0.5:8000").unwrap();
        let old = crate::config::Join::new(vec![ep], None).unwrap();
        assert_eq!(superlink_word(None, false, Some(&old)).map(|w| w.0), Some(false));
        let new = old.clone().with_node_auth(true);
        assert_eq!(superlink_word(None, false, Some(&new)), Some((true, "FL_JOIN")));
        assert_eq!(superlink_word(None, false, None), None, "a static address: the context decides");
    }

    #[test]
    fn flowers_refusal_of_an_unregistered_key_is_recognised() {
        // Flower 1.42's words (fleet_http_connection.py + supercore/error/catalog.py).
        assert!(!refused_by_superlink("Failed to initialize the connection to the SuperLink."));
        assert!(refused_by_superlink("[code: 2004] Failed to activate SuperNode."));
        assert!(!refused_by_superlink("Starting Flower SuperNode"));
    }
}
