//! The switch's path for GSO frames ([`crate::gso`]): whole to a port that
//! takes them, in one copy from the sender's memory; cut into segments for
//! any other, each segment built in the switch's buffer and delivered (or
//! queued) as an ordinary frame.
//!
//! A GSO frame is never queued whole (an egress slot holds one Ethernet
//! frame): if its receiver has no buffers, or frames wait before it, the
//! sender is held back as for a full egress queue; once the receiver has
//! taken nothing for [`SwitchConfig::stall_ticks`](super::SwitchConfig),
//! the frame is cut into its egress queue instead, where the usual stall
//! rules apply.

use super::{count_rx_drop, pair, Outcome, Switch};
use crate::gso::{self, GsoFrame, MAX_GSO_HEADERS_LEN};
use crate::port::{NetHeader, Port, RxPush, MIN_FRAME_LEN};

impl Switch {
    /// Forwards a held GSO frame from `src` of `len` bytes: to `target`,
    /// or flooded to every port that may receive `dst_mac`.
    #[allow(clippy::too_many_arguments)] // one frame's whole state
    pub(super) fn forward_gso<P: Port>(
        &mut self,
        ports: &mut [P],
        src: usize,
        target: Option<usize>,
        dst_mac: &[u8; 6],
        header: NetHeader,
        len: usize,
        now: u64,
    ) -> Outcome {
        let n = ports.len().min(self.config.port_count);
        // The headers every segment gets: checked again here on the
        // switch's own copy (the guest may have changed its buffers since
        // the port checked them), the Ethernet header as the switch decided.
        let mut headers = [0u8; MAX_GSO_HEADERS_LEN];
        let count = len.min(MAX_GSO_HEADERS_LEN);
        headers[..MIN_FRAME_LEN].copy_from_slice(&self.frame[..MIN_FRAME_LEN]);
        let parsed = if ports[src].read_held_at(MIN_FRAME_LEN, &mut headers[MIN_FRAME_LEN..count]) {
            gso::parse(&header, &headers[..count], len).ok()
        } else {
            None
        };
        let Some(frame) = parsed else {
            self.counters[src].tx_errors += 1;
            return Outcome::Taken;
        };
        let headers = &headers[..frame.headers_len];
        let outcome = match target {
            Some(dst) if dst >= n || !self.may_receive(dst, dst_mac) => Outcome::Taken,
            Some(dst) => self.deliver_gso(ports, src, dst, &header, &frame, headers, true, now),
            None => {
                // Flooded: to each receiver on its own (whole or cut),
                // never held back (the others may have it already).
                for dst in 0..n {
                    if dst != src && self.may_receive(dst, dst_mac) {
                        let _ =
                            self.deliver_gso(ports, src, dst, &header, &frame, headers, false, now);
                    }
                }
                Outcome::Taken
            }
        };
        if outcome == Outcome::Taken {
            self.counters[src].tx_gso_segments += frame.segment_count() as u64;
        }
        outcome
    }

    /// Whether `dst` has taken no frame for [`SwitchConfig::stall_ticks`]
    /// since it first blocked a frame (see the module docs).
    fn blocked_too_long(&self, dst: usize, now: u64) -> bool {
        self.full_since[dst].is_some_and(|t| now.saturating_sub(t) >= self.config.stall_ticks)
    }

    /// Gives the frame back to `src` for a receiver that cannot take it
    /// now, if `may_hold` and `dst` has not blocked for too long.
    fn hold_back<P: Port>(
        &mut self,
        ports: &mut [P],
        src: usize,
        dst: usize,
        may_hold: bool,
        now: u64,
    ) -> bool {
        if may_hold && !self.blocked_too_long(dst, now) && ports[src].unpoll_tx() {
            self.full_since[dst].get_or_insert(now);
            return true;
        }
        false
    }

    /// Delivers a GSO frame to `dst`: whole if it takes it, else cut.
    #[allow(clippy::too_many_arguments)] // one frame's whole state
    fn deliver_gso<P: Port>(
        &mut self,
        ports: &mut [P],
        src: usize,
        dst: usize,
        header: &NetHeader,
        frame: &GsoFrame,
        headers: &[u8],
        may_hold: bool,
        now: u64,
    ) -> Outcome {
        if ports[dst].accepts_gso(header.gso_type) {
            // Behind frames already waiting it waits too (order).
            if self.egress[dst].count == 0 {
                let whole = frame.receive_header(header);
                let mut eth = [0u8; MIN_FRAME_LEN];
                eth.copy_from_slice(&headers[..MIN_FRAME_LEN]);
                let result =
                    pair(ports, dst, src).and_then(|(d, s)| d.push_rx_held(&whole, &eth, s));
                let c = &mut self.counters[dst];
                match result {
                    Some(RxPush::Delivered) => {
                        c.rx_packets += 1;
                        c.rx_bytes += frame.frame_len as u64;
                        c.rx_gso += 1;
                        c.rx_gso_segments += frame.segment_count() as u64;
                        self.full_since[dst] = None;
                        return Outcome::Taken;
                    }
                    Some(RxPush::Dropped(reason)) => {
                        count_rx_drop(c, reason);
                        return Outcome::Taken;
                    }
                    // This pair cannot pass a held frame on: cut it.
                    None => return self.cut_to(ports, src, dst, frame, headers, may_hold, now),
                    Some(RxPush::NoBuffers) => {}
                }
            }
            if self.hold_back(ports, src, dst, may_hold, now) {
                return Outcome::HeldBack;
            }
        }
        self.cut_to(ports, src, dst, frame, headers, may_hold, now)
    }

    /// Cuts a GSO frame into segments for `dst` (§5.1.6.2: what a device
    /// without the receiver's GUEST_TSO* does), each delivered or queued
    /// as an ordinary frame, with a partial checksum if `dst` takes one.
    /// Held back whole if frames wait for `dst` and its egress queue has no
    /// room for every segment.
    #[allow(clippy::too_many_arguments)] // one frame's whole state
    fn cut_to<P: Port>(
        &mut self,
        ports: &mut [P],
        src: usize,
        dst: usize,
        frame: &GsoFrame,
        headers: &[u8],
        may_hold: bool,
        now: u64,
    ) -> Outcome {
        let segment_count = frame.segment_count();
        let queue = &self.egress[dst];
        if queue.count > 0
            && queue.capacity() - queue.count < segment_count
            && self.hold_back(ports, src, dst, may_hold, now)
        {
            return Outcome::HeldBack;
        }
        self.counters[dst].rx_gso_cut += 1;
        let partial = ports[dst].accepts_partial_checksum();
        let headers_len = frame.headers_len;
        for index in 0..segment_count {
            let (at, payload_len) = frame.segment_payload(index);
            let segment_len = headers_len + payload_len;
            let segment = &mut self.frame[..segment_len];
            segment[..headers_len].copy_from_slice(headers);
            let built = ports[src]
                .read_held_at(at, &mut segment[headers_len..])
                .then(|| frame.segment(index, segment, partial))
                .flatten();
            let Some(segment_header) = built else {
                self.counters[src].tx_errors += 1;
                return Outcome::Taken;
            };
            let mut copied = true;
            let _ = self.deliver(
                ports,
                src,
                dst,
                &segment_header,
                segment_len,
                &mut copied,
                false,
                now,
            );
        }
        Outcome::Taken
    }
}
