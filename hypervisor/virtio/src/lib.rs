//! virtio-mmio transport, split virtqueues, virtio-net device and switch.
#![no_std]
