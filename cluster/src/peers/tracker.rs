//! The decisions of one replicated call, without I/O: which replicas to ask first,
//! when one more is asked (a failure's replacement, a hedge), and when the call has met
//! its quorum or can no longer meet it. [`super::Peers::replicated`] drives it; the
//! tests below go through every combination without a process.
//!
//! Candidates are indices into an order the caller chose (owners first, fallbacks
//! after). Each is asked at most once, in that order.

/// When a slow call gets company.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hedge {
    /// Never (writes: every copy asked for is asked from the start).
    Never,
    /// The first time the hedge delay passes without the quorum: one more replica (chunk
    /// reads: at most one extra copy of the bytes in flight because of slowness).
    Once,
    /// Every time the hedge delay passes without the quorum (record reads: small
    /// answers, and one hung replica must never stall a read).
    Each,
}

/// What a replicated call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Replicas that may be asked, in order.
    pub candidates: usize,
    /// Asked at once.
    pub first: usize,
    /// Successes that make the quorum.
    pub need: usize,
    /// Hedging policy.
    pub hedge: Hedge,
}

impl Plan {
    /// A write: `first` copies at once, done when `need` are durable, a failed copy
    /// replaced by the next candidate.
    pub fn write(candidates: usize, first: usize, need: usize) -> Self {
        Self {
            candidates,
            first,
            need,
            hedge: Hedge::Never,
        }
    }

    /// A quorum read of `need` answers: that many asked at once, one more each time the
    /// hedge delay passes.
    pub fn quorum_read(candidates: usize, need: usize) -> Self {
        Self {
            candidates,
            first: need,
            need,
            hedge: Hedge::Each,
        }
    }

    /// A read of one answer (a chunk's bytes): one replica, a second if it is slow.
    pub fn hedged_read(candidates: usize) -> Self {
        Self {
            candidates,
            first: 1,
            need: 1,
            hedge: Hedge::Once,
        }
    }
}

/// Where a replicated call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Still waiting for answers.
    Pending,
    /// `need` successes.
    Met,
    /// The quorum can no longer be met (too few candidates left).
    Failed,
}

/// The state of one replicated call.
#[derive(Clone, Debug)]
pub struct Tracker {
    plan: Plan,
    /// The next candidate not yet asked.
    next: usize,
    inflight: usize,
    ok: usize,
    hedged: bool,
}

