//! The probe test guest: console, PSCI, timer and SGI interrupts, a second vCPU, isolation.
#![no_std]
#![no_main]

use chroma_guest_rt::{entry, println, Boot};

entry!(main);

fn main(boot: &'static Boot) -> ! {
    println!("probe: hello from vcpu {}", chroma_guest_rt::cpu_index());
    println!("probe: dtb {:#x} bootargs {:?} gic {:?}", boot.dtb_address, boot.platform.bootargs, boot.platform.gic);
    chroma_guest_rt::power_off()
}
