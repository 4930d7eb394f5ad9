//! The protobuf wire format, by hand, for exactly the Control API messages the appliance
//! sends and reads (flwr 1.42 `flwr/proto/control.proto`, `run.proto`, `node.proto`,
//! `fab.proto`, `transport.proto`; field numbers in docs/control-api.md). Encoding writes only
//! what Flower's own Python client would (proto3: a default-valued plain field is left out, an
//! `optional` field is written when set); decoding skips unknown fields, as protobuf does, so a
//! newer Flower that adds fields still parses, and refuses anything malformed.

use std::fmt;

/// A message that is not valid protobuf (or not the shape we expect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(msg: impl Into<String>) -> ProtoError {
    ProtoError(msg.into())
}

// ---- encoding ----

/// Appends fields to a message being built.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// A base-128 varint, low groups first.
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// A field key: number and wire type.
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// `uint64`/`bool` written even when zero (an `optional` field that is set).
    pub fn uint64(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }

    /// `sint64`: zigzag, so small negative numbers stay short.
    pub fn sint64(&mut self, field: u32, v: i64) {
        self.uint64(field, ((v << 1) ^ (v >> 63)) as u64);
    }

    /// `double`: 8 bytes little-endian.
    pub fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// `bytes`, `string` or an embedded message.
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, 2);
        self.varint(v.len() as u64);
        self.0.extend_from_slice(v);
    }

    /// A proto3 plain `string`: left out when empty.
    pub fn string_nonempty(&mut self, field: u32, v: &str) {
        if !v.is_empty() {
            self.bytes(field, v.as_bytes());
        }
    }
}

// ---- decoding ----

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    /// A `uint64`/`int64` field.
    pub fn as_u64(self, what: &str) -> Result<u64, ProtoError> {
        match self {
            Wire::Varint(v) => Ok(v),
            _ => Err(bad(format!("{what}: not a varint"))),
        }
    }

    /// A `bool` field.
    pub fn as_bool(self, what: &str) -> Result<bool, ProtoError> {
        Ok(self.as_u64(what)? != 0)
    }

    /// A `sint64` field (zigzag).
    pub fn as_sint64(self, what: &str) -> Result<i64, ProtoError> {
        let v = self.as_u64(what)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A `double` field.
    pub fn as_f64(self, what: &str) -> Result<f64, ProtoError> {
        match self {
            Wire::Fixed64(v) => Ok(f64::from_bits(v)),
            _ => Err(bad(format!("{what}: not a 64-bit value"))),
        }
    }

    /// A `bytes` field or an embedded message.
    pub fn as_bytes(self, what: &str) -> Result<&'a [u8], ProtoError> {
        match self {
            Wire::Len(b) => Ok(b),
            _ => Err(bad(format!("{what}: not length-delimited"))),
        }
    }

    /// A `string` field: UTF-8, as protobuf requires.
    pub fn as_string(self, what: &str) -> Result<String, ProtoError> {
        let b = self.as_bytes(what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what}: not UTF-8")))
    }
}

/// Reads the fields of one message in order.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// A varint: at most 10 bytes, the last one holding at most one bit.
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(bad("varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    /// `n` bytes from the current position.
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| bad("truncated field"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field (number, value), or `None` at the end of the message. Groups (wire
    /// types 3 and 4, unused by Flower) and field number 0 are refused.
    pub fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtoError> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| bad("field number too large"))?;
        if field == 0 {
            return Err(bad("field number 0"));
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("length too large"))?;
                Wire::Len(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Wire::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            t => return Err(bad(format!("field {field}: wire type {t} not supported"))),
        };
        Ok(Some((field, value)))
    }
}

/// Calls `f` with every field of `buf`, in order.
pub fn each_field<'a>(buf: &'a [u8], mut f: impl FnMut(u32, Wire<'a>) -> Result<(), ProtoError>) -> Result<(), ProtoError> {
    let mut r = Reader::new(buf);
    while let Some((n, v)) = r.next_field()? {
        f(n, v)?;
    }
    Ok(())
}

// ---- the messages ----

/// `flwr.proto.Scalar`: a run-config value (`common/serde.py` `user_config_value_to_proto`
/// sends Python ints as `sint64`, floats as `double`).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Double(f64),
    Uint64(u64),
    Sint64(i64),
    Bool(bool),
    String(String),
    Bytes(Vec<u8>),
}

