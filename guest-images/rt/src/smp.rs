//! Starting secondary CPUs through PSCI CPU_ON.
//!
//! [`start_cpu`] records the Rust entry for a CPU index, then asks PSCI to
//! start that CPU at `_rt_secondary_entry` with the index as context id. The
//! entry code gives the CPU its own stack and vectors, and
//! `_rt_secondary_main` brings up its GIC CPU interface and calls the entry.

use crate::boot::MAX_CPUS;
use crate::shared::{self, Shared};

/// A secondary CPU's Rust entry point; gets the CPU index.
pub type SecondaryEntry = fn(usize) -> !;

/// Each CPU's entry, written by the CPU that starts it before CPU_ON.
static ENTRIES: [Shared<Option<SecondaryEntry>>; MAX_CPUS] =
    [const { Shared::new(None) }; MAX_CPUS];

extern "C" {
    /// The assembly entry point for PSCI CPU_ON (boot.rs).
    fn _rt_secondary_entry();
}

/// Why [`start_cpu`] did not start a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The DTB lists no CPU with that index (or it is beyond `MAX_CPUS`).
    NoSuchCpu,
    /// PSCI CPU_ON returned this error code.
    Psci(i64),
}

/// Starts CPU `index` (DTB order) running `entry(index)` on its own stack.
pub fn start_cpu(index: usize, entry: SecondaryEntry) -> Result<(), StartError> {
    let mpidr = crate::boot::boot()
        .and_then(|boot| boot.platform.mpidr(index))
        .filter(|_| index < MAX_CPUS && index != 0)
        .ok_or(StartError::NoSuchCpu)?;
    ENTRIES[index].set(Some(entry));
    // The entry must be visible before the new CPU runs.
    shared::publish();
    let entry_address = _rt_secondary_entry as *const () as usize as u64;
    match crate::psci::cpu_on(mpidr, entry_address, index as u64) {
        crate::psci::status::SUCCESS => Ok(()),
        error => Err(StartError::Psci(error)),
    }
}

/// Rust entry on a secondary CPU: stack and vectors are ready.
#[no_mangle]
extern "C" fn _rt_secondary_main(index: usize) -> ! {
    shared::observe();
    if let Some(gic) = crate::boot::boot().and_then(|boot| boot.platform.gic) {
        gic.init_cpu_interface();
    }
    match ENTRIES.get(index).and_then(Shared::get) {
        Some(entry) => entry(index),
        None => {
            crate::println!("rt: cpu {} started without an entry", index);
            crate::halt()
        }
    }
}
