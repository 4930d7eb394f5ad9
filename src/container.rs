//! The OCI bundle (config.json) and the runc lifecycle: create/start, kill, delete. Issue #6.
