//! The fault suite's clients and nemesis.
//!
//! Clients run on their own threads, each a sequence of operations against a random
//! node, recorded in a [`Recorder`]: register reads, read-modify-writes that carry the
//! read's causal context, writes that carry the context their client's own last write of
//! the key was answered with (a client that keeps writing without reading again), blind
//! writes (no context: real concurrency on purpose), and set adds that merge siblings
//! client-side. Every written value and element is unique, so
//! the checkers of [`crate::history`] can tell writes apart.
//!
//! The nemesis runs on the test's thread and injects one fault at a time (a partition,
//! an isolated node, a bridge, a SIGKILL with a restart, a SIGSTOP with a SIGCONT, packet
//! delay and loss), holds it, heals it, and lets the cluster breathe before the next.
//! Keeping one fault at a time keeps a majority of replicas reachable for most of the run,
//! so the history holds many acknowledged writes for the checkers to judge.
//!
//! Both stop by themselves: clients at their deadline or operation count, the nemesis at
//! its deadline (finishing the fault it holds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::blocking::Client;
use reqwest::StatusCode;

use crate::history::{Event, EventType, FinalState, Op, Quorum, Recorder};
use crate::{with_query, Cluster, CONTEXT};

/// The bucket every operation of the suite goes to.
pub const BUCKET: &str = "jepsen";

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: usize,
    /// When the clients stop.
    pub duration: Duration,
    /// The most operations one client issues.
    pub max_ops_per_client: usize,
    /// Register keys (`r0`, `r1`, ...): few, so that clients contend.
    pub register_keys: usize,
    /// Set keys (`s0`, ...).
    pub set_keys: usize,
    /// The quorum of reads.
    pub read: Quorum,
    /// The quorum of writes and adds.
    pub write: Quorum,
    /// `timeout_ms` of each request; the client gives up a second later.
    pub request_timeout: Duration,
    /// The nodes requests go to (indexes into the URLs); empty means all.
    pub targets: Vec<usize>,
    /// The operation mix.
    pub mix: Mix,
    /// How long each client waits between two operations (none by default): a slower
    /// pace leaves keys untouched long enough for their tombstones to be reaped.
    pub think: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
}

/// The share of each operation, in percent (the rest are blind writes).
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Set adds (on the set keys).
    pub add: u8,
    /// Register reads.
    pub read: u8,
    /// Register read-modify-writes (a read, then a write with its context).
    pub read_modify_write: u8,
    /// Register writes with the context the client's own last acknowledged write of the
    /// key was answered with (a blind write when it has none yet).
    pub reuse_answer: u8,
    /// Register deletes with a read's context (a read, then a delete); the writes after
    /// them recreate the key.
    pub delete: u8,
}

impl Mix {
    /// Mostly causal updates, some reads, a few blind writes that race on purpose.
    pub const MIXED: Self = Self {
        add: 20,
        read: 25,
        read_modify_write: 30,
        reuse_answer: 15,
        delete: 0,
    };
    /// Register reads only.
    pub const READS: Self = Self {
        add: 0,
        read: 100,
        read_modify_write: 0,
        reuse_answer: 0,
        delete: 0,
    };
    /// Writes with their own last answer's context against blind writes (siblings the
    /// context-reusing writers never saw), with read-modify-writes that resolve them now
    /// and then, so that keys do not fill up with siblings.
    pub const REUSE: Self = Self {
        add: 0,
        read: 10,
        read_modify_write: 25,
        reuse_answer: 45,
        delete: 0,
    };
    /// Deletes and recreations: reads, read-modify-writes, context-reusing writes, deletes
    /// with a read's context and blind writes, in equal measure.
    pub const DELETES: Self = Self {
        add: 0,
        read: 20,
        read_modify_write: 20,
        reuse_answer: 20,
        delete: 20,
    };
}

impl Workload {
    /// Strict majority quorums (r = w = 2 of n = 3, `sloppy=false`), the setting under
    /// which every checker applies.
    pub fn strict(clients: usize, duration: Duration, seed: u64) -> Self {
        Self {
            clients,
            duration,
            max_ops_per_client: 100_000,
            register_keys: 6,
            set_keys: 2,
            read: Quorum {
                size: 2,
                sloppy: false,
            },
            write: Quorum {
                size: 2,
                sloppy: false,
            },
            request_timeout: Duration::from_secs(2),
            targets: Vec::new(),
            mix: Mix::MIXED,
            think: Duration::ZERO,
            seed,
        }
    }

