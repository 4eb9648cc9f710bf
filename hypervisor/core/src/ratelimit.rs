//! A counter that lets the first few repeats of a guest-caused message
//! through and then only every 2^k-th one, so a hostile guest cannot flood
//! the console (STYLE E3).

/// How many of a kind of event to report.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateLimit {
    count: u64,
}

impl RateLimit {
    /// Reports in full up to this many events.
    pub const BURST: u64 = 5;

    /// Counts one event; true if it should be reported.
    pub fn allow(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        self.count <= Self::BURST || self.count.is_power_of_two()
    }

    /// Events counted so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_thins_out() {
        let mut r = RateLimit::default();
        let allowed: Vec<u64> = (1..=100u64).filter(|_| r.allow()).collect();
        assert_eq!(allowed, vec![1, 2, 3, 4, 5, 8, 16, 32, 64]);
    }
}
