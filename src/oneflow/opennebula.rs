//! What OpenNebula does with a OneFlow service template, ported from its source so the tests
//! can instantiate our templates the way a real front-end does (test-only code).
//!
//! Every function names the upstream file and lines it ports. Upstream: github.com/OpenNebula/one
//! - 6.x: tag `release-6.10.5`, commit 57575b4d08c243a30a076a0f50ae3bfcc779ea17
//! - 7.x: tag `release-7.4.0`, commit fe684f0c433aacf574504fc297c9fced09cdd955 (the parts used
//!   here are the same since `release-7.0.1`; 7.0.0's `Hash#deep_merge` did not `uniq` merged
//!   arrays, see [`deep_merge7`]). Role-level `custom_attrs` exist since 6.8 (F #5591); 6.0-6.6
//!   accept them in a template but never ask for them or substitute them.
//!
//! Sunstone builds its own request (6.x `instantiate.js`, 7.x FireEdge): not modelled.
//!
//! The chain for `oneflow-template instantiate ID` with every question answered by Enter:
//! 1. CLI (`src/cli/oneflow-template`, `instantiate`): [`parse_user_inputs_enter`] for the
//!    service's and each role's inputs, [`cli_merge_template`].
//! 2. oneflow-server (`src/flow/oneflow-server.rb`, `post '/service_template/:id/action'`):
//!    [`server_check`].
//! 3. The service document: 6.x [`instantiate6`] (deep_merge, `resolve_attributes`,
//!    `resolve_networks`); 7.x [`register7`] (6.x files are converted) and [`instantiate7`]
//!    (`handle_nested_values`, `generate_template_contents`).
//! 4. The role deploys its VMs: 6.x [`role_extra_template6`] (`vm_template_contents`, APPEND);
//!    7.x [`role_extra_template7`] (VM template deep-merged with `template_contents`, `to_raw`).
//! 5. oned: the extra template is parsed ([`Template::parse`]) and merged into the VM template
//!    ([`Template::merge`]); the VM's context is the first CONTEXT vector with its `$VAR`s
//!    resolved ([`vm_context`]).

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// OpenNebula major version whose code is modelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum One {
    V6,
    V7,
}

// ---------------------------------------------------------------------------------------------
// 1. The CLI
// ---------------------------------------------------------------------------------------------

/// Ruby's `String#split(sep)` without limit: trailing empty fields are dropped.
fn ruby_split(s: &str, sep: char) -> Vec<&str> {
    let mut v: Vec<&str> = s.split(sep).collect();
    while v.last() == Some(&"") {
        v.pop();
    }
    v
}

