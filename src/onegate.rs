//! OneGate client: READY and attribute publication, `GET /vm`, `/service`, `/vms/:id`;
//! SuperNode discovery of the SuperLink. Issue #4.
