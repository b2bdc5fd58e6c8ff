//! What a first-time user meets: the start-up log says where the trading page is and where the
//! demo users' keys and FIX sessions are documented, and the operator tools refuse a data
//! directory that holds nothing (a mistyped `--data`) instead of "replaying" an empty exchange.

mod support;

use std::process::{Command, Stdio};

#[test]
fn the_demo_start_up_log_names_the_trading_page_and_the_demo_credentials() {
    let dir = support::data_dir("first-run-log");
    let output = support::command(&dir)
        .args(["run", "--demo", "--demo-orders", "10", "--run-for", "1", "--status-every", "0"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let listen = log
        .lines()
        .find(|line| line.contains(support::HTTP_LISTENING))
        .and_then(|line| line.split("listen=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no HTTP listening line: {log}"));
    let page = format!("http://{listen}/app/");
    assert!(log.lines().any(|line| line.contains("trading page") && line.contains(&page)), "{page} not in {log}");
    let demo = log.lines().find(|line| line.contains("demo users")).unwrap_or_else(|| panic!("{log}"));
    assert!(demo.contains("docs/fix.md") && demo.contains("docs/operations.md") && demo.contains("DEMO1"), "{demo}");
    // The section it points at documents them (docs/fix.md documents FIX sessions in general).
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/");
    let operations = std::fs::read_to_string(format!("{docs}operations.md")).unwrap();
    assert!(operations.contains("## Demo users") && operations.contains("DEMO1"), "docs/operations.md");
    assert!(std::path::Path::new(&format!("{docs}fix.md")).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn operator_tools_refuse_an_empty_data_directory() {
    let dir = support::data_dir("first-run-empty");
    std::fs::create_dir_all(&dir).unwrap();
    for tool in [&["replay"][..], &["replay", "--from-scratch"], &["journal", "dump"]] {
        let output = Command::new(support::BINARY).args(["--data", dir.to_str().unwrap()]).args(tool).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{tool:?} on nothing must fail: {}", String::from_utf8_lossy(&output.stdout));
        assert!(stderr.contains("no journal in") && stderr.contains("--data"), "{tool:?}: {stderr}");
    }
    // Nothing was created in the mistyped directory.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