    /// The register keys.
    pub fn register_key_names(&self) -> Vec<String> {
        (0..self.register_keys).map(|i| format!("r{i}")).collect()
    }

    /// The set keys.
    pub fn set_key_names(&self) -> Vec<String> {
        (0..self.set_keys).map(|i| format!("s{i}")).collect()
    }

    /// Starts the clients against `urls` (node `i` at `urls[i]`); they stop at the
    /// workload's deadline, after their operation budget, or when `stop` is set.
    pub fn start(
        &self,
        http: &Client,
        urls: &[String],
        recorder: &Recorder,
        stop: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<usize>> {
        let deadline = Instant::now() + self.duration;
        (0..self.clients)
            .map(|process| {
                let client = Worker {
                    process,
                    workload: self.clone(),
                    http: http.clone(),
                    urls: urls.to_vec(),
                    recorder: recorder.clone(),
                    rng: StdRng::seed_from_u64(self.seed.wrapping_add(process as u64)),
                    next_value: 0,
                    answers: HashMap::new(),
                };
                let stop = Arc::clone(stop);
                thread::spawn(move || client.run(deadline, &stop))
            })
            .collect()
    }
}

/// What one request got back.
enum Answer {
    /// 2xx, 300 or 404: the values (siblings) and the causal context.
    Values(Vec<Vec<u8>>, Option<String>),
    /// Written, with the context the write was answered with.
    Written(Option<String>),
    /// An error status, with its code.
    Error(String),
    /// No answer.
    Lost(String),
}

struct Worker {
    process: usize,
    workload: Workload,
    http: Client,
    urls: Vec<String>,
    recorder: Recorder,
    rng: StdRng,
    next_value: u64,
    /// Per register key, the context this client's last acknowledged write was answered
    /// with, and what that write superseded (its own value and what it saw).
    answers: HashMap<String, (String, Vec<String>)>,
}

impl Worker {
    fn run(mut self, deadline: Instant, stop: &AtomicBool) -> usize {
        let mut ops = 0;
        while ops < self.workload.max_ops_per_client
            && Instant::now() < deadline
            && !stop.load(Ordering::Relaxed)
        {
            let node = if self.workload.targets.is_empty() {
                self.rng.random_range(0..self.urls.len())
            } else {
                self.workload.targets[self.rng.random_range(0..self.workload.targets.len())]
            };
            let mix = self.workload.mix;
            let dice = self.rng.random_range(0..100u8);
            if dice < mix.add && self.workload.set_keys > 0 {
                let key = format!("s{}", self.rng.random_range(0..self.workload.set_keys));
                self.add(node, &key);
            } else {
                let key = format!("r{}", self.rng.random_range(0..self.workload.register_keys));
                let dice = dice.saturating_sub(mix.add);
                if dice < mix.read {
                    self.read(node, &key);
                } else if dice < mix.read + mix.read_modify_write {
                    self.read_modify_write(node, &key);
                } else if dice < mix.read + mix.read_modify_write + mix.reuse_answer {
                    let (context, saw) = self.answers.get(&key).cloned().unzip();
                    self.write(node, &key, context, saw.unwrap_or_default());
                } else if dice < mix.read + mix.read_modify_write + mix.reuse_answer + mix.delete {
                    self.read_delete(node, &key);
                } else {
                    self.write(node, &key, None, Vec::new());
                }
            }
            ops += 1;
            if !self.workload.think.is_zero() {
                sleep(self.workload.think);
            }
        }
        ops
    }

    fn event(&self, kind: EventType, f: Op, key: &str, node: usize) -> Event {
        Event {
            process: self.process,
            kind,
            f,
            key: key.to_string(),
            value: None,
            saw: Vec::new(),
            read: None,
            quorum: if f == Op::Read {
                self.workload.read
            } else {
                self.workload.write
            },
            node,
            time_ns: 0,
            error: None,
        }
    }

    fn complete(&self, f: Op, key: &str, node: usize, value: Option<String>, answer: &Answer) {
        let mut event = match answer {
            Answer::Values(..) | Answer::Written(_) => self.event(EventType::Ok, f, key, node),
            Answer::Error(code) => {
                let mut e = self.event(EventType::Fail, f, key, node);
                e.error = Some(code.clone());
                e
            }
            Answer::Lost(why) => {
                let mut e = self.event(EventType::Unknown, f, key, node);
                e.error = Some(why.clone());
                e
            }
        };
        event.value = value;
        if let (Op::Read, Answer::Values(values, _)) = (f, answer) {
            event.read = Some(
                values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect(),
            );
        }
        self.recorder.record(event);
    }

