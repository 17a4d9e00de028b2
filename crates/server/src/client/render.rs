//! What the client prints for people: the cluster's table with a bar of each member's
//! share of the ring, and siblings one escaped line each. Pure functions of what the
//! node answered, tested on canned answers.

use std::fmt::Write as _;

use serde_json::Value;

use super::cluster::transfer_counts;

/// Characters of a full ownership bar.
pub(super) const BAR_WIDTH: usize = 24;

/// The siblings as a table; values as text, control characters escaped so that one
/// sibling stays on one line.
pub(super) fn render_siblings(values: &[(String, Vec<u8>)]) -> String {
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
pub(super) fn render_cluster(view: &Value, metrics: Option<&str>) -> String {
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
pub(super) fn bar(fraction: f64, width: usize) -> String {
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
pub(super) fn table(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
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
pub(super) fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
