//! Shutdown and power-off: stop the workload with a grace period, TERM then KILL the rest,
//! reap, sync, unmount, `reboot(RB_POWER_OFF)`; the panic hook that powers off. Issue #3.
