//! Boards: memory maps, console, interrupt controller, timer.
#![no_std]
