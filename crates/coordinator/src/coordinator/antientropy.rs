//! Active anti-entropy: replicas of a partition compare hash trees and exchange only the
//! keys that differ (Dynamo, section 4.7).
//!
//! Hinted handoff and read repair fix most divergence, but a hint can expire or be refused
//! and a key nobody reads is never repaired by reading. Anti-entropy is the backstop: every
//! replica of every key eventually holds the merge of all of them, whatever was lost.
//!
//! # An exchange
//! Each store keeps a hash tree per (partition, bucket) of its keys' record digests
//! (`quorumkv_replica`'s store, in memory). An exchange of partition `p` between
//! this node and a peer `Q`, for every bucket both replicate (both are among the first
//! `n` nodes of `p`'s preference list, `n` being the bucket's):
//! 1. `AaeRoots { p }`: the peer's root per bucket; equal roots end the bucket there.
//! 2. `AaeSegments { p, bucket }`: the peer's 256 segment hashes of a differing tree.
//! 3. `AaeKeys { p, bucket, segments }`: the peer's (key, digest) pairs of the differing
//!    segments, compared with the local ones.
//! 4. For each key whose digest differs or that one side lacks: `Get` the peer's object,
//!    merge it into the local store, and send the merge back with `Merge` unless the peer
//!    already holds exactly it. Both sides then hold the join of the two states.
//!
//! Merges are CRDT joins, so an exchange racing with writes, with another exchange, or
//! with the peer's own exchange of the same partition is harmless: a key that changed
//! meanwhile is at worst exchanged once more.
//!
//! # Cost
//! A partition in sync costs one small round trip. A differing tree adds its segment
//! hashes (about 2.3 KiB), and each differing segment its key list; each differing key
//! costs a `Get` and at most one `Merge` of its object. The cost follows the differences,
//! not the data (BENCHMARKS.md has figures).
//!
//! # Pace
//! [`Coordinator::anti_entropy_round`] is called periodically by the server. A round
//! walks the partitions from where the previous one stopped, skips those this node holds
//! no replicated keys in, and exchanges at most
//! [`AntiEntropyOptions::partitions_per_round`] of them, each with the next replica peer
//! (round robin) that the failure detector reports up. It repairs at most
//! [`AntiEntropyOptions::keys_per_round`] keys and starts no work after
//! [`AntiEntropyOptions::round_budget`]; an exchange cut short resumes first next round.
//! Keys are repaired one at a time, so anti-entropy never floods the peer.
//!
//! # Simplifications
//! - A partition in which this node holds no key is never started from here: its peers,
//!   which hold the keys, start it.
//! - Trees are compared by partition as the ring places it now; keys a node holds for a
//!   partition it no longer replicates are left alone (transfers are for membership
//!   changes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use quorumkv_replica::{Store, StoreError};
use quorumkv_ring::{NodeId, PartitionId, Ring};
use tokio::time::Instant;

use super::Coordinator;
use crate::message::{self, RemoteErrorKind, Request, Response};
use crate::BucketName;

/// Settings of anti-entropy rounds.
#[derive(Clone, Debug)]
pub struct AntiEntropyOptions {
    /// The most partitions one round exchanges.
    pub partitions_per_round: usize,
    /// The most keys one round repairs; the rest wait for the next round.
    pub keys_per_round: usize,
    /// How long a round may run; no new work starts after it.
    pub round_budget: Duration,
    /// Timeout of each request to a peer.
    pub request_timeout: Duration,
    /// The most segments asked for in one `AaeKeys` request.
    pub segments_per_request: usize,
}

impl Default for AntiEntropyOptions {
    fn default() -> Self {
        Self {
            partitions_per_round: 16,
            keys_per_round: 10_000,
            round_budget: Duration::from_secs(20),
            request_timeout: Duration::from_secs(5),
            segments_per_request: 32,
        }
    }
}

/// What one round of anti-entropy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AntiEntropyStats {
    /// Partitions compared with a peer.
    pub exchanges: u64,
    /// Trees (partition, bucket) whose roots differed.
    pub trees_differing: u64,
    /// Keys that differed and were exchanged.
    pub keys_exchanged: u64,
    /// Bytes of the requests sent to peers (framed as on the wire).
    pub bytes_sent: u64,
    /// Bytes of the responses received from peers (framed as on the wire).
    pub bytes_received: u64,
    /// Requests or repairs that failed (retried in a later round).
    pub errors: u64,
}

