//! The command-line client: `get`, `put`, `delete`, `cluster status` and `cluster leave`
//! over the HTTP API.
//!
//! Output is for people by default and stays usable in a pipe: `get` prints the value as
//! it is (siblings as a table), `put` the new causal context token, `delete` nothing, and
//! `cluster status` a table of the members with a bar of each one's share of the ring.
//! With `--json` each command prints one JSON document instead.
//! Errors go to standard error, with the server's code, and a non-zero exit.
//!
//! An `https://` endpoint is checked against the CA certificates of `--tls-ca` only (no
//! system store), so it needs that flag: the same file the nodes trust for each other.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::cli::{
    ClusterArgs, ClusterCommand, DeleteArgs, Endpoint, GetArgs, LeaveOptions, PutArgs,
};

const CONTEXT_HEADER: &str = "x-causal-context";

/// Characters of a full ownership bar.
const BAR_WIDTH: usize = 24;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// For people: values as they are, tables.
    Text,
    /// One JSON document, for scripts.
    Json,
}

impl Output {
    fn from_flag(json: bool) -> Self {
        if json {
            Self::Json
        } else {
            Self::Text
        }
    }
}

/// `quorumkv get`: the value on standard output; siblings as a table.
pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    get_as(args, Output::from_flag(args.endpoint.json))
}

/// `quorumkv put`: prints the new causal context.
pub fn put(args: &PutArgs) -> anyhow::Result<()> {
    put_as(args, Output::from_flag(args.endpoint.json))
}

/// `quorumkv delete`.
pub fn delete(args: &DeleteArgs) -> anyhow::Result<()> {
    delete_as(args, Output::from_flag(args.endpoint.json))
}

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
struct Follow {
    /// Follow even when standard error is not a terminal.
    watch: bool,
    /// Never follow.
    once: bool,
    /// Give up after this long.
    timeout: Duration,
}

/// `GET /v1/cluster`, as JSON.
fn cluster_view(http: &Client, base: &str, endpoint: &Endpoint) -> anyhow::Result<Value> {
    let response = send(http.get(format!("{base}/v1/cluster")), endpoint, Vec::new())?;
    if response.status() != StatusCode::OK {
        return fail(response).map(|()| Value::Null);
    }
    response.json().context("cannot read the cluster view")
}

/// The (partition, new owner) pairs of the change under way, and those not yet moved.
fn transfer_counts(view: &Value) -> (u64, u64) {
    let total = view["transfers_total"].as_u64().unwrap_or(0);
    let pending = view["pending_transfers"].as_u64().unwrap_or(0);
    (total.max(pending), pending)
}

