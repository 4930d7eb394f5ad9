//! What the Flower container is made of: Flower's command line for the role, and the OCI
//! spec around it (image root, state and data directories, certificates, GPUs, limits). Pure
//! wiring of the validated configuration into `crate::container`'s inputs.

use super::Node;
use super::steps::Boot;
use crate::config;
use crate::container::{self, Limits, Spec};
use crate::error::{Error, Result};
use crate::flower;
use crate::gpu::Gpus;
use crate::vocab::{Framework, Role, STATE_DIR};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The Flower command line of this role.
pub(super) fn flower_args(node: &Node) -> Result<Vec<String>> {
    let c = &node.cfg;
    Ok(match &c.role {
        config::RoleConfig::SuperLink(sl) => flower::superlink_args(&flower::SuperLinkArgs {
            // Flower serves loopback only; the gateway exposes the Fleet API on the NICs.
            host: "127.0.0.1".into(),
            port: flower::SUPERLINK_PORT,
            tls: node.tls.as_ref().map(|_| flower::ServerTls::in_certs_dir()),
            database: match &sl.database {
                config::Database::InMemory => ":flwr-in-memory:".into(),
                config::Database::File(p) => state_path_in_container(p)?,
            },
            isolation: c.common.isolation,
            // `config` turned it off without TLS; Flower refuses it over plain text anyway.
            supernode_auth: sl.node_auth && node.tls.is_some(),
        }),
        config::RoleConfig::SuperNode(sn) => flower::supernode_args(&flower::SuperNodeArgs {
            superlink: node.superlink.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            root_certificates: node.tls.as_ref().map(|_| flower::supernode_ca_path()),
            auth_private_key: node.node_key.as_ref().map(|_| flower::NODE_KEY_PATH.to_string()),
            node_config: node.node_config.clone(),
            max_retries: sn.max_retries,
            max_wait_time: sn.max_wait_time,
            runtime_port: flower::SUPERNODE_RUNTIME_PORT,
            isolation: c.common.isolation,
        }),
    })
}

/// The image's launcher of warm app starts (image/appstart/start.sh): it starts the app fork
/// server beside Flower and puts the `flwr-serverapp`/`flwr-clientapp` shims first on PATH, so
/// an app process makes its first Runtime call within Flower's task-start window even on a
/// slow CPU (docs/app.md, "How apps start").
pub(super) const WARM_START_LAUNCHER: &str = "/opt/flower/appstart/flower-with-zygote";

/// Flower's command line behind the warm-start launcher when the image under `rootfs` has one;
/// an image without it (older, or custom) runs Flower directly, as before.
pub(super) fn with_warm_app_start(rootfs: &Path, args: Vec<String>) -> Vec<String> {
    let launcher = rootfs.join(WARM_START_LAUNCHER.trim_start_matches('/'));
    if !launcher.is_file() {
        log::info!("container: the image has no {WARM_START_LAUNCHER}: apps start cold");
        return args;
    }
    let mut v = Vec::with_capacity(args.len() + 1);
    v.push(WARM_START_LAUNCHER.to_string());
    v.extend(args);
    v
}

/// A path on the state disk (`/var/lib/flower/...`, validated so by `config`) as the
/// container sees it: the container's `/state` is `/var/lib/flower/flower`, so Flower's files
/// stay apart from flower-init's (`tls/` holds the CA key, which never enters the container).
pub(super) fn state_path_in_container(p: &Path) -> Result<String> {
    Ok(Path::new(container::CONTAINER_STATE_DIR).join(state_relative(p, "into the container")?).display().to_string())
}

/// The same path where this machine has it: under the host side of the container's `/state`.
pub(super) fn host_state_path(boot: &Boot, p: &Path) -> Result<PathBuf> {
    Ok(host_state_dir(boot).join(state_relative(p, "onto the container's state directory")?))
}

/// `p` relative to the state disk's mountpoint.
fn state_relative<'a>(p: &'a Path, whither: &str) -> Result<&'a Path> {
    p.strip_prefix(STATE_DIR).map_err(|_| Error::msg(format!("map {} {whither}", p.display()), format!("not under {}", STATE_DIR)))
}

/// The host side of the container's `/state`.
pub(super) fn host_state_dir(boot: &Boot) -> PathBuf {
    boot.layout.state_dir.join("flower")
}

/// The container spec for `args` (the Flower service, or a one-shot CLI run).
pub(super) fn spec(boot: &Boot, node: &Node, id: &str, args: Vec<String>, rootfs: &Path) -> Spec {
    let mut s = match node.role() {
        Role::SuperNode => supernode_spec(id, rootfs, args, node.manifest.facts.framework, boot.gpus.as_ref()),
        Role::SuperLink => Spec::new(id, rootfs, args),
    };
    s.log_level = node.cfg.common.log_level;
    s.state_dir = Some(host_state_dir(boot));
    if node.role() == Role::SuperNode {
        s.data_dir = boot.layout.data_dir.clone();
    }
    if let Some((_, binds)) = &node.tls {
        s.certs = binds.clone();
    }
    if let Some(k) = &node.node_key {
        s.certs.push(k.bind.clone());
    }
    for (name, field) in [("resolv.conf", &mut s.resolv_conf), ("hosts", &mut s.hosts)] {
        let p = boot.layout.run_dir.join(name);
        if p.exists() {
            *field = Some(p);
        }
    }
    s.limits = machine_limits();
    // The SuperLink's app fork server preloads only once Flower serves here, on a one-CPU
    // machine (image/appstart/zygote.py; docs/app.md, "How apps start"): its first app comes
    // after the SuperNodes, which OneFlow deploys once this VM is READY. A SuperNode's first
    // app comes right after its READY: its preload keeps running beside Flower's start.
    if node.role() == Role::SuperLink {
        s.env.push(("FLOWER_INIT_PRELOAD_AFTER".into(), health_addr(node.role()).to_string()));
    }
    s
}

