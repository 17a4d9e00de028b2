//! The node's credentials: the token files and the cluster secret its flags name, read at
//! start and again on SIGHUP, and the key that signs causal contexts, which follows the
//! secret.
//!
//! A reload is whole or nothing. Every file is read and checked as at start (a token under
//! 16 characters, the example's placeholder, an empty file, a secret file of three lines);
//! if any fails the node keeps what it had, logs why (naming the flag and the file, never
//! the contents) and counts it in `quorumkv_credential_reloads_total{outcome="refused"}`.
//! A good reload replaces at once the tokens the edge checks, the secrets it accepts from
//! peers, the secret the transport sends, and the key contexts are signed and checked
//! with. With a two-line secret file that is what lets a running cluster change its
//! secret in three steps without a restart: `old`+`new` (send old, accept both), then
//! `new`+`old`, then `new`, each step applied on every node before the next.
//!
//! A node without a secret (a node alone) signs with a key of its own, kept in its data
//! directory so that tokens stay good across restarts; a reload never changes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use quorumkv_coordinator::ContextKey;
use quorumkv_http_api::{Credentials, Current, HttpTransport};
use quorumkv_replica::Store;
use tokio::sync::watch;

use crate::cli::ServeArgs;

/// The credential files the flags name.
#[derive(Clone, Debug)]
pub struct CredentialFiles {
    auth_tokens: Option<PathBuf>,
    admin_tokens: Option<PathBuf>,
    cluster_secret: Option<PathBuf>,
    /// The other nodes the seeds name: with any, a secret is required.
    peers: Vec<String>,
}

impl CredentialFiles {
    /// The files `args` name, for a node with `peers`.
    pub fn of(args: &ServeArgs, peers: &[String]) -> Self {
        Self {
            auth_tokens: args.auth_token_file.clone(),
            admin_tokens: args.admin_token_file.clone(),
            cluster_secret: args.cluster_secret_file.clone(),
            peers: peers.to_vec(),
        }
    }

    /// Reads and checks every file. A file that cannot be read or holds nothing usable
    /// is an error naming its flag, and so is a node with peers but no secret; the
    /// contents are never shown.
    pub fn load(&self) -> anyhow::Result<Credentials> {
        let mut credentials = Credentials::default();
        if let Some(path) = &self.auth_tokens {
            let text = read_credentials("--auth-token-file", path)?;
            credentials = credentials
                .with_client_tokens(&text)
                .with_context(|| format!("--auth-token-file {}", path.display()))?;
        }
        if let Some(path) = &self.admin_tokens {
            let text = read_credentials("--admin-token-file", path)?;
            credentials = credentials
                .with_admin_tokens(&text)
                .with_context(|| format!("--admin-token-file {}", path.display()))?;
        }
        if let Some(path) = &self.cluster_secret {
            let text = read_credentials("--cluster-secret-file", path)?;
            credentials = credentials
                .with_cluster_secret(&text)
                .with_context(|| format!("--cluster-secret-file {}", path.display()))?;
        } else if !self.peers.is_empty() {
            bail!(
                "--seeds name other nodes ({}) but no --cluster-secret-file is given: every \
                 node of a cluster needs the cluster secret (the same file everywhere, at \
                 least 16 characters), or any caller that reaches a node could use its \
                 internode routes",
                self.peers.join(", ")
            );
        }
        Ok(credentials)
    }

    /// Says at start what a configuration leaves out that its operator may not expect.
    pub fn warn_at_start(&self) {
        if self.auth_tokens.is_some() && self.admin_tokens.is_none() {
            tracing::warn!(
                "--auth-token-file without --admin-token-file: no token may call the admin \
                 routes (leave, remove, cleanup, bucket properties); give an admin token file \
                 to use them"
            );
        }
    }
}

/// The text of the credentials file `path` given to `flag`; an error names both, never the
/// contents.
pub fn read_credentials(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read it", path.display()))
}

/// The key that signs causal contexts under the cluster secrets, `None` without one. During
/// a rotation it signs under the secret sent (the first) and checks under both.
pub fn context_key_of(credentials: &Credentials) -> Option<ContextKey> {
    match credentials.cluster_secrets() {
        [] => None,
        [sent] => Some(ContextKey::from_secret(sent.as_bytes())),
        [sent, other, ..] => Some(
            ContextKey::from_secret(sent.as_bytes())
                .also_accepting(&ContextKey::from_secret(other.as_bytes())),
        ),
    }
}

/// The key a node without a cluster secret (a node alone) signs its causal contexts with:
/// made at its first start and kept in its data directory, so that tokens stay good across
/// restarts.
pub fn own_context_key(store: &Store) -> Result<ContextKey, quorumkv_replica::StoreError> {
    const NAME: &str = "context_key";
    if let Some(bytes) = store.get_meta(NAME)? {
        if let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(ContextKey::from_bytes(bytes));
        }
        tracing::warn!("the kept context key is unreadable: a new one is made");
    }
    let key = ContextKey::random();
    store.put_meta(NAME, &key.to_bytes())?;
    store.sync_wal()?;
    Ok(key)
}

/// What a reload replaces, shared with the edge, the routes and the transport.
#[derive(Clone)]
pub struct Live {
    /// What the edge checks.
    pub credentials: Current<Credentials>,
    /// What the key routes sign and check contexts with.
    pub context_key: Current<ContextKey>,
    /// What sends the secret to peers.
    pub transport: Arc<HttpTransport>,
}

impl Live {
    /// Reads `files` again and puts what they hold in place, or keeps everything as it was
    /// when any of them is unusable.
    pub fn reload(&self, files: &CredentialFiles) -> anyhow::Result<()> {
        let next = files.load()?;
        let secret_changed = next.cluster_secrets() != self.credentials.get().cluster_secrets();
        if secret_changed {
            // `files` names the same secret file as at start, so a node that had a secret
            // still has one: the key of a node alone never changes here.
            if let Some(key) = context_key_of(&next) {
                self.transport
                    .set_cluster_secret(next.cluster_secret())
                    .context("--cluster-secret-file")?;
                self.context_key.set(key);
            }
        }
        tracing::info!(
            ?next,
            secret_changed,
            "credentials read again: the new ones are in force"
        );
        self.credentials.set(next);
        Ok(())
    }
}

/// SIGHUPs from now on: called before the node serves, since a SIGHUP that comes before
/// anything listens for it stops the process (its default action).
pub fn hangups() -> Option<Hangups> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(Hangups(hangups)),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP: the credentials stay as read at start");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// The SIGHUPs a node receives.
pub struct Hangups(#[cfg(unix)] tokio::signal::unix::Signal);

/// Reloads the credentials on every SIGHUP until told to stop.
pub async fn reload_on_hangup(
    #[cfg_attr(not(unix), allow(unused_mut))] mut hangups: Hangups,
    files: CredentialFiles,
    live: Live,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        #[cfg(unix)]
        let hangup = hangups.0.recv();
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = hangup => {
                let outcome = match live.reload(&files) {
                    Ok(()) => "applied",
                    Err(error) => {
                        tracing::error!(
                            "cannot read the credentials again; those in force stay: {error:#}"
                        );
                        "refused"
                    }
                };
                metrics::counter!("quorumkv_credential_reloads_total", "outcome" => outcome)
                    .increment(1);
            }
            _ = stop.changed() => return,
        }
    }
}