impl Tracker {
    /// A call that has asked no one yet.
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            next: 0,
            inflight: 0,
            ok: 0,
            hedged: false,
        }
    }

    /// The candidates to ask at once (at least one when there is any, so that a call
    /// with a quorum of 0 still asks someone).
    pub fn start(&mut self) -> Vec<usize> {
        let n = self.plan.first.max(1);
        (0..n).filter_map(|_| self.ask_next()).collect()
    }

    fn ask_next(&mut self) -> Option<usize> {
        (self.next < self.plan.candidates).then(|| {
            self.next += 1;
            self.inflight += 1;
            self.next - 1
        })
    }

    /// Where the call stands now.
    pub fn verdict(&self) -> Verdict {
        if self.ok >= self.plan.need.max(1) {
            Verdict::Met
        } else if self.ok + self.inflight + (self.plan.candidates - self.next)
            < self.plan.need.max(1)
        {
            Verdict::Failed
        } else {
            Verdict::Pending
        }
    }

    /// A replica answered with success.
    pub fn succeeded(&mut self) -> Verdict {
        self.inflight = self.inflight.saturating_sub(1);
        self.ok += 1;
        self.verdict()
    }

    /// A replica failed: the next candidate to ask in its place, if any, and the
    /// verdict after it.
    pub fn failed(&mut self) -> (Option<usize>, Verdict) {
        self.inflight = self.inflight.saturating_sub(1);
        let replacement = match self.verdict() {
            Verdict::Pending => self.ask_next(),
            _ => None,
        };
        (replacement, self.verdict())
    }

    /// Whether a hedge timer should run now.
    pub fn hedge_armed(&self) -> bool {
        let allowed = match self.plan.hedge {
            Hedge::Never => false,
            Hedge::Once => !self.hedged,
            Hedge::Each => true,
        };
        allowed && self.next < self.plan.candidates && self.verdict() == Verdict::Pending
    }

    /// The hedge delay passed without the quorum: the candidate to ask too, if any.
    pub fn hedge(&mut self) -> Option<usize> {
        if !self.hedge_armed() {
            return None;
        }
        self.hedged = true;
        self.ask_next()
    }

    /// Successes so far.
    pub fn successes(&self) -> usize {
        self.ok
    }

    /// Calls asked and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.inflight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_asks_its_copies_at_once_and_is_done_at_the_quorum() {
        let mut t = Tracker::new(Plan::write(5, 3, 2));
        assert_eq!(t.start(), vec![0, 1, 2]);
        assert!(!t.hedge_armed(), "writes never hedge");
        assert_eq!(t.hedge(), None);
        assert_eq!(t.succeeded(), Verdict::Pending);
        assert_eq!(t.succeeded(), Verdict::Met);
        assert_eq!(t.in_flight(), 1, "the third copy goes on");
    }

    #[test]
    fn a_failed_copy_is_replaced_by_the_next_candidate() {
        let mut t = Tracker::new(Plan::write(5, 3, 2));
        t.start();
        assert_eq!(t.failed(), (Some(3), Verdict::Pending));
        assert_eq!(t.failed(), (Some(4), Verdict::Pending));
        assert_eq!(t.succeeded(), Verdict::Pending);
        // One in flight (4) and one more success needed: still possible.
        assert_eq!(t.failed(), (None, Verdict::Pending));
        assert_eq!(t.succeeded(), Verdict::Met);
    }

    #[test]
    fn a_write_fails_as_soon_as_the_quorum_is_out_of_reach() {
        // N=3, W=2, no fallbacks: two failures decide it while the third is in flight.
        let mut t = Tracker::new(Plan::write(3, 3, 2));
        t.start();
        assert_eq!(t.failed(), (None, Verdict::Pending));
        assert_eq!(t.failed(), (None, Verdict::Failed));
        assert_eq!(t.in_flight(), 1);
        // A success arriving late does not meet it.
        assert_eq!(t.succeeded(), Verdict::Failed);
    }

    #[test]
    fn every_outcome_of_three_copies_with_a_quorum_of_two() {
        // Every order of answers from 3 owners and 0..=2 fallbacks: the verdict is Met
        // exactly when two succeed, Failed exactly when that became impossible, and
        // no candidate is asked twice.
        for fallbacks in 0..=2usize {
            let n = 3 + fallbacks;
            for outcomes in 0u32..(1 << n) {
                let mut t = Tracker::new(Plan::write(n, 3, 2));
                let mut pending: Vec<usize> = t.start();
                let mut asked = pending.clone();
                let mut verdict = Verdict::Pending;
                while let Some(i) = pending.pop() {
                    if outcomes & (1 << i) != 0 {
                        verdict = t.succeeded();
                    } else {
                        let (r, v) = t.failed();
                        verdict = v;
                        if let Some(r) = r {
                            assert!(!asked.contains(&r));
                            asked.push(r);
                            pending.insert(0, r);
                        }
                    }
                    if verdict != Verdict::Pending {
                        break;
                    }
                }
                let asked_ok = asked.iter().filter(|&&i| outcomes & (1 << i) != 0).count();
                let can_meet = (outcomes.count_ones() as usize) >= 2;
                match verdict {
                    Verdict::Met => assert!(asked_ok >= 2),
                    Verdict::Failed => assert!(!can_meet, "{fallbacks} {outcomes:b}"),
                    Verdict::Pending => panic!("undecided with nothing in flight"),
                }
                if can_meet {
                    assert_eq!(verdict, Verdict::Met, "{fallbacks} {outcomes:b}");
                }
            }
        }
    }

    #[test]
    fn a_hedged_read_asks_one_more_once() {
        let mut t = Tracker::new(Plan::hedged_read(3));
        assert_eq!(t.start(), vec![0]);
        assert!(t.hedge_armed());
        assert_eq!(t.hedge(), Some(1));
        assert!(!t.hedge_armed(), "a chunk read hedges once");
        assert_eq!(t.hedge(), None);
        // The hedge wins; the first is still in flight and ignored.
        assert_eq!(t.succeeded(), Verdict::Met);
    }

    #[test]
    fn a_failed_read_moves_on_and_fails_when_no_replica_is_left() {
        let mut t = Tracker::new(Plan::hedged_read(2));
        t.start();
        assert_eq!(t.failed(), (Some(1), Verdict::Pending));
        assert!(!t.hedge_armed(), "nothing left to hedge to");
        assert_eq!(t.failed(), (None, Verdict::Failed));
    }

    #[test]
    fn a_read_with_hedge_and_failure_in_flight_waits_for_the_last() {
        let mut t = Tracker::new(Plan::hedged_read(2));
        t.start();
        assert_eq!(t.hedge(), Some(1));
        // The first fails while the hedge is in flight: nothing to replace it with, and
        // the hedge may still answer.
        assert_eq!(t.failed(), (None, Verdict::Pending));
        assert_eq!(t.succeeded(), Verdict::Met);
    }

    #[test]
    fn a_quorum_read_hedges_every_delay_until_it_has_its_answers() {
        let mut t = Tracker::new(Plan::quorum_read(5, 2));
        assert_eq!(t.start(), vec![0, 1]);
        assert_eq!(t.hedge(), Some(2));
        assert_eq!(t.hedge(), Some(3));
        assert_eq!(t.succeeded(), Verdict::Pending);
        assert_eq!(t.hedge(), Some(4));
        assert!(!t.hedge_armed());
        assert_eq!(t.succeeded(), Verdict::Met);
        assert!(!t.hedge_armed(), "met: no more hedges");
        assert_eq!(t.in_flight(), 3);
    }

    #[test]
    fn no_candidates_fail_at_once_and_a_quorum_of_zero_still_asks_one() {
        let mut t = Tracker::new(Plan::hedged_read(0));
        assert!(t.start().is_empty());
        assert_eq!(t.verdict(), Verdict::Failed);
        let mut t = Tracker::new(Plan::write(3, 0, 0));
        assert_eq!(t.start(), vec![0]);
        assert_eq!(t.succeeded(), Verdict::Met);
    }

    #[test]
    fn fewer_candidates_than_the_quorum_fail_at_once() {
        let mut t = Tracker::new(Plan::write(1, 3, 2));
        assert_eq!(t.start(), vec![0]);
        assert_eq!(t.verdict(), Verdict::Failed);
    }
}
