//! Runtime for no_std test guests.
#![no_std]