/// `OneTemplateHelper::INT_EXP` `/^-?\d+$/` (src/cli/one_helper/onetemplate_helper.rb L140).
fn int_exp(s: &str) -> bool {
    let d = s.strip_prefix('-').unwrap_or(s);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// `OneTemplateHelper::FLOAT_EXP` `/^-?\d+(\.\d+)?$/` (onetemplate_helper.rb L141).
fn float_exp(s: &str) -> bool {
    match s.split_once('.') {
        None => int_exp(s),
        Some((i, f)) => int_exp(i) && !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `OpenNebulaHelper.parse_user_inputs(inputs)` (src/cli/one_helper.rb L2227-2412 in 6.10.5,
/// L2161-2356 in 7.4.0: the same logic) when the operator presses Enter at every question.
/// `Err` is what the CLI does instead of sending: `exit(-1)` with its message, or a question
/// that Enter can never leave (the `begin ... end while` / `loop do` retries).
pub fn parse_user_inputs_enter(inputs: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut answers = Map::new();
    for (key, val) in inputs {
        let val = val.as_str().ok_or_else(|| format!("{key}: not a string"))?;
        let cfg: Vec<&str> = val.split('|').collect(); // split('|', -1) keeps empty fields
        if cfg.len() < 3 {
            return Err(format!("Malformed user input. It should have at least 3 parts separated by '|': {key}"));
        }
        let optional = cfg[0].trim() == "O";
        let kind = cfg[1].trim();
        let (params, initial) = if cfg.len() > 3 {
            if cfg.len() != 5 {
                return Err(format!("Malformed user input. It should have 5 parts separated by '|': {key}"));
            }
            (Some(cfg[3].trim()), Some(cfg[4].trim()))
        } else {
            (None, None)
        };
        let entered = ""; // STDIN.readline.chop of an Enter
        let answer: Option<String> = match kind {
            // `answer = initial if answer.empty?`; text64 base64-encodes it.
            "text" | "text64" | "password" => initial.map(str::to_string),
            "boolean" => {
                let a = initial.unwrap_or(entered);
                if a != "YES" && a != "NO" {
                    return Err(format!("{key}: Invalid boolean '{a}' / Boolean has to be YES or NO (exit -1)"));
                }
                Some(a.to_string())
            }
            "number" | "number-float" => {
                let a = initial.unwrap_or(entered);
                let noanswer = a.is_empty() && optional;
                let ok = if kind == "number" { int_exp(a) } else { float_exp(a) };
                if noanswer {
                    None // `next`: no value for this key
                } else if ok {
                    Some(a.to_string())
                } else {
                    return Err(format!("{key}: Enter re-asks forever ({a:?} is not a {kind})"));
                }
            }
            "range" | "range-float" => {
                let (min, max) = params.unwrap_or("").split_once("..").ok_or(format!("{key}: malformed range"))?;
                let a = initial.unwrap_or(entered);
                let noanswer = a.is_empty() && optional;
                let ok = if kind == "range" { int_exp(a) } else { float_exp(a) };
                let (min, max, x) = (min.parse::<f64>(), max.parse::<f64>(), a.parse::<f64>());
                if noanswer {
                    None
                } else if ok && matches!((min, max, x), (Ok(lo), Ok(hi), Ok(x)) if x >= lo && x <= hi) {
                    Some(a.to_string())
                } else {
                    return Err(format!("{key}: Enter re-asks forever ({a:?} is not in the range)"));
                }
            }
            "list" => {
                let options = ruby_split(params.unwrap_or(""), ',');
                // `answer = initial` on an empty line
                let a = initial.unwrap_or(entered);
                let noanswer = a.is_empty() && optional;
                if noanswer {
                    None
                } else if options.contains(&a) {
                    Some(a.to_string())
                } else {
                    return Err(format!("{key}: Enter re-asks forever ({a:?} is not one of {options:?})"));
                }
            }
            "fixed" => initial.map(str::to_string),
            _ => return Err(format!("Wrong type for user input: {key}")),
        };
        match answer {
            Some(a) => {
                answers.insert(key.clone(), Value::String(a));
            }
            None if matches!(kind, "text" | "text64" | "password" | "fixed") => {
                answers.insert(key.clone(), Value::Null); // `answers[key] = nil`
            }
            None => {} // `next if noanswer`
        }
    }
    Ok(answers)
}

/// The body the CLI posts: `oneflow-template instantiate ID` without a file (src/cli/oneflow-template
/// L288-310 in 6.10.5, L272-294 in 7.4.0; helpers in src/cli/one_helper/oneflowtemplate_helper.rb:
/// `custom_attrs`/`custom_role_attrs` L188-226 (6.x), `user_inputs`/`role_user_inputs` (7.x)).
/// `body` is the stored template as `GET /service_template/ID` returns it. The `networks`
/// answers (`parse_networks`: mandatory, no Enter default) are `vnet_ids`.
pub fn cli_merge_template(body: &Value, one: One, vnet_ids: &[(&str, &str)]) -> Result<Value, String> {
    let (inputs, values) = match one {
        One::V6 => ("custom_attrs", "custom_attrs_values"),
        One::V7 => ("user_inputs", "user_inputs_values"),
    };
    let mut mt = Map::new();
    if let Some(i) = body.get(inputs).and_then(Value::as_object).filter(|i| !i.is_empty()) {
        mt.insert(values.into(), Value::Object(parse_user_inputs_enter(i)?));
    }
    let mut roles = body["roles"].as_array().cloned().unwrap_or_default();
    let mut with_inputs = false;
    for role in &mut roles {
        let Some(i) = role.get(inputs).and_then(Value::as_object).cloned() else { continue };
        // `role.merge!(custom_attrs(role['custom_attrs']))`
        role[values] = Value::Object(parse_user_inputs_enter(&i)?);
        with_inputs = true;
    }
    if with_inputs {
        mt.insert("roles".into(), Value::Array(roles));
    }
    if let Some(nets) = body.get("networks").and_then(Value::as_object) {
        let mut nv = Vec::new();
        for name in nets.keys() {
            let id = vnet_ids.iter().find(|(n, _)| n == name).ok_or(format!("network {name}: no ID typed"))?.1;
            nv.push(json!({ name.clone(): { "id": id } }));
        }
        mt.insert("networks_values".into(), Value::Array(nv));
    }
    Ok(Value::Object(mt))
}

// ---------------------------------------------------------------------------------------------
// 2. oneflow-server's checks
// ---------------------------------------------------------------------------------------------

/// `check_custom_attrs` (6.x, oneflow-server.rb L211-225) / `check_user_inptus` (7.x L231-245).
fn check_values(inputs: Option<&Value>, values: Option<&Value>, one: One) -> Result<(), String> {
    let Some(inputs) = inputs.filter(|i| !i.is_null() && i.as_object().is_none_or(|o| !o.is_empty())) else {
        return Ok(());
    };
    let (none, verify) = match one {
        One::V6 => (
            "The Service template specifies custom attributes but no values have been found",
            "Verify that every custom attribute have its corresponding value defined",
        ),
        One::V7 => (
            "The Service template specifies User Inputs but no values have been found",
            "Verify that every User Input have its corresponding value defined",
        ),
    };
    let values = values.filter(|v| !v.is_null()).ok_or(none)?;
    let (Some(i), Some(v)) = (inputs.as_object(), values.as_object()) else {
        return Err("Wrong custom_attrs or custom_attrs_values format".into());
    };
    if i.keys().all(|k| v.contains_key(k)) { Ok(()) } else { Err(verify.into()) }
}

/// The `instantiate` action's validation before anything is created: 6.x oneflow-server.rb
/// L668-705, 7.x L733-792 (which renames 6.x `custom_attrs_values` first). `Err` is the 400
/// the CLI prints.
pub fn server_check(body: &Value, mt: &mut Value, one: One) -> Result<(), String> {
    let (inputs, values) = match one {
        One::V6 => ("custom_attrs", "custom_attrs_values"),
        One::V7 => ("user_inputs", "user_inputs_values"),
    };
    if one == One::V7 {
        if let Some(v) = mt.as_object_mut().and_then(|m| m.remove("custom_attrs_values")) {
            mt["user_inputs_values"] = v;
        }
    }
    check_values(body.get(inputs), mt.get(values), one)?;
    for role in body["roles"].as_array().into_iter().flatten() {
        if one == One::V7 && !role.get("template_contents").is_none_or(Value::is_object) {
            return Err(format!(
                "Error validating template_contents object for the role {}. The object must be a valid hash.",
                role["name"].as_str().unwrap_or("")
            ));
        }
        if role.get(inputs).is_none_or(Value::is_null) {
            continue;
        }
        let Some(mroles) = mt.get_mut("roles") else {
            return Err(format!("The Service template specifies inputs for the role {} but no values have been found", role["name"]));
        };
        let Some(mroles) = mroles.as_array_mut().filter(|a| !a.is_empty()) else {
            return Err("The role user inputs are empty or do not have a valid format".into());
        };
        let Some(mrole) = mroles.iter_mut().find(|r| r["name"] == role["name"]) else {
            match one {
                // 6.x: `merge_role['custom_attrs_values']` on nil raises NoMethodError, rescued: 400
                One::V6 => return Err("undefined method `[]' for nil:NilClass".into()),
                One::V7 => continue, // `next unless merge_role`
            }
        };
        if one == One::V7 {
            if let Some(v) = mrole.as_object_mut().and_then(|m| m.remove("custom_attrs_values")) {
                mrole["user_inputs_values"] = v;
            }
        }
        check_values(role.get(inputs), mrole.get(values), one)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. The service document
// ---------------------------------------------------------------------------------------------

/// 6.x `Hash#deep_merge` (src/oca/ruby/opennebula/flow/validator.rb L33-53 in 6.10.5): arrays
/// merge element-wise by index when both elements are hashes.
pub fn deep_merge6(a: &Value, b: &Value) -> Value {
    let (Some(ao), Some(bo)) = (a.as_object(), b.as_object()) else { return b.clone() };
    let mut t = ao.clone();
    for (k, hv) in bo {
        let cur = ao.get(k);
        let merged = match (hv, cur) {
            (Value::Object(_), Some(c @ Value::Object(_))) => deep_merge6(c, hv),
            (Value::Array(ha), Some(Value::Array(ca))) => {
                let mut target = t.get(k).cloned().unwrap_or(Value::Null);
                for (i, e) in ha.iter().enumerate() {
                    match (ca.get(i), e) {
                        (Some(ce @ Value::Object(_)), Value::Object(_)) => {
                            if let Some(arr) = target.as_array_mut() {
                                if i < arr.len() {
                                    arr[i] = deep_merge6(ce, e);
                                }
                            }
                        }
                        _ => target = hv.clone(),
                    }
                }
                target
            }
            _ => hv.clone(),
        };
        t.insert(k.clone(), merged);
    }
    Value::Object(t)
}

/// 7.x `Hash#deep_merge(other, merge_array = true)` (src/oca/ruby/opennebula/flow/validator.rb
/// L37-55 in 7.4.0). `uniq7: false` is 7.0.0's version (no `uniq` of merged hash arrays, and
/// nested hashes merged with the default `merge_array`).
pub fn deep_merge7(a: &Value, b: &Value, merge_array: bool, uniq7: bool) -> Value {
    let Some(ao) = a.as_object() else { return b.clone() };
    let Some(bo) = b.as_object() else { return a.clone() };
    let mut t = ao.clone();
    for (k, v) in bo {
        let cur = t.get(k).cloned();
        let merged = match (v, cur) {
            (Value::Object(_), Some(c @ Value::Object(_))) => deep_merge7(&c, v, if uniq7 { merge_array } else { true }, uniq7),
            (Value::Array(va), Some(Value::Array(ca))) if merge_array => {
                let mut m = ca.clone();
                m.extend(va.iter().cloned());
                if uniq7 && m.iter().all(Value::is_object) {
                    let mut u: Vec<Value> = Vec::new();
                    for x in m {
                        if !u.contains(&x) {
                            u.push(x);
                        }
                    }
                    m = u;
                }
                Value::Array(m)
            }
            _ => v.clone(),
        };
        t.insert(k.clone(), merged);
    }
    Value::Object(t)
}

/// The service body a 6.x instantiate creates and deploys: `ServiceTemplate#instantiate`
/// (service_template.rb L493-518: body.deep_merge(merge_template)), `Service#allocate`
/// (src/flow/lib/models/service.rb L315-329: `resolve_attributes` L799-834), then
/// `deploy_networks` (L663: `resolve_networks` L783-797).
pub fn instantiate6(body: &Value, mt: &Value) -> Value {
    let mut t = deep_merge6(body, mt);
    let service_values = t.get("custom_attrs_values").cloned();
    let networks_values = t.get("networks_values").cloned().unwrap_or(json!([]));
    for role in t["roles"].as_array_mut().into_iter().flatten() {
        if let Some(c) = role.get("vm_template_contents").and_then(Value::as_str).map(str::to_string) {
            let mut c = c;
            // `scan(/\$(\w+)/)` once, then `gsub!('$'+key, value)` for each match in turn
            for key in scan_vars(&c.clone()) {
                let role_v = role.get("custom_attrs_values").and_then(|v| v.get(&key)).cloned();
                let service_v = service_values.as_ref().and_then(|v| v.get(&key)).cloned();
                if let Some(v) = role_v.or(service_v) {
                    c = ruby_gsub(&c, &format!("${key}"), &ruby_to_s(&v));
                }
            }
            role["vm_template_contents"] = Value::String(c);
        }
        if let Some(uiv) = role.get("user_inputs_values").and_then(Value::as_object).cloned() {
            let mut c = role.get("vm_template_contents").and_then(Value::as_str).unwrap_or("").to_string();
            for (k, v) in uiv {
                c += &format!("\n{k}=\"{}\"", ruby_to_s(&v));
            }
            role["vm_template_contents"] = Value::String(c);
        }
    }
    for role in t["roles"].as_array_mut().into_iter().flatten() {
        if let Some(c) = role.get("vm_template_contents").and_then(Value::as_str).map(str::to_string) {
            let mut c = c;
            for key in scan_vars(&c.clone()) {
                let net = networks_values.as_array().into_iter().flatten().find(|n| n.get(&key).is_some());
                if let Some(n) = net {
                    c = ruby_gsub(&c, &format!("${key}"), &ruby_to_s(&n[&key]["id"]));
                }
            }
            role["vm_template_contents"] = Value::String(c);
        }
    }
    t
}

/// Ruby's `str.gsub(pattern, replacement)` with a string pattern: every occurrence, left to
/// right; in the replacement (characters as stored, one backslash each) `\0` and `\&` are the
/// match, `\1`..`\9` the groups (none: empty), `` \` `` and `\'` the text before and after the
/// match, two backslashes one (`rb_reg_regsub`, Ruby's re.c); any other backslash stays.
pub fn ruby_gsub(s: &str, pat: &str, rep: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for (at, m) in s.match_indices(pat) {
        out += &s[last..at];
        let mut chars = rep.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.peek().copied() {
                Some('0' | '&') => out += m,
                Some('1'..='9') => {}
                Some('`') => out += &s[..at],
                Some('\'') => out += &s[at + m.len()..],
                Some('\\') => out.push('\\'),
                Some(x) => {
                    out.push('\\');
                    out.push(x);
                }
                None => {
                    out.push('\\');
                    continue;
                }
            }
            chars.next();
        }
        last = at + m.len();
    }
    out += &s[last..];
    out
}

/// Ruby's `to_s` of a JSON value inside a string (`nil` is "").
fn ruby_to_s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `str.scan(/\$(\w+)/)`: the names after each `$`.
fn scan_vars(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let j = i + 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
            if j > i + 1 {
                out.push(s[i + 1..j].to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Registering a template on 7.x (`ServiceTemplate#allocate` → `ServiceTemplate.validate`,
/// service_template.rb L321-328, L531-551): a 6.x template (`old_format?` L799-803) is
/// converted by `convert_template` (L809-842) and `upgrade_template_contents` (L850-898) and
/// stored converted. (`onedb` upgrades stored 6.10 templates the same way:
/// src/onedb/local/6.10.0_to_7.0.0.rb L383-403, L531.)
pub fn register7(mut body: Value) -> Value {
    let old = body["roles"]
        .as_array()
        .is_some_and(|rs| rs.iter().all(|r| r.get("vm_template").is_some() || r.get("vm_template_contents").is_some()));
    if !old {
        return body;
    }
    for role in body["roles"].as_array_mut().into_iter().flatten() {
        let r = role.as_object_mut().unwrap();
        let tid = r.get("vm_template").and_then(Value::as_i64).unwrap_or(0);
        r.insert("template_id".into(), json!(tid));
        r.insert("type".into(), json!("vm"));
        if let Some(ca) = r.get("custom_attrs").cloned() {
            r.insert("user_inputs".into(), ca);
        }
        // (`body['user_inputs_values'] = role['custom_attrs_values'] if body['custom_attrs_values']`
        // is overwritten below whenever it runs)
        if let Some(c) = r.get("vm_template_contents").and_then(Value::as_str).map(str::to_string) {
            r.insert("template_contents".into(), upgrade_template_contents(&c));
        }
        for k in ["vm_template", "vm_template_contents", "custom_attrs", "custom_attrs_values"] {
            r.remove(k);
        }
    }
    let b = body.as_object_mut().unwrap();
    if let Some(ca) = b.remove("custom_attrs") {
        b.insert("user_inputs".into(), ca);
    }
    if let Some(cv) = b.remove("custom_attrs_values") {
        b.insert("user_inputs_values".into(), cv);
    }
    body
}

/// `ServiceTemplate.upgrade_template_contents` (service_template.rb L850-898, 7.4.0): 6.x
/// template text to a hash. Every `KEY = [ ... ]` becomes an array of one hash.
pub fn upgrade_template_contents(text: &str) -> Value {
    if text.is_empty() {
        return json!({});
    }
    let mut result: Vec<(String, Value)> = Vec::new();
    for line in split_not_in_brackets(text) {
        if !line.contains('=') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap();
        let key = key.trim().to_string();
        let value = value.trim().replace('"', "");
        let value = if value.starts_with('[') && value.ends_with(']') {
            let inner = &value[1..value.len() - 1];
            let mut h = Map::new();
            for el in split_comma_ws(inner) {
                let (sk, sv) = match el.split_once('=') {
                    Some((a, b)) => (a.trim().to_string(), Value::String(b.trim().to_string())),
                    None => (el.trim().to_string(), Value::Null),
                };
                h.insert(sk, sv);
            }
            Value::Object(h)
        } else {
            Value::String(value)
        };
        match result.iter_mut().find(|(k, _)| *k == key) {
            Some((_, Value::Array(a))) => a.push(value),
            Some((_, cur)) => *cur = Value::Array(vec![cur.clone(), value]),
            None => result.push((key, value)),
        }
    }
    let mut out = Map::new();
    for (k, v) in result {
        out.insert(k, if v.is_object() { Value::Array(vec![v]) } else { v });
    }
    Value::Object(out)
}

/// `split(/\n(?![^\[]*\])/)`: split at newlines not followed by `]` before any `[`.
fn split_not_in_brackets(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c != '\n' {
            continue;
        }
        let rest = &s[i + 1..];
        let inside = match (rest.find(']'), rest.find('[')) {
            (Some(cb), Some(ob)) => cb < ob,
            (Some(_), None) => true,
            _ => false,
        };
        if !inside {
            out.push(s[start..i].to_string());
            start = i + 1;
        }
    }
    out.push(s[start..].to_string());
    // Ruby's split drops trailing empty strings
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

/// `split(/\s*,\s*/)` (trailing empty fields dropped).
fn split_comma_ws(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split(',').map(|p| p.to_string()).collect();
    // the whitespace around each comma belongs to the separator
    let n = v.len();
    for (i, p) in v.iter_mut().enumerate() {
        let mut q = p.as_str();
        if i > 0 {
            q = q.trim_start();
        }
        if i + 1 < n {
            q = q.trim_end();
        }
        *p = q.to_string();
    }
    while v.last().is_some_and(String::is_empty) {
        v.pop();
    }
    v
}

/// The service body a 7.x instantiate creates and then fills: `ServiceTemplate#instantiate`
/// (service_template.rb L572-599: `handle_nested_values` L759-797, then deep_merge) and, when
/// the LCM deploys it, `Service#fill_template` → `generate_template_contents` (service.rb
/// L645-650, L834-865; `resolve_networks` L898-911). `Err` is fill_template's rescue: "Error
/// generating VM template contents" (the service goes to FAILED_DEPLOYING).
pub fn instantiate7(stored: &Value, mt: &Value, uniq7: bool) -> Result<Value, String> {
    let mut body = stored.clone();
    let mut extra = mt.clone();
    // handle_nested_values
    let extra_nets = extra.get("networks_values").and_then(Value::as_array).cloned().unwrap_or_default();
    if !extra_nets.is_empty() {
        let mut nets = body.get("networks_values").and_then(Value::as_array).cloned().unwrap_or_default();
        for en in extra_nets {
            let Some(name) = en.as_object().and_then(|o| o.keys().next().cloned()) else { continue };
            match nets.iter().position(|n| n.get(&name).is_some()) {
                Some(i) => nets[i] = en,
                None => nets.push(en),
            }
        }
        body["networks_values"] = Value::Array(nets);
        extra["networks_values"] = json!([]);
    }
    if let Some(extra_roles) = extra.get("roles").and_then(Value::as_array).cloned().filter(|r| !r.is_empty()) {
        for role in body["roles"].as_array_mut().into_iter().flatten() {
            if let Some(er) = extra_roles.iter().find(|r| r["name"] == role["name"]) {
                *role = deep_merge7(role, er, true, uniq7);
            }
        }
        extra.as_object_mut().unwrap().remove("roles");
    }
    let mut t = deep_merge7(&body, &extra, true, uniq7);
    // generate_template_contents
    let service_inputs = t.get("user_inputs_values").cloned().unwrap_or(json!({}));
    let service_networks = t.get("networks_values").cloned().unwrap_or(json!([]));
    for role in t["roles"].as_array_mut().into_iter().flatten() {
        let mut tc = role.get("template_contents").cloned().unwrap_or(json!({}));
        let role_inputs = role.get("user_inputs_values").cloned().unwrap_or(json!({}));
        if let Some(nics) = tc.get_mut("NIC").and_then(Value::as_array_mut) {
            for nic in nics {
                let Some(id) = nic.get("NETWORK_ID").and_then(Value::as_str).map(str::to_string) else { continue };
                let Some(name) = scan_vars(&id).into_iter().next() else { continue };
                if let Some(n) = service_networks.as_array().into_iter().flatten().find(|n| n.get(&name).is_some()) {
                    nic["NETWORK_ID"] = n[&name]["id"].clone();
                }
            }
        }
        let empty = |v: &Value| v.as_object().is_none_or(|o| o.is_empty());
        if !(empty(&service_inputs) && empty(&role_inputs)) {
            let inputs = deep_merge7(&service_inputs, &role_inputs, true, uniq7);
            if tc.get("CONTEXT").is_none() {
                tc["CONTEXT"] = json!({});
            }
            for (k, v) in inputs.as_object().into_iter().flatten() {
                tc[k] = v.clone();
                // `template_contents['CONTEXT'][key] = "$#{key}"`: on an Array this raises
                // TypeError (no implicit conversion of String into Integer)
                match tc.get_mut("CONTEXT") {
                    Some(Value::Object(c)) => {
                        c.insert(k.clone(), Value::String(format!("${k}")));
                    }
                    _ => {
                        return Err(format!(
                            "Error generating VM template contents (role {}: CONTEXT is not a hash: TypeError)",
                            role["name"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
        }
        role["template_contents"] = tc;
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// 4. The role's VMs
// ---------------------------------------------------------------------------------------------

/// 6.x `Role#deploy` (src/flow/lib/models/role.rb L406-474, 6.10.5): the extra template text
/// given to `one.template.instantiate`. With a line `APPEND="A,B"` the VM template's own A and B
/// (`template_like_str('TEMPLATE', true, 'A|B')`, src/oca/ruby/opennebula/xml_element.rb
/// L302-341) are put in front of the role's contents.
pub fn role_extra_template6(role: &Value, vm_template: &Template, service_id: u64) -> String {
    let mut extra = match role.get("vm_template_contents").and_then(Value::as_str) {
        Some(c) => {
            let c = c.to_string();
            // `.match(/^\s*APPEND=\"?(.*?)\"?\s*$/)[1].split(',')`
            let append: Option<Vec<String>> = c.lines().find_map(|l| {
                let l = l.trim_start().strip_prefix("APPEND=")?;
                let l = l.trim_end();
                let l = l.strip_prefix('"').unwrap_or(l);
                let l = l.strip_suffix('"').unwrap_or(l);
                Some(ruby_split(l, ',').into_iter().map(str::to_string).collect())
            });
            match append {
                Some(a) if !a.is_empty() => format!("{}\n{c}", vm_template.template_like_str(&a)),
                _ => c,
            }
        }
        None => String::new(),
    };
    extra += &format!("\nSERVICE_ID = {service_id}");
    extra += &format!("\nROLE_NAME = \"{}\"", role["name"].as_str().unwrap_or(""));
    extra
}

/// 7.x `Role#init_template_attributes` (src/flow/lib/models/role.rb L637-675, 7.4.0): the VM
/// template's attributes deep-merged (arrays replaced) with the role's `template_contents`,
/// SERVICE_ID and ROLE_NAME, written out by `Hash.to_raw` (validator.rb L65-95).
pub fn role_extra_template7(role: &Value, vm_template: &Template, service_id: u64) -> String {
    let mut extra = role.get("template_contents").cloned().unwrap_or(json!({}));
    if extra.as_object().is_some_and(|o| !o.is_empty()) {
        extra = deep_merge7(&vm_template.to_hash(), &extra, false, true);
    }
    extra["SERVICE_ID"] = json!(service_id);
    extra["ROLE_NAME"] = role["name"].clone();
    to_raw(&extra)
}

/// `Hash.to_raw` (src/oca/ruby/opennebula/flow/validator.rb L65-95, 7.4.0).
pub fn to_raw(h: &Value) -> String {
    let mut content = String::new();
    for (k, v) in h.as_object().into_iter().flatten() {
        match v {
            Value::Object(_) => {
                let sub = to_raw(v);
                content += &format!("{k} = [\n");
                let lines: Vec<&str> = sub.split('\n').filter(|l| !l.is_empty()).collect();
                content += &lines.join(",\n");
                content += "\n]\n";
            }
            Value::Array(a) => {
                for e in a {
                    content += &to_raw(&json!({ k.clone(): e }));
                }
            }
            other => content += &format!("{k} = \"{}\"\n", ruby_to_s(other).replace('"', "\\\"")),
        }
    }
    content
}

// ---------------------------------------------------------------------------------------------
// 5. oned
// ---------------------------------------------------------------------------------------------

/// An attribute of an oned template: a single value or a vector (`std::map`: sorted keys, and
/// the parser's `insert` keeps the first of two equal keys).
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Single(String),
    Vector(BTreeMap<String, String>),
}

/// An oned `Template` (src/template/Template.cc, include/Template.h): a multimap of attributes;
/// equal names keep their insertion order. VM templates are not in replace mode
/// (include/VirtualMachineTemplate.h L31: `Template(false, '=', "TEMPLATE")`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Template {
    pub attrs: Vec<(String, Attr)>,
}

impl Template {
    /// `Template::parse`: src/parsers/template_parser.l and template_syntax.y, ported in
    /// `super::template_syntax` (names upper-cased, `\"` unescaped, the first of two equal
    /// vector keys kept).
    pub fn parse(text: &str) -> Result<Template, String> {
        let attrs = super::template_syntax::parse(text)?
            .into_iter()
            .map(|(n, a)| {
                let a = match a {
                    super::template_syntax::Parsed::Single(s) => Attr::Single(s),
                    super::template_syntax::Parsed::Vector(v) => Attr::Vector(v),
                };
                (n, a)
            })
            .collect();
        Ok(Template { attrs })
    }

    /// `Template::merge` (src/template/Template.cc L682-705, 6.10.5; L675 in 7.4.0): every
    /// name of `from` is erased here, then all of `from`'s attributes are set (empty vectors
    /// skipped). Used by `VMTemplateInstantiate::merge` (src/rm/RequestManagerVMTemplate.cc
    /// L374-408) for the extra template of `one.template.instantiate`.
    pub fn merge(&mut self, from: &Template) {
        self.attrs.retain(|(n, _)| !from.attrs.iter().any(|(m, _)| m == n));
        for (n, a) in &from.attrs {
            if !matches!(a, Attr::Vector(v) if v.is_empty()) {
                self.attrs.push((n.clone(), a.clone()));
            }
        }
    }

    /// `Template::get(name)` for a vector: the first one (include/Template.h `__get`: atts[0]).
    pub fn vector(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.attrs.iter().find_map(|(n, a)| match a {
            Attr::Vector(v) if n == name => Some(v),
            _ => None,
        })
    }

    /// A single attribute's value.
    pub fn single(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find_map(|(n, a)| match a {
            Attr::Single(v) if n == name => Some(v.as_str()),
            _ => None,
        })
    }

    /// How many attributes are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.attrs.iter().filter(|(n, _)| n == name).count()
    }

    /// `template_like_str('TEMPLATE', true, 'A|B')` of the names (xml_element.rb L302-341).
    fn template_like_str(&self, names: &[String]) -> String {
        let mut out = Vec::new();
        for (n, a) in &self.attrs {
            if !names.contains(n) {
                continue;
            }
            match a {
                Attr::Single(v) => out.push(format!("{n}={}", attr_to_str(v))),
                Attr::Vector(v) => {
                    let inner: Vec<String> = v.iter().map(|(k, x)| format!("  {k}={}", attr_to_str(x))).collect();
                    out.push(format!("{n}=[\n{} ]", inner.join(",\n")));
                }
            }
        }
        out.join("\n")
    }

    /// `template.to_hash['VMTEMPLATE']['TEMPLATE']`: one attribute a string or a hash, a
    /// repeated name an array.
    pub fn to_hash(&self) -> Value {
        let mut h = Map::new();
        for (n, a) in &self.attrs {
            let v = match a {
                Attr::Single(s) => Value::String(s.clone()),
                Attr::Vector(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), Value::String(x.clone()))).collect()),
            };
            match h.get_mut(n) {
                Some(Value::Array(arr)) => arr.push(v),
                Some(cur) => *cur = Value::Array(vec![cur.clone(), v]),
                None => {
                    h.insert(n.clone(), v);
                }
            }
        }
        Value::Object(h)
    }
}

/// `XMLElement#attr_to_str` (xml_element.rb): a value in double quotes, `"` escaped.
fn attr_to_str(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\\\""))
}

/// The VM created from `vm_template` with the role's `extra` text (`VMTemplateInstantiate::
/// request_execute`, RequestManagerVMTemplate.cc L124-172).
pub fn instantiate_vm(vm_template: &Template, extra: &str) -> Result<Template, String> {
    let uattrs = Template::parse(extra).map_err(|e| format!("Parse error: {e}"))?;
    let mut t = vm_template.clone();
    t.merge(&uattrs);
    Ok(t)
}

/// The VM's context as context.sh gets it: the first CONTEXT vector (VirtualMachineContext.cc
/// L622-641 `parse_context`, L755-781 `parse_context_variables`: the parsed vector replaces
/// every CONTEXT), `$NAME` resolved from the VM's attributes, "" when absent (src/parsers/
/// vm_var_syntax.y L280-320 `insert_single`; `$NAME[...]` forms are left for oned to resolve);
/// FILES_DS is taken out (its files go on the CD, L631-633); TOKEN=YES adds ONEGATE_ENDPOINT
/// and VMID (L590-617 `generate_token_context`).
pub fn vm_context(vm: &Template) -> Option<BTreeMap<String, String>> {
    let ctx = vm.vector("CONTEXT")?;
    let mut out = BTreeMap::new();
    for (k, v) in ctx.iter().filter(|(k, _)| *k != "FILES_DS") {
        let mut s = String::new();
        let mut rest = v.as_str();
        while let Some(p) = rest.find('$') {
            s += &rest[..p];
            let after = &rest[p + 1..];
            let n = after.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
            if n == 0 || after[n..].starts_with('[') {
                s.push('$');
                rest = after;
                continue;
            }
            s += vm.single(&after[..n]).unwrap_or("");
            rest = &after[n..];
        }
        s += rest;
        out.insert(k.clone(), s);
    }
    if out.get("TOKEN").is_some_and(|t| t.eq_ignore_ascii_case("YES")) {
        out.insert("ONEGATE_ENDPOINT".into(), "http://169.254.16.9:5030".into());
        out.insert("VMID".into(), "42".into());
    }
    Some(out)
}