/// Follows the transfers of a membership change until the cluster is balanced: a live
/// progress bar on a terminal, a line per change otherwise (with `--watch`). Returns at
/// once when nothing moves, unless `--watch` asked to wait for a change to end.
fn follow_transfers(
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
fn cleanup(endpoint: &Endpoint) -> anyhow::Result<()> {
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
fn leave(endpoint: &Endpoint, options: &LeaveOptions) -> anyhow::Result<()> {
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
fn scaled_down(options: &LeaveOptions) -> anyhow::Result<bool> {
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
fn with_token_file(endpoint: &Endpoint, options: &LeaveOptions) -> anyhow::Result<Endpoint> {
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
fn wait_until_gone(http: &Client, base: &str, node: &str, timeout: Duration) -> anyhow::Result<()> {
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

fn get_as(args: &GetArgs, output: Output) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(r) = &args.r {
        query.push(("r", r.clone()));
    }
    let response = send(
        client(&args.endpoint)?.get(key_url(&args.endpoint, &args.bucket, &args.key)),
        &args.endpoint,
        query,
    )?;
    let status = response.status();
    let context = header(&response, CONTEXT_HEADER);
    if args.show_context {
        eprintln!("X-Causal-Context: {}", context.as_deref().unwrap_or("-"));
    }
    let values = match status {
        StatusCode::OK => {
            let content_type = header(&response, "content-type")
                .unwrap_or_else(|| "application/octet-stream".to_string());
            let body = response.bytes().context("cannot read the value")?;
            if output == Output::Text {
                std::io::stdout().write_all(&body)?;
                return Ok(());
            }
            vec![(content_type, body.to_vec())]
        }
        StatusCode::MULTIPLE_CHOICES => {
            let body: Value = response.json().context("cannot read the siblings")?;
            siblings(&body)?
        }
        _ => return fail(response),
    };
    match output {
        Output::Json => {
            let document = json!({
                "bucket": args.bucket,
                "key": args.key,
                "values": values.iter().map(|(content_type, bytes)| json!({
                    "content_type": content_type,
                    "value": std::str::from_utf8(bytes).ok(),
                    "value_base64": STANDARD.encode(bytes),
                })).collect::<Vec<_>>(),
                "context": context,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        Output::Text => {
            eprintln!(
                "{} concurrent siblings: write with --context <token> (see --show-context) to \
                 resolve them",
                values.len()
            );
            print!("{}", render_siblings(&values));
        }
    }
    Ok(())
}

fn put_as(args: &PutArgs, output: Output) -> anyhow::Result<()> {
    let value = match &args.value {
        Some(value) => value.clone().into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
    };
    let mut request = client(&args.endpoint)?
        .put(key_url(&args.endpoint, &args.bucket, &args.key))
        .header("content-type", &args.content_type)
        .body(value);
    if let Some(context) = &args.context {
        request = request.header(CONTEXT_HEADER, context);
    }
    let query = args.w.iter().map(|w| ("w", w.clone())).collect();
    let response = send(request, &args.endpoint, query)?;
    if response.status() != StatusCode::NO_CONTENT {
        return fail(response);
    }
    let context = header(&response, CONTEXT_HEADER).unwrap_or_default();
    match output {
        Output::Text => println!("{context}"),
        Output::Json => println!(
            "{}",
            json!({ "bucket": args.bucket, "key": args.key, "context": context })
        ),
    }
    Ok(())
}

fn delete_as(args: &DeleteArgs, output: Output) -> anyhow::Result<()> {
    let mut request =
        client(&args.endpoint)?.delete(key_url(&args.endpoint, &args.bucket, &args.key));
    if let Some(context) = &args.context {
        request = request.header(CONTEXT_HEADER, context);
    }
    let query = args.w.iter().map(|w| ("w", w.clone())).collect();
    let response = send(request, &args.endpoint, query)?;
    if response.status() != StatusCode::NO_CONTENT {
        return fail(response);
    }
    if output == Output::Json {
        println!(
            "{}",
            json!({ "bucket": args.bucket, "key": args.key, "deleted": true })
        );
    }
    Ok(())
}

/// The (content type, value) of each sibling of a 300 answer.
fn siblings(body: &Value) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    body["siblings"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|sibling| {
            let bytes = STANDARD
                .decode(sibling["value_base64"].as_str().unwrap_or_default())
                .context("bad sibling encoding")?;
            let content_type = sibling["content_type"].as_str().unwrap_or("?").to_string();
            Ok((content_type, bytes))
        })
        .collect()
}

/// The siblings as a table; values as text, control characters escaped so that one
/// sibling stays on one line.
fn render_siblings(values: &[(String, Vec<u8>)]) -> String {
    let rows: Vec<Vec<String>> = values
        .iter()
        .enumerate()
        .map(|(i, (content_type, bytes))| {
            vec![
                (i + 1).to_string(),
                content_type.clone(),
                String::from_utf8_lossy(bytes).escape_debug().to_string(),
            ]
        })
        .collect();
    table(&["#", "CONTENT-TYPE", "VALUE"], &rows, &[])
}

/// The cluster view as people read it: a summary line, a table of the members with a bar
/// of their share of the partitions (and, during a membership change, their share once it
/// is done), the transfers of that change, and what this node holds for others.
fn render_cluster(view: &Value, metrics: Option<&str>) -> String {
    let members = view["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let partitions = view["partitions"].as_u64().unwrap_or(0);
    let ready = view["ready"].as_bool().unwrap_or(false);
    // Older nodes report only `ready`, which then meant the ring is formed.
    let formed = view["ring_formed"].as_bool().unwrap_or(ready);
    let changing = members.iter().any(|m| m.get("next_ownership").is_some());
    let answering = members.iter().filter(|m| m["status"] == "up").count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}  {}  {} partitions  {}/{} members answer  ring version {}",
        view["node"].as_str().unwrap_or("?"),
        if ready { "ready" } else { "NOT READY" },
        partitions,
        answering,
        members.len(),
        view["ring_version"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |v| v.to_string()),
    );
    out.push('\n');
    let share = |owned: Option<u64>| match owned {
        Some(owned) if formed && partitions > 0 => {
            let fraction = owned as f64 / partitions as f64;
            format!("{} {:>5.1}%", bar(fraction, BAR_WIDTH), 100.0 * fraction)
        }
        _ => "-".to_string(),
    };
    let count = |owned: Option<u64>| {
        owned
            .filter(|_| formed)
            .map_or_else(|| "-".to_string(), |o| o.to_string())
    };
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            let owned = member["ownership"].as_u64();
            let mut row = vec![
                member["id"].as_str().unwrap_or("?").to_string(),
                member["addr"].as_str().unwrap_or("?").to_string(),
                member["status"].as_str().unwrap_or("?").to_string(),
                member["state"].as_str().unwrap_or("-").to_string(),
                count(owned),
                share(owned),
            ];
            if changing {
                let next = member["next_ownership"].as_u64();
                row.push(count(next));
                row.push(share(next));
            }
            row
        })
        .collect();
    let mut headers = vec!["ID", "ADDRESS", "STATUS", "STATE", "PARTITIONS", "SHARE"];
    if changing {
        headers.extend(["NEXT", "NEXT SHARE"]);
    }
    out.push_str(&table(&headers, &rows, &[4, 6]));
    if !formed {
        out.push_str(
            "\nthe ring is not formed: this node still waits for the id of a seed (or, joining, \
             for a seed's member table)\n",
        );
    }
    let (total, pending) = transfer_counts(view);
    if formed {
        out.push('\n');
        if total == 0 {
            out.push_str("transfers  none: the cluster is balanced\n");
        } else {
            let done = total - pending;
            let _ = writeln!(
                out,
                "transfers  {} {done}/{total} done, {pending} pending",
                bar(done as f64 / total as f64, BAR_WIDTH),
            );
        }
    }
    if let Some(metrics) = metrics {
        let hints = metric_sum(metrics, "quorumkv_hints_pending").unwrap_or(0.0);
        let _ = write!(out, "\nhints pending on this node      {hints}\n");
    }
    out
}

/// A bar of `fraction` (0..=1) of `width` characters, in eighths of a character.
fn bar(fraction: f64, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let mut bar = "█".repeat(eighths / 8);
    let partial = EIGHTHS[eighths % 8];
    if partial != ' ' {
        bar.push(partial);
    }
    let drawn = bar.chars().count();
    bar.push_str(&" ".repeat(width - drawn));
    bar
}

/// A plain-text table: columns padded to their widest cell, two spaces apart; the columns
/// in `right` aligned right.
fn table(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            let last = i + 1 == cells.len();
            if right.contains(&i) {
                text.push_str(&pad);
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if !last {
                    text.push_str(&pad);
                }
            }
            if !last {
                text.push_str("  ");
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The sum of a metric's samples in the Prometheus text format, or `None` when absent.
fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// `quorumkv health`: succeeds when the node answers `GET /v1/health` with 200.
pub fn health(endpoint: &Endpoint) -> anyhow::Result<()> {
    let url = format!("{}/v1/health", endpoint.endpoint.trim_end_matches('/'));
    let response = client(endpoint)?
        .get(url)
        .send()
        .with_context(|| format!("cannot reach {}", endpoint.endpoint))?;
    if response.status() != StatusCode::OK {
        return fail(response);
    }
    if endpoint.json {
        println!("{}", response.text()?);
    }
    Ok(())
}

fn client(endpoint: &Endpoint) -> anyhow::Result<Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &endpoint.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("--token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = Client::builder()
        .tcp_nodelay(true)
        .default_headers(headers)
        .tls_built_in_root_certs(false);
    match &endpoint.tls_ca {
        Some(path) => {
            let pem = crate::tls::read_ca("--tls-ca", path)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--tls-ca {}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        None if endpoint.endpoint.starts_with("https://") => bail!(
            "--endpoint {} is https: give --tls-ca with the CA certificates that signed the \
             node's certificate",
            endpoint.endpoint
        ),
        None => {}
    }
    builder.build().context("cannot build the HTTP client")
}

fn key_url(endpoint: &Endpoint, bucket: &str, key: &str) -> String {
    format!(
        "{}/v1/buckets/{}/keys/{}",
        endpoint.endpoint.trim_end_matches('/'),
        utf8_percent_encode(bucket, NON_ALPHANUMERIC),
        utf8_percent_encode(key, NON_ALPHANUMERIC)
    )
}

fn send(
    request: RequestBuilder,
    endpoint: &Endpoint,
    mut query: Vec<(&'static str, String)>,
) -> anyhow::Result<Response> {
    if let Some(timeout) = endpoint.timeout_ms {
        query.push(("timeout_ms", timeout.to_string()));
    }
    request
        .query(&query)
        .send()
        .with_context(|| format!("cannot reach {}", endpoint.endpoint))
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn fail(response: Response) -> anyhow::Result<()> {
    let status = response.status();
    let body: Value = response.json().unwrap_or_default();
    bail!(
        "{} {}: {}",
        status.as_u16(),
        body["error"].as_str().unwrap_or("error"),
        body["message"].as_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_eighths_and_keep_their_width() {
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 4), "██  ");
        assert_eq!(bar(1.0 / 32.0, 4), "▏   ");
        assert_eq!(bar(2.0, 3).chars().count(), 3);
    }

    #[test]
    fn the_cluster_table_shows_each_member_share_and_what_is_pending() {
        let view = json!({
            "node": "node1", "partitions": 256, "ready": true, "ring_version": 42,
            "members": [
                {"id": "node1", "addr": "10.0.0.1:7001", "status": "up", "state": "active",
                 "ownership": 128},
                {"id": "node2", "addr": "10.0.0.2:7001", "status": "down", "state": "leaving",
                 "ownership": 128},
            ],
        });
        let text = render_cluster(&view, Some("quorumkv_hints_pending 7\n"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node node1  ready  256 partitions  1/2 members answer  ring version 42"
        );
        assert_eq!(
            lines[2],
            "ID     ADDRESS        STATUS  STATE    PARTITIONS  SHARE"
        );
        assert_eq!(
            lines[3],
            format!(
                "node1  10.0.0.1:7001  up      active          128  {}  50.0%",
                "█".repeat(12) + &" ".repeat(12)
            )
        );
        assert!(lines[4].starts_with("node2  10.0.0.2:7001  down    leaving         128  "));
        assert!(text.contains("hints pending on this node      7\n"));
        assert!(
            text.contains("transfers  none: the cluster is balanced\n"),
            "{text}"
        );
    }

    #[test]
    fn a_membership_change_shows_next_shares_and_the_transfers_done() {
        let view = json!({
            "node": "node1", "partitions": 256, "ready": true, "ring_formed": true,
            "pending_transfers": 30, "transfers_total": 120,
            "members": [
                {"id": "node1", "addr": "a:1", "status": "up", "state": "active",
                 "ownership": 256, "next_ownership": 128},
                {"id": "node2", "addr": "b:1", "status": "up", "state": "joining",
                 "ownership": 0, "next_ownership": 128},
            ],
        });
        let text = render_cluster(&view, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            format!(
                "ID     ADDRESS  STATUS  STATE    PARTITIONS  SHARE{}  NEXT  NEXT SHARE",
                " ".repeat(BAR_WIDTH + 2)
            )
        );
        assert!(
            lines[4].starts_with("node2  b:1      up      joining           0  "),
            "{text}"
        );
        assert!(
            lines[4].ends_with(&format!(
                " 128  {}  50.0%",
                "█".repeat(12) + &" ".repeat(12)
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "transfers  {} 90/120 done, 30 pending\n",
                "█".repeat(18) + &" ".repeat(6)
            )),
            "{text}"
        );
    }

    #[test]
    fn a_node_without_a_ring_shows_no_shares() {
        let view = json!({
            "node": "node1", "partitions": 256, "ready": false,
            "members": [{"id": "node1", "addr": "a:1", "status": "up", "state": "joining",
                         "ownership": 0}],
        });
        let text = render_cluster(&view, None);
        assert!(text.contains("NOT READY"), "{text}");
        assert!(
            text.contains("node1  a:1      up      joining           -  -\n"),
            "{text}"
        );
        assert!(!text.contains("hints pending"));
    }

    #[test]
    fn siblings_are_one_escaped_line_each() {
        let text = render_siblings(&[
            ("text/plain".into(), b"one".to_vec()),
            ("application/octet-stream".into(), b"two\nlines".to_vec()),
        ]);
        assert_eq!(
            text,
            "#  CONTENT-TYPE              VALUE\n\
             1  text/plain                one\n\
             2  application/octet-stream  two\\nlines\n"
        );
    }
}
