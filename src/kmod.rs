//! Kernel module coldplug without udev: `modalias` files matched against `modules.alias`,
//! loaded with `finit_module` in `modules.dep` order. Issue #3.
