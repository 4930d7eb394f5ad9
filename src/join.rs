//! `flower-init join`: a join value (FL_JOIN) decoded for an operator, its CA printed, or
//! re-pointed at other endpoints (a NAT port-forward, a DNS name the SuperLink does not know).

use crate::args::{Args, EXIT_USAGE};
use crate::config::{Join, values};
use std::io::Read;

const USAGE: &str = "usage: flower-init join [--ca-pem] [--endpoint HOST:PORT]... VALUE|-
Decode a join value (the SuperLink's /status `join.value`, or its OneGate attribute FL_JOIN;
`-` reads it from stdin) and print what it holds as JSON: endpoints, TLS, the CA's SHA-256
(compare it with the SuperLink's /status `tls.ca_sha256`).
  --ca-pem               print the CA certificate(s) as PEM instead
  --endpoint HOST:PORT   (repeatable) replace the endpoints, in this order, and print the new
                         value: e.g. the public address of a NAT port-forward
Exit status: 0, 1 stdin unreadable, 2 invalid value, endpoint or usage.";

/// Run `join`; returns the exit code.
pub fn cli(args: &mut Args) -> i32 {
    if args.flag("--help") || args.flag("-h") {
        println!("{USAGE}");
        return 0;
    }
    let parsed = (|| -> Result<(bool, Vec<String>, String), String> {
        let ca_pem = args.flag("--ca-pem");
        let mut endpoints = Vec::new();
        while let Some(e) = args.opt("--endpoint")? {
            endpoints.push(e);
        }
        let value = args.positional().ok_or("VALUE is missing")?;
        args.finish()?;
        Ok((ca_pem, endpoints, value))
    })();
    let (ca_pem, endpoints, value) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flower-init join: {e}\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    let value = if value == "-" {
        let mut s = String::new();
        // Bounded: a join value is at most a few KB; more is refused by decode().
        if let Err(e) = std::io::stdin().take(1 << 20).read_to_string(&mut s) {
            eprintln!("flower-init join: read stdin: {e}");
            return 1;
        }
        s
    } else {
        value
    };
    match run(&value, ca_pem, &endpoints) {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(e) => {
            eprintln!("flower-init join: {e}");
            2
        }
    }
}

/// What `join` prints for `value`: the summary (JSON), the CA PEM, or the re-pointed value.
pub fn run(value: &str, ca_pem: bool, endpoints: &[String]) -> Result<String, String> {
    let mut j = Join::decode(value).map_err(|e| format!("FL_JOIN {e}"))?;
    if !endpoints.is_empty() {
        let mut list = Vec::new();
        for e in endpoints {
            list.push(values::host_port(e).map_err(|why| format!("--endpoint {e:?}: {why}"))?);
        }
        let pem = j.ca_pem();
        let auth = j.node_auth;
        j = Join::new(list, pem.as_deref())?;
        // What the SuperLink says about SuperNode authentication travels with the value: without
        // it a re-pointed value would read as "no authentication" and its SuperNodes be refused.
        if let Some(on) = auth {
            j = j.with_node_auth(on);
        }
        return Ok(j.encode());
    }
    if ca_pem {
        return j.ca_pem().map(|p| p.trim_end().to_string()).ok_or_else(|| "the SuperLink serves plain text: no CA".into());
    }
    serde_json::to_string_pretty(&j.summary()).map_err(|e| format!("write the summary: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("tls/testdata/rsa-ca.crt");

    fn value() -> String {
        Join::new(vec![values::host_port("10.0.0.5:8000").unwrap()], Some(CA)).unwrap().encode()
    }

    #[test]
    fn decodes_shows_the_ca_and_repoints() {
        let v = value();
        let shown: serde_json::Value = serde_json::from_str(&run(&v, false, &[]).unwrap()).unwrap();
        assert_eq!(shown["endpoints"], serde_json::json!(["10.0.0.5:8000"]));
        assert_eq!(shown["tls"], true);
        assert_eq!(shown["ca_sha256"].as_array().unwrap().len(), 1);
        let pem = run(&v, true, &[]).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----") && pem.ends_with("-----END CERTIFICATE-----"));
        let moved = run(&v, false, &["203.0.113.7:18000".into(), "10.0.0.5:8000".into()]).unwrap();
        let j = Join::decode(&moved).unwrap();
        assert_eq!(j.address().unwrap().to_string(), "203.0.113.7:18000");
        assert_eq!(j.ca_der, Join::decode(&v).unwrap().ca_der, "the CA stays");
        assert_eq!(j.node_auth, None, "a value without the auth word stays without it");
        // A SuperLink with SuperNode authentication says so in its value; re-pointing keeps it.
        let with_auth = Join::new(vec![values::host_port("10.0.0.5:8000").unwrap()], Some(CA)).unwrap().with_node_auth(true).encode();
        let moved = run(&with_auth, false, &["10.99.0.1:8000".into()]).unwrap();
        assert_eq!(Join::decode(&moved).unwrap().node_auth, Some(true), "the auth word survives --endpoint");
    }

    #[test]
    fn bad_input_is_named() {
        assert!(run("flwr2:x", false, &[]).unwrap_err().starts_with("FL_JOIN is a version 2 join value"));
        assert!(run(&value(), false, &["nope".into()]).unwrap_err().starts_with("--endpoint \"nope\""));
        let plain = Join::new(vec![values::host_port("10.0.0.5:8000").unwrap()], None).unwrap().encode();
        assert!(run(&plain, true, &[]).unwrap_err().contains("no CA"));
    }
}
