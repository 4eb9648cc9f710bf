//! The bounded form of the exhaustive check (queue size 2, three buffers,
//! split and packed rings):
//! the protocol as built holds, and every control yields a counterexample.

use super::*;
use std::panic;

const LIMIT: usize = 3_000_000;

fn model(ring: Ring, event_idx: bool, control: Control) -> Model {
    Model {
        line: LINE,
        within: false,
        ring,
        size: 2,
        buffers: 3,
        event_idx,
        prefetch: true,
        control,
    }
}

#[test]
fn both_rings_with_their_maintenance_hold_in_every_interleaving() {
    for (ring, event_idx) in [
        (Ring::Split, true),
        (Ring::Split, false),
        (Ring::Packed, true),
        (Ring::Packed, false),
    ] {
        let outcome = check(model(ring, event_idx, Control::None), LIMIT);
        std::println!("{}", row(&outcome));
        if let Some((what, trace)) = &outcome.counterexample {
            panic!("{what}\n  {}", trace.join("\n  "));
        }
        assert!(
            outcome.completed > 0,
            "no interleaving returned every buffer"
        );
    }
}

#[test]
fn every_control_yields_a_counterexample_trace() {
    for (ring, event_idx) in [
        (Ring::Split, true),
        (Ring::Split, false),
        (Ring::Packed, true),
        (Ring::Packed, false),
    ] {
        for control in Control::ALL.into_iter().skip(1) {
            let model = model(ring, event_idx, control);
            if !control.applies(&model) {
                continue;
            }
            let outcome = check(model, LIMIT);
            std::println!("{}", row(&outcome));
            assert!(as_expected(&outcome), "{}", row(&outcome));
        }
    }
}

/// Driver steps inside the device's operations too, with two descriptors
/// to a 32-byte line: the split ring holds with the DMA API's alignment,
/// the packed ring only through a non-cacheable alias of the ring; the
/// controls show what each of those prevents.
#[test]
fn inside_operations_alignment_and_an_uncached_packed_ring_are_what_hold() {
    for ring in [Ring::Split, Ring::Packed] {
        for control in [
            Control::None,
            Control::SharedLines,
            Control::CachedRing,
            Control::MaintenanceOff,
        ] {
            let model = Model {
                line: 32,
                within: true,
                buffers: 2,
                ..model(ring, true, control)
            };
            if !control.applies(&model) {
                continue;
            }
            let outcome = check(model, LIMIT);
            std::println!("{}", row(&outcome));
            assert!(as_expected(&outcome), "{}", row(&outcome));
        }
    }
}
