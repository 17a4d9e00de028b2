//! `quorumkv cluster`: the status table (and `--watch`ing a membership change until its
//! transfers are done), `cleanup`, and `leave`, which a Kubernetes preStop hook runs only
//! when the StatefulSet is scaled below the pod.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;

use super::render::render_cluster;
use super::{client, fail, send, Output};
use crate::cli::{ClusterArgs, ClusterCommand, Endpoint, LeaveOptions};

/// `quorumkv cluster status`: members, their status and share of the ring, hints and
/// transfers pending; then, while partitions move, the transfers as they go.
pub fn cluster(args: &ClusterArgs) -> anyhow::Result<()> {
    let (endpoint, follow) = match &args.command {
        ClusterCommand::Status {
            endpoint,
            watch,
            once,
            timeout,
        } => (
            endpoint,
            Follow {
                watch: *watch,
                once: *once,
                timeout: Duration::from_secs(*timeout),
            },
        ),
        ClusterCommand::Leave { endpoint, options } => return leave(endpoint, options),
        ClusterCommand::Cleanup { endpoint } => return cleanup(endpoint),
    };
    let base = endpoint.endpoint.trim_end_matches('/');
    let http = client(endpoint)?;
    let view = cluster_view(&http, base, endpoint)?;
    if Output::from_flag(endpoint.json) == Output::Json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        // The metrics add what the cluster view does not hold; without them the table
        // stands.
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .ok()
            .filter(|r| r.status() == StatusCode::OK)
            .and_then(|r| r.text().ok());
        print!("{}", render_cluster(&view, metrics.as_deref()));
    }
    follow_transfers(&http, base, endpoint, &view, &follow)
}

/// How `cluster status` follows a membership change.
pub(super) struct Follow {
    /// Follow even when standard error is not a terminal.
    watch: bool,
    /// Never follow.
    once: bool,
    /// Give up after this long.
    timeout: Duration,
}

/// `GET /v1/cluster`, as JSON.
pub(super) fn cluster_view(
    http: &Client,
    base: &str,
    endpoint: &Endpoint,
) -> anyhow::Result<Value> {
    let response = send(http.get(format!("{base}/v1/cluster")), endpoint, Vec::new())?;
    if response.status() != StatusCode::OK {
        return fail(response).map(|()| Value::Null);
    }
    response.json().context("cannot read the cluster view")
}

/// The (partition, new owner) pairs of the change under way, and those not yet moved.
pub(super) fn transfer_counts(view: &Value) -> (u64, u64) {
    let total = view["transfers_total"].as_u64().unwrap_or(0);
    let pending = view["pending_transfers"].as_u64().unwrap_or(0);
    (total.max(pending), pending)
}

/// Follows the transfers of a membership change until the cluster is balanced: a live
/// progress bar on a terminal, a line per change otherwise (with `--watch`). Returns at
/// once when nothing moves, unless `--watch` asked to wait for a change to end.
pub(super) fn follow_transfers(
    http: &Client,
    base: &str,
    endpoint: &Endpoint,
    first: &Value,
    follow: &Follow,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;

    let terminal = std::io::stderr().is_terminal() && !endpoint.json;
    let (mut total, mut pending) = transfer_counts(first);
    if follow.once || (!follow.watch && (!terminal || pending == 0)) {
        return Ok(());
    }
    let started = Instant::now();
    let bar = if terminal {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} transfers [{bar:32}] {pos}/{len} done  {msg}",
        )
        .context("progress bar template")?
        .progress_chars("█▌ "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last = None;
    let mut view = first.clone();
    loop {
        if pending == 0 && total == 0 {
            bar.finish_and_clear();
            let version = view["ring_version"].as_u64().unwrap_or(0);
            println!(
                "balanced: no transfers pending, ring version {version} ({:.1?})",
                started.elapsed()
            );
            return Ok(());
        }
        let done = total - pending;
        bar.set_length(total);
        bar.set_position(done);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!("{pending} pending, {rate:.1}/s"));
        if !terminal && last != Some((total, pending)) {
            println!("transfers: {done}/{total} done, {pending} pending");
            last = Some((total, pending));
        }
        if started.elapsed() >= follow.timeout {
            bar.abandon();
            bail!(
                "transfers still pending after {:?}: {pending} of {total}",
                follow.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        view = cluster_view(http, base, endpoint)?;
        (total, pending) = transfer_counts(&view);
    }
}

/// `quorumkv cluster cleanup`: asks the node to drop its copies of the partitions it does
/// not own, and prints what it dropped.
pub(super) fn cleanup(endpoint: &Endpoint) -> anyhow::Result<()> {
    let base = endpoint.endpoint.trim_end_matches('/');
    let http = client(endpoint)?;
    let response = send(
        http.post(format!("{base}/v1/cluster/cleanup")),
        endpoint,
        Vec::new(),
    )?;
    if response.status() != StatusCode::OK {
        return fail(response);
    }
    let answer: Value = response.json().context("cannot read the answer")?;
    if Output::from_flag(endpoint.json) == Output::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!(
        "{}: dropped {} keys ({} bytes) of {} partition-buckets it does not own",
        answer["node"].as_str().unwrap_or("?"),
        answer["keys"],
        answer["bytes"],
        answer["partitions"]
    );
    for bucket in answer["buckets"].as_array().into_iter().flatten() {
        println!(
            "  {}: {} keys, {} bytes",
            bucket["bucket"].as_str().unwrap_or("?"),
            bucket["keys"],
            bucket["bytes"]
        );
    }
    Ok(())
}

/// `quorumkv cluster leave`: asks the node to leave; it exits once its partitions moved.
/// With `--wait`, returns only once the node no longer answers; with `--if-scaled-down`,
/// first asks Kubernetes whether this pod is going away for good (see [`crate::kube`]).
pub(super) fn leave(endpoint: &Endpoint, options: &LeaveOptions) -> anyhow::Result<()> {
    if options.if_scaled_down && !scaled_down(options)? {
        return Ok(());
    }
    let endpoint = &with_token_file(endpoint, options)?;
    let base = endpoint.endpoint.trim_end_matches('/');
    let http = client(endpoint)?;
    let response = http
        .post(format!("{base}/v1/cluster/leave"))
        .send()
        .with_context(|| format!("cannot reach {}", endpoint.endpoint))?;
    if response.status() != StatusCode::ACCEPTED {
        return fail(response);
    }
    let answer: Value = response.json().context("cannot read the answer")?;
    let node = answer["node"].as_str().unwrap_or("?").to_string();
    if Output::from_flag(endpoint.json) == Output::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{node} is {}: it hands its partitions over, then exits",
            answer["state"].as_str().unwrap_or("?")
        );
    }
    // A preStop hook must not return before the hand-off is done: Kubernetes stops the
    // node as soon as it does.
    if options.wait || options.if_scaled_down {
        wait_until_gone(
            &http,
            base,
            &node,
            Duration::from_secs(options.wait_timeout),
        )?;
    }
    Ok(())
}

