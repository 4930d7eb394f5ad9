//! TLS material: the SuperLink CA and server certificate (rcgen), persistence and reuse,
//! operator certificates validated with rustls/webpki, SuperNode trust. Issue #5.
