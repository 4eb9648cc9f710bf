//! Cache geometry, maintenance, colouring and the aliasing simulator.
#![no_std]