    /// A recorded register read; returns what it got.
    fn read(&mut self, node: usize, key: &str) -> Answer {
        self.recorder
            .record(self.event(EventType::Invoke, Op::Read, key, node));
        let answer = self.get(node, key);
        self.complete(Op::Read, key, node, None, &answer);
        answer
    }

    fn read_modify_write(&mut self, node: usize, key: &str) {
        if let Answer::Values(values, context) = self.read(node, key) {
            let saw = values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            self.write(node, key, context, saw);
        }
    }

    fn write(&mut self, node: usize, key: &str, context: Option<String>, saw: Vec<String>) {
        let value = self.unique_value();
        let mut invoke = self.event(EventType::Invoke, Op::Write, key, node);
        invoke.value = Some(value.clone());
        invoke.saw = saw.clone();
        self.recorder.record(invoke);
        let answer = self.put(node, key, value.as_bytes().to_vec(), context.as_deref());
        self.complete(Op::Write, key, node, Some(value.clone()), &answer);
        // The answer's context covers this write and what its context covered: a later
        // write with it supersedes exactly those (a failed or lost write leaves the last
        // answer in place, as a client would).
        if let Answer::Written(Some(answered)) = &answer {
            let mut superseded = saw;
            superseded.push(value);
            self.answers
                .insert(key.to_string(), (answered.clone(), superseded));
        }
    }

    /// A read, then a delete with its context: one operation in the history for each.
    fn read_delete(&mut self, node: usize, key: &str) {
        let Answer::Values(values, context) = self.read(node, key) else {
            return;
        };
        // A delete without a context would cover whatever the owners hold when it runs,
        // not what this client saw: only what was read is deleted.
        if values.is_empty() || context.is_none() {
            return;
        }
        let id = format!("del-{}", self.unique_value());
        let mut invoke = self.event(EventType::Invoke, Op::Delete, key, node);
        invoke.value = Some(id.clone());
        invoke.saw = values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        self.recorder.record(invoke);
        let answer = self.delete(node, key, context.as_deref());
        self.complete(Op::Delete, key, node, Some(id), &answer);
        // A delete answers with a context too, but the next writes here start over.
        self.answers.remove(key);
    }

    /// A set add: read the set's siblings, union them, add a unique element, write back
    /// with the read's context. One operation in the history.
    fn add(&mut self, node: usize, key: &str) {
        let element = self.unique_value();
        let mut invoke = self.event(EventType::Invoke, Op::Add, key, node);
        invoke.value = Some(element.clone());
        self.recorder.record(invoke);
        let answer = match self.get(node, key) {
            Answer::Values(siblings, context) => {
                let mut set = union_of(&siblings);
                set.insert(element.clone());
                let body = serde_json::to_vec(&set).unwrap_or_default();
                self.put(node, key, body, context.as_deref())
            }
            other => other,
        };
        self.complete(Op::Add, key, node, Some(element), &answer);
    }

    fn unique_value(&mut self) -> String {
        self.next_value += 1;
        format!("p{}-{}", self.process, self.next_value)
    }

    fn url(&self, node: usize, key: &str, query: &str) -> String {
        with_query(
            format!("{}/v1/buckets/{BUCKET}/keys/{key}", self.urls[node]),
            query,
        )
    }

    fn get(&self, node: usize, key: &str) -> Answer {
        let q = self.workload.read;
        let query = format!(
            "r={}&sloppy={}&timeout_ms={}",
            q.size,
            q.sloppy,
            self.workload.request_timeout.as_millis()
        );
        let sent = self
            .http
            .get(self.url(node, key, &query))
            .timeout(self.workload.request_timeout + Duration::from_secs(1))
            .send();
        read_answer(sent)
    }

    fn delete(&self, node: usize, key: &str, context: Option<&str>) -> Answer {
        let request = self.http.delete(self.url(node, key, &self.write_query()));
        self.send_write(request, context)
    }

    /// The query of a write or a delete: the workload's write quorum and timeout.
    fn write_query(&self) -> String {
        let q = self.workload.write;
        format!(
            "w={}&sloppy={}&timeout_ms={}",
            q.size,
            q.sloppy,
            self.workload.request_timeout.as_millis()
        )
    }

