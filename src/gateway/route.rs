//! Which requests reach Flower: the allow-list of each port, decided on the raw request
//! target before a byte is forwarded.
//!
//! Flower's routes are plain ASCII paths (`/v1/fleet/pull-messages`, `/health`). The gateway
//! only accepts targets already in that canonical form: origin-form, no query or fragment, no
//! percent-encoding, no empty, `.` or `..` segments, no backslash or `;`. Any other spelling of
//! a path (`/v1/fleet/../control/start-run`, `//v1/control`, `/v1/fleet/%2e%2e/control`,
//! `http://host/v1/control/…`) is refused, so Flower's own normalisation (Starlette decodes
//! percent-escapes) can never turn an allowed-looking target into a Control route.

use std::fmt;

/// The two kinds of listening port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// FL_ENDPOINT: SuperNodes (Fleet API) and health probes.
    Fleet,
    /// FL_CONTROL_ALLOW: operators' `flwr` CLI (Control API) and health probes.
    Control,
}

impl Port {
    /// Its name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Port::Fleet => "fleet",
            Port::Control => "control",
        }
    }
}

/// Which Flower API an allowed request is for (the per-API request counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Fleet,
    Health,
    Control,
}

impl Api {
    /// Its name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Api::Fleet => "fleet",
            Api::Health => "health",
            Api::Control => "control",
        }
    }
}

/// Why a request was not forwarded (answered 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A canonical path this port does not serve (e.g. `/v1/control/…` on the Fleet port).
    Path,
    /// Not a canonical origin-form path (dot segments, `//`, `%`, query, absolute-form…).
    NonCanonical,
    /// An allowed path with a method Flower does not serve there.
    Method,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denied::Path => "path not served on this port",
            Denied::NonCanonical => "request target is not a canonical path",
            Denied::Method => "method not allowed on this path",
        })
    }
}

/// The Fleet API prefix; every route below it is forwarded from the Fleet port.
pub const FLEET_PREFIX: &str = "/v1/fleet/";
/// The Control API prefix; forwarded only from the Control port.
pub const CONTROL_PREFIX: &str = "/v1/control/";
pub const HEALTH_PATH: &str = "/health";

/// Decide a request: `Ok(api)` to forward, `Err(why)` for a 403.
pub fn route(port: Port, method: &str, target: &str) -> Result<Api, Denied> {
    if !is_canonical_path(target) {
        return Err(Denied::NonCanonical);
    }
    let api = if target == HEALTH_PATH {
        Api::Health
    } else if target.starts_with(FLEET_PREFIX) && port == Port::Fleet {
        Api::Fleet
    } else if target.starts_with(CONTROL_PREFIX) && port == Port::Control {
        Api::Control
    } else {
        return Err(Denied::Path);
    };
    // Flower 1.42 serves GET/HEAD /health and POST everywhere else.
    let method_ok = match api {
        Api::Health => method == "GET" || method == "HEAD",
        Api::Fleet | Api::Control => method == "POST",
    };
    if method_ok { Ok(api) } else { Err(Denied::Method) }
}

