//! The status page in a real browser: headless Chromium loads `GET /` of a 3-node cluster,
//! runs its script, and the test reads the resulting DOM (`--dump-dom`) and takes
//! screenshots (`--screenshot`), without WebDriver.
//!
//! Chromium's virtual time (`--virtual-time-budget`) lets the page run its polls and then
//! hands back the DOM, so no test waits on wall-clock sleeps inside the browser. The
//! screenshots land in `target/tmp/status-page/` (or `$QUORUMKV_TEST_ARTIFACTS`).
//!
//! The browser is `$QUORUMKV_BROWSER`, or `chromium` (or `chromium-browser`,
//! `google-chrome`) on the PATH; `make test` installs Debian's `chromium` first
//! (`scripts/install-browser.sh`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use quorumkv_tests::Cluster;

/// How long one browser run may take (page load, a few polls, the dump or screenshot).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// Virtual time the page gets to poll: its first poll is immediate, then one every 2 s, and
/// rates need two polls.
const VIRTUAL_TIME_MS: u32 = 5000;

/// One member row of the page's members table.
#[derive(Debug, PartialEq, Eq)]
struct MemberRow {
    id: String,
    status: String,
}

#[test]
fn the_status_page_shows_every_member_up_then_one_down_after_it_stops() {
    let browser = browser();
    let artifacts = artifacts_dir();
    let mut cluster = Cluster::start(3);
    for i in 0..12u8 {
        let response = cluster.put(0, "demo", &[b'k', i], b"value", "w=2", None);
        assert!(response.status().is_success(), "PUT: {}", response.status());
    }
    let page = format!("{}/", cluster.url(0));

    let dom = dump_dom(&browser, &page);
    let rows = member_rows(&dom);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["node1", "node2", "node3"], "members shown: {rows:?}");
    assert!(
        rows.iter().all(|r| r.status == "up"),
        "every member up: {rows:?}"
    );
    assert_eq!(
        dom.matches("class=\"arc\"").count(),
        3,
        "the ring has one arc per member"
    );
    assert!(dom.contains(">ready<"), "the node says it is ready");
    assert!(dom.contains(">3 / 3<"), "the summary counts 3 of 3 up");
    let shot = artifacts.join("three-nodes-up.png");
    screenshot(&browser, &page, &shot);

    cluster.kill(2);
    cluster.wait_member_status(0, 2, "down").unwrap();
    let dom = dump_dom(&browser, &page);
    let rows = member_rows(&dom);
    assert_eq!(
        rows,
        [
            MemberRow {
                id: "node1".into(),
                status: "up".into()
            },
            MemberRow {
                id: "node2".into(),
                status: "up".into()
            },
            MemberRow {
                id: "node3".into(),
                status: "down".into()
            },
        ],
        "node3 turned down"
    );
    assert!(dom.contains(">2 / 3<"), "the summary counts 2 of 3 up");
    screenshot(&browser, &page, &artifacts.join("one-node-down.png"));
    eprintln!("status page screenshots in {}", artifacts.display());
}

/// The browser to drive: `$QUORUMKV_BROWSER` or the first Chromium on the PATH.
fn browser() -> PathBuf {
    if let Some(path) = std::env::var_os("QUORUMKV_BROWSER") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("no Chromium found: run scripts/install-browser.sh (make test does) or set QUORUMKV_BROWSER");
}

/// Where screenshots go: kept after the test, under the target directory.
fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("QUORUMKV_TEST_ARTIFACTS")
        .map_or_else(
            || Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf(),
            PathBuf::from,
        )
        .join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `extra` flags, in a fresh profile, and returns its
/// standard output. Killed past [`BROWSER_TIMEOUT`].
fn run_browser(browser: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser did not finish within {BROWSER_TIMEOUT:?}: {}",
                std::fs::read_to_string(err.path()).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "the browser failed ({status}): {}",
        std::fs::read_to_string(err.path()).unwrap_or_default()
    );
    std::fs::read_to_string(out.path()).unwrap()
}

/// The page's DOM once its script ran.
fn dump_dom(browser: &Path, url: &str) -> String {
    let dom = run_browser(browser, url, &["--dump-dom".to_string()]);
    assert!(
        dom.contains("id=\"members\""),
        "not the status page: {dom:.500}"
    );
    dom
}

/// Saves a PNG of the page once its script ran.
fn screenshot(browser: &Path, url: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    run_browser(browser, url, &[format!("--screenshot={}", path.display())]);
    let png = std::fs::read(path).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} is not a screenshot",
        path.display()
    );
}

/// The member rows of the dumped DOM: `<tr class="member" data-id=".." data-status="..">`.
fn member_rows(dom: &str) -> Vec<MemberRow> {
    dom.split("<tr ")
        .skip(1)
        .map(|tag| &tag[..tag.find('>').unwrap_or(tag.len())])
        .filter(|tag| tag.contains("class=\"member\""))
        .map(|tag| MemberRow {
            id: attribute(tag, "data-id"),
            status: attribute(tag, "data-status"),
        })
        .collect()
}

fn attribute(tag: &str, name: &str) -> String {
    let start = tag
        .find(&format!("{name}=\""))
        .map(|i| i + name.len() + 2)
        .unwrap_or_else(|| panic!("no {name} in <tr {tag}>"));
    let end = tag[start..].find('"').unwrap() + start;
    tag[start..end].to_string()
}
