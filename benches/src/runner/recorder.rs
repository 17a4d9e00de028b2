//! What one client saw during a run: latencies, answers and errors.
//!
//! Each client task owns a [`Recorder`] and no lock is taken on the request path; the
//! recorders are merged once the run is over. Latencies go into HDR histograms
//! (microseconds, 3 significant digits, up to a minute), so merging is exact and the
//! percentiles of the merged run are those of all its requests. Only successful requests
//! are timed; failed ones are counted by kind beside them.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::targets::{ErrorKind, Found};
use crate::workloads::OpKind;

/// The longest latency a histogram holds, in microseconds; longer ones are clamped.
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// A new latency histogram.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
        .expect("constant bounds: 1 <= low, 2 * low <= high, 3 significant digits")
}

/// Latencies and counts of one client (or, merged, of a run).
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Every successful operation.
    pub all: Histogram<u64>,
    /// Successful operations by kind.
    pub per_op: BTreeMap<OpKind, Histogram<u64>>,
    /// Failed operations by kind of error.
    pub errors: BTreeMap<String, u64>,
    /// What successful reads found (`found`, `not_found`, `siblings`).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Open loop: requests due before the end that were never sent (the target could not
    /// keep up); counted as errors of kind `not_sent`.
    pub not_sent: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            all: histogram(),
            per_op: BTreeMap::new(),
            errors: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            not_sent: 0,
        }
    }
}

impl Recorder {
    /// Records one operation that took `latency`.
    pub fn record(
        &mut self,
        op: OpKind,
        latency: Duration,
        result: &Result<Option<Found>, ErrorKind>,
    ) {
        match result {
            Ok(found) => {
                let micros = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                self.all.saturating_record(micros);
                self.per_op
                    .entry(op)
                    .or_insert_with(histogram)
                    .saturating_record(micros);
                if let Some(found) = found {
                    *self.outcomes.entry(found.name()).or_default() += 1;
                }
            }
            Err(kind) => *self.errors.entry(kind.0.clone()).or_default() += 1,
        }
    }

    /// Successful operations.
    pub fn ok(&self) -> u64 {
        self.all.len()
    }

    /// Failed operations, `not_sent` included.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.not_sent
    }

    /// Adds another recorder's counts and latencies to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.all.add(&other.all);
        for (op, histogram) in &other.per_op {
            let _ = self
                .per_op
                .entry(*op)
                .or_insert_with(self::histogram)
                .add(histogram);
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        for (outcome, count) in &other.outcomes {
            *self.outcomes.entry(outcome).or_default() += count;
        }
        self.not_sent += other.not_sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_add_up() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for ms in 1..=100 {
            a.record(OpKind::Write, Duration::from_millis(ms), &Ok(None));
        }
        b.record(
            OpKind::Read,
            Duration::from_millis(500),
            &Ok(Some(Found::Value)),
        );
        b.record(
            OpKind::Read,
            Duration::from_millis(1),
            &Err(ErrorKind("timeout".into())),
        );
        b.not_sent = 2;
        a.merge(&b);
        assert_eq!(a.ok(), 101);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.errors.get("timeout"), Some(&1));
        assert_eq!(a.outcomes.get("found"), Some(&1));
        assert_eq!(a.per_op[&OpKind::Write].len(), 100);
        assert_eq!(a.per_op[&OpKind::Read].len(), 1);
        let p50 = a.all.value_at_quantile(0.5);
        assert!((50_000..=51_100).contains(&p50), "p50 {p50} us");
        assert!(a.all.max() >= 499_000);
    }
}