/// Where the next round starts.
#[derive(Debug, Default)]
pub(crate) struct AntiEntropyState {
    /// A std mutex: held only to read or advance the cursors, never across an await.
    cursor: Mutex<Cursor>,
}

#[derive(Debug, Default)]
struct Cursor {
    /// The partition the next round looks at first.
    next_partition: u32,
    /// Per partition, the index (into its peer list) of the next peer to exchange with.
    next_peer: HashMap<u32, usize>,
}

/// Key repairs one exchange keeps in flight.
const REPAIRS_IN_FLIGHT: usize = 16;

/// What is left of a round's allowance.
pub(super) struct Budget {
    pub(super) deadline: Instant,
    pub(super) keys_left: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.keys_left == 0 || Instant::now() >= self.deadline
    }
}

/// How an exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Every difference found was handled (or failed, to be retried later).
    Done,
    /// The round's budget ran out first.
    OutOfBudget,
}

/// Answers an anti-entropy request from the local store. Blocking (`AaeKeys` scans).
pub(crate) fn serve(store: &Store, request: Request) -> Result<Response, StoreError> {
    Ok(match request {
        Request::AaeRoots { partition } => Response::AaeRoots(store.aae_roots(partition)),
        Request::AaeSegments { partition, bucket } => {
            Response::AaeSegments(store.aae_segments(partition, &bucket))
        }
        Request::AaeKeys {
            partition,
            bucket,
            segments,
        } => Response::AaeKeys(store.aae_keys(partition, &bucket, &segments)?),
        _ => Response::Error {
            kind: RemoteErrorKind::BadRequest,
            message: "not an anti-entropy request".into(),
        },
    })
}

impl Coordinator {
    /// One round of anti-entropy (see the module docs for what it does and its limits).
    /// Returns what it did; also counted in the `quorumkv_aae_*` metrics.
    pub async fn anti_entropy_round(self: &Arc<Self>) -> AntiEntropyStats {
        let options = &self.options.anti_entropy;
        let mut stats = AntiEntropyStats::default();
        let Some(ring) = self.membership.ring() else {
            return stats;
        };
        let partitions = ring.partition_count();
        let bits = self.store.aae_partition_bits();
        if 1u64 << bits != u64::from(partitions) {
            tracing::error!(
                partitions,
                store_partition_bits = bits,
                "anti-entropy is off: the store's trees do not match the ring's partitions"
            );
            return stats;
        }
        let mut budget = Budget {
            deadline: Instant::now() + options.round_budget,
            keys_left: options.keys_per_round,
        };
        let first = self.cursor().next_partition % partitions;
        let mut exchanged = 0;
        for step in 0..partitions {
            if exchanged >= options.partitions_per_round || budget.spent() {
                break;
            }
            let partition = (first + step) % partitions;
            let peers = self.replica_peers(&ring, partition);
            let mut resume_at = (partition + 1) % partitions;
            if let Some(peer) = self.next_peer_up(partition, &peers) {
                exchanged += 1;
                let ended = self
                    .exchange(&ring, partition, &peer, &mut budget, &mut stats)
                    .await;
                if ended == Ended::OutOfBudget {
                    resume_at = partition;
                }
            }
            self.cursor().next_partition = resume_at;
        }
        record_metrics(&stats);
        if stats.keys_exchanged > 0 || stats.errors > 0 {
            tracing::info!(
                exchanges = stats.exchanges,
                keys = stats.keys_exchanged,
                errors = stats.errors,
                bytes_sent = stats.bytes_sent,
                bytes_received = stats.bytes_received,
                "anti-entropy round"
            );
        } else {
            tracing::debug!(exchanges = stats.exchanges, "anti-entropy round: in sync");
        }
        stats
    }

