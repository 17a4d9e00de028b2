//! Bucket properties cluster-wide: a change is made at one node and spreads to the others,
//! which pull the properties table on every upkeep tick and keep the newest version of
//! each bucket's ([`crate::props`]). A change of `n` is refused while any member holds
//! data of the bucket, since the keys would be placed on owners that do not hold them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use quorumkv_ring::NodeId;
use tokio::time::Instant;

use super::{quorum_unavailable, unexpected, Coordinator, PropsUpdate, META_PROPS};
use crate::error::{CoordinatorError, Operation, ReplicaFailure};
use crate::message::{Request, Response};
use crate::props::VersionedProps;
use crate::quorum::BucketProps;
use crate::BucketName;

impl Coordinator {
    /// Changes the properties of `bucket` cluster-wide. A change of `n` is refused while any
    /// member holds data of the bucket.
    pub async fn set_bucket_props(
        self: &Arc<Self>,
        bucket: &BucketName,
        update: PropsUpdate,
    ) -> Result<BucketProps, CoordinatorError> {
        let current = self.bucket_props(bucket);
        let n = update.n.unwrap_or(current.n);
        let (default_r, default_w) = if n == current.n {
            (current.r, current.w)
        } else {
            let fresh = BucketProps::with_n(n);
            (fresh.r, fresh.w)
        };
        let props = BucketProps {
            n,
            r: update.r.unwrap_or(default_r),
            w: update.w.unwrap_or(default_w),
        };
        props.validate()?;
        if n != current.n {
            self.ensure_bucket_empty(bucket, current.n, n).await?;
        }
        let entry = VersionedProps {
            props,
            version: self.props.next_version(bucket.as_str(), &self.node),
        };
        // Stored before it is applied: a change this node cannot store (its disk is full)
        // must fail whole, not spread from its memory to the peers after the client was
        // told it failed.
        let mut stored = self.props.snapshot();
        stored.insert(bucket.as_str().to_string(), entry.clone());
        self.save_meta(META_PROPS, &stored).await?;
        let table = std::collections::BTreeMap::from([(bucket.as_str().to_string(), entry)]);
        self.props.merge(&table);
        // Push to every peer now; one that misses it pulls it on its next sync round.
        let pushes = self.membership.peer_addrs().into_iter().map(|addr| {
            let request = Request::PutProps {
                props: table.clone(),
            };
            let transport = Arc::clone(&self.transport);
            async move {
                transport
                    .call(&addr, &request, Duration::from_secs(1))
                    .await
            }
        });
        futures::future::join_all(pushes).await;
        Ok(props)
    }

    /// Whether any member holds data of `bucket`: every member must answer that it holds
    /// none before `n` may change.
    async fn ensure_bucket_empty(
        self: &Arc<Self>,
        bucket: &BucketName,
        current: usize,
        requested: usize,
    ) -> Result<(), CoordinatorError> {
        let members: Vec<NodeId> = self.ring()?.members().to_vec();
        let deadline = Instant::now() + Duration::from_secs(2);
        let request = Request::BucketHasKeys {
            bucket: bucket.as_bytes().to_vec(),
        };
        let sends = members
            .iter()
            .map(|m| (m.clone(), request.clone()))
            .collect();
        let mut pending = self.fan_out(sends, deadline);
        let mut answered = 0;
        let mut failures = Vec::new();
        while let Some((node, result)) = pending.next().await {
            match result {
                Ok(Response::HasKeys(false)) => answered += 1,
                Ok(Response::HasKeys(true)) => {
                    return Err(CoordinatorError::BucketNotEmpty {
                        bucket: bucket.to_string(),
                        current,
                        requested,
                    })
                }
                Ok(other) => failures.push(unexpected(node, &other)),
                Err(reason) => failures.push(ReplicaFailure { node, reason }),
            }
        }
        if answered < members.len() {
            // Without every member's answer the bucket may hold data somewhere.
            return Err(quorum_unavailable(
                Operation::SetProps,
                members.len(),
                answered,
                failures,
            ));
        }
        Ok(())
    }

    /// Merges the bucket properties a peer holds into this node's, keeping them if any
    /// changed.
    pub(super) async fn adopt_props(
        self: &Arc<Self>,
        incoming: &std::collections::BTreeMap<String, VersionedProps>,
    ) -> Result<(), CoordinatorError> {
        if self.props.merge(incoming) {
            let snapshot = self.props.snapshot();
            self.save_meta(META_PROPS, &snapshot).await?;
        }
        Ok(())
    }
}
