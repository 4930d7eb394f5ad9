//! The two steps both boot scripts take before the appliance: read the context, validate it
//! against the image. A refused context is published (FL_ERROR) and the boot stays up.

use super::publish;
use super::steps::{Boot, Failed, Note};
use crate::config::{self, ImageFacts};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::vocab::LogLevel;
use crate::{cdrom, logger};

/// Find and read the context: the directory given, else the CD labelled CONTEXT.
pub fn context(boot: &mut Boot) -> std::result::Result<Context, Failed> {
    boot.step("context", |b| {
        let dir = match b.layout.context_dir.clone() {
            Some(d) => d,
            None => {
                let mut sleep = b.sleeper();
                cdrom::discover(&mut sleep)?
            }
        };
        let ctx = Context::load_from(&dir).map_err(|e| Error::msg(format!("read the context in {}", dir.display()), e.to_string()))?;
        b.layout.context_dir = Some(dir.clone());
        let note = format!("{} variables from {}{}", ctx.keys().count(), dir.display(), if ctx.token().is_some() { ", token.txt" } else { "" });
        Ok((ctx, Note::Ok(note)))
    })
}

/// Validate every variable at once. A refused context marks the boot failed, and — best effort
/// — still brings the network up so OneGate can get FL_ERROR. Ok(None): refused.
pub fn validate(boot: &mut Boot, ctx: &Context, facts: &ImageFacts) -> std::result::Result<Option<config::Config>, Failed> {
    match config::resolve(ctx, facts, boot.layout.role_flag) {
        Ok(r) => {
            for w in &r.warnings {
                log::warn!("{w}");
            }
            let cfg = r.config;
            let note = format!("{} {}: {} warnings", cfg.role(), cfg.common.framework, r.warnings.len());
            boot.step("validate", |_| Ok(((), Note::Ok(note))))?;
            logger::set_level(level_of(cfg.common.log_level));
            boot.listen_health(boot.layout.health_port.unwrap_or(cfg.common.health_port));
            if let Some(h) = boot.sv.health_mut() {
                h.allow_status(&cfg.common.status_allow);
                // Flower's container shares this network: its loopback is not ours.
                h.distrust_uids(&[crate::container::CONTAINER_UID]);
            }
            Ok(Some(cfg))
        }
        Err(rej) => {
            for w in &rej.warnings {
                log::warn!("{w}");
            }
            let text = rej.to_string();
            for line in text.lines() {
                log::error!("context: {line}");
            }
            let _ = boot.step("validate", |_| -> Result<((), Note)> { Err(Error::msg("validate the context", text.replace('\n', "; "))) });
            publish::refusal(boot, &rej);
            Ok(None)
        }
    }
}

/// FL_LOG_LEVEL for flower-init's own log.
fn level_of(l: LogLevel) -> log::LevelFilter {
    match l {
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warning => log::LevelFilter::Warn,
        LogLevel::Error => log::LevelFilter::Error,
    }
}
