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
//!
//! This file holds the key commands and what every command shares (the HTTP client, its
//! errors); the cluster commands are `client/cluster.rs`, what is printed for people
//! `client/render.rs`.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

mod cluster;
mod render;

pub use cluster::cluster;
use render::render_siblings;

use crate::cli::{DeleteArgs, Endpoint, GetArgs, PutArgs};

const CONTEXT_HEADER: &str = "x-causal-context";

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
