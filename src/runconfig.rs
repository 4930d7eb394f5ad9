//! The Flower run config rendered from validated variables, and run submission/following. Issue #7.
