//! The store's incarnations: every open takes a new actor id, durably stored before any
//! dot is minted under it (see `Store::open` for why), and the planted bug that keeps the
//! last start's actor for the restore control of the fault suite.

use rocksdb::{WriteOptions, DB};

use super::{column_family, Store, CF_META};
use crate::error::{CodecError, StoreError};
use crate::version::ActorId;

/// Meta key of the actor id, in the store's own namespace.
pub(super) const META_ACTOR_ID: &[u8] = b"store/actor_id";

/// Meta key that earlier releases wrote at a clean close, to keep their actor across it.
/// Every open now takes a new actor; an open deletes a mark left by an earlier release.
pub(super) const META_CLEAN_CLOSE: &[u8] = b"store/clean_close";
/// Meta key of a planted bug (see [`Store::plant_actor_reuse`](super::Store::plant_actor_reuse)): while present, an open
/// keeps the actor of the last start, as releases before per-start actors did.
pub(super) const META_PLANTED_ACTOR_REUSE: &[u8] = b"store/planted_actor_reuse";

/// Starts this open of the store with a new actor id, durably stored before any dot can
/// be minted under it (see [`Store::open`](super::Store::open) for why every open takes one). Also says
/// whether the planted bug of [`Store::plant_actor_reuse`](super::Store::plant_actor_reuse) kept the last start's instead.
pub(super) fn start_incarnation(db: &DB) -> Result<(ActorId, bool), StoreError> {
    let meta = column_family(db, CF_META)?;
    let mut durable = WriteOptions::default();
    durable.set_sync(true);
    let previous = read_actor(db)?;
    if let Some(previous) = previous {
        if db.get_cf(meta, META_PLANTED_ACTOR_REUSE)?.is_some() {
            tracing::warn!(%previous, "fault injection: the last start's actor is reused");
            return Ok((previous, true));
        }
    }
    // Random rather than derived from the node's name or a counter on disk, which a
    // restored copy of the directory would hold at an earlier value.
    let actor = ActorId(rand::random());
    db.put_cf_opt(meta, META_ACTOR_ID, actor.0.to_be_bytes(), &durable)?;
    if db.get_cf(meta, META_CLEAN_CLOSE)?.is_some() {
        db.delete_cf_opt(meta, META_CLEAN_CLOSE, &durable)?;
    }
    match previous {
        Some(previous) => tracing::info!(%previous, %actor, "new actor id for this start"),
        None => tracing::info!(%actor, "new actor id minted for a new database"),
    }
    Ok((actor, false))
}

/// Reads the actor id of the last start, if there was one.
pub(super) fn read_actor(db: &DB) -> Result<Option<ActorId>, StoreError> {
    let meta = column_family(db, CF_META)?;
    let Some(bytes) = db.get_cf(meta, META_ACTOR_ID)? else {
        return Ok(None);
    };
    let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
        let reason = CodecError::Malformed(format!("actor id is {} bytes, not 8", bytes.len()));
        tracing::error!(%reason, "unreadable actor id");
        StoreError::Corrupt {
            key: "meta/store/actor_id".to_owned(),
            reason,
        }
    })?;
    Ok(Some(ActorId(u64::from_be_bytes(bytes))))
}

impl Store {
    /// Plants, or with `on` false removes, a bug for the fault suite's negative control
    /// of restores: every later open keeps the actor of the start before it, and each
    /// key's next dot counts from what its record on disk holds, as releases that kept
    /// their actor across a clean close did. A directory restored from a copy then mints
    /// dots that other replicas already cover (see [`Store::open`]). The mark is durable
    /// and lives in the data directory, so a copy taken after planting carries it.
    /// Reached only through the fault-injection route of a node started to allow it.
    ///
    /// # Errors
    /// [`StoreError::Db`] if the mark cannot be written.
    pub fn plant_actor_reuse(&self, on: bool) -> Result<(), StoreError> {
        let meta = column_family(&self.db, CF_META)?;
        let mut durable = WriteOptions::default();
        durable.set_sync(true);
        if on {
            self.db
                .put_cf_opt(meta, META_PLANTED_ACTOR_REUSE, [1], &durable)?;
        } else {
            self.db
                .delete_cf_opt(meta, META_PLANTED_ACTOR_REUSE, &durable)?;
        }
        Ok(())
    }
}
