//! The `loadgen` binary end to end: `loadgen baseline` runs briefly, prints the latency table,
//! and writes a JSON report and an HdrHistogram interval log that read back (with its threads
//! pinned to cores, as `--pin` asks).

use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use std::process::Command;

#[test]
fn baseline_prints_a_table_and_writes_json_and_an_hdr_log() {
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, hlog) = (dir.join("baseline.json"), dir.join("baseline.hlog"));
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "baseline",
            "--messages",
            "300",
            "--rate",
            "1000",
            "--warmup",
            "0.1",
            "--pin",
            "0,1",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .arg("--hdr-log")
        .arg(&hlog)
        .arg("--plot")
        .arg(dir.join("baseline.svg"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for expected in ["loadgen baseline", "p99.99", "rtt", "offered 1000/s", "errors:   none"] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["kind"], "baseline");
    assert_eq!(report["sent"], 300);
    assert_eq!(report["answered"], 300);
    let rtt = &report["latencies"][0];
    assert_eq!((rtt["name"].as_str(), rtt["count"].as_u64()), (Some("rtt"), Some(300)));
    assert!(rtt["p50_ns"].as_u64().unwrap() > 0);

    let log = std::fs::read(&hlog).unwrap();
    let mut tags = Vec::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(interval) = entry.unwrap() {
            tags.push(interval.tag().unwrap().as_str().to_owned());
            if tags.len() == 1 {
                let bytes = base64_decode(interval.encoded_histogram());
                let histogram: hdrhistogram::Histogram<u64> =
                    Deserializer::new().deserialize(&mut bytes.as_slice()).unwrap();
                assert_eq!(histogram.len(), 300);
            }
        }
    }
    assert_eq!(tags, ["baseline_rtt", "baseline_rtt_uncorrected", "baseline_send_lag"]);

    let svg = std::fs::read_to_string(dir.join("baseline.svg")).unwrap();
    let document = roxmltree::Document::parse(&svg).expect("the plot is well-formed XML");
    let labels: Vec<_> = document
        .descendants()
        .filter(|n| n.has_tag_name("path") && n.attribute("class") == Some("series"))
        .map(|n| n.attribute("data-label").unwrap().to_owned())
        .collect();
    assert_eq!(labels, ["baseline rtt"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_order_mix_that_does_not_add_up_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["sbe", "--address", "127.0.0.1:1", "--limit-pct", "90", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("adds up to 110%"));
}

/// Runs `loadgen` with `args`, expecting it to refuse them before connecting (exit 1, or 2 for
/// clap's usage errors), and returns stderr.
fn refused(args: &[&str], status: i32) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
    stderr
}

#[test]
fn bad_replay_files_ramps_and_profiles_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("loadgen-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("flow.csv");
    std::fs::write(&file, "side,price,qty\nB,650000,10\nB,650000\n").unwrap();
    let path = file.to_str().unwrap();
    let base = ["sbe", "--address", "127.0.0.1:1", "--quiet"];
    let stderr = refused(&[&base[..], &["--replay", path]].concat(), 1);
    assert!(stderr.contains("flow.csv: line 3: expected 3 fields"), "{stderr}");
    std::fs::write(&file, "# nothing\n").unwrap();
    let stderr = refused(&[&base[..], &["--replay", path]].concat(), 1);
    assert!(stderr.contains("no orders"), "{stderr}");
    let stderr = refused(&[&base[..], &["--replay", "/nonexistent/flow.csv"]].concat(), 1);
    assert!(stderr.contains("/nonexistent/flow.csv"), "{stderr}");
    let stderr = refused(&[&base[..], &["--ramp", "5000:1000:100"]].concat(), 1);
    assert!(stderr.contains("TO is below FROM"), "{stderr}");
    let stderr = refused(&[&base[..], &["--profile", "lmax"]].concat(), 2);
    assert!(stderr.contains("unknown profile"), "{stderr}");
    let stderr = refused(&[&base[..], &["--profile", "w-obrs", "--cancel-pct", "30"]].concat(), 1);
    assert!(stderr.contains("adds up to 110%"), "{stderr}");
    let stderr = refused(&[&base[..], &["--ramp", "1000:2000:500", "--find-max"]].concat(), 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Standard base64 (the interval log's encoding), without a dependency for one test.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &d) in chunk.iter().enumerate() {
            n |= u32::from(d) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
