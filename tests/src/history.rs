//! Histories of client operations, and the checkers that judge them.
//!
//! Clients of the fault suite record every operation twice, as Jepsen does: an `invoke`
//! event before the request and a completion after it, `ok`, `fail` (the server answered
//! an error) or `unknown` (no answer: timeout, refused or reset connection), each with a
//! monotonic timestamp. The history is kept as JSON lines, one event per line, so that a
//! failed run can be read afterwards.
//!
//! Every written value is unique, and each write records the values its causal context
//! covered (`saw`: the values of the read it was based on). That is enough to decide,
//! without trusting the store, what a correct store may do:
//!
//! - **No lost writes.** At the end every acknowledged write must be *accounted for*: its
//!   value is in the final read, or some write that saw it is accounted for (it was
//!   superseded on purpose). The accounted-for set is the closure of the final values
//!   over `saw`, so a chain of read-modify-writes may replace a value any number of times.
//!   A write that failed or whose outcome is unknown may or may not be there: it is never
//!   required, but it may supersede.
//! - **Read your writes** (only where the store promises it: strict quorums with
//!   R + W > N): a read that began after a write was acknowledged returns that write or
//!   a write that superseded it.
//! - **Siblings only for real concurrency.** A read never returns two values of which one
//!   was written by a client that had seen the other: that pair is not concurrent, so a
//!   store that keeps both has forked a causal history (what dotted version vectors
//!   prevent).
//! - **Set workload.** Clients add unique elements to sets kept under a few keys, merging
//!   siblings client-side (the union) before each add. Every acknowledged add must be in
//!   the union of the final siblings.
//! - **Deletes.** A delete is a write of a tombstone, named by a unique id of its own and
//!   recording what its context covered, like a write; reads never show it. A value a
//!   delete saw is accounted for (it was deleted on purpose), whatever the delete's
//!   outcome, since a delete that failed may still have been applied. **No resurrection:**
//!   a value an *acknowledged* delete saw must not be in the final read: it was deleted by
//!   a client that had seen it, and only a store that lost the tombstone (reaped too soon,
//!   or overridden by a stale copy) hands it back.
//!
//! What the checkers deliberately do not check: linearizability (the store does not offer
//! it: two strict-quorum reads concurrent with a write may disagree), and anything about
//! `fail` outcomes, which for a quorum store do not mean "not applied": a write answered
//! 503 may still have reached one replica.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The kind of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The request is about to be sent.
    Invoke,
    /// A 2xx answer (a read's 404 counts: it answered "nothing").
    Ok,
    /// An error answer: the operation may or may not have taken effect.
    Fail,
    /// No answer at all.
    Unknown,
}

/// The operation of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// A register write of one unique value.
    Write,
    /// A register read.
    Read,
    /// A set add of one unique element.
    Add,
    /// A register delete (a tombstone), named by a unique id in `value`.
    Delete,
}

