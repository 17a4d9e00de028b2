//! The send schedule of an open loop.
//!
//! At a total rate of `rate` requests per second over `clients` connections, connection
//! `i` sends its `k`-th request at `(i + k * clients) / rate` seconds after the start: the
//! connections take turns, so together they send one request every `1 / rate` seconds,
//! evenly spaced. When a connection is still waiting for an answer at its next intended
//! time, that request's latency is measured from the intended time, not from when it was
//! finally sent: the requests a stall held back are charged the wait, as wrk2 does.
//! Measuring from the actual send (coordinated omission) would hide every stall behind the
//! one slow request.

use std::time::Duration;

/// When one connection of an open loop sends each of its requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Seconds between two sends of this connection.
    interval: f64,
    /// Seconds from the start to this connection's first send.
    phase: f64,
}

impl Schedule {
    /// The schedule of connection `connection` out of `connections`, at `rate` requests
    /// per second in total. `rate` must be positive.
    pub fn new(rate: f64, connections: usize, connection: usize) -> Self {
        let rate = rate.max(f64::MIN_POSITIVE);
        Self {
            interval: connections.max(1) as f64 / rate,
            phase: connection as f64 / rate,
        }
    }

    /// The intended send time of request `k`, from the start.
    pub fn intended(&self, k: u64) -> Duration {
        Duration::from_secs_f64(self.phase + k as f64 * self.interval)
    }

    /// How many requests are due strictly before `elapsed`.
    pub fn due_before(&self, elapsed: Duration) -> u64 {
        let seconds = elapsed.as_secs_f64();
        if seconds <= self.phase {
            return 0;
        }
        // Estimate, then settle on exactly what `intended` says, so that a sender looping
        // on `intended(k) < elapsed` and this count never disagree by a rounding.
        let mut due = ((seconds - self.phase) / self.interval).floor() as u64;
        while self.intended(due) < elapsed {
            due += 1;
        }
        while due > 0 && self.intended(due - 1) >= elapsed {
            due -= 1;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_take_turns_at_the_total_rate() {
        let (rate, connections) = (1000.0, 4);
        let mut sends: Vec<Duration> = (0..connections)
            .flat_map(|i| {
                let schedule = Schedule::new(rate, connections, i);
                (0..5).map(move |k| schedule.intended(k))
            })
            .collect();
        sends.sort();
        for (n, send) in sends.iter().enumerate() {
            let expected = Duration::from_micros(1000 * n as u64);
            let gap = send.abs_diff(expected);
            assert!(gap < Duration::from_nanos(10), "send {n} at {send:?}");
        }
    }

    #[test]
    fn due_counts_the_sends_before_a_time() {
        let schedule = Schedule::new(100.0, 2, 1); // every 20 ms from 10 ms
        assert_eq!(schedule.due_before(Duration::ZERO), 0);
        assert_eq!(schedule.due_before(Duration::from_millis(10)), 0);
        assert_eq!(schedule.due_before(Duration::from_millis(11)), 1);
        assert_eq!(schedule.due_before(Duration::from_millis(30)), 1);
        assert_eq!(schedule.due_before(Duration::from_millis(31)), 2);
        assert_eq!(schedule.due_before(Duration::from_secs(1)), 50);
        // Every connection of a one-second run sends rate / connections requests.
        let total: u64 = (0..8)
            .map(|i| Schedule::new(1000.0, 8, i).due_before(Duration::from_secs(1)))
            .sum();
        assert_eq!(total, 1000);
    }
}
