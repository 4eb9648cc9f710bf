//! The bench's split-against-packed line for cache maintenance (issue 14):
//! runs the aliasing oracle's short mode and pairs each correct maintaining
//! row of a split ring with the packed row of the same geometry, peer and
//! policy, printing and recording lines maintained per packet beside the
//! protocol minimum.

use std::process::Stdio;

use crate::bench_results::{Better, Figure, Results};
use crate::Result;

/// Prefix of the figures' names.
const PREFIX: &str = "oracle.lines_per_packet";

/// One oracle row: ring, geometry, peer, policy, maintained/pkt, minimum/pkt.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    ring: String,
    geometry: String,
    peer: String,
    policy: String,
    maintained: f64,
    minimum: f64,
}

impl Row {
    /// A correct-policy maintaining row of the oracle's table (`| ring |
    /// geometry | peer | policy | ops | packets | stale | lost | maintained
    /// (...) | used (...) | ratio | verdict |`), none for anything else.
    fn parse(line: &str) -> Option<Self> {
        let cells: Vec<&str> = line
            .trim()
            .strip_prefix('|')?
            .split('|')
            .map(str::trim)
            .collect();
        let [ring, geometry, peer, policy, _, _, stale, lost, maintained, minimum, ratio, verdict, ..] =
            cells.as_slice()
        else {
            return None;
        };
        let first = |cell: &str| cell.split_whitespace().next()?.parse::<f64>().ok();
        // Controls ("policy - change") and non-maintaining rows ("-" ratio) are not paired.
        if policy.contains(" - ")
            || *ratio == "-"
            || *verdict != "ok"
            || *stale != "0"
            || *lost != "0"
        {
            return None;
        }
        Some(Row {
            ring: ring.split_whitespace().next()?.to_owned(),
            geometry: (*geometry).to_owned(),
            peer: (*peer).to_owned(),
            policy: (*policy).to_owned(),
            maintained: first(maintained)?,
            minimum: first(minimum)?,
        })
    }
}

/// Pairs of (split, packed) rows of the same geometry, peer and policy.
fn pairs(rows: &[Row]) -> Vec<(&Row, &Row)> {
    rows.iter()
        .filter(|r| r.ring == "split")
        .filter_map(|s| {
            rows.iter()
                .find(|p| {
                    p.ring == "packed"
                        && p.geometry == s.geometry
                        && p.peer == s.peer
                        && p.policy == s.policy
                })
                .map(|p| (s, p))
        })
        .collect()
}

/// A name part from a label: lower case, runs of other characters as `_`.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

/// Runs `oracle --quick`, prints split against packed and records the figures.
pub fn run(results: &mut Results) -> Result<()> {
    let mut command = crate::testing::oracle_command(&["--quick".to_owned()]);
    let output = command
        .stdout(Stdio::piped())
        .output()
        .map_err(|error| format!("the oracle: cannot start it: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "the oracle failed ({}); run `cargo xtask oracle --quick`",
            crate::process::describe_status(output.status)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<Row> = text.lines().filter_map(Row::parse).collect();
    let pairs = pairs(&rows);
    if pairs.is_empty() {
        return Err("the oracle printed no split/packed pair of maintaining rows".to_owned());
    }
    println!(
        "cache lines maintained per packet, split against packed rings (oracle --quick; packed rings under a \
         maintaining policy reached through their Non-cacheable alias):"
    );
    for (split, packed) in pairs {
        println!(
            "  {} / {} / {}: split {:.2} (minimum {:.2}), packed {:.2} (minimum {:.2})",
            split.geometry,
            split.peer,
            split.policy,
            split.maintained,
            split.minimum,
            packed.maintained,
            packed.minimum
        );
        results.push(
            Figure::new(
                format!(
                    "{PREFIX}.{}.{}.{}",
                    slug(&split.geometry),
                    slug(&split.peer),
                    slug(&split.policy)
                ),
                split.maintained,
                "lines/packet",
                Better::Lower,
            )
            .peer("packed", packed.maintained)
            .peer("minimum", split.minimum)
            .peer("packed minimum", packed.minimum),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT: &str = "| split | PIPT 64B 4w 32K | non-coherent DMA | Maintain | 1000000 | 507730 | 0 | 0 | 7.94 (4.08+2.92+0.94) | 7.94 (4.08+2.92+0.94) | 1.000 | ok |";
    const PACKED: &str = "| packed (NC) | PIPT 64B 4w 32K | non-coherent DMA | Maintain | 1000000 | 593928 | 0 | 0 | 3.35 (1.21+1.21+0.92) | 3.35 (1.21+1.21+0.92) | 1.000 | ok |";

    #[test]
    fn maintaining_rows_pair_split_with_packed_and_controls_do_not() {
        let rows: Vec<Row> = [
            SPLIT,
            PACKED,
            "| split | PIPT 64B 4w 32K | guest WB | Nothing | 1000000 | 507730 | 0 | 0 | 0.00 (0.00+0.00+0.00) | 7.94 (4.08+2.92+0.94) | - | ok |",
            "| split | PIPT 64B 4w 32K | non-coherent DMA | Maintain - maint OFF | 1000000 | 507730 | 3459048 | 123234 | 0.00 (0.00+0.00+0.00) | 7.94 (4.08+2.92+0.94) | - | ok (caught) |",
            "| ring | geometry | peer | policy |",
        ]
        .iter()
        .filter_map(|l| Row::parse(l))
        .collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let pairs = pairs(&rows);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].0.maintained, pairs[0].1.maintained), (7.94, 3.35));
        assert_eq!(pairs[0].1.ring, "packed");
        assert_eq!(slug("PIPT 64B 4w 32K"), "pipt_64b_4w_32k");
    }
}