/// The quorum an operation ran with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// `r` of a read, `w` of a write.
    pub size: usize,
    /// Whether fallbacks could count (`sloppy=true`).
    pub sloppy: bool,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client that issued it.
    pub process: usize,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation.
    pub f: Op,
    /// The key.
    pub key: String,
    /// A write's value or an add's element (on every event of the operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// On a write's or add's invoke: the values its causal context covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saw: Vec<String>,
    /// On a read's `ok`: the values returned (siblings), empty for "not found".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    /// The quorum used.
    pub quorum: Quorum,
    /// The node the request went to.
    pub node: usize,
    /// Nanoseconds since the history began (monotonic).
    pub time_ns: u64,
    /// What went wrong, for `fail` and `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A history being recorded by several clients at once.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            events: Arc::default(),
        }
    }

    /// Appends `event`, stamping it with the current time.
    pub fn record(&self, mut event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        // Stamped under the lock, so the file's order is the time order.
        event.time_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        events.push(event);
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes the history as JSON lines.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = BufWriter::new(File::create(path)?);
        for event in self.events() {
            serde_json::to_writer(&mut out, &event)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

/// One operation: its invoke and its completion, paired.
#[derive(Clone, Debug)]
pub struct Operation {
    /// The invoke event.
    pub invoke: Event,
    /// The completion, `None` if the history ended first (counts as unknown).
    pub complete: Option<Event>,
}

impl Operation {
    /// The outcome (`Unknown` when it never completed).
    pub fn outcome(&self) -> EventType {
        self.complete
            .as_ref()
            .map_or(EventType::Unknown, |c| c.kind)
    }

    fn completed_at(&self) -> Option<u64> {
        self.complete.as_ref().map(|c| c.time_ns)
    }
}

/// Pairs each invoke with the next event of the same process.
pub fn operations(events: &[Event]) -> Vec<Operation> {
    let mut open: HashMap<usize, usize> = HashMap::new();
    let mut ops: Vec<Operation> = Vec::new();
    for event in events {
        if event.kind == EventType::Invoke {
            open.insert(event.process, ops.len());
            ops.push(Operation {
                invoke: event.clone(),
                complete: None,
            });
        } else if let Some(i) = open.remove(&event.process) {
            ops[i].complete = Some(event.clone());
        }
    }
    ops
}

/// What the store promises for a history, which decides what is checked.
#[derive(Clone, Copy, Debug)]
pub struct Promises {
    /// The replication factor of the keys.
    pub n: usize,
    /// Check read-your-writes for every pair of strict quorums with r + w > n. A negative
    /// control sets `assume_ryw` to check it for every pair, promised or not.
    pub assume_ryw: bool,
}

/// The checkers' findings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Operations in the history.
    pub operations: usize,
    /// Writes (and adds) acknowledged.
    pub acknowledged_writes: usize,
    /// Writes (and adds) that failed or whose outcome is unknown.
    pub indeterminate_writes: usize,
    /// Reads answered.
    pub reads: usize,
    /// Reads checked for read-your-writes.
    pub ryw_checked_reads: usize,
    /// Acknowledged writes not accounted for at the end: `key -> values`.
    pub lost: BTreeMap<String, Vec<String>>,
    /// Reads that missed an acknowledged write they had to reflect, described.
    pub stale_reads: Vec<String>,
    /// Sibling pairs that were not concurrent, described.
    pub false_siblings: Vec<String>,
    /// Acknowledged set adds missing at the end: `key -> elements`.
    pub lost_adds: BTreeMap<String, Vec<String>>,
    /// Deletes acknowledged.
    pub acknowledged_deletes: usize,
    /// Values an acknowledged delete saw that are in the final state: `key -> values`.
    pub resurrected: BTreeMap<String, Vec<String>>,
}

impl Verdict {
    /// Whether every checker passed.
    pub fn valid(&self) -> bool {
        self.lost.is_empty()
            && self.stale_reads.is_empty()
            && self.false_siblings.is_empty()
            && self.lost_adds.is_empty()
            && self.resurrected.is_empty()
    }

    /// Values deleted by a client that had seen them and back at the end.
    pub fn resurrected_count(&self) -> usize {
        self.resurrected.values().map(Vec::len).sum()
    }

    /// Lost writes and lost adds.
    pub fn lost_count(&self) -> usize {
        self.lost.values().map(Vec::len).sum::<usize>()
            + self.lost_adds.values().map(Vec::len).sum::<usize>()
    }

    /// A one-paragraph summary for test output.
    pub fn summary(&self) -> String {
        format!(
            "{} operations; {} acknowledged writes, {} indeterminate; {} acknowledged \
             deletes; {} reads ({} checked for read-your-writes); lost writes: {}; stale \
             reads: {}; false siblings: {}; resurrected: {}; verdict: {}",
            self.operations,
            self.acknowledged_writes,
            self.indeterminate_writes,
            self.acknowledged_deletes,
            self.reads,
            self.ryw_checked_reads,
            self.lost_count(),
            self.stale_reads.len(),
            self.false_siblings.len(),
            self.resurrected_count(),
            if self.valid() { "valid" } else { "INVALID" },
        )
    }
}

/// The final state of the keys: every value (sibling) of each key, read at `r=all` after
/// the faults healed. A set key's values are its siblings' elements, already unioned.
pub type FinalState = BTreeMap<String, BTreeSet<String>>;

/// The writes of one key as a graph: each written value an id, with the ids of the
/// values its writer had seen. Values are numbered in invoke order, and a writer can only
/// have seen values invoked before it, so every edge points to a smaller id and a search
/// for an ancestor can stop below that ancestor's id.
#[derive(Default)]
struct KeyGraph<'a> {
    ids: HashMap<&'a str, usize>,
    parents: Vec<Vec<usize>>,
}

