//! The quorum decision as data: whether the successful replies of a request so far meet
//! its quorum.
//!
//! A request may have to meet up to three requirements at once, and one reply may count
//! toward some of them and not others ([`Counts`]):
//! - `required` (`w` or `r`): every replica of the key's placement, an owner or a fallback
//!   standing in for a down owner (sloppy quorum);
//! - `primaries` (`pw` or `pr`): owners only, since a fallback holds a hint, not the
//!   owner's copy;
//! - `joint` (a write during a membership change): owners of the key in the joint ring
//!   only, so that the write is on a quorum of the ring being moved to as well.
//!
//! Who counts toward what is decided by the request's plan (for a write,
//! `coordinator::plan::WritePlan::counts`, the one place that says where a fallback's
//! acknowledgement stops counting); the tally only adds up. Pure: tested without tokio,
//! a network or a store.

/// What a request must gather.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Successful replies needed (`w` or `r`).
    pub required: usize,
    /// Of which from owners (`pw` or `pr`).
    pub primaries: usize,
    /// Successful replies needed from owners in the joint ring (0 outside a change).
    pub joint: usize,
}

/// What one replica's successful reply counts toward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Toward `required`.
    pub quorum: bool,
    /// Toward `primaries`.
    pub primary: bool,
    /// Toward `joint`.
    pub joint: bool,
}

/// A requirement not met: how many replies it needed and how many counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Replies needed.
    pub required: usize,
    /// Replies that counted.
    pub answered: usize,
}

/// The successful replies of one request so far, against its [`Requirement`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckTally {
    requirement: Requirement,
    acks: usize,
    primary_acks: usize,
    joint_acks: usize,
}

impl AckTally {
    /// No reply yet.
    pub fn new(requirement: Requirement) -> Self {
        Self {
            requirement,
            acks: 0,
            primary_acks: 0,
            joint_acks: 0,
        }
    }

    /// Counts one successful reply.
    pub fn record(&mut self, counts: Counts) {
        self.acks += usize::from(counts.quorum);
        self.primary_acks += usize::from(counts.primary);
        self.joint_acks += usize::from(counts.joint);
    }

    /// Whether every requirement is met.
    pub fn is_met(&self) -> bool {
        self.shortfall().is_none()
    }

    /// The first requirement not met, if any: the current ring's (`required`, or
    /// `primaries`, which the client hears as its `w` or `r` not met, with the replies
    /// that counted toward it), then the joint ring's.
    pub fn shortfall(&self) -> Option<Shortfall> {
        let r = &self.requirement;
        if self.acks < r.required || self.primary_acks < r.primaries {
            return Some(Shortfall {
                required: r.required,
                answered: self.acks,
            });
        }
        (self.joint_acks < r.joint).then_some(Shortfall {
            required: r.joint,
            answered: self.joint_acks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Counts = Counts {
        quorum: true,
        primary: true,
        joint: false,
    };
    const FALLBACK: Counts = Counts {
        quorum: true,
        primary: false,
        joint: false,
    };

    fn requirement(required: usize, primaries: usize, joint: usize) -> Requirement {
        Requirement {
            required,
            primaries,
            joint,
        }
    }

    #[test]
    fn each_requirement_counts_its_own_replies() {
        let mut tally = AckTally::new(requirement(2, 2, 0));
        tally.record(OWNER);
        tally.record(FALLBACK);
        assert_eq!(
            tally.shortfall(),
            Some(Shortfall {
                required: 2,
                answered: 2
            }),
            "two replies, one of them an owner's: pw=2 is not met"
        );
        tally.record(OWNER);
        assert!(tally.is_met());
    }

    #[test]
    fn the_joint_ring_is_reported_once_the_current_one_is_met() {
        let mut tally = AckTally::new(requirement(1, 0, 2));
        tally.record(Counts {
            joint: true,
            ..OWNER
        });
        assert_eq!(
            tally.shortfall(),
            Some(Shortfall {
                required: 2,
                answered: 1
            })
        );
        tally.record(Counts {
            quorum: false,
            primary: false,
            joint: true,
        });
        assert!(tally.is_met());
    }

    #[test]
    fn nothing_is_met_before_the_replies_come_unless_nothing_is_required() {
        assert!(!AckTally::new(requirement(1, 0, 0)).is_met());
        assert!(AckTally::new(requirement(0, 0, 0)).is_met());
    }
}