    /// Sends a write or a delete with the client's timeout and `context`.
    fn send_write(
        &self,
        request: reqwest::blocking::RequestBuilder,
        context: Option<&str>,
    ) -> Answer {
        let mut request = request.timeout(self.workload.request_timeout + Duration::from_secs(1));
        if let Some(context) = context {
            request = request.header(CONTEXT, context);
        }
        written(request.send())
    }

    fn put(&self, node: usize, key: &str, body: Vec<u8>, context: Option<&str>) -> Answer {
        let request = self
            .http
            .put(self.url(node, key, &self.write_query()))
            .header("content-type", "application/octet-stream")
            .body(body);
        self.send_write(request, context)
    }
}

/// What a write or a delete got back.
fn written(sent: reqwest::Result<reqwest::blocking::Response>) -> Answer {
    match sent {
        Ok(response) if response.status().is_success() => Answer::Written(
            response
                .headers()
                .get(CONTEXT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ),
        Ok(response) => Answer::Error(error_code(response)),
        Err(e) => Answer::Lost(e.to_string()),
    }
}

fn error_code(response: reqwest::blocking::Response) -> String {
    let status = response.status();
    let body: serde_json::Value = response.json().unwrap_or_default();
    format!(
        "{} {}",
        status.as_u16(),
        body["error"].as_str().unwrap_or("")
    )
}

fn read_answer(sent: reqwest::Result<reqwest::blocking::Response>) -> Answer {
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Answer::Lost(e.to_string()),
    };
    let context = response
        .headers()
        .get(CONTEXT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match response.status() {
        StatusCode::OK => match response.bytes() {
            Ok(body) => Answer::Values(vec![body.to_vec()], context),
            Err(e) => Answer::Lost(e.to_string()),
        },
        StatusCode::NOT_FOUND => Answer::Values(Vec::new(), context),
        StatusCode::MULTIPLE_CHOICES => {
            let body: serde_json::Value = match response.json() {
                Ok(body) => body,
                Err(e) => return Answer::Lost(e.to_string()),
            };
            let values = body["siblings"]
                .as_array()
                .map(|siblings| {
                    siblings
                        .iter()
                        .filter_map(|s| {
                            base64::engine::general_purpose::STANDARD
                                .decode(s["value_base64"].as_str()?)
                                .ok()
                        })
                        .collect()
                })
                .unwrap_or_default();
            Answer::Values(values, context)
        }
        _ => Answer::Error(error_code(response)),
    }
}

/// The union of set siblings (each a JSON array of strings; anything else counts as
/// empty, and then the checker reports the elements it lacks).
pub fn union_of(siblings: &[Vec<u8>]) -> BTreeSet<String> {
    siblings
        .iter()
        .filter_map(|s| serde_json::from_slice::<BTreeSet<String>>(s).ok())
        .flatten()
        .collect()
}

/// Reads every key at `r=all` from node `node`, retrying each for up to `patience`:
/// (register values, set unions). Panics when a key cannot be read in time.
pub fn final_state(
    cluster: &Cluster,
    node: usize,
    registers: &[String],
    sets: &[String],
    patience: Duration,
) -> (FinalState, FinalState) {
    let read_all = |key: &str| -> Vec<Vec<u8>> {
        let deadline = Instant::now() + patience;
        loop {
            let sent = cluster
                .http()
                .get(format!(
                    "{}/v1/buckets/{BUCKET}/keys/{key}?r=all&sloppy=false&read_repair=false",
                    cluster.url(node)
                ))
                .timeout(Duration::from_secs(10))
                .send();
            match read_answer(sent) {
                Answer::Values(values, _) => return values,
                other if Instant::now() > deadline => {
                    let why = match other {
                        Answer::Error(code) => code,
                        Answer::Lost(why) => why,
                        _ => String::new(),
                    };
                    panic!("final read of {key} failed for {patience:?}: {why}")
                }
                _ => sleep(Duration::from_millis(200)),
            }
        }
    };
    let registers = registers
        .iter()
        .map(|key| {
            let values = read_all(key)
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            (key.clone(), values)
        })
        .collect();
    let sets = sets
        .iter()
        .map(|key| (key.clone(), union_of(&read_all(key))))
        .collect();
    (registers, sets)
}

/// Waits until every node's own replica of every key holds the same values; returns how
/// long that took, or `None` if they still differ after `patience`.
pub fn wait_converged(cluster: &Cluster, keys: &[String], patience: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        // Nodes that left the cluster (and exited) hold nothing to converge.
        let running: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&i| cluster.nodes[i].is_running())
            .collect();
        let converged = keys.iter().all(|key| {
            let first = cluster.local_values(running[0], BUCKET, key.as_bytes());
            running[1..]
                .iter()
                .all(|&i| cluster.local_values(i, BUCKET, key.as_bytes()) == first)
        });
        if converged {
            return Some(start.elapsed());
        }
        if start.elapsed() > patience {
            return None;
        }
        sleep(Duration::from_millis(250));
    }
}

