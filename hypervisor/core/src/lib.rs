//! Portable hypervisor core: VMs, vCPUs, exits, guest device tree, vGIC model.
#![no_std]
