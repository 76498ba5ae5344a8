//! The state contract: every piece of a job's state is reachable from here, so that the
//! driver can snapshot it, drop it and restore it at one quiescent point.
//!
//! - [`Operator`]: a stateful operator needs one method, `process`; watermark handling,
//!   `held_from` and snapshot/restore have defaults (Arroyo's `ArrowOperator` is the
//!   shape). The window operator implements it for every window kind; joins and CEP are
//!   further implementations.
//! - [`Groups`]: an operator's state partitioned by [`KeyGroup`]: one instance per source
//!   partition for a partition-aligned flow, one for the task otherwise. A key group is
//!   what is snapshotted, dropped and restored alone.
//! - [`GroupState`]: the object-safe, cold-path view of a `Groups` that the generated
//!   `Pipeline::state` hands to the driver (checkpoints, rebalances).
//! - [`store`]: the keyed store trait the window kinds are generic over, with the memory
//!   implementation; [`rocks`] (feature `rocksdb`) the RocksDB one, whose keys are
//!   encoded by [`memcmp`] so that their byte order is their order.
//! - [`codec`]: the compact binary encoding of keys, accumulators and window state
//!   (postcard) and the framing of snapshots.
//!
//! Architecture Invariant: every piece of state is reachable from `Pipeline::state` (the
//! operators) or the driver (watermarks, source positions, sink positions).

pub mod codec;
#[cfg(feature = "rocksdb")]
pub mod memcmp;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod store;

use std::fmt;

pub use codec::{Decoder, Encoder, StateError};
#[cfg(feature = "rocksdb")]
pub use rocks::{Rocks, RocksDb, RocksStore};
pub use store::{Backend, KeyedStore, MemStore, Memory, StateKey, StateValue};

/// The unit of state that is snapshotted, dropped and restored alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyGroup {
    /// The state of flows that need every partition of their source in one instance.
    Task,
    /// The state of partition-aligned flows whose keys live in one partition of source
    /// `source` (the index of the job's sources).
    Partition {
        /// The source.
        source: usize,
        /// The partition.
        partition: u32,
    },
}

impl fmt::Display for KeyGroup {
    /// The group's name in checkpoints: `task`, `s<source>-p<partition>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyGroup::Task => f.write_str("task"),
            KeyGroup::Partition { source, partition } => write!(f, "s{source}-p{partition}"),
        }
    }
}

impl std::str::FromStr for KeyGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "task" {
            return Ok(KeyGroup::Task);
        }
        let bad = || format!("not a key group name: {s:?}");
        let rest = s.strip_prefix('s').ok_or_else(bad)?;
        let (src, part) = rest.split_once("-p").ok_or_else(bad)?;
        Ok(KeyGroup::Partition {
            source: src.parse().map_err(|_| bad())?,
            partition: part.parse().map_err(|_| bad())?,
        })
    }
}

/// What a snapshot holds: everything, or what changed since the previous snapshot of the
/// same state (which the restore applies on top of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Everything.
    Full,
    /// Changes since the last snapshot (needs change tracking: [`Memory::tracking`]).
    Delta,
}

/// The outcome of one input of an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It was applied.
    Accepted,
    /// It was too late for every window it belongs to: nothing was touched.
    TooLate,
}

/// A stateful operator. Only [`Operator::process`] is required; an operator without
/// timers or state needs nothing else.
///
/// Emissions (window results, retractions) are handed to `emit` as they are made: the
/// caller passes them downstream at once, so no buffer of a whole firing is kept.
pub trait Operator {
    /// One input, as the generated code hands it over.
    type Input<'a>;
    /// What the operator emits.
    type Output;

    /// One input with event time `ts`, judged against the operator's watermark.
    fn process(
        &mut self,
        ts: i64,
        input: Self::Input<'_>,
        emit: &mut impl FnMut(Self::Output),
    ) -> Verdict;

    /// The watermark advanced to `wm` (ignored unless greater than [`Self::watermark`]):
    /// fire and purge what is due.
    fn advance(&mut self, wm: i64, emit: &mut impl FnMut(Self::Output)) {
        let _ = (wm, emit);
    }

    /// The watermark this operator has seen.
    fn watermark(&self) -> i64 {
        crate::WATERMARK_MIN
    }

    /// The smallest event time of an input that may still affect a result (see
    /// `Pipeline::held_from`); None when nothing is held.
    fn held_from(&self) -> Option<i64> {
        None
    }

    /// Inputs held by the operator that have not reached a result yet (a window
    /// operator: events in windows that have not fired), for the summary of a job
    /// stopped by a signal; may scan the state. The default: none.
    fn unfired_events(&self) -> u64 {
        0
    }

