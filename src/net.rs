//! Network configuration from `ETHx_*` over rtnetlink: addresses, routes, MTU, loopback,
//! resolv.conf, hosts, hostname. Issue #3.
