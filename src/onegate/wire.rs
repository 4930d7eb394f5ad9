//! What goes on the wire, built by pure functions so tests compare bytes.
//!
//! `PUT /vm` is sent exactly as one-apps' `onegate.rb` sends it (`vm update --data`):
//! `Content-Type: application/x-www-form-urlencoded` and the body
//! `URI.encode_www_form({data: "K=V\nK2=V2", type: 1})` = `data=K%3DV%0AK2%3DV2&type=1`
//! (`context-linux/src/usr/bin/onegate.rb`, `put` and the `"update"` command).
//!
//! The server then runs `escape_attr` (`onegate-server.rb` l.512-560) before parsing the
//! result as an OpenNebula template: it wraps each value in double quotes, but a `,`, `[`,
//! `]`, `\` or newline inside a value closes the quote early (a template parse error, HTTP
//! 500, or a truncated value), and an empty value at the very end of the data is left with an
//! unterminated quote. So values are published only when *plain* ([`is_plain`]); anything else
//! is base64 ([`encode_value`]), except `*_ERROR` texts, which are made readable and safe
//! ([`error_text`]) because an operator reads them in Sunstone.

use base64::Engine;

/// `Content-Type` of a `PUT /vm` (one-apps 59adc24: Ruby 4 stopped defaulting it, and the
/// server needs it to parse `data=`).
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// HTTP method of a OneGate request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

/// One request, without the per-VM headers (the client adds them when sending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    /// Absolute path and query, e.g. `/service?extended=true`; the endpoint's own path is
    /// ignored, as `onegate.rb` builds `Net::HTTP::Get.new("/service")`.
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: String,
}

impl HttpRequest {
    /// A GET of `path`.
    pub fn get(path: impl Into<String>) -> Self {
        HttpRequest { method: Method::Get, path: path.into(), content_type: None, body: String::new() }
    }

    /// `GET /vm`: this VM (`build_vm_hash`).
    pub fn get_vm() -> Self {
        Self::get("/vm")
    }

    /// `GET /vms/:id`: a VM of the same service.
    pub fn get_vm_by_id(id: u64) -> Self {
        Self::get(format!("/vms/{id}"))
    }

    /// `GET /service`, or `GET /service?extended=true` (one `vm.info` per node on the server).
    pub fn get_service(extended: bool) -> Self {
        Self::get(if extended { "/service?extended=true" } else { "/service" })
    }

    /// `PUT /vm` updating (merging) attributes into this VM's USER_TEMPLATE in one request.
    pub fn put_vm_update(pairs: &[(String, String)]) -> Self {
        HttpRequest {
            method: Method::Put,
            path: "/vm".into(),
            content_type: Some(FORM_CONTENT_TYPE),
            body: form_body(&update_data(pairs), 1),
        }
    }

    /// `PUT /vm` deleting one USER_TEMPLATE attribute (`onegate vm update --erase KEY`, type=2).
    pub fn put_vm_delete(key: &str) -> Self {
        HttpRequest {
            method: Method::Put,
            path: "/vm".into(),
            content_type: Some(FORM_CONTENT_TYPE),
            body: form_body(key, 2),
        }
    }

    /// The route without its query, for error messages and request counts.
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }
}

/// The headers every request carries: the VM's identity, then the content type of a body.
/// `token` is the trimmed token.txt (one-context's `TOKENTXT`).
pub fn headers(req: &HttpRequest, vmid: u64, token: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("X-ONEGATE-TOKEN", token.to_string()),
        ("X-ONEGATE-VMID", vmid.to_string()),
        ("User-Agent", format!("flower-init/{} (OneGate client)", env!("CARGO_PKG_VERSION"))),
        ("Accept", "application/json".to_string()),
    ];
    if let Some(ct) = req.content_type {
        h.push(("Content-Type", ct.to_string()));
    }
    h
}

/// `K=V\nK2=V2`: the `data` of an update, one attribute per line.
pub fn update_data(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
}

/// `data=<form-encoded data>&type=<1|2>`, as `URI.encode_www_form({data:, type:})` writes it.
pub fn form_body(data: &str, kind: u8) -> String {
    format!("data={}&type={kind}", form_component(data))
}

/// Ruby's `URI.encode_www_form_component`: `*-._`, letters and digits stay, a space becomes
/// `+`, every other byte `%XX` (upper-case hex). So a base64 `+` travels as `%2B`.
pub fn form_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A value that survives `escape_attr` and the template parser unchanged:
/// `[A-Za-z0-9._:/@+=-]+`, and never the text OneFlow's ready detection looks for.
pub fn is_plain(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/@+=-".contains(&b)) && !mentions_ready(v)
}

/// OneFlow's EventManager strips `"` and spaces from an update and tests `match('READY=YES')`
/// (`src/flow/lib/EventManager.rb`); a value that contains it would release the ready gate.
fn mentions_ready(v: &str) -> bool {
    let squeezed: String = v.chars().filter(|c| *c != '"' && *c != ' ').collect();
    squeezed.contains("READY=YES")
}

