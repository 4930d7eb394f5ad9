use super::*;
use crate::status::{Outcome, Status};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What a family declared, for [`lint`].
struct Family {
    kind: String,
    samples: usize,
}

/// The format's rules that matter here, checked without promtool (which `make metrics-test`
/// runs on real pages): `# HELP` then `# TYPE` once per family, before its samples; every
/// sample belongs to the family declared last (a histogram's `_bucket`, `_sum`, `_count`);
/// names and label names are valid; label values quoted and escaped; no label set twice; the
/// value a number. Returns the families with their kinds.
pub(crate) fn lint(page: &str) -> BTreeMap<String, String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    };
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    assert!(page.ends_with('\n'), "a page ends with a line feed");
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "{line}");
            assert!(!families.contains_key(name), "family {name} declared twice");
            current = Some(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(current.as_deref(), Some(name), "TYPE right after its HELP: {line}");
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter's name ends in _total: {name}");
            }
            families.insert(name.to_string(), Family { kind: kind.to_string(), samples: 0 });
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let fam = current.clone().expect("a sample before any family");
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value == "NaN" || value == "+Inf" || value == "-Inf" || value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        let f = families.get_mut(&fam).expect("declared");
        let ok = if f.kind == "histogram" { [format!("{fam}_bucket"), format!("{fam}_sum"), format!("{fam}_count")].contains(&name.to_string()) } else { name == fam };
        assert!(ok, "sample {name} outside its family {fam}");
        f.samples += 1;
        if let Some(labels) = series.strip_prefix(name).and_then(|l| l.strip_prefix('{')).and_then(|l| l.strip_suffix('}')) {
            // label="value",… with \\ \" \n escapes only.
            let mut rest = labels;
            while !rest.is_empty() {
                let (k, v) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(valid_name(k) && !k.starts_with("__"), "{line}");
                let mut end = None;
                let mut esc = false;
                for (i, c) in v.char_indices() {
                    match (esc, c) {
                        (true, '\\' | '"' | 'n') => esc = false,
                        (true, _) => panic!("bad escape in {line}"),
                        (false, '\\') => esc = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        (false, '\n') => panic!("raw line feed in {line}"),
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated value in {line}"));
                rest = &v[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        assert!(seen.insert(series.to_string()), "series twice: {series}");
    }
    families.into_iter().map(|(n, f)| (n, f.kind)).collect()
}

#[test]
fn values_and_escapes_follow_the_format() {
    assert_eq!(number(3.0), "3");
    assert_eq!(number(0.25), "0.25");
    assert_eq!(number(-2.0), "-2");
    assert_eq!(number(f64::NAN), "NaN");
    assert_eq!(number(f64::INFINITY), "+Inf");
    assert_eq!(number(f64::NEG_INFINITY), "-Inf");
    assert_eq!(number(1.7e18), "1700000000000000000");
    assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    assert_eq!(escape_help("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");
}

#[test]
fn a_booting_init_has_its_phase_and_steps() {
    let mut st = Status::default();
    let i = st.begin("context", Duration::from_millis(1500));
    st.end(i, Duration::from_millis(1750), Outcome::Ok, "");
    st.begin("network", Duration::from_secs(2));
    let page = render(&st, &Stats { answered: 4, forbidden: 2, ..Stats::default() });
    let fams = lint(&page);
    assert_eq!(fams["flower_init_phase"], "gauge");
    assert!(page.contains("flower_init_phase{phase=\"booting\"} 1\n"), "{page}");
    assert!(page.contains("flower_init_phase{phase=\"ready\"} 0\n"), "{page}");
    assert!(page.contains("flower_init_boot_step_duration_seconds{step=\"context\"} 0.25\n"), "{page}");
    assert!(!page.contains("flower_init_boot_step_duration_seconds{step=\"network\"}"), "a running step has no duration: {page}");
    assert!(page.contains("flower_init_boot_step_outcome{step=\"network\",outcome=\"running\"} 1\n"), "{page}");
    assert!(page.contains("flower_init_boot_step_start_seconds{step=\"network\"} 2\n"), "{page}");
    assert!(page.contains("flower_init_health_forbidden_total 2\n"), "{page}");
    assert!(page.contains("flower_init_health_connections_total{result=\"answered\"} 4\n"), "{page}");
    assert!(!page.contains("flower_init_flower_up"), "no container section yet: {page}");
}

/// Step names are ours, but a name twice (a step run again) must not give a series twice, and
/// a strange one is escaped, not copied raw.
#[test]
fn repeated_and_strange_step_names_stay_valid() {
    let mut st = Status::default();
    for (n, name) in ["flower", "flower", "we\"ird\\step\nname"].iter().enumerate() {
        let i = st.begin(name, Duration::from_secs(n as u64));
        st.end(i, Duration::from_secs(n as u64 + 1), Outcome::Failed, "why");
    }
    let page = render(&st, &Stats::default());
    lint(&page);
    assert_eq!(page.matches("flower_init_boot_step_start_seconds{step=\"flower\"}").count(), 1, "{page}");
    assert!(page.contains("flower_init_boot_step_start_seconds{step=\"flower\"} 1\n"), "the last run: {page}");
    assert!(page.contains("step=\"we\\\"ird\\\\step\\nname\""), "{page}");
}

/// The caps hold: thousands of steps and a gateway section full of invented keys give a page
/// of bounded size, with no label value from outside our own words.
#[test]
fn the_page_is_bounded_whatever_the_state_holds() {
    let mut st = Status::default();
    for n in 0..5000 {
        let i = st.begin(&format!("step-{n}"), Duration::from_secs(n));
        st.end(i, Duration::from_secs(n + 1), Outcome::Ok, "x".repeat(1000));
    }
    let mut rejects = serde_json::Map::new();
    for n in 0..1000 {
        rejects.insert(format!("reason_{n}"), serde_json::json!(n));
    }
    rejects.insert("Evil\"} 1\nflower_init_phase 9".into(), serde_json::json!(1));
    rejects.insert("x".repeat(MAX_KEY + 1), serde_json::json!(1));
    st.set_sections(&serde_json::json!({
        "gateway": {
            "process": {"pid": 9, "restarts": 1},
            "connections": {"open": 1, "total": 2, "active_requests": 0},
            "requests": {"fleet": 3, "rejected": 1},
            "rejects": rejects,
            "answers": {"fleet": {"status": {"2xx": 3}, "duration": {"le": [0.1, 1.0], "counts": [1, 3, 2], "sum_s": 0.5}}},
        },
    }));
    let page = render(&st, &Stats::default());
    lint(&page);
    assert!(page.len() < MAX_METRICS_BYTES / 2, "{}", page.len());
    assert_eq!(page.matches("flower_init_boot_step_start_seconds{").count(), MAX_STEPS);
    assert!(page.contains("{step=\"step-4999\"}"), "the newest steps are kept");
    assert_eq!(page.matches("flower_init_gateway_rejected_total{").count(), MAX_KEYS);
    assert!(!page.contains("Evil") && !page.contains(&"x".repeat(MAX_KEY + 1)), "{page}");
    assert!(!page.contains("flower_init_gateway_request_duration_seconds_bucket"), "counts not cumulative: left out: {page}");
    assert!(!page.contains("xxxxxxxx"), "step details never appear");
}

#[test]
fn histograms_are_cumulative_and_end_in_inf() {
    let mut st = Status::default();
    st.set_sections(&serde_json::json!({
        "gateway": {
            "process": {"pid": null, "restarts": 3},
            "connections": {"open": 0, "total": 5, "active_requests": 0},
            "answers": {
                "fleet": {"status": {"2xx": 4, "5xx": 1}, "duration": {"le": [0.005, 0.25], "counts": [1, 4, 5], "sum_s": 2.5}},
                "control": {"status": {}, "duration": {"le": [0.005, 0.25], "counts": [0, 0, 0], "sum_s": 0.0}},
            },
        },
    }));
    let page = render(&st, &Stats::default());
    assert_eq!(lint(&page)["flower_init_gateway_request_duration_seconds"], "histogram");
    for l in [
        "flower_init_gateway_up 0",
        "flower_init_gateway_restarts_total 3",
        "flower_init_gateway_responses_total{api=\"fleet\",code=\"5xx\"} 1",
        "flower_init_gateway_request_duration_seconds_bucket{api=\"fleet\",le=\"0.005\"} 1",
        "flower_init_gateway_request_duration_seconds_bucket{api=\"fleet\",le=\"0.25\"} 4",
        "flower_init_gateway_request_duration_seconds_bucket{api=\"fleet\",le=\"+Inf\"} 5",
        "flower_init_gateway_request_duration_seconds_sum{api=\"fleet\"} 2.5",
        "flower_init_gateway_request_duration_seconds_count{api=\"fleet\"} 5",
        "flower_init_gateway_request_duration_seconds_count{api=\"control\"} 0",
    ] {
        assert!(page.contains(&format!("{l}\n")), "{l} missing from\n{page}");
    }
}

/// Free text of the state (a failure reason, the container's output, OneGate values and
/// errors) never reaches the page: only numbers and our own words do.
#[test]
fn free_text_never_reaches_the_page() {
    let mut st = Status::default();
    st.fail("tls", "SECRET-REASON");
    st.set_sections(&serde_json::json!({
        "container": {"id": "flower-superlink", "pid": null, "state": "stopped", "restarts": 2, "last_exit": {"code": 1}, "output": ["SECRET-OUTPUT"]},
        "onegate": {"enabled": true, "published": false, "pending": ["FL_ENDPOINT"], "attempts": 9, "failures": 4, "consecutive_failures": 2,
                    "last_error": "SECRET-ERROR", "ready_reported": false, "next_retry_in_s": 1.0, "attributes": {"FL_CA_CERT": "SECRET-VALUE"}},
        "run": {"run_id": 18446744073709551615u64, "status": "SECRET-STATUS", "round": 2, "num_rounds": 3, "loss": 0.5, "accuracy": null, "message": "SECRET-MESSAGE", "updated": "x"},
        "init": {"version": "flower-init 0.1.0", "role": "SECRET-ROLE", "rss_kib": 1000, "peak_rss_kib": 2000, "orphans_reaped": 0},
    }));
    let page = render(&st, &Stats::default());
    lint(&page);
    assert!(!page.contains("SECRET"), "{page}");
    for l in [
        "flower_init_phase{phase=\"failed\"} 1",
        "flower_init_flower_up 0",
        "flower_init_flower_restarts_total 2",
        "flower_init_flower_last_exit_code 1",
        "flower_init_onegate_requests_total{result=\"ok\"} 5",
        "flower_init_onegate_requests_total{result=\"failed\"} 4",
        "flower_init_onegate_pending_attributes 1",
        "flower_init_run_info{run_id=\"18446744073709551615\"} 1",
        "flower_init_run_status{status=\"running\"} 0",
        "flower_init_run_round 2",
        "flower_init_run_loss 0.5",
        "flower_init_resident_memory_bytes 1024000",
        "flower_init_info{version=\"flower-init 0.1.0\",role=\"\"} 1",
    ] {
        assert!(page.contains(&format!("{l}\n")), "{l} missing from\n{page}");
    }
    assert!(!page.contains("flower_init_run_accuracy"), "no accuracy yet: {page}");
}
