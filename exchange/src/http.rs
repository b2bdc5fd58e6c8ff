//! The HTTP listener. For now it serves `/metrics` (Prometheus text) and `/health`; the REST API
//! (gateway-json) and the WebSocket endpoint will be mounted on the same router.

use crate::metrics::Metrics;
use crate::runtime::{IngressRing, RuntimeStats};
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Runtime metrics.
    pub metrics: Arc<Metrics>,
    /// Runtime counters.
    pub stats: Arc<RuntimeStats>,
    /// The ingress ring (for its depth).
    pub ring: Arc<IngressRing>,
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/health", get(health)).with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let gauges = [
        ("exchange_ingress_ring_depth", "Commands waiting on the ingress ring.", state.ring.len() as f64),
        ("exchange_ingress_ring_capacity", "Capacity of the ingress ring.", state.ring.capacity() as f64),
        (
            "exchange_last_sequence",
            "Last durable and executed sequence.",
            state.stats.last_sequence.load(Ordering::Relaxed) as f64,
        ),
    ];
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&gauges))
}

async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    format!("ok {}\n", state.stats.last_sequence.load(Ordering::Relaxed))
}