    /// Exchanges partition `partition` with `peer`, for every bucket both replicate.
    async fn exchange(
        self: &Arc<Self>,
        ring: &Ring,
        partition: u32,
        peer: &NodeId,
        budget: &mut Budget,
        stats: &mut AntiEntropyStats,
    ) -> Ended {
        let Some(addr) = self.membership.addr_of(peer) else {
            return Ended::Done;
        };
        let local: BTreeMap<Vec<u8>, u64> = self.store.aae_roots(partition).into_iter().collect();
        let remote: BTreeMap<Vec<u8>, u64> = match self
            .aae_call(&addr, Request::AaeRoots { partition }, stats)
            .await
        {
            Ok(Response::AaeRoots(roots)) => roots.into_iter().collect(),
            other => return failed(stats, peer, "roots", other),
        };
        stats.exchanges += 1;
        let buckets: BTreeSet<&Vec<u8>> = local.keys().chain(remote.keys()).collect();
        for bucket in buckets {
            if local.get(bucket) == remote.get(bucket)
                || !self.both_replicate(ring, partition, bucket, peer)
            {
                continue;
            }
            stats.trees_differing += 1;
            if self
                .exchange_tree(&addr, partition, bucket, budget, stats)
                .await
                == Ended::OutOfBudget
            {
                return Ended::OutOfBudget;
            }
        }
        Ended::Done
    }

    /// Walks one differing tree down to its differing keys and repairs them.
    pub(super) async fn exchange_tree(
        self: &Arc<Self>,
        addr: &str,
        partition: u32,
        bucket: &[u8],
        budget: &mut Budget,
        stats: &mut AntiEntropyStats,
    ) -> Ended {
        let local = self.store.aae_segments(partition, bucket);
        let request = Request::AaeSegments {
            partition,
            bucket: bucket.to_vec(),
        };
        let remote = match self.aae_call(addr, request, stats).await {
            Ok(Response::AaeSegments(segments)) if segments.len() == local.len() => segments,
            other => return failed(stats, addr, "segments", other),
        };
        let differing: Vec<u8> = (0..=u8::MAX)
            .zip(local.iter().zip(&remote))
            .filter(|(_, (l, r))| l != r)
            .map(|(segment, _)| segment)
            .collect();
        for segments in differing.chunks(self.options.anti_entropy.segments_per_request.max(1)) {
            if budget.spent() {
                return Ended::OutOfBudget;
            }
            let request = Request::AaeKeys {
                partition,
                bucket: bucket.to_vec(),
                segments: segments.to_vec(),
            };
            let remote = match self.aae_call(addr, request, stats).await {
                Ok(Response::AaeKeys(keys)) => keys,
                other => return failed(stats, addr, "keys", other),
            };
            let asked = segments.to_vec();
            let owned_bucket = bucket.to_vec();
            let local = match self
                .on_store(move |store| store.aae_keys(partition, &owned_bucket, &asked))
                .await
            {
                Ok(keys) => keys,
                Err(error) => return failed(stats, addr, "local keys", Err(error)),
            };
            let mut keys = differing_keys(local, remote);
            let over_budget = keys.len() > budget.keys_left;
            keys.truncate(budget.keys_left);
            budget.keys_left -= keys.len();
            // A few repairs in flight at once: each is a round trip to the peer and a
            // merge on a blocking thread, so one at a time leaves both sides idle most of
            // the time (a transfer then moved about 3.4k keys/s).
            let mut repairs = stream::iter(keys.into_iter().map(|key| async move {
                let mut delta = AntiEntropyStats::default();
                let result = self.repair_key(addr, bucket, &key, &mut delta).await;
                (key, result, delta)
            }))
            .buffer_unordered(REPAIRS_IN_FLIGHT);
            while let Some((key, result, delta)) = repairs.next().await {
                stats.bytes_sent += delta.bytes_sent;
                stats.bytes_received += delta.bytes_received;
                match result {
                    Ok(()) => stats.keys_exchanged += 1,
                    Err(reason) => {
                        stats.errors += 1;
                        tracing::debug!(
                            key = %format!("{}/{}", bucket.escape_ascii(), key.escape_ascii()),
                            %reason,
                            "anti-entropy repair failed"
                        );
                    }
                }
                if Instant::now() >= budget.deadline {
                    return Ended::OutOfBudget;
                }
            }
            if over_budget {
                return Ended::OutOfBudget;
            }
        }
        Ended::Done
    }