impl Scalar {
    /// Its encoding (`oneof scalar`: double=1, uint64=6, sint64=8, bool=13, string=14, bytes=15).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Scalar::Double(v) => w.double(1, *v),
            Scalar::Uint64(v) => w.uint64(6, *v),
            Scalar::Sint64(v) => w.sint64(8, *v),
            Scalar::Bool(v) => w.uint64(13, u64::from(*v)),
            Scalar::String(v) => w.bytes(14, v.as_bytes()),
            Scalar::Bytes(v) => w.bytes(15, v),
        }
        w.0
    }

    /// Decoded; a `oneof` written twice keeps the last value, as protobuf does.
    pub fn decode(buf: &[u8]) -> Result<Scalar, ProtoError> {
        let mut out = None;
        each_field(buf, |n, v| {
            let s = match n {
                1 => Scalar::Double(v.as_f64("Scalar.double")?),
                6 => Scalar::Uint64(v.as_u64("Scalar.uint64")?),
                8 => Scalar::Sint64(v.as_sint64("Scalar.sint64")?),
                13 => Scalar::Bool(v.as_bool("Scalar.bool")?),
                14 => Scalar::String(v.as_string("Scalar.string")?),
                15 => Scalar::Bytes(v.as_bytes("Scalar.bytes")?.to_vec()),
                _ => return Ok(()),
            };
            out = Some(s);
            Ok(())
        })?;
        out.ok_or_else(|| bad("Scalar: no value"))
    }
}

/// One `map<string, Scalar>` entry (key=1, value=2), as an embedded message.
fn config_entry(key: &str, value: &Scalar) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(1, key.as_bytes());
    w.bytes(2, &value.encode());
    w.0
}

/// A `map<string, Scalar>` entry read back.
fn decode_config_entry(buf: &[u8]) -> Result<(String, Scalar), ProtoError> {
    let (mut key, mut value) = (String::new(), None);
    each_field(buf, |n, v| {
        match n {
            1 => key = v.as_string("override_config key")?,
            2 => value = Some(Scalar::decode(v.as_bytes("override_config value")?)?),
            _ => {}
        }
        Ok(())
    })?;
    match value {
        Some(v) => Ok((key, v)),
        None => Err(bad(format!("override_config {key:?}: no value"))),
    }
}

/// `StartRunRequest` (control.proto): `fab` = 1 (`Fab`: hash_str = 1, content = 2),
/// `override_config` = 2, `federation` = 5. What `flwr run` sends for a local app
/// (`cli/run/run.py` `_run_with_control_api`): the FAB's bytes, their sha256 in hex, the
/// `--run-config` overrides, the federation (empty: the account's default).
#[derive(Debug, Clone, PartialEq)]
pub struct StartRunRequest {
    pub fab_content: Vec<u8>,
    pub fab_hash: String,
    pub override_config: Vec<(String, Scalar)>,
    pub federation: String,
}

impl StartRunRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut fab = Writer::default();
        fab.string_nonempty(1, &self.fab_hash);
        if !self.fab_content.is_empty() {
            fab.bytes(2, &self.fab_content);
        }
        let mut w = Writer::default();
        w.bytes(1, &fab.0);
        for (k, v) in &self.override_config {
            w.bytes(2, &config_entry(k, v));
        }
        w.string_nonempty(5, &self.federation);
        w.0
    }
}

