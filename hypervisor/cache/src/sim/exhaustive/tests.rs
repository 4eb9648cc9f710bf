//! The bounded form of the exhaustive check (queue size 2, three buffers):
//! the protocol as built holds, and every control yields a counterexample.

use super::*;
use std::panic;

const LIMIT: usize = 3_000_000;

fn model(event_idx: bool, control: Control) -> Model {
    Model {
        size: 2,
        buffers: 3,
        event_idx,
        prefetch: true,
        control,
    }
}

#[test]
fn the_split_ring_with_its_maintenance_holds_in_every_interleaving() {
    for event_idx in [true, false] {
        let outcome = check(model(event_idx, Control::None), LIMIT);
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
    for event_idx in [true, false] {
        for control in Control::ALL.into_iter().skip(1) {
            if !control.applies(event_idx) {
                continue;
            }
            let outcome = check(model(event_idx, control), LIMIT);
            std::println!("{}", row(&outcome));
            assert!(as_expected(&outcome), "{}", row(&outcome));
        }
    }
}
