//! HTTP/1.1, one implementation for the whole program: the strict head parser and the
//! chunked coding ([`head`], [`chunked`]: the gateway's, on both of its sides) and the
//! blocking client ([`send`]: one request per connection, plain TCP or rustls 0.23, a
//! wall-clock deadline, bounded answers, no redirects followed) of the OneGate calls, the
//! Flower `/health` probe and Flower's Control API.
//!
//! One TLS stack: the client speaks rustls 0.23 with ring, like the gateway and the Flower
//! probe (issue #17: minreq 2.x linked a second one, rustls 0.21, for this alone).

pub mod chunked;
mod client;
pub mod head;

pub use client::{Endpoint, HttpError, Request, Response, mozilla_roots, read_response, request_bytes, send};

#[cfg(test)]
mod tests;