/// `StartRunResponse`: `optional uint64 run_id = 1`, `optional string note = 2`,
/// `optional uint64 series_id = 3`, `string federation = 4`. Flower answers 200 with no
/// `run_id` when the FAB is over its 10 MB limit (`control_handlers.py` `start_run`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartRunResponse {
    pub run_id: Option<u64>,
    pub note: Option<String>,
    pub federation: String,
}

impl StartRunResponse {
    pub fn decode(buf: &[u8]) -> Result<Self, ProtoError> {
        let mut r = StartRunResponse::default();
        each_field(buf, |n, v| {
            match n {
                1 => r.run_id = Some(v.as_u64("StartRunResponse.run_id")?),
                2 => r.note = Some(v.as_string("StartRunResponse.note")?),
                4 => r.federation = v.as_string("StartRunResponse.federation")?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }
}

/// `ListRunsRequest`: `optional uint64 run_id = 1, limit = 2, skip = 3`.
pub fn list_runs_request(run_id: Option<u64>, limit: Option<u64>) -> Vec<u8> {
    let mut w = Writer::default();
    if let Some(id) = run_id {
        w.uint64(1, id);
    }
    if let Some(l) = limit {
        w.uint64(2, l);
    }
    w.0
}

/// A run as `ListRunsResponse` reports it (`flwr.proto.Run`, run.proto; the fields kept).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunInfo {
    /// 1
    pub run_id: u64,
    /// 2, e.g. `flower-init/appliance`
    pub fab_id: String,
    /// 3
    pub fab_version: String,
    /// 4
    pub override_config: Vec<(String, Scalar)>,
    /// 5, the full sha256 in hex
    pub fab_hash: String,
    /// 6-9, ISO 8601 or empty
    pub pending_at: String,
    pub starting_at: String,
    pub running_at: String,
    pub finished_at: String,
    /// 10 (`RunStatus`: status = 1, sub_status = 2, details = 3): `pending`, `starting`,
    /// `running`, `finished` with `completed`/`failed`/`stopped`.
    pub status: String,
    pub sub_status: String,
    pub details: String,
    /// 12, e.g. `@none/default`
    pub federation: String,
}

impl RunInfo {
    pub fn decode(buf: &[u8]) -> Result<Self, ProtoError> {
        let mut r = RunInfo::default();
        each_field(buf, |n, v| {
            match n {
                1 => r.run_id = v.as_u64("Run.run_id")?,
                2 => r.fab_id = v.as_string("Run.fab_id")?,
                3 => r.fab_version = v.as_string("Run.fab_version")?,
                4 => r.override_config.push(decode_config_entry(v.as_bytes("Run.override_config")?)?),
                5 => r.fab_hash = v.as_string("Run.fab_hash")?,
                6 => r.pending_at = v.as_string("Run.pending_at")?,
                7 => r.starting_at = v.as_string("Run.starting_at")?,
                8 => r.running_at = v.as_string("Run.running_at")?,
                9 => r.finished_at = v.as_string("Run.finished_at")?,
                10 => each_field(v.as_bytes("Run.status")?, |n, v| {
                    match n {
                        1 => r.status = v.as_string("RunStatus.status")?,
                        2 => r.sub_status = v.as_string("RunStatus.sub_status")?,
                        3 => r.details = v.as_string("RunStatus.details")?,
                        _ => {}
                    }
                    Ok(())
                })?,
                12 => r.federation = v.as_string("Run.federation")?,
                _ => {}
            }
            Ok(())
        })?;
        r.override_config.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(r)
    }
}

/// `ListRunsResponse`: `map<uint64, Run> run_dict = 1` (entry: key = 1, value = 2), `now = 2`.
/// The runs, by id.
pub fn decode_list_runs(buf: &[u8]) -> Result<Vec<RunInfo>, ProtoError> {
    let mut runs = Vec::new();
    each_field(buf, |n, v| {
        if n == 1 {
            let mut run = None;
            each_field(v.as_bytes("ListRunsResponse.run_dict")?, |n, v| {
                if n == 2 {
                    run = Some(RunInfo::decode(v.as_bytes("run_dict value")?)?);
                }
                Ok(())
            })?;
            runs.push(run.unwrap_or_default());
        }
        Ok(())
    })?;
    runs.sort_by_key(|r| r.run_id);
    Ok(runs)
}

/// `StopRunRequest`: `uint64 run_id = 1`.
pub fn stop_run_request(run_id: u64) -> Vec<u8> {
    let mut w = Writer::default();
    if run_id != 0 {
        w.uint64(1, run_id);
    }
    w.0
}

/// `StopRunResponse`: `bool success = 1`.
pub fn decode_stop_run(buf: &[u8]) -> Result<bool, ProtoError> {
    let mut ok = false;
    each_field(buf, |n, v| {
        if n == 1 {
            ok = v.as_bool("StopRunResponse.success")?;
        }
        Ok(())
    })?;
    Ok(ok)
}

/// `RegisterNodeRequest`: `bytes public_key = 1` (PEM SubjectPublicKeyInfo of a NIST EC key,
/// what `flwr supernode register` sends), `optional string location = 2, name = 3`.
pub fn register_node_request(public_key_pem: &[u8], name: Option<&str>) -> Vec<u8> {
    let mut w = Writer::default();
    w.bytes(1, public_key_pem);
    if let Some(n) = name {
        w.bytes(3, n.as_bytes());
    }
    w.0
}

/// `RegisterNodeResponse`: `optional uint64 node_id = 1`.
pub fn decode_register_node(buf: &[u8]) -> Result<Option<u64>, ProtoError> {
    let mut id = None;
    each_field(buf, |n, v| {
        if n == 1 {
            id = Some(v.as_u64("RegisterNodeResponse.node_id")?);
        }
        Ok(())
    })?;
    Ok(id)
}

/// `UnregisterNodeRequest`: `uint64 node_id = 1`.
pub fn unregister_node_request(node_id: u64) -> Vec<u8> {
    let mut w = Writer::default();
    if node_id != 0 {
        w.uint64(1, node_id);
    }
    w.0
}

/// A SuperNode as `ListNodesResponse` reports it (`flwr.proto.NodeInfo`, node.proto; the
/// fields kept).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeInfo {
    /// 1
    pub node_id: u64,
    /// 3
    pub owner_name: String,
    /// 4: `registered`, `online`, `offline`, `unregistered`
    pub status: String,
    /// 5
    pub registered_at: String,
    /// 8
    pub unregistered_at: Option<String>,
    /// 11: the PEM the node was registered with
    pub public_key: Vec<u8>,
    /// 13
    pub name: Option<String>,
}

impl NodeInfo {
    pub fn decode(buf: &[u8]) -> Result<Self, ProtoError> {
        let mut r = NodeInfo::default();
        each_field(buf, |n, v| {
            match n {
                1 => r.node_id = v.as_u64("NodeInfo.node_id")?,
                3 => r.owner_name = v.as_string("NodeInfo.owner_name")?,
                4 => r.status = v.as_string("NodeInfo.status")?,
                5 => r.registered_at = v.as_string("NodeInfo.registered_at")?,
                8 => r.unregistered_at = Some(v.as_string("NodeInfo.unregistered_at")?),
                11 => r.public_key = v.as_bytes("NodeInfo.public_key")?.to_vec(),
                13 => r.name = Some(v.as_string("NodeInfo.name")?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }
}

/// `ListNodesResponse`: `repeated NodeInfo nodes_info = 1`, `string now = 2`.
pub fn decode_list_nodes(buf: &[u8]) -> Result<Vec<NodeInfo>, ProtoError> {
    let mut nodes = Vec::new();
    each_field(buf, |n, v| {
        if n == 1 {
            nodes.push(NodeInfo::decode(v.as_bytes("ListNodesResponse.nodes_info")?)?);
        }
        Ok(())
    })?;
    Ok(nodes)
}
