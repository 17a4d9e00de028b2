//! Failure detection: a phi-accrual detector per peer (Hayashibara et al., 2004, as used by
//! Cassandra and Akka).
//!
//! Every probe round each node asks each peer `Hello`. The detector keeps the intervals
//! between successful answers and turns the time since the last one into a suspicion
//! level, phi = -log10(P(a gap this long | the intervals seen)). Assuming exponentially
//! distributed gaps, as Cassandra does, phi = elapsed / mean * log10(e). A peer is down
//! when phi passes the threshold. With probes every 500 ms and the default threshold of 3,
//! a peer that stops answering (paused, partitioned, overloaded) is down after about 3.5 s,
//! and is up again at its first answer.
//!
//! A refused connection is certain, not statistical: nothing listens at the address, so the
//! peer is down at once. That is what makes a killed node drop out immediately while a
//! paused one (whose kernel still accepts connections) takes the detector's interval.
//!
//! The detector is a pure state machine stepped with explicit instants, so it is tested
//! without clocks or sleeps.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many intervals the mean is taken over.
const WINDOW: usize = 100;

/// Settings of the detector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectorOptions {
    /// Suspicion level above which a peer is down.
    pub phi_threshold: f64,
    /// The probe interval: the mean gap is never taken as smaller, so a burst of quick
    /// answers cannot make the detector jumpy.
    pub min_mean: Duration,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            phi_threshold: 3.0,
            min_mean: Duration::from_millis(500),
        }
    }
}

/// What the detector knows of one peer.
#[derive(Clone, Debug, Default)]
pub struct PhiDetector {
    last_answer: Option<Instant>,
    intervals: VecDeque<f64>,
    refused: bool,
}

impl PhiDetector {
    /// Records an answer at `now`.
    pub fn answered(&mut self, now: Instant) {
        if let Some(last) = self.last_answer {
            if self.intervals.len() == WINDOW {
                self.intervals.pop_front();
            }
            self.intervals
                .push_back(now.saturating_duration_since(last).as_secs_f64());
        }
        self.last_answer = Some(now);
        self.refused = false;
    }

    /// Records that the peer refused the connection: nothing listens there.
    pub fn refused(&mut self) {
        self.refused = true;
    }

    /// The suspicion level at `now` (infinite before the first answer or after a refusal).
    pub fn phi(&self, now: Instant, options: &DetectorOptions) -> f64 {
        let Some(last) = self.last_answer else {
            return f64::INFINITY;
        };
        if self.refused {
            return f64::INFINITY;
        }
        let observed = if self.intervals.is_empty() {
            0.0
        } else {
            self.intervals.iter().sum::<f64>() / self.intervals.len() as f64
        };
        let mean = observed.max(options.min_mean.as_secs_f64());
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        elapsed / mean * std::f64::consts::LOG10_E
    }

    /// Whether the peer counts as up at `now`.
    pub fn is_up(&self, now: Instant, options: &DetectorOptions) -> bool {
        self.phi(now, options) < options.phi_threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_peer_is_down_until_it_first_answers() {
        let d = PhiDetector::default();
        assert!(!d.is_up(Instant::now(), &DetectorOptions::default()));
    }

    #[test]
    fn regular_answers_keep_a_peer_up_and_silence_brings_it_down_in_seconds() {
        let options = DetectorOptions::default();
        let start = Instant::now();
        let mut d = PhiDetector::default();
        for i in 0..20 {
            d.answered(start + ms(500 * i));
        }
        let last = start + ms(500 * 19);
        assert!(d.is_up(last + ms(1000), &options));
        assert!(d.is_up(last + ms(3000), &options));
        assert!(
            !d.is_up(last + ms(4000), &options),
            "phi {}",
            d.phi(last + ms(4000), &options)
        );
        d.answered(last + ms(5000));
        assert!(
            d.is_up(last + ms(5000), &options),
            "up again at the first answer"
        );
    }

    #[test]
    fn a_refused_connection_is_down_at_once() {
        let options = DetectorOptions::default();
        let now = Instant::now();
        let mut d = PhiDetector::default();
        d.answered(now);
        assert!(d.is_up(now, &options));
        d.refused();
        assert!(!d.is_up(now, &options));
        d.answered(now + ms(10));
        assert!(d.is_up(now + ms(10), &options));
    }

    #[test]
    fn phi_grows_with_silence_and_shrinks_with_slower_habits() {
        let options = DetectorOptions::default();
        let start = Instant::now();
        let mut fast = PhiDetector::default();
        let mut slow = PhiDetector::default();
        for i in 0..10 {
            fast.answered(start + ms(500 * i));
            slow.answered(start + ms(2000 * i));
        }
        let probe = |d: &PhiDetector, last: Instant, after: u64| d.phi(last + ms(after), &options);
        let fast_last = start + ms(4500);
        let slow_last = start + ms(18000);
        assert!(probe(&fast, fast_last, 2000) > probe(&fast, fast_last, 1000));
        assert!(probe(&slow, slow_last, 2000) < probe(&fast, fast_last, 2000));
    }
}
