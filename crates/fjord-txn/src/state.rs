//! The states of a transactional id (Kafka's `TransactionState`: the same names, which
//! DescribeTransactions and ListTransactions report, and the same ids).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction: initialized, or the last one completed long ago.
    Empty,
    /// Partitions were added: a transaction is open.
    Ongoing,
    /// EndTxn(commit) is durable; markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fencing InitProducerId is durable; markers are being written.
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// The id expired; its tombstone is written.
    Dead,
    /// A transient state in Kafka while a new producer fences an open transaction; Fjord goes
    /// straight to PrepareAbort with the bumped epoch and never writes it, but decodes it.
    PrepareEpochFence,
}

impl TxnState {
    /// Kafka's id of the state.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// Kafka's name of the state (DescribeTransactions, ListTransactions' state filter).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        ALL.iter().copied().find(|s| s.name() == name)
    }

    /// Whether `self` may follow `prev` (Kafka's `validPreviousStates`).
    pub fn may_follow(self, prev: TxnState) -> bool {
        use TxnState::*;
        match self {
            Empty => matches!(prev, Empty | CompleteCommit | CompleteAbort),
            Ongoing => matches!(prev, Ongoing | Empty | CompleteCommit | CompleteAbort),
            PrepareCommit => prev == Ongoing,
            PrepareAbort => matches!(prev, Ongoing | PrepareEpochFence),
            CompleteCommit => prev == PrepareCommit,
            CompleteAbort => prev == PrepareAbort,
            Dead => matches!(prev, Empty | CompleteCommit | CompleteAbort),
            PrepareEpochFence => prev == Ongoing,
        }
    }

    /// No transaction open or finishing: the id may expire and a producer may start anew.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

pub const ALL: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_kafkas() {
        for (i, s) in ALL.iter().enumerate() {
            assert_eq!(s.id(), i as i8);
            assert_eq!(TxnState::from_name(s.name()), Some(*s));
        }
        assert_eq!(TxnState::from_name("Bogus"), None);
    }

    #[test]
    fn two_phase_order() {
        use TxnState::*;
        assert!(Ongoing.may_follow(Empty));
        assert!(PrepareCommit.may_follow(Ongoing));
        assert!(!PrepareCommit.may_follow(Empty));
        assert!(CompleteCommit.may_follow(PrepareCommit));
        assert!(!CompleteCommit.may_follow(PrepareAbort));
        assert!(PrepareAbort.may_follow(PrepareEpochFence));
        assert!(Empty.may_follow(CompleteAbort));
        assert!(!Dead.may_follow(Ongoing));
    }
}
