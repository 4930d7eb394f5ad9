//! The ACPI power button: the `acpi_event` generic-netlink family, multicast group
//! `acpi_mc_group`, event `button/power` (what `onevm terminate` sends). Issue #3.