/// Where Flower answers `/health` inside the VM: the SuperLink's HTTP API (TLS when on), the
/// SuperNode's local Runtime API (plain HTTP on loopback). flower-init's readiness probe.
pub(super) fn health_addr(role: Role) -> SocketAddr {
    match role {
        Role::SuperLink => SocketAddr::from(([127, 0, 0, 1], flower::SUPERLINK_PORT)),
        Role::SuperNode => SocketAddr::from(([127, 0, 0, 1], flower::SUPERNODE_RUNTIME_PORT)),
    }
}

/// The part of the SuperNode's container spec that only the image and the GPU step decide:
/// the framework's name for the app, and the GPUs' device nodes, library mounts and
/// environment ([`Gpus::add_to`]). The boot's spec starts from it; `flower-init gpu bundle`
/// writes it as it is, with the GPUs of the host it runs on (docs/gpu.md, "Device check").
pub fn supernode_spec(id: &str, rootfs: &Path, args: Vec<String>, framework: Framework, gpus: Option<&Gpus>) -> Spec {
    let mut s = Spec::new(id, rootfs, args);
    s.env.push(("FL_ML_FRAMEWORK".into(), framework.to_string()));
    if let Some(g) = gpus {
        g.add_to(&mut s);
    }
    s
}

/// The container's limits on this machine: memory the machine's less a reserve for the kernel
/// and flower-init (container::memory_limit; a machine below the floor is warned about), only
/// the limits whose cgroup controller exists, open files capped at this process's hard limit.
pub fn machine_limits() -> Limits {
    let mem_total = container::mem_total_at(Path::new("/"));
    if let Some(why) = mem_total.and_then(too_little_memory) {
        log::warn!("{why}");
    }
    let mut limits = Limits { memory: mem_total.map(container::memory_limit), ..Limits::default() };
    for c in limits.restrict_to(container::Controllers::detect()) {
        log::info!("container: no {c} cgroup controller here: that limit is not set");
    }
    if let Some(hard) = container::nofile_hard() {
        limits.cap_nofile(hard);
    }
    if container::nice_raisable() {
        limits.nice = Some(container::NICE_BACK_TO_ZERO);
    } else {
        log::info!("container: RLIMIT_NICE cannot be raised here (no CAP_SYS_RESOURCE): the app fork server preloads un-niced");
    }
    limits
}

/// MemTotal of a 512 MiB VM less what the kernel keeps (arm64's 64 MiB CMA among it): the
/// smallest VM in which a SuperNode of the sklearn image was seen to reach READY (docs/edge.md).
const MEMORY_FLOOR: u64 = 448 << 20;

/// A warning when the VM has less memory than Flower was ever seen to start in: below it the
/// page cache of the image is evicted as fast as Python reads it and Flower may never answer
/// (a 384 MiB VM did not within 10 minutes), which the `flower` step alone would report only
/// as "no 200 within 600s".
fn too_little_memory(mem_total: u64) -> Option<String> {
    (mem_total < MEMORY_FLOOR).then(|| {
        format!(
            "this VM has {} MiB of memory (MemTotal) and Flower's container gets {} MiB of it: below a 512 MiB VM Flower may start very slowly or never (docs/edge.md, the floor); give the VM more memory",
            mem_total >> 20,
            container::memory_limit(mem_total) >> 20
        )
    })
}

/// The image tree for runc's root: `/` bound read-only under /run in a VM, the unpacked
/// rootfs bound the same way on a host.
pub(super) fn container_rootfs(b: &Boot) -> Result<PathBuf> {
    let target = b.layout.run_dir.join("rootfs");
    if !crate::mount::is_mountpoint(&target) {
        container::bind_rootfs(&b.layout.image_root, &target)?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_little_memory_is_said_with_the_numbers() {
        // A 512 MiB arm64 VM: MemTotal 467 MiB: no warning; a 384 MiB one: 336 MiB.
        assert_eq!(too_little_memory(467 << 20), None);
        let w = too_little_memory(336 << 20).unwrap();
        assert!(w.contains("336 MiB of memory") && w.contains("container gets 208 MiB") && w.contains("512 MiB"), "{w}");
    }

    #[test]
    fn flower_runs_behind_the_warm_start_launcher_only_when_the_image_has_it() {
        let dir = std::env::temp_dir().join(format!("fi-warm-start-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let args = vec!["/opt/flower/venv/bin/flower-supernode".to_string(), "--insecure".to_string()];
        assert_eq!(with_warm_app_start(&dir, args.clone()), args, "no launcher: Flower directly");
        let launcher = dir.join("opt/flower/appstart/flower-with-zygote");
        std::fs::create_dir_all(launcher.parent().unwrap()).unwrap();
        std::fs::write(&launcher, "#!/bin/sh\n").unwrap();
        let wrapped = with_warm_app_start(&dir, args.clone());
        assert_eq!(wrapped[0], WARM_START_LAUNCHER);
        assert_eq!(&wrapped[1..], &args[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
