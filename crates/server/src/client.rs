//! The command-line client: `get`, `put`, `delete` and `cluster status` over the HTTP API.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;

use crate::cli::{ClusterArgs, ClusterCommand, DeleteArgs, Endpoint, GetArgs, PutArgs};

const CONTEXT_HEADER: &str = "x-causal-context";

/// `quorumkv get`: the value on standard output; siblings as JSON.
pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(r) = &args.r {
        query.push(("r", r.clone()));
    }
    let response = send(
        client()?.get(key_url(&args.endpoint, &args.bucket, &args.key)),
        &args.endpoint,
        query,
    )?;
    let status = response.status();
    let context = header(&response, CONTEXT_HEADER);
    if args.show_context {
        eprintln!("X-Causal-Context: {}", context.as_deref().unwrap_or("-"));
    }
    match status {
        StatusCode::OK => {
            let body = response.bytes().context("cannot read the value")?;
            std::io::stdout().write_all(&body)?;
            Ok(())
        }
        StatusCode::MULTIPLE_CHOICES => {
            let body: serde_json::Value = response.json().context("cannot read the siblings")?;
            let siblings = body["siblings"].as_array().cloned().unwrap_or_default();
            eprintln!("{} concurrent siblings", siblings.len());
            for sibling in siblings {
                let bytes = STANDARD
                    .decode(sibling["value_base64"].as_str().unwrap_or_default())
                    .context("bad sibling encoding")?;
                println!(
                    "[{}] {}",
                    sibling["content_type"].as_str().unwrap_or("?"),
                    String::from_utf8_lossy(&bytes)
                );
            }
            Ok(())
        }
        _ => fail(response),
    }
}

/// `quorumkv put`: prints the new causal context.
pub fn put(args: &PutArgs) -> anyhow::Result<()> {
    let value = match &args.value {
        Some(value) => value.clone().into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
    };
    let mut request = client()?
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
    println!("{}", header(&response, CONTEXT_HEADER).unwrap_or_default());
    Ok(())
}

/// `quorumkv delete`.
pub fn delete(args: &DeleteArgs) -> anyhow::Result<()> {
    let mut request = client()?.delete(key_url(&args.endpoint, &args.bucket, &args.key));
    if let Some(context) = &args.context {
        request = request.header(CONTEXT_HEADER, context);
    }
    let query = args.w.iter().map(|w| ("w", w.clone())).collect();
    let response = send(request, &args.endpoint, query)?;
    if response.status() != StatusCode::NO_CONTENT {
        return fail(response);
    }
    Ok(())
}

/// `quorumkv cluster status`.
pub fn cluster(args: &ClusterArgs) -> anyhow::Result<()> {
    let ClusterCommand::Status { json, endpoint } = &args.command;
    let url = format!("{}/v1/cluster", endpoint.endpoint.trim_end_matches('/'));
    let response = send(client()?.get(url), endpoint, Vec::new())?;
    if response.status() != StatusCode::OK {
        return fail(response);
    }
    let body: serde_json::Value = response.json().context("cannot read the cluster view")?;
    if *json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!(
        "node {}  partitions {}  ready {}",
        body["node"].as_str().unwrap_or("?"),
        body["partitions"],
        body["ready"]
    );
    println!("{:<20} {:<24} STATUS", "ID", "ADDRESS");
    for member in body["members"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<20} {:<24} {}",
            member["id"].as_str().unwrap_or("?"),
            member["addr"].as_str().unwrap_or("?"),
            member["status"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

fn client() -> anyhow::Result<Client> {
    Client::builder()
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")
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
    let body: serde_json::Value = response.json().unwrap_or_default();
    bail!(
        "{} {}: {}",
        status.as_u16(),
        body["error"].as_str().unwrap_or("error"),
        body["message"].as_str().unwrap_or("")
    )
}
