//! TLS against real processes: a cluster started with `--tls-cert`, `--tls-key` and
//! `--tls-ca` serves clients and its peers over HTTPS only, refuses plain HTTP and clients
//! that do not trust its CA while staying healthy, closes connections that never finish a
//! handshake, and refuses at start TLS files it cannot use, naming the flag.
//!
//! The certificates are made here: a test CA, and one node certificate it signs for
//! `127.0.0.1` and `localhost`, the addresses the nodes advertise.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use quorumkv_tests::{binary, free_port, serve_refusal, Cluster};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use reqwest::StatusCode;

/// PEM files of a test CA and of a node certificate it signed.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, issuer) = certificate_authority("quorumkv test CA");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "quorumkv test node");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", &ca_pem),
            cert: write("node.pem", &cert.pem()),
            key: write("node.key", &key.serialize_pem()),
            _dir: dir,
        }
    }

    /// The `serve` flags of a node with this certificate.
    fn flags(&self) -> Vec<String> {
        [
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
            ("--tls-ca", &self.ca),
        ]
        .iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
    }
}

/// A self-signed CA: its certificate (PEM) and what signs with it.
fn certificate_authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn assert_healthy(cluster: &Cluster, i: usize) {
    let health = cluster
        .http()
        .get(format!("{}/v1/health", cluster.url(i)))
        .send()
        .unwrap();
    assert_eq!(
        health.status(),
        StatusCode::OK,
        "node {i} answers over HTTPS"
    );
}

#[test]
fn a_tls_cluster_replicates_over_https_and_refuses_plain_http_and_untrusted_clients() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(3, &strs(&pki.flags()));
    assert!(cluster.url(0).starts_with("https://"), "{}", cluster.url(0));

    // w=2 and r=2 need a peer's answer: the nodes reach each other over TLS.
    let put = cluster.put(0, "tls", b"k", b"sealed", "w=2", None);
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let read = cluster.get(2, "tls", b"k", "r=2");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.bytes().unwrap().as_ref(), b"sealed");
    let read = cluster.get(1, "tls", b"k", "r=3");
    assert_eq!(read.status(), StatusCode::OK, "every replica has it");

    // Plain HTTP gets no HTTP answer: the node takes it for a failed handshake.
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let plain_url = format!("http://{}/v1/health", cluster.nodes[0].addr);
    assert!(plain.get(&plain_url).send().is_err(), "plain HTTP answered");
    let mut socket = TcpStream::connect(&cluster.nodes[0].addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // A client that trusts another CA, or none, fails its handshake.
    let (other_ca, _) = certificate_authority("some other CA");
    let strangers = [
        reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(other_ca.as_bytes()).unwrap()),
        reqwest::blocking::Client::builder().tls_built_in_root_certs(false),
    ];
    for stranger in strangers {
        let stranger = stranger.timeout(Duration::from_secs(5)).build().unwrap();
        let error = stranger
            .get(format!("{}/v1/health", cluster.url(1)))
            .send()
            .unwrap_err();
        assert!(error.is_connect(), "not a handshake failure: {error:?}");
    }

    for i in 0..3 {
        assert_healthy(&cluster, i);
    }
}

#[test]
fn the_cli_reaches_a_tls_node_with_its_ca_and_refuses_without_it() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(3, &strs(&pki.flags()));
    let endpoint = cluster.url(1);
    let ca = pki.ca.display().to_string();
    let run = |args: &[&str]| {
        let output = Command::new(binary())
            .args(args)
            .args(["--endpoint", &endpoint])
            .env_remove("QUORUMKV_TLS_CA")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(&[
        "put", "cli", "greeting", "over tls", "--w", "3", "--tls-ca", &ca,
    ]);
    assert!(ok, "put failed: {err}");
    let (ok, value, err) = run(&["get", "cli", "greeting", "--r", "2", "--tls-ca", &ca]);
    assert!(ok, "get failed: {err}");
    assert_eq!(value, "over tls");
    let (ok, _, err) = run(&["health", "--tls-ca", &ca]);
    assert!(ok, "health failed: {err}");
    let (ok, status, err) = run(&["cluster", "status", "--tls-ca", &ca]);
    assert!(ok, "cluster status failed: {err}");
    assert_eq!(status.matches(" up").count(), 3, "{status}");

    let (ok, _, err) = run(&["get", "cli", "greeting"]);
    assert!(!ok, "an https endpoint without --tls-ca was accepted");
    assert!(
        err.contains("--tls-ca"),
        "the error does not name --tls-ca: {err}"
    );
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_cut_off() {
    const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
    let pki = Pki::new();
    let mut flags = pki.flags();
    flags.extend(
        [
            "--default-n",
            "1",
            "--max-connections",
            "2",
            "--header-timeout-ms",
        ]
        .map(String::from),
    );
    flags.push(HEADER_TIMEOUT.as_millis().to_string());
    let cluster = Cluster::start_with(1, &strs(&flags));
    // As many silent clients as the node serves at once: each is closed after the header
    // timeout, which frees its slot for the next.
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&cluster.nodes[0].addr).unwrap())
        .collect();
    let started = Instant::now();
    for mut socket in silent {
        socket.set_read_timeout(Some(HEADER_TIMEOUT * 10)).unwrap();
        let mut byte = [0u8; 1];
        let closed = match socket.read(&mut byte) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "a silent connection was not closed");
    }
    let waited = started.elapsed();
    assert!(
        waited < HEADER_TIMEOUT * 5,
        "silent connections held for {waited:?}"
    );
    assert_healthy(&cluster, 0);
}

#[test]
fn tls_files_that_cannot_be_used_stop_the_node_naming_the_flag() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "cluster-secret-of-the-tls-test").unwrap();
    let path = |p: &Path| p.display().to_string();
    let data = path(&dir.path().join("data"));
    let (cert, key, ca) = (path(&pki.cert), path(&pki.key), path(&pki.ca));
    let garbage = path(&garbage);
    let other_key = path(&other_key);
    let secret = path(&secret);
    let listen = format!("127.0.0.1:{}", free_port());
    let seeds = format!("{listen},127.0.0.1:{}", free_port());
    let base = ["--node-id", "n1", "--data-dir", &data, "--listen", &listen];
    let peers = ["--seeds", &seeds, "--cluster-secret-file", &secret];
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--tls-cert", &cert], &["--tls-key"]),
        (vec!["--tls-key", &key], &["--tls-cert"]),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            &["--tls-cert", "no PEM certificate"],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &garbage],
            &["--tls-key", "no PEM private key"],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            &["--tls-cert", "--tls-key", "cannot be used together"],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &garbage],
            &["--tls-ca", "no PEM certificate"],
        ),
        (vec!["--tls-ca", &ca], &["--tls-ca", "without --tls-cert"]),
        (
            [&["--tls-cert", &cert, "--tls-key", &key][..], &peers].concat(),
            &["--tls-ca"],
        ),
    ];
    for (flags, named) in cases {
        let stderr = serve_refusal(&[&base[..], &flags].concat());
        assert!(
            !stderr.contains("PRIVATE KEY") && !stderr.contains("cluster-secret-of"),
            "{flags:?}: the error quotes a key or the secret: {stderr}"
        );
        for name in named {
            assert!(
                stderr.contains(name),
                "{flags:?}: the error does not say {name:?}: {stderr}"
            );
        }
    }
}
