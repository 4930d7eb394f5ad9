//! The table of every context variable flower-init reads: names, aliases, roles, defaults, rules
//! and documentation. The README reference is generated from it. Issue #2.
