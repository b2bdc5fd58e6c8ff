//! The WebSocket API on the real server: starts the binary with `--demo` on ephemeral ports,
//! connects a real WebSocket client to `/` on the HTTP port, subscribes to `depth.BTC_USDC` and
//! `trade.BTC_USDC`, and checks that a REST depth snapshot plus the diffs after its
//! `lastUpdateId` (gap-free `U = u + 1`) rebuild exactly the book a later REST snapshot shows;
//! also that the subscriber appears in /metrics and that a plain GET / gets a JSON 400.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

use std::time::{Duration, Instant};
use support::{DepthBook, Server, apply_depth, request};
use tokio_tungstenite::tungstenite::Message;

fn get(port: u16, path: &str) -> (u16, String) {
    let response = request(port, "GET", path, "", "");
    (response.status(), response.body().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_server_streams_depth_consistent_with_rest() {
    let dir = support::data_dir("websocket");
    let mut server = Server::start(&dir, &["run", "--demo", "--demo-rate", "1000"], &[]);
    let port = server.http;

    // A browser's plain GET / is sent to the trading page (docs/web.md); a plain GET of the
    // WebSocket-only path /ws is a clear error.
    let (status, body) = get(port, "/");
    assert_eq!(status, 307, "a plain GET / is redirected to the trading page: {body}");
    let (status, body) = get(port, "/ws");
    assert_eq!(status, 400, "a plain GET /ws is not a WebSocket: {body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], "INVALID_CLIENT_REQUEST");

    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/")).await.unwrap();
    let subscribe = json!({"method": "SUBSCRIBE", "params": ["depth.BTC_USDC", "trade.BTC_USDC"], "id": 1});
    client.send(Message::text(subscribe.to_string())).await.unwrap();
    let mut next = async || loop {
        let message = tokio::time::timeout(Duration::from_secs(20), client.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(next().await, json!({"result": null, "id": 1}));
    let depth_of = |body: &str| -> (Value, u64) {
        let value: Value = serde_json::from_str(body).unwrap();
        let id = value["lastUpdateId"].as_str().unwrap().parse().unwrap();
        (value, id)
    };
    let (snapshot, snapshot_id) = depth_of(&get(port, "/api/v1/depth?symbol=BTC_USDC&limit=5000").1);
    let mut book: DepthBook = Default::default();
    apply_depth(&mut book, &snapshot);
    let mut previous = snapshot_id;
    let (mut diffs, mut trades) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut target: Option<(Value, u64)> = None;
    loop {
        let frame = next().await;
        if frame["stream"] == "trade.BTC_USDC" {
            trades += 1;
            continue;
        }
        assert_eq!(frame["stream"], "depth.BTC_USDC", "{frame}");
        let data = &frame["data"];
        let (first, last) = (data["U"].as_u64().unwrap(), data["u"].as_u64().unwrap());
        if last <= snapshot_id {
            continue;
        }
        assert_eq!(first, previous + 1, "gap-free after the snapshot");
        previous = last;
        apply_depth(&mut book, data);
        diffs += 1;
        if target.is_none() && Instant::now() >= deadline {
            target = Some(depth_of(&get(port, "/api/v1/depth?symbol=BTC_USDC&limit=5000").1));
        }
        if let Some((later, later_id)) = &target {
            if previous == *later_id {
                let mut expected: DepthBook = Default::default();
                apply_depth(&mut expected, later);
                assert_eq!(book, expected, "snapshot {snapshot_id} + {diffs} diffs = snapshot {later_id}");
                break;
            }
            assert!(previous < *later_id, "the later snapshot's id is the u of some diff");
        }
    }
    assert!(diffs > 10 && trades > 0, "the demo trades ({diffs} diffs, {trades} trades)");
    let metrics = get(port, "/metrics").1;
    assert!(metrics.contains("exchange_ws_subscribers 1"), "{metrics}");

    let status = server.terminate();
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
}
