//! The appliance image manifest: Flower version, framework, use cases and app baked in. Issue #6.
