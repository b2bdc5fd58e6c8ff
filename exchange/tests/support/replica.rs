//! Shared by the replica tests (`replica`, `replica_log`): a WebSocket client that records a
//! replica's (or primary's) market data frames, and stopping a child process.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Kills (SIGKILL) and reaps `child`.
pub fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A WebSocket client on its own thread: subscribes to `streams` and records every data frame
/// until stopped.
pub struct Recorder {
    frames: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    pub fn start(port: u16, streams: &[&str]) -> Self {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
        let subscribe = json!({"method": "SUBSCRIBE", "params": streams, "id": 1}).to_string();
        let (thread_frames, thread_stop) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let (mut client, _) =
                    tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await.unwrap();
                client.send(Message::text(subscribe)).await.unwrap();
                while !thread_stop.load(Ordering::Acquire) {
                    let Ok(message) = tokio::time::timeout(Duration::from_millis(100), client.next()).await else {
                        continue;
                    };
                    let Some(Ok(Message::Text(text))) = message else { break };
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    if frame.get("stream").is_some() {
                        thread_frames.lock().unwrap().push(frame);
                    } else {
                        subscribed_tx.send(frame).unwrap();
                    }
                }
            });
        });
        let answer = subscribed_rx.recv_timeout(Duration::from_secs(10)).expect("an answer to SUBSCRIBE");
        assert_eq!(answer, json!({"result": null, "id": 1}), "subscribed to {streams:?}");
        Self { frames, stop, thread: Some(thread) }
    }

    pub fn stop(mut self) -> Vec<Value> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.frames.lock().unwrap())
    }
}
