//! The health port: a raw TCP listener in the supervisor loop answering `GET /health`
//! (200/503) and `GET /status` (JSON). Issue #3.