    /// Brings one key to the join of both replicas: the peer's state merged here, the
    /// merge sent back unless the peer holds exactly it already.
    async fn repair_key(
        self: &Arc<Self>,
        addr: &str,
        bucket: &[u8],
        key: &[u8],
        stats: &mut AntiEntropyStats,
    ) -> Result<(), String> {
        let request = Request::Get {
            bucket: bucket.to_vec(),
            key: key.to_vec(),
        };
        let remote = match self.aae_call(addr, request, stats).await? {
            Response::Object(object) => object,
            other => return Err(format!("unexpected response {other:?}")),
        };
        let (owned_bucket, owned_key, incoming) = (bucket.to_vec(), key.to_vec(), remote.clone());
        let merged = self
            .on_store(move |store| match incoming {
                Some(object) => store.merge(&owned_bucket, &owned_key, &object).map(Some),
                None => store.get(&owned_bucket, &owned_key),
            })
            .await?;
        let Some(merged) = merged.filter(|m| Some(m) != remote.as_ref()) else {
            return Ok(());
        };
        let request = Request::Merge {
            bucket: bucket.to_vec(),
            key: key.to_vec(),
            object: merged,
        };
        match self.aae_call(addr, request, stats).await? {
            Response::Ack => Ok(()),
            other => Err(format!("unexpected response {other:?}")),
        }
    }

    /// Sends one request to a peer, counting the framed bytes both ways.
    pub(super) async fn aae_call(
        &self,
        addr: &str,
        request: Request,
        stats: &mut AntiEntropyStats,
    ) -> Result<Response, String> {
        stats.bytes_sent += message::encode(&request).len() as u64;
        let response = self
            .transport
            .call(addr, &request, self.options.anti_entropy.request_timeout)
            .await
            .map_err(|e| e.to_string())?;
        stats.bytes_received += message::encode(&response).len() as u64;
        match response {
            Response::Error { kind, message } => Err(format!("{kind:?}: {message}")),
            other => Ok(other),
        }
    }