/// Whether this pod is being scaled away, asked of the Kubernetes API; prints why it stays
/// when it does. An error means the API could not be asked: the caller must not leave.
pub(super) fn scaled_down(options: &LeaveOptions) -> anyhow::Result<bool> {
    use crate::kube::{decide, ApiAccess, Decision, PodIdentity};
    let pod = PodIdentity::parse(&crate::kube::pod_name(options.pod_name.as_deref())?)?;
    let replicas = ApiAccess::new(
        options.kube_api.as_deref(),
        &options.kube_serviceaccount_dir,
    )
    .and_then(|api| api.replicas(&pod.statefulset))
    .with_context(|| {
        format!(
            "cannot tell whether {} is scaled down, so it does not leave (a plain restart)",
            pod.pod
        )
    })?;
    match decide(pod.ordinal, replicas) {
        Decision::Leave => {
            println!(
                "{} goes away (ordinal {} >= replicas {replicas}): leaving",
                pod.pod, pod.ordinal
            );
            Ok(true)
        }
        Decision::Stay => {
            println!(
                "{} stays (ordinal {} < replicas {replicas}): not leaving",
                pod.pod, pod.ordinal
            );
            Ok(false)
        }
    }
}

/// The endpoint with the first token of `--token-file` when `--token` is not given.
pub(super) fn with_token_file(
    endpoint: &Endpoint,
    options: &LeaveOptions,
) -> anyhow::Result<Endpoint> {
    let token = match (&endpoint.token, &options.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}: cannot read it", path.display()))?;
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            Some(
                first
                    .with_context(|| format!("--token-file {}: no token in it", path.display()))?
                    .to_string(),
            )
        }
        (None, None) => None,
    };
    Ok(Endpoint {
        endpoint: endpoint.endpoint.clone(),
        timeout_ms: endpoint.timeout_ms,
        json: endpoint.json,
        token,
        tls_ca: endpoint.tls_ca.clone(),
    })
}

/// Polls the node until it refuses connections (its process has exited), printing its
/// pending transfers as they change; fails after `timeout`.
pub(super) fn wait_until_gone(
    http: &Client,
    base: &str,
    node: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    const POLL: Duration = Duration::from_millis(500);
    /// A progress line at least this often, even when nothing changed.
    const HEARTBEAT: Duration = Duration::from_secs(30);
    let started = Instant::now();
    let mut last: Option<(Option<u64>, Instant)> = None;
    loop {
        match http
            .get(format!("{base}/v1/health"))
            .timeout(POLL * 4)
            .send()
        {
            Err(error) if error.is_connect() => {
                println!(
                    "{node} has left and exited after {}s",
                    started.elapsed().as_secs()
                );
                return Ok(());
            }
            // Answering, or too busy to answer in time: still there.
            _ => {
                let pending = http
                    .get(format!("{base}/v1/cluster"))
                    .timeout(POLL * 4)
                    .send()
                    .ok()
                    .filter(|r| r.status() == StatusCode::OK)
                    .and_then(|r| r.json::<Value>().ok())
                    .and_then(|view| view["pending_transfers"].as_u64());
                let due =
                    last.is_none_or(|(shown, at)| shown != pending || at.elapsed() >= HEARTBEAT);
                if due {
                    println!(
                        "{node} is leaving: {} transfers pending ({}s)",
                        pending.map_or_else(|| "?".to_string(), |p| p.to_string()),
                        started.elapsed().as_secs()
                    );
                    last = Some((pending, Instant::now()));
                }
            }
        }
        if started.elapsed() >= timeout {
            bail!(
                "{node} still answers after {}s: its hand-off is not done (quorumkv cluster \
                 status shows what is pending); raise --wait-timeout to wait longer",
                timeout.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}
