//! Early mounts, the root switch out of the initramfs, and the state and data disks. Issue #3.
