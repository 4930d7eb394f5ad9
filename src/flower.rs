//! Flower command lines for the pinned version and the readiness probe on `/health`. Issue #6.
