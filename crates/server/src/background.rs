//! A node's background work in one shape: each mechanism (liveness probes and gossip,
//! hint replay, transfers, anti-entropy, the tombstone reaper, the metrics' upkeep) is a
//! round run every period until the node stops, started and stopped together.
//!
//! What differs between them is said where each is started, not in a loop of its own:
//! its period, whether its first round waits one period, and what a stop does to a round
//! under way ([`AtStop`]). A long round that is a sequence of merges (a transfer, an
//! anti-entropy exchange) is cut, so that it never holds up a shutdown; a short one
//! finishes. Stopping sends one signal and waits for every task.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// What a stop does to a round under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtStop {
    /// The round is dropped where it is: each of its steps is a merge, safe to cut.
    Cut,
    /// The round finishes, then the task stops.
    Finish,
}

/// When rounds run.
#[derive(Clone, Copy, Debug)]
pub struct Every {
    /// The time from the start of one round to the next (a late round delays the next;
    /// missed ones are not made up).
    pub period: Duration,
    /// What a stop does to a round under way.
    pub at_stop: AtStop,
    /// Whether the first round waits one period, rather than running at once.
    pub first_after_period: bool,
}

impl Every {
    /// A round at once, then one every `period`; a stop lets a round under way finish.
    pub fn finishing(period: Duration) -> Self {
        Self {
            period,
            at_stop: AtStop::Finish,
            first_after_period: false,
        }
    }

    /// A round at once, then one every `period`; a stop cuts a round under way.
    pub fn cut_at_stop(period: Duration) -> Self {
        Self {
            at_stop: AtStop::Cut,
            ..Self::finishing(period)
        }
    }

    /// The first round one period from now.
    #[must_use]
    pub fn after_a_period(mut self) -> Self {
        self.first_after_period = true;
        self
    }
}

/// The background tasks of a node.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// No task yet.
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// What a task with a loop of its own watches to stop (`changed` resolves at stop).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Runs `task` until it ends; [`Background::stop`] waits for it.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Runs `round` as `every` says until the node stops.
    pub fn every<F, R>(&mut self, every: Every, round: F)
    where
        F: FnMut() -> R + Send + 'static,
        R: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stopping();
        self.spawn(run_every(every, stop, round));
    }

    /// Tells every task to stop and waits until they have.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn run_every<F, R>(every: Every, mut stop: watch::Receiver<bool>, mut round: F)
where
    F: FnMut() -> R,
    R: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(every.period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if every.first_after_period {
        // An interval's first tick is at once.
        interval.tick().await;
    }
    loop {
        match every.at_stop {
            AtStop::Cut => tokio::select! {
                () = async {
                    interval.tick().await;
                    round().await;
                } => {}
                _ = stop.changed() => return,
            },
            AtStop::Finish => tokio::select! {
                _ = interval.tick() => round().await,
                _ = stop.changed() => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn counting(rounds: &Arc<AtomicUsize>) -> impl FnMut() -> std::future::Ready<()> {
        let rounds = Arc::clone(rounds);
        move || {
            rounds.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_come_every_period_and_the_first_at_once_or_after_one() {
        let (now, later) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut background = Background::new();
        background.every(Every::finishing(Duration::from_secs(1)), counting(&now));
        background.every(
            Every::cut_at_stop(Duration::from_secs(1)).after_a_period(),
            counting(&later),
        );
        tokio::time::sleep(Duration::from_millis(3500)).await;
        background.stop().await;
        // At 0, 1, 2 and 3 s; the other at 1, 2 and 3 s.
        assert_eq!(now.load(Ordering::SeqCst), 4);
        assert_eq!(later.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cuts_or_lets_finish_the_round_under_way() {
        let finished = Arc::new(AtomicUsize::new(0));
        let mut background = Background::new();
        for at_stop in [AtStop::Cut, AtStop::Finish] {
            let finished = Arc::clone(&finished);
            let every = Every {
                period: Duration::from_secs(60),
                at_stop,
                first_after_period: false,
            };
            background.every(every, move || {
                let finished = Arc::clone(&finished);
                async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        background.stop().await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "only the finishing round ended"
        );
    }
}
