//! The binary VM manifest the hypervisor reads from its image.
#![no_std]