    /// Whether the operator holds no state at all (then it is not snapshotted).
    fn is_empty(&self) -> bool {
        true
    }

    /// Writes the operator's state (`Mode::Delta`: what changed since the last
    /// snapshot). An operator without state writes nothing.
    fn snapshot(&mut self, mode: Mode, out: &mut Encoder) -> Result<(), StateError> {
        let _ = (mode, out);
        Ok(())
    }

    /// Applies one snapshot written by [`Self::snapshot`]: a full one to a fresh
    /// operator, then the deltas that followed it, in order.
    fn restore(&mut self, input: &mut Decoder<'_>) -> Result<(), StateError> {
        let _ = input;
        Ok(())
    }
}

/// How an operator's state is split into key groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    /// One instance for the task: the flow needs every partition of its source.
    Task,
    /// One instance per partition of source `source` (a partition-aligned flow: every
    /// key lives in one partition, and the instance follows that partition's watermark).
    Partition {
        /// The source whose partitions key the groups.
        source: usize,
    },
}

/// What identifies an operator's state layout in checkpoints: a checkpoint is restored
/// only into operators with the same fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The operator's name (the flow's).
    pub name: &'static str,
    /// Human-readable: the state types and parameters that a checkpoint depends on (for
    /// example `tumbling 10000 ms; key (user_id u64); accumulators (count, sum f64)`).
    pub description: String,
}

impl Layout {
    /// A 64-bit fingerprint of the description, as hex.
    pub fn fingerprint(&self) -> String {
        format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(self.description.as_bytes())
        )
    }
}

/// Makes a fresh operator instance for a key group.
pub type Factory<O> = Box<dyn Fn(KeyGroup) -> O>;

/// An operator's state by key group: one instance (the task's) or one per partition.
/// New groups start from a fresh instance made by `make`.
pub struct Groups<O> {
    alignment: Alignment,
    layout: Layout,
    make: Factory<O>,
    /// By partition for `Alignment::Partition`; `[task]` for `Alignment::Task`.
    groups: Vec<Option<O>>,
}

