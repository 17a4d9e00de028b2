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

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::cli::{ClusterArgs, ClusterCommand, DeleteArgs, Endpoint, GetArgs, PutArgs};

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
/// transfers pending.
pub fn cluster(args: &ClusterArgs) -> anyhow::Result<()> {
    let endpoint = match &args.command {
        ClusterCommand::Status { endpoint } => endpoint,
        ClusterCommand::Leave { endpoint } => return leave(endpoint),
    };
    let base = endpoint.endpoint.trim_end_matches('/');
    let http = client(endpoint)?;
    let response = send(http.get(format!("{base}/v1/cluster")), endpoint, Vec::new())?;
    if response.status() != StatusCode::OK {
        return fail(response);
    }
    let view: Value = response.json().context("cannot read the cluster view")?;
    if Output::from_flag(endpoint.json) == Output::Json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    // The metrics add what the cluster view does not hold; without them the table stands.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .ok()
        .filter(|r| r.status() == StatusCode::OK)
        .and_then(|r| r.text().ok());
    print!("{}", render_cluster(&view, metrics.as_deref()));
    Ok(())
}

/// `quorumkv cluster leave`: asks the node to leave; it exits once its partitions moved.
fn leave(endpoint: &Endpoint) -> anyhow::Result<()> {
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
    if Output::from_flag(endpoint.json) == Output::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{} is {}: it hands its partitions over, then exits",
            answer["node"].as_str().unwrap_or("?"),
            answer["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
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
/// of their share of the partitions, and what this node holds for others.
fn render_cluster(view: &Value, metrics: Option<&str>) -> String {
    let members = view["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let partitions = view["partitions"].as_u64().unwrap_or(0);
    let ready = view["ready"].as_bool().unwrap_or(false);
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
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            let owned = member["ownership"].as_u64();
            let share = match (owned, partitions) {
                (Some(owned), total) if ready && total > 0 => {
                    let fraction = owned as f64 / total as f64;
                    format!("{} {:>5.1}%", bar(fraction, BAR_WIDTH), 100.0 * fraction)
                }
                _ => "-".to_string(),
            };
            vec![
                member["id"].as_str().unwrap_or("?").to_string(),
                member["addr"].as_str().unwrap_or("?").to_string(),
                member["status"].as_str().unwrap_or("?").to_string(),
                member["state"].as_str().unwrap_or("-").to_string(),
                owned
                    .filter(|_| ready)
                    .map_or_else(|| "-".to_string(), |o| o.to_string()),
                share,
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "ADDRESS", "STATUS", "STATE", "PARTITIONS", "SHARE"],
        &rows,
        &[4],
    ));
    if !ready {
        out.push_str(
            "\nthe ring is not formed: this node still waits for the id of a seed (or, joining, \
             for a seed's member table)\n",
        );
    }
    if let Some(metrics) = metrics {
        let hints = metric_sum(metrics, "quorumkv_hints_pending").unwrap_or(0.0);
        let transfers = metric_sum(metrics, "quorumkv_transfers_pending")
            .map_or_else(|| "not reported".to_string(), |t| format!("{t}"));
        let _ = write!(
            out,
            "\nhints pending on this node      {hints}\ntransfers pending on this node  {transfers}\n"
        );
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
        assert!(text.contains("transfers pending on this node  not reported\n"));
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