/// `/seg/seg/…` where every segment is non-empty, not `.` or `..`, and made only of
/// RFC 3986 unreserved characters (letters, digits, `-`, `.`, `_`, `~`).
pub fn is_canonical_path(target: &str) -> bool {
    let Some(rest) = target.strip_prefix('/') else { return false };
    !rest.is_empty()
        && rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b'~')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_port_forwards_fleet_and_health_only() {
        assert_eq!(route(Port::Fleet, "POST", "/v1/fleet/pull-messages"), Ok(Api::Fleet));
        assert_eq!(route(Port::Fleet, "POST", "/v1/fleet/push-object"), Ok(Api::Fleet));
        assert_eq!(route(Port::Fleet, "GET", "/health"), Ok(Api::Health));
        assert_eq!(route(Port::Fleet, "HEAD", "/health"), Ok(Api::Health));
        for target in ["/v1/control/start-run", "/v1/control/list-runs", "/v1/runtime/acquire-task", "/docs", "/openapi.json", "/v1/fleet", "/v1/fleetx/a"] {
            assert_eq!(route(Port::Fleet, "POST", target), Err(Denied::Path), "{target}");
        }
    }

    #[test]
    fn control_port_forwards_control_and_health_only() {
        assert_eq!(route(Port::Control, "POST", "/v1/control/list-runs"), Ok(Api::Control));
        assert_eq!(route(Port::Control, "GET", "/health"), Ok(Api::Health));
        for target in ["/v1/fleet/pull-messages", "/v1/runtime/pull-task-input", "/docs"] {
            assert_eq!(route(Port::Control, "POST", target), Err(Denied::Path), "{target}");
        }
    }

    #[test]
    fn methods_are_the_ones_flower_serves() {
        assert_eq!(route(Port::Fleet, "GET", "/v1/fleet/pull-messages"), Err(Denied::Method));
        assert_eq!(route(Port::Fleet, "POST", "/health"), Err(Denied::Method));
        assert_eq!(route(Port::Fleet, "post", "/v1/fleet/pull-messages"), Err(Denied::Method));
        assert_eq!(route(Port::Control, "DELETE", "/v1/control/stop-run"), Err(Denied::Method));
        assert_eq!(route(Port::Fleet, "CONNECT", "/health"), Err(Denied::Method));
    }

    #[test]
    fn path_tricks_are_refused_before_any_prefix_match() {
        let tricks = [
            "/v1/fleet/../control/start-run",
            "/v1/fleet/./pull-messages",
            "/v1/fleet/..",
            "//v1/control/start-run",
            "//v1/fleet/pull-messages",
            "/v1//fleet/pull-messages",
            "/v1/fleet//pull-messages",
            "/v1/fleet/pull-messages/",
            "/v1/fleet/%2e%2e/control/start-run",
            "/v1/fleet/%2E%2E/control/start-run",
            "/v1/fleet/..%2fcontrol%2fstart-run",
            "/v1/fleet%2f..%2fcontrol/start-run",
            "/%761/control/start-run",
            "/v1/fleet/pull-messages?x=1",
            "/health?",
            "/health#x",
            "/v1/fleet/pull-messages;x",
            "/v1/fleet/..\\control",
            "http://127.0.0.1:8000/v1/control/start-run",
            "https://host/v1/fleet/pull-messages",
            "127.0.0.1:8000",
            "*",
            "/",
            "v1/fleet/pull-messages",
            "",
        ];
        for t in tricks {
            assert_eq!(route(Port::Fleet, "POST", t), Err(Denied::NonCanonical), "{t:?}");
            assert_eq!(route(Port::Control, "POST", t), Err(Denied::NonCanonical), "{t:?}");
        }
        // Case matters to Flower's router, so a differently cased prefix is simply not served.
        assert_eq!(route(Port::Fleet, "POST", "/V1/FLEET/pull-messages"), Err(Denied::Path));
        assert_eq!(route(Port::Fleet, "POST", "/v1/Control/start-run"), Err(Denied::Path));
    }

    proptest::proptest! {
        /// Whatever the target, the Fleet port never forwards anything that is not under
        /// /v1/fleet/ or exactly /health, and nothing with a dot segment or escape in it.
        #[test]
        fn fleet_port_never_forwards_other_apis(target in "[/a-z0-9.%?;#~_-]{0,40}") {
            if let Ok(api) = route(Port::Fleet, "POST", &target) {
                proptest::prop_assert_eq!(api, Api::Fleet);
                proptest::prop_assert!(target.starts_with(FLEET_PREFIX));
                proptest::prop_assert!(!target.contains("..") || target.split('/').all(|s| s != ".."));
                proptest::prop_assert!(!target.contains('%') && !target.contains('?') && !target.contains("//"));
            }
        }
    }
}
