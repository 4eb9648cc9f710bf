//! Test guest: pings a server, then sends it pseudo-random data over TCP.
#![no_std]
#![no_main]
fn main(_boot: &'static chroma_guest_rt::Boot) -> ! { chroma_guest_rt::power_off() }
chroma_guest_rt::entry!(main);