    /// Runs store work on a blocking thread.
    async fn on_store<T, F>(&self, work: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(format!("storage task failed: {e}")),
        }
    }

    /// The peers this node exchanges `partition` with: the other replicas, in preference
    /// order, of the buckets it holds keys of there and replicates.
    fn replica_peers(&self, ring: &Ring, partition: u32) -> Vec<NodeId> {
        let mut peers = Vec::new();
        for (bucket, _) in self.store.aae_roots(partition) {
            let Some(n) = self.replication_factor(&bucket) else {
                continue;
            };
            let owners = ring.preference_list_for(PartitionId(partition), n);
            if owners.contains(&self.node) {
                for owner in owners {
                    if owner != self.node && !peers.contains(&owner) {
                        peers.push(owner);
                    }
                }
            }
        }
        peers
    }

    /// Whether this node and `peer` are both among the replicas of `bucket` in `partition`.
    fn both_replicate(&self, ring: &Ring, partition: u32, bucket: &[u8], peer: &NodeId) -> bool {
        self.replication_factor(bucket).is_some_and(|n| {
            let owners = ring.preference_list_for(PartitionId(partition), n);
            owners.contains(&self.node) && owners.contains(peer)
        })
    }

    /// The `n` of a bucket, or `None` for bytes that are not a bucket name.
    pub(super) fn replication_factor(&self, bucket: &[u8]) -> Option<usize> {
        BucketName::parse(bucket)
            .ok()
            .map(|name| self.bucket_props(&name).n)
    }

    /// The next peer of `partition` in round-robin order that is up, advancing the turn.
    fn next_peer_up(&self, partition: u32, peers: &[NodeId]) -> Option<NodeId> {
        let mut cursor = self.cursor();
        let turn = cursor.next_peer.get(&partition).copied().unwrap_or(0);
        let index = (0..peers.len())
            .map(|i| (turn + i) % peers.len())
            .find(|&i| self.membership.is_up(&peers[i]))?;
        cursor.next_peer.insert(partition, index + 1);
        Some(peers[index].clone())
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Cursor> {
        // The cursor is two integers a panic cannot leave half-written.
        self.anti_entropy
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keys whose digests differ between two (key, digest) lists, or that one list lacks.
fn differing_keys(local: Vec<(Vec<u8>, u64)>, remote: Vec<(Vec<u8>, u64)>) -> Vec<Vec<u8>> {
    let mut local: BTreeMap<Vec<u8>, u64> = local.into_iter().collect();
    let mut keys = Vec::new();
    for (key, digest) in remote {
        match local.remove(&key) {
            Some(mine) if mine == digest => {}
            _ => keys.push(key),
        }
    }
    keys.extend(local.into_keys());
    keys
}

/// Counts and logs a failed step of an exchange; the exchange stops there and is retried
/// in a later round.
fn failed<P: std::fmt::Display + ?Sized>(
    stats: &mut AntiEntropyStats,
    peer: &P,
    step: &str,
    outcome: Result<Response, String>,
) -> Ended {
    stats.errors += 1;
    let reason = match outcome {
        Ok(other) => format!("unexpected response {other:?}"),
        Err(reason) => reason,
    };
    tracing::warn!(%peer, step, %reason, "anti-entropy exchange failed");
    Ended::Done
}

fn record_metrics(stats: &AntiEntropyStats) {
    metrics::counter!("quorumkv_aae_exchanges_total").increment(stats.exchanges);
    metrics::counter!("quorumkv_aae_keys_exchanged_total").increment(stats.keys_exchanged);
    metrics::counter!("quorumkv_aae_bytes_total", "direction" => "sent")
        .increment(stats.bytes_sent);
    metrics::counter!("quorumkv_aae_bytes_total", "direction" => "received")
        .increment(stats.bytes_received);
    metrics::counter!("quorumkv_aae_errors_total").increment(stats.errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_keys_are_the_symmetric_difference_by_digest() {
        let local = vec![(b"a".to_vec(), 1), (b"b".to_vec(), 2), (b"c".to_vec(), 3)];
        let remote = vec![(b"b".to_vec(), 2), (b"c".to_vec(), 4), (b"d".to_vec(), 5)];
        let mut keys = differing_keys(local, remote);
        keys.sort();
        assert_eq!(keys, [b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        assert!(differing_keys(vec![(b"x".to_vec(), 9)], vec![(b"x".to_vec(), 9)]).is_empty());
    }

    /// Pins the anti-entropy messages of protocol v1: appended after every older variant,
    /// so nodes without anti-entropy refuse them cleanly.
    #[test]
    fn golden_aae_frames_are_pinned() {
        assert_eq!(
            message::encode(&Request::AaeRoots { partition: 3 }),
            [1, 9, 3]
        );
        assert_eq!(
            message::encode(&Request::AaeSegments {
                partition: 3,
                bucket: b"b".to_vec()
            }),
            [1, 10, 3, 1, b'b']
        );
        assert_eq!(
            message::encode(&Request::AaeKeys {
                partition: 3,
                bucket: b"b".to_vec(),
                segments: vec![0, 255]
            }),
            [1, 11, 3, 1, b'b', 2, 0, 255]
        );
        assert_eq!(
            message::encode(&Response::AaeRoots(vec![(b"b".to_vec(), 1)])),
            [1, 6, 1, 1, b'b', 1]
        );
        assert_eq!(
            message::encode(&Response::AaeSegments(vec![0, 2])),
            [1, 7, 2, 0, 2]
        );
        assert_eq!(
            message::encode(&Response::AaeKeys(vec![(b"k".to_vec(), 300)])),
            [1, 8, 1, 1, b'k', 0xac, 0x02]
        );
        for request in [
            Request::AaeRoots { partition: 0 },
            Request::AaeKeys {
                partition: 65_535,
                bucket: b"users".to_vec(),
                segments: (0..=255).collect(),
            },
        ] {
            assert_eq!(
                message::decode::<Request>(&message::encode(&request)),
                Ok(request)
            );
        }
    }

    #[test]
    fn default_partitions_match_the_default_store() {
        let store = quorumkv_replica::StoreOptions::default();
        assert_eq!(
            1u32 << store.partition_bits,
            quorumkv_ring::DEFAULT_PARTITIONS
        );
    }
}