impl<O> fmt::Debug for Groups<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Groups")
            .field("alignment", &self.alignment)
            .field("layout", &self.layout)
            .field("instances", &self.groups.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

impl<O: Operator> Groups<O> {
    /// An operator's state, split as `alignment` says; `make` makes a fresh instance
    /// for a key group.
    pub fn new(
        alignment: Alignment,
        layout: Layout,
        make: impl Fn(KeyGroup) -> O + 'static,
    ) -> Self {
        let groups = match alignment {
            Alignment::Task => vec![Some(make(KeyGroup::Task))],
            Alignment::Partition { .. } => Vec::new(),
        };
        Groups {
            alignment,
            layout,
            make: Box::new(make),
            groups,
        }
    }

    fn group_of(&self, slot: usize) -> KeyGroup {
        match self.alignment {
            Alignment::Task => KeyGroup::Task,
            Alignment::Partition { source } => KeyGroup::Partition {
                source,
                partition: slot as u32,
            },
        }
    }

    /// How the state is split.
    pub fn alignment(&self) -> Alignment {
        self.alignment
    }

    fn slot(&self, partition: u32) -> usize {
        match self.alignment {
            Alignment::Task => 0,
            Alignment::Partition { .. } => partition as usize,
        }
    }

    /// The instance for records of `partition` (created when missing).
    #[inline]
    pub fn get_mut(&mut self, partition: u32) -> &mut O {
        let i = self.slot(partition);
        if i >= self.groups.len() {
            self.groups.resize_with(i + 1, || None);
        }
        let group = self.group_of(i);
        let make = &self.make;
        self.groups[i].get_or_insert_with(|| make(group))
    }

    /// The instance for records of `partition`, if it exists.
    pub fn get(&self, partition: u32) -> Option<&O> {
        self.groups
            .get(self.slot(partition))
            .and_then(Option::as_ref)
    }

    /// Processes one input of a record of `partition`.
    #[inline]
    pub fn process(
        &mut self,
        partition: u32,
        ts: i64,
        input: O::Input<'_>,
        emit: &mut impl FnMut(O::Output),
    ) -> Verdict {
        self.get_mut(partition).process(ts, input, emit)
    }

    /// The task watermark of the operator's source advanced (flows that follow it).
    pub fn advance_task(&mut self, wm: i64, emit: &mut impl FnMut(O::Output)) {
        if let Alignment::Task = self.alignment
            && let Some(Some(o)) = self.groups.first_mut()
        {
            o.advance(wm, emit);
        }
    }

    /// The watermark of `partition` of the operator's source advanced (partition-aligned
    /// flows follow it).
    /// The instance is made if the partition has none yet: a partition restored with
    /// a watermark (and no state) judges its first records against it.
    pub fn advance_partition(&mut self, partition: u32, wm: i64, emit: &mut impl FnMut(O::Output)) {
        if let Alignment::Partition { .. } = self.alignment {
            self.get_mut(partition).advance(wm, emit);
        }
    }

    /// See `Pipeline::held_from`: over every instance for a task flow, over the
    /// partition's instance for an aligned one.
    pub fn held_from(&self, partition: Option<u32>) -> Option<i64> {
        match (self.alignment, partition) {
            (Alignment::Partition { .. }, Some(p)) => self.get(p).and_then(O::held_from),
            _ => self.groups.iter().flatten().filter_map(O::held_from).min(),
        }
    }

    /// [`Operator::unfired_events`] over every key group.
    pub fn unfired_events(&self) -> u64 {
        self.groups.iter().flatten().map(O::unfired_events).sum()
    }

    fn index_of(&self, group: KeyGroup) -> Option<usize> {
        match (self.alignment, group) {
            (Alignment::Task, KeyGroup::Task) => Some(0),
            (
                Alignment::Partition { source },
                KeyGroup::Partition {
                    source: s,
                    partition,
                },
            ) if s == source => Some(partition as usize),
            _ => None,
        }
    }
}

/// The cold-path view of an operator's state that the driver drives: snapshot, restore
/// and drop by key group. Object-safe: `Pipeline::state` returns `&mut dyn GroupState`.
pub trait GroupState {
    /// The operator's state layout.
    fn layout(&self) -> &Layout;
    /// How its state is split.
    fn alignment(&self) -> Alignment;
    /// The key groups that hold state now.
    fn groups(&self) -> Vec<KeyGroup>;
    /// Appends the state of `group` to `out` (nothing when the operator has no instance
    /// for it). Returns whether anything was written.
    fn snapshot(
        &mut self,
        group: KeyGroup,
        mode: Mode,
        out: &mut Encoder,
    ) -> Result<bool, StateError>;
    /// Applies one snapshot of `group` (a full one, then deltas in order).
    fn restore(&mut self, group: KeyGroup, input: &mut Decoder<'_>) -> Result<(), StateError>;
    /// Drops the state of `group` (a revoked partition, or before a restore). Dropping
    /// the task group leaves a fresh instance.
    fn drop_group(&mut self, group: KeyGroup);
}

impl<O: Operator> GroupState for Groups<O> {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn alignment(&self) -> Alignment {
        self.alignment
    }

    fn groups(&self) -> Vec<KeyGroup> {
        match self.alignment {
            Alignment::Task => vec![KeyGroup::Task],
            Alignment::Partition { source } => self
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.is_some())
                .map(|(p, _)| KeyGroup::Partition {
                    source,
                    partition: p as u32,
                })
                .collect(),
        }
    }

    fn snapshot(
        &mut self,
        group: KeyGroup,
        mode: Mode,
        out: &mut Encoder,
    ) -> Result<bool, StateError> {
        let Some(i) = self.index_of(group) else {
            return Ok(false);
        };
        let Some(Some(o)) = self.groups.get_mut(i) else {
            return Ok(false);
        };
        o.snapshot(mode, out)?;
        Ok(true)
    }

    fn restore(&mut self, group: KeyGroup, input: &mut Decoder<'_>) -> Result<(), StateError> {
        let Some(i) = self.index_of(group) else {
            return Err(StateError::new(format!(
                "operator `{}` has no key group {group}",
                self.layout.name
            )));
        };
        if i >= self.groups.len() {
            self.groups.resize_with(i + 1, || None);
        }
        let make = &self.make;
        self.groups[i]
            .get_or_insert_with(|| make(group))
            .restore(input)
    }

    fn drop_group(&mut self, group: KeyGroup) {
        let Some(i) = self.index_of(group) else {
            return;
        };
        match self.alignment {
            Alignment::Task => self.groups[0] = Some((self.make)(KeyGroup::Task)),
            Alignment::Partition { .. } => {
                if let Some(g) = self.groups.get_mut(i) {
                    *g = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_group_names_round_trip() {
        for g in [
            KeyGroup::Task,
            KeyGroup::Partition {
                source: 0,
                partition: 0,
            },
            KeyGroup::Partition {
                source: 3,
                partition: 4095,
            },
        ] {
            assert_eq!(g.to_string().parse::<KeyGroup>(), Ok(g));
        }
        for bad in ["", "s", "s1", "s1-p", "sx-p1", "p1", "task1"] {
            assert!(bad.parse::<KeyGroup>().is_err(), "{bad}");
        }
    }
}