/// The published form of a value: itself when plain, else its base64 (standard alphabet,
/// padded: `=` only ever at the end, so base64 never spells `READY=YES`).
pub fn encode_value(v: &str) -> String {
    if is_plain(v) { v.to_string() } else { base64::engine::general_purpose::STANDARD.encode(v.as_bytes()) }
}

/// Longest published `*_ERROR` text, in characters (the whole text is on the health port).
pub const MAX_TEXT: usize = 400;

/// Free text (one problem) made safe for `escape_attr` yet readable in Sunstone: `,` → `;`,
/// `[`/`]` → `(`/`)`, `\` → `/`, `"` → `'`, control characters and line breaks → spaces
/// (collapsed), non-ASCII → `?`; trimmed. `=` stays (`escape_attr` keeps every `=` after the
/// first of a line, so `>=` arrives as `>=`) except where the text would read `READY=YES`
/// once OneFlow strips quotes and spaces: that `=` becomes `:`. Spaces are safe:
/// `escape_attr` quotes the value. Not cut: [`error_text`] bounds the whole.
pub fn readable_text(v: &str) -> String {
    let mapped: String = v
        .chars()
        .map(|c| match c {
            ',' => ';',
            '[' => '(',
            ']' => ')',
            '\\' => '/',
            '"' => '\'',
            c if c.is_control() || c.is_whitespace() => ' ',
            c if !c.is_ascii() => '?',
            c => c,
        })
        .collect();
    let collapsed = mapped.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    if !mentions_ready(&collapsed) {
        return collapsed;
    }
    // ASCII only from here: byte indices are characters.
    let squeezed = |s: &str| s.chars().filter(|c| *c != ' ').collect::<String>();
    let mut out = String::with_capacity(collapsed.len());
    for (i, c) in collapsed.char_indices() {
        let spells_ready =
            c == '=' && squeezed(&collapsed[..i]).ends_with("READY") && squeezed(&collapsed[i + 1..]).starts_with("YES");
        out.push(if spells_ready { ':' } else { c });
    }
    out
}

/// Where the whole text of a cut `*_ERROR` is read: the health port's `/health`.
pub const WHOLE_TEXT_AT: &str = "/health";

/// An error text for `FL_ERROR`/`FL_RUN_ERROR`: one problem per line of `v`, each made
/// [`readable_text`], bounded by [`MAX_TEXT`] yet whole: `N problems: first | second | K
/// more: see /health`. Problems are never cut mid-word; only one that alone exceeds the bound
/// is cut, at a space, marked `…`. A single problem that fits goes as is.
pub fn error_text(v: &str) -> String {
    let problems: Vec<String> = v.lines().map(readable_text).filter(|p| !p.is_empty()).collect();
    let n = problems.len();
    if n == 1 && problems[0].len() <= MAX_TEXT {
        return problems[0].clone();
    }
    if n == 0 {
        return String::new();
    }
    let head = if n > 1 { format!("{n} problems: ") } else { String::new() };
    let more = |k: usize| if k > 0 { format!(" | {k} more: see {WHOLE_TEXT_AT}") } else { String::new() };
    let mut out = head.clone();
    let mut taken = 0;
    for p in &problems {
        let sep = if taken > 0 { " | " } else { "" };
        if out.len() + sep.len() + p.len() + more(n - taken - 1).len() > MAX_TEXT {
            break;
        }
        out.push_str(sep);
        out.push_str(p);
        taken += 1;
    }
    if taken == 0 {
        // The first problem alone is too long: its first words, then where to read it all.
        let tail = if n > 1 { more(n - 1) } else { format!(" (whole text: {WHOLE_TEXT_AT})") };
        let room = MAX_TEXT.saturating_sub(head.len() + tail.len() + " …".len());
        out.push_str(cut_at_word(&problems[0], room));
        out.push_str(" …");
        out.push_str(&tail);
        return out;
    }
    out.push_str(&more(n - taken));
    out
}

/// The longest prefix of ASCII `s` of at most `room` bytes that ends at a word's end (a word
/// longer than `room` is cut where the room ends).
fn cut_at_word(s: &str, room: usize) -> &str {
    if s.len() <= room {
        return s;
    }
    match s[..=room].rfind(' ') {
        Some(i) if i > 0 => s[..i].trim_end(),
        _ => &s[..room],
    }
}

/// An attribute name OpenNebula keeps as given: `[A-Z_][A-Z0-9_]*` (the template parser takes
/// `[[:alnum:]_]+` and upper-cases; `Attribute()` prefixes `ONE_` to a leading digit).
pub fn is_key(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_uppercase() || c == b'_')
        && b.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

/// `accuracy@val` → `ACCURACY_VAL`: any name made into an attribute key.
pub fn to_key(name: &str) -> String {
    let mut k: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if k.is_empty() || k.as_bytes()[0].is_ascii_digit() {
        k.insert(0, '_');
    }
    k
}