/// The faults the nemesis may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Two groups, a majority and a minority, cannot reach each other.
    Partition,
    /// One node cannot reach any other.
    Isolate,
    /// One node reaches both others, which cannot reach each other.
    Bridge,
    /// SIGKILL, then a restart with the same data directory.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// Delay, jitter and loss on one node's link (network namespaces only).
    Netem,
    /// A clean stop, a copy of the data directory and a restart; after the hold, a clean
    /// stop, the copy put back and a restart: the node forgets whatever it stored in
    /// between, as one restored from a backup does.
    Restore,
}

/// The nemesis's settings.
#[derive(Clone, Debug)]
pub struct Nemesis {
    /// The faults to draw from.
    pub faults: Vec<Fault>,
    /// How long each fault is held (drawn between the bounds).
    pub hold: (Duration, Duration),
    /// The quiet time between faults (drawn between the bounds).
    pub calm: (Duration, Duration),
    /// Seed of the nemesis's choices.
    pub seed: u64,
}

impl Nemesis {
    /// Injects faults until `deadline`, one at a time; returns how many of each kind.
    pub fn run(&self, cluster: &mut Cluster, deadline: Instant) -> BTreeMap<Fault, usize> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut injected = BTreeMap::new();
        let size = cluster.nodes.len();
        let between = |rng: &mut StdRng, (low, high): (Duration, Duration)| {
            Duration::from_millis(rng.random_range(low.as_millis()..=high.as_millis()) as u64)
        };
        while Instant::now() < deadline && !self.faults.is_empty() {
            sleep(between(&mut rng, self.calm));
            if Instant::now() >= deadline {
                break;
            }
            let fault = self.faults[rng.random_range(0..self.faults.len())];
            let victim = rng.random_range(0..size);
            let hold = between(&mut rng, self.hold);
            let others: Vec<usize> = (0..size).filter(|&i| i != victim).collect();
            match fault {
                Fault::Partition | Fault::Isolate => {
                    // With three nodes a majority/minority split isolates one node; with
                    // more, the minority holds up to half minus one.
                    let minority_size = if fault == Fault::Isolate {
                        1
                    } else {
                        rng.random_range(1..=(size - 1) / 2)
                    };
                    let mut order: Vec<usize> = (0..size).collect();
                    order.rotate_left(victim);
                    let (minority, majority) = order.split_at(minority_size);
                    cluster.partition(&[minority, majority]);
                    sleep(hold);
                    cluster.heal();
                }
                Fault::Bridge => {
                    // `victim` is the bridge: the others are split, each still sees it.
                    let (left, right) = others.split_at(others.len() / 2);
                    let left: Vec<usize> = left.iter().copied().chain([victim]).collect();
                    let right: Vec<usize> = right.iter().copied().chain([victim]).collect();
                    cluster.partition(&[&left, &right]);
                    sleep(hold);
                    cluster.heal();
                }
                Fault::Kill => {
                    cluster.kill(victim);
                    sleep(hold);
                    cluster.restart(victim);
                }
                Fault::Restore => {
                    let copy = cluster.back_up(victim);
                    sleep(hold);
                    cluster.restore(victim, &copy);
                }
                Fault::Pause => {
                    cluster.pause(victim);
                    sleep(hold);
                    cluster.resume(victim);
                }
                Fault::Netem => {
                    // Only hosts in network namespaces have a link to shape.
                    if cluster.netem(victim, "delay 40ms 20ms loss 5%").is_err() {
                        continue;
                    }
                    sleep(hold);
                    cluster
                        .clear_netem(victim)
                        .expect("netem that was set can be cleared");
                }
            }
            *injected.entry(fault).or_insert(0) += 1;
        }
        injected
    }
}