impl<'a> KeyGraph<'a> {
    fn id(&self, value: &str) -> Option<usize> {
        self.ids.get(value).copied()
    }

    /// The ids at or above `floor` reachable from `roots` (themselves included).
    fn reachable(&self, roots: impl IntoIterator<Item = usize>, floor: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = roots.into_iter().filter(|&r| r >= floor).collect();
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(
                    self.parents[id]
                        .iter()
                        .copied()
                        .filter(|&p| p >= floor && !seen.contains(&p)),
                );
            }
        }
        seen
    }
}

/// Runs every checker over `events`, given the final state of the register keys and of
/// the set keys.
pub fn check(
    events: &[Event],
    final_registers: &FinalState,
    final_sets: &FinalState,
    promises: Promises,
) -> Verdict {
    let ops = operations(events);
    let mut verdict = Verdict {
        operations: ops.len(),
        ..Verdict::default()
    };
    for op in &ops {
        match (op.invoke.f, op.outcome()) {
            (Op::Write | Op::Add, EventType::Ok) => verdict.acknowledged_writes += 1,
            (Op::Write | Op::Add, _) => verdict.indeterminate_writes += 1,
            (Op::Delete, EventType::Ok) => verdict.acknowledged_deletes += 1,
            (Op::Read, EventType::Ok) => verdict.reads += 1,
            _ => {}
        }
    }

    // The write graph of each register key. A value seen but never written by the
    // history (it cannot happen with unique values) gets no id and is ignored.
    let mut graphs: HashMap<&str, KeyGraph> = HashMap::new();
    for op in ops
        .iter()
        .filter(|op| matches!(op.invoke.f, Op::Write | Op::Delete))
    {
        let graph = graphs.entry(op.invoke.key.as_str()).or_default();
        let parents = op.invoke.saw.iter().filter_map(|v| graph.id(v)).collect();
        if let Some(value) = &op.invoke.value {
            graph.ids.insert(value, graph.parents.len());
            graph.parents.push(parents);
        }
    }
    let no_graph = KeyGraph::default();
    let graph_of = |key: &str| graphs.get(key).unwrap_or(&no_graph);
    let ids_of = |graph: &KeyGraph, values: &mut dyn Iterator<Item = &String>| -> Vec<usize> {
        values.filter_map(|v| graph.id(v)).collect()
    };

    // No lost writes: every acknowledged write is reachable from the final values or from
    // a delete (which no read shows).
    let mut deletes: HashMap<&str, Vec<usize>> = HashMap::new();
    for op in ops.iter().filter(|op| op.invoke.f == Op::Delete) {
        let key = op.invoke.key.as_str();
        if let Some(id) = op.invoke.value.as_deref().and_then(|v| graph_of(key).id(v)) {
            deletes.entry(key).or_default().push(id);
        }
    }
    let no_ids = Vec::new();
    let keys: BTreeSet<&str> = final_registers
        .keys()
        .map(String::as_str)
        .chain(deletes.keys().copied())
        .collect();
    let accounted: HashMap<&str, BTreeSet<usize>> = keys
        .into_iter()
        .map(|key| {
            let graph = graph_of(key);
            let finals = final_registers.get(key).into_iter().flatten();
            let roots = ids_of(graph, &mut finals.into_iter())
                .into_iter()
                .chain(deletes.get(key).unwrap_or(&no_ids).iter().copied());
            (key, graph.reachable(roots, 0))
        })
        .collect();
    // No resurrection: nothing an acknowledged delete saw is back at the end.
    for op in ops
        .iter()
        .filter(|op| op.invoke.f == Op::Delete && op.outcome() == EventType::Ok)
    {
        let key = op.invoke.key.as_str();
        if let Some(values) = final_registers.get(key) {
            for seen in op.invoke.saw.iter().filter(|v| values.contains(*v)) {
                verdict
                    .resurrected
                    .entry(key.to_string())
                    .or_default()
                    .push(seen.clone());
            }
        }
    }
    let none = BTreeSet::new();
    for op in ops
        .iter()
        .filter(|op| op.invoke.f == Op::Write && op.outcome() == EventType::Ok)
    {
        let key = op.invoke.key.as_str();
        let value = op.invoke.value.clone().unwrap_or_default();
        let id = graph_of(key).id(&value);
        if !id.is_some_and(|id| accounted.get(key).unwrap_or(&none).contains(&id)) {
            verdict.lost.entry(key.to_string()).or_default().push(value);
        }
    }

    // Read your writes, and siblings only for real concurrency. Reads and write
    // completions are replayed in time order; per key and quorum setting, the
    // acknowledged writes a later read must reflect are kept as a frontier: those not
    // already superseded by another acknowledged write (covering the frontier covers all).
    let strict = |q: Quorum, other: Quorum| {
        promises.assume_ryw || (!q.sloppy && !other.sloppy && q.size + other.size > promises.n)
    };
    enum Step<'o> {
        Acked(&'o Operation),
        Read(&'o Operation),
    }
    let mut steps: Vec<(u64, Step)> = Vec::new();
    for op in &ops {
        match (op.invoke.f, op.outcome(), op.completed_at()) {
            (Op::Write | Op::Delete, EventType::Ok, Some(at)) => {
                steps.push((at, Step::Acked(op)));
            }
            (Op::Read, EventType::Ok, _) => steps.push((op.invoke.time_ns, Step::Read(op))),
            _ => {}
        }
    }
    // At equal times a read does not count a write completing at that instant.
    steps.sort_by_key(|(at, step)| (*at, matches!(step, Step::Acked(_))));
    // Deletes by key, in invoke order: one that may have been applied (whatever its
    // outcome) excuses a read that misses what it saw, since no read can show a tombstone.
    let mut deletes_by_time: HashMap<&str, Vec<(u64, usize)>> = HashMap::new();
    for op in ops.iter().filter(|op| op.invoke.f == Op::Delete) {
        let key = op.invoke.key.as_str();
        if let Some(id) = op.invoke.value.as_deref().and_then(|v| graph_of(key).id(v)) {
            deletes_by_time
                .entry(key)
                .or_default()
                .push((op.invoke.time_ns, id));
        }
    }
    let mut frontiers: HashMap<&str, Vec<(usize, &Operation)>> = HashMap::new();
    for (_, step) in steps {
        match step {
            Step::Acked(write) => {
                let key = write.invoke.key.as_str();
                let graph = graph_of(key);
                let Some(id) = write.invoke.value.as_deref().and_then(|v| graph.id(v)) else {
                    continue;
                };
                let frontier = frontiers.entry(key).or_default();
                let floor = frontier.iter().map(|(f, _)| *f).min().unwrap_or(id);
                let below = graph.reachable([id], floor);
                frontier.retain(|(f, _)| !below.contains(f) || *f == id);
                if write.invoke.f == Op::Delete {
                    // A later read need not show what it deleted, and cannot show it.
                    frontier.retain(|(f, _)| *f != id);
                    continue;
                }
                let above = graph.reachable(frontier.iter().map(|(f, _)| *f), id);
                if !above.contains(&id) {
                    frontier.push((id, write));
                }
            }
            Step::Read(read) => {
                let key = read.invoke.key.as_str();
                let graph = graph_of(key);
                let returned: Vec<String> = read
                    .complete
                    .as_ref()
                    .and_then(|c| c.read.clone())
                    .unwrap_or_default();
                let returned_ids = ids_of(graph, &mut returned.iter());
                let required: Vec<&(usize, &Operation)> = frontiers
                    .get(key)
                    .map(|f| {
                        f.iter()
                            .filter(|(_, w)| strict(read.invoke.quorum, w.invoke.quorum))
                            .collect()
                    })
                    .unwrap_or_default();
                if !required.is_empty() {
                    verdict.ryw_checked_reads += 1;
                    let floor = required.iter().map(|(f, _)| *f).min().unwrap_or(0);
                    let read_done = read.completed_at().unwrap_or(u64::MAX);
                    let deleted = deletes_by_time
                        .get(key)
                        .into_iter()
                        .flatten()
                        .filter(|(at, _)| *at < read_done)
                        .map(|(_, id)| *id);
                    let covered =
                        graph.reachable(returned_ids.iter().copied().chain(deleted), floor);
                    let missing: Vec<&str> = required
                        .iter()
                        .filter(|(f, _)| !covered.contains(f))
                        .filter_map(|(_, w)| w.invoke.value.as_deref())
                        .collect();
                    if !missing.is_empty() {
                        verdict.stale_reads.push(format!(
                            "key {key}: read by process {} at {} ns from node {} (r={}) \
                             returned {returned:?}, missing acknowledged {missing:?}",
                            read.invoke.process,
                            read.invoke.time_ns,
                            read.invoke.node,
                            read.invoke.quorum.size,
                        ));
                    }
                }
                verdict
                    .false_siblings
                    .extend(false_siblings(key, graph, &returned));
            }
        }
    }
    for (key, values) in final_registers {
        let values: Vec<String> = values.iter().cloned().collect();
        verdict
            .false_siblings
            .extend(false_siblings(key, graph_of(key), &values));
    }

    // Set workload.
    let no_elements = BTreeSet::new();
    for op in ops
        .iter()
        .filter(|op| op.invoke.f == Op::Add && op.outcome() == EventType::Ok)
    {
        let key = op.invoke.key.as_str();
        let element = op.invoke.value.clone().unwrap_or_default();
        if !final_sets
            .get(key)
            .unwrap_or(&no_elements)
            .contains(&element)
        {
            verdict
                .lost_adds
                .entry(key.to_string())
                .or_default()
                .push(element);
        }
    }
    verdict
}

/// Pairs among `values` where one value's writer had (transitively) seen the other.
fn false_siblings(key: &str, graph: &KeyGraph, values: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    if values.len() < 2 {
        return found;
    }
    for a in values {
        for b in values {
            let (Some(ia), Some(ib)) = (graph.id(a), graph.id(b)) else {
                continue;
            };
            if ia != ib && graph.reachable([ia], ib).contains(&ib) {
                found.push(format!(
                    "key {key}: {a:?} and {b:?} returned as siblings, but {a:?} was written \
                     by a client that had seen {b:?}"
                ));
            }
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const STRICT: Quorum = Quorum {
        size: 2,
        sloppy: false,
    };
    const ONE: Quorum = Quorum {
        size: 1,
        sloppy: false,
    };
    const N3: Promises = Promises {
        n: 3,
        assume_ryw: false,
    };

    /// Builds histories event by event with increasing timestamps.
    #[derive(Default)]
    struct H {
        events: Vec<Event>,
    }

    impl H {
        fn push(&mut self, process: usize, kind: EventType, f: Op, key: &str) -> &mut Event {
            let time_ns = self.events.len() as u64 * 10;
            self.events.push(Event {
                process,
                kind,
                f,
                key: key.into(),
                value: None,
                saw: Vec::new(),
                read: None,
                quorum: STRICT,
                node: 0,
                time_ns,
                error: None,
            });
            self.events.last_mut().unwrap()
        }

        fn invoke_write(&mut self, p: usize, key: &str, value: &str, saw: &[&str], q: Quorum) {
            let e = self.push(p, EventType::Invoke, Op::Write, key);
            e.value = Some(value.into());
            e.saw = saw.iter().map(|s| s.to_string()).collect();
            e.quorum = q;
        }

        fn complete(&mut self, p: usize, kind: EventType, f: Op, key: &str) {
            self.push(p, kind, f, key);
        }

        fn write(&mut self, p: usize, key: &str, value: &str, saw: &[&str], kind: EventType) {
            self.invoke_write(p, key, value, saw, STRICT);
            self.complete(p, kind, Op::Write, key);
        }

        fn read(&mut self, p: usize, key: &str, q: Quorum, returned: &[&str]) {
            self.push(p, EventType::Invoke, Op::Read, key).quorum = q;
            let e = self.push(p, EventType::Ok, Op::Read, key);
            e.read = Some(returned.iter().map(|s| s.to_string()).collect());
            e.quorum = q;
        }

        fn add(&mut self, p: usize, key: &str, element: &str, kind: EventType) {
            self.push(p, EventType::Invoke, Op::Add, key).value = Some(element.into());
            self.complete(p, kind, Op::Add, key);
        }
    }

    fn state(entries: &[(&str, &[&str])]) -> FinalState {
        entries
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    impl H {
        fn delete(&mut self, p: usize, key: &str, id: &str, saw: &[&str], kind: EventType) {
            let e = self.push(p, EventType::Invoke, Op::Delete, key);
            e.value = Some(id.into());
            e.saw = saw.iter().map(|s| s.to_string()).collect();
            self.complete(p, kind, Op::Delete, key);
        }
    }

    #[test]
    fn a_deleted_value_is_accounted_for_and_a_read_after_the_delete_may_find_nothing() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.delete(2, "k", "d1", &["a"], EventType::Ok);
        h.read(1, "k", STRICT, &[]);
        // Recreated after the delete, without having read it: blind.
        h.write(3, "k", "b", &[], EventType::Ok);
        let verdict = check(&h.events, &state(&[("k", &["b"])]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
        assert_eq!(verdict.acknowledged_deletes, 1);
        // And with nothing at the end at all.
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.delete(2, "k", "d1", &["a"], EventType::Fail);
        let verdict = check(&h.events, &state(&[("k", &[])]), &state(&[]), N3);
        assert!(
            verdict.valid(),
            "a failed delete may have been applied: {verdict:?}"
        );
    }

    #[test]
    fn a_read_that_misses_what_a_failed_delete_saw_is_not_stale() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.delete(2, "k", "d1", &["a"], EventType::Fail);
        h.read(3, "k", STRICT, &[]);
        let verdict = check(&h.events, &state(&[("k", &[])]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
        // Without the delete, the same read is stale.
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.read(3, "k", STRICT, &[]);
        let verdict = check(&h.events, &state(&[("k", &["a"])]), &state(&[]), N3);
        assert_eq!(verdict.stale_reads.len(), 1, "{verdict:?}");
    }

    #[test]
    fn a_value_an_acknowledged_delete_saw_is_resurrected_if_it_comes_back() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.delete(2, "k", "d1", &["a"], EventType::Ok);
        h.write(3, "k", "b", &[], EventType::Ok);
        let verdict = check(&h.events, &state(&[("k", &["a", "b"])]), &state(&[]), N3);
        assert!(!verdict.valid());
        assert_eq!(verdict.resurrected.get("k"), Some(&vec!["a".to_string()]));
        assert!(verdict.summary().contains("resurrected: 1"));
        // A delete that was never acknowledged promised nothing.
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.delete(2, "k", "d1", &["a"], EventType::Unknown);
        let verdict = check(&h.events, &state(&[("k", &["a"])]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
    }

    #[test]
    fn a_present_or_superseded_write_is_not_lost() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.write(2, "k", "b", &["a"], EventType::Ok);
        h.write(1, "k", "c", &["b"], EventType::Unknown);
        let verdict = check(&h.events, &state(&[("k", &["c"])]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
        assert_eq!(verdict.acknowledged_writes, 2);
        assert_eq!(verdict.indeterminate_writes, 1);
    }

    #[test]
    fn an_acknowledged_write_nobody_saw_and_missing_is_lost() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.write(2, "k", "b", &[], EventType::Ok);
        let verdict = check(&h.events, &state(&[("k", &["b"])]), &state(&[]), N3);
        assert!(!verdict.valid());
        assert_eq!(verdict.lost.get("k"), Some(&vec!["a".to_string()]));
        assert!(verdict.summary().contains("lost writes: 1"));
    }

    #[test]
    fn a_failed_or_unknown_write_is_never_required() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Fail);
        h.write(2, "k", "b", &[], EventType::Unknown);
        h.invoke_write(3, "k", "c", &[], STRICT); // never completed
        let verdict = check(&h.events, &state(&[]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
        assert_eq!(verdict.indeterminate_writes, 3);
    }

    #[test]
    fn superseding_through_a_missing_write_does_not_count() {
        // b saw a, but b itself is gone and nothing saw b: a is lost.
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.write(2, "k", "b", &["a"], EventType::Fail);
        let verdict = check(&h.events, &state(&[("k", &[])]), &state(&[]), N3);
        assert_eq!(verdict.lost.get("k"), Some(&vec!["a".to_string()]));
    }

    #[test]
    fn a_strict_read_after_an_acknowledged_write_must_see_it() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.read(2, "k", STRICT, &[]);
        h.read(2, "k", STRICT, &["a"]);
        let verdict = check(&h.events, &state(&[("k", &["a"])]), &state(&[]), N3);
        assert_eq!(verdict.stale_reads.len(), 1, "{verdict:?}");
        assert_eq!(verdict.ryw_checked_reads, 2);
    }

    #[test]
    fn a_read_concurrent_with_the_write_may_miss_it() {
        let mut h = H::default();
        h.invoke_write(1, "k", "a", &[], STRICT);
        h.read(2, "k", STRICT, &[]);
        h.complete(1, EventType::Ok, Op::Write, "k");
        let verdict = check(&h.events, &state(&[("k", &["a"])]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
        assert_eq!(verdict.ryw_checked_reads, 0);
    }

    #[test]
    fn a_read_of_a_successor_satisfies_read_your_writes() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.write(2, "k", "b", &["a"], EventType::Unknown);
        h.read(3, "k", STRICT, &["b"]);
        let verdict = check(&h.events, &state(&[("k", &["b"])]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
    }

    #[test]
    fn weak_quorums_are_checked_only_when_assumed() {
        let mut h = H::default();
        h.invoke_write(1, "k", "a", &[], ONE);
        h.complete(1, EventType::Ok, Op::Write, "k");
        h.read(2, "k", ONE, &[]);
        let finals = state(&[("k", &["a"])]);
        let promised = check(&h.events, &finals, &state(&[]), N3);
        assert!(promised.valid(), "r=1, w=1 promises no read-your-writes");
        assert_eq!(promised.ryw_checked_reads, 0);
        let assumed = check(
            &h.events,
            &finals,
            &state(&[]),
            Promises {
                n: 3,
                assume_ryw: true,
            },
        );
        assert_eq!(assumed.stale_reads.len(), 1);
    }

    #[test]
    fn sloppy_quorums_promise_no_read_your_writes() {
        let mut h = H::default();
        h.invoke_write(
            1,
            "k",
            "a",
            &[],
            Quorum {
                size: 3,
                sloppy: true,
            },
        );
        h.complete(1, EventType::Ok, Op::Write, "k");
        h.read(2, "k", STRICT, &[]);
        let verdict = check(&h.events, &state(&[("k", &["a"])]), &state(&[]), N3);
        assert!(verdict.valid(), "{verdict:?}");
    }

    #[test]
    fn siblings_that_are_not_concurrent_are_reported() {
        let mut h = H::default();
        h.write(1, "k", "a", &[], EventType::Ok);
        h.write(1, "k", "b", &["a"], EventType::Ok);
        h.write(2, "k", "c", &[], EventType::Ok);
        // b and c are concurrent: fine. a beside b is a fork.
        h.read(3, "k", STRICT, &["b", "c"]);
        h.read(3, "k", STRICT, &["a", "b"]);
        let verdict = check(&h.events, &state(&[("k", &["b", "c"])]), &state(&[]), N3);
        assert_eq!(verdict.false_siblings.len(), 1, "{verdict:?}");
        assert!(verdict.lost.is_empty());
    }

    #[test]
    fn set_adds_must_all_be_in_the_final_union() {
        let mut h = H::default();
        h.add(1, "s", "1", EventType::Ok);
        h.add(2, "s", "2", EventType::Ok);
        h.add(3, "s", "3", EventType::Unknown);
        let complete = check(&h.events, &state(&[]), &state(&[("s", &["1", "2"])]), N3);
        assert!(complete.valid(), "{complete:?}");
        let missing = check(&h.events, &state(&[]), &state(&[("s", &["2", "3"])]), N3);
        assert_eq!(missing.lost_adds.get("s"), Some(&vec!["1".to_string()]));
        assert_eq!(missing.lost_count(), 1);
    }

    /// The frontier-based read-your-writes check against the definition, checked pair by
    /// pair, on random histories.
    #[test]
    fn the_fast_read_your_writes_check_agrees_with_the_definition() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(5);
        let mut disagreements = 0;
        let mut stale_histories = 0;
        for _ in 0..300 {
            let mut h = H::default();
            let mut written: Vec<String> = Vec::new();
            for step in 0..30 {
                let p = rng.random_range(0..3);
                if rng.random_bool(0.5) {
                    let value = format!("v{step}");
                    let saw: Vec<&str> = written
                        .iter()
                        .filter(|_| rng.random_bool(0.3))
                        .map(String::as_str)
                        .collect();
                    let kind = if rng.random_bool(0.8) {
                        EventType::Ok
                    } else {
                        EventType::Unknown
                    };
                    h.write(p, "k", &value, &saw, kind);
                    written.push(value);
                } else {
                    let returned: Vec<&str> = written
                        .iter()
                        .filter(|_| rng.random_bool(0.2))
                        .map(String::as_str)
                        .collect();
                    h.read(p, "k", STRICT, &returned);
                }
            }
            let fast = check(&h.events, &state(&[]), &state(&[]), N3);
            // The definition: a read is stale if some write acknowledged before it began
            // is not among the ancestors of what it returned.
            let ops = operations(&h.events);
            let ancestors = |roots: Vec<String>| {
                let mut seen: BTreeSet<String> = BTreeSet::new();
                let mut stack = roots;
                while let Some(v) = stack.pop() {
                    if seen.insert(v.clone()) {
                        for op in &ops {
                            if op.invoke.value.as_deref() == Some(v.as_str()) {
                                stack.extend(op.invoke.saw.iter().cloned());
                            }
                        }
                    }
                }
                seen
            };
            let mut stale = 0;
            for read in ops.iter().filter(|op| op.invoke.f == Op::Read) {
                let returned = read.complete.as_ref().unwrap().read.clone().unwrap();
                let covered = ancestors(returned);
                let missed = ops.iter().any(|w| {
                    w.invoke.f == Op::Write
                        && w.outcome() == EventType::Ok
                        && w.completed_at() < Some(read.invoke.time_ns)
                        && !covered.contains(w.invoke.value.as_deref().unwrap())
                });
                stale += usize::from(missed);
            }
            if stale != fast.stale_reads.len() {
                disagreements += 1;
            }
            stale_histories += usize::from(stale > 0);
        }
        assert_eq!(disagreements, 0);
        assert!(
            stale_histories > 50,
            "the random histories must exercise staleness"
        );
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let recorder = Recorder::new();
        let mut h = H::default();
        h.write(1, "k", "a", &["z"], EventType::Ok);
        h.read(2, "k", STRICT, &["a"]);
        for event in &h.events {
            recorder.record(event.clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        recorder.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].saw, vec!["z".to_string()]);
        assert!(text.lines().next().unwrap().contains("\"type\":\"invoke\""));
        assert_eq!(operations(&parsed).len(), 2);
    }
}
