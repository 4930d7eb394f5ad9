//! Helpers shared by the integration tests that start real Flower processes from a venv
//! (`tls_flower`, `control_flower`). Each test crate uses part of them.
#![allow(dead_code)]

pub mod flower;
