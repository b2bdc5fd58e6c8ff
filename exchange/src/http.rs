//! The HTTP listener: `/metrics` (Prometheus text), `/health`, and the public and signed REST API
//! of gateway-json (`/api/v1/...`, docs/rest-api.md), the trading page (`/app/`, docs/web.md) and,
//! in demo mode, the test-funds faucet. The WebSocket endpoint will be mounted on the same router.

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
    /// The binary gateway's counters, when it runs.
    pub binary: Option<Arc<gateway_binary::GatewayStats>>,
    /// The FIX gateway's counters, when it runs.
    pub fix: Option<Arc<gateway_fix::GatewayStats>>,
    /// The market view the public REST API reads.
    pub market_view: Arc<marketdata::MarketView>,
    /// The engine configuration (symbols, precisions) of the REST API.
    pub engine_config: Arc<engine::EngineConfig>,
    /// The signed (private) REST API's state (orders and balances).
    pub private_api: gateway_json::PrivateState,
    /// The trading page, when served (docs/web.md).
    pub web: Option<crate::web::WebConfig>,
    /// The demo faucet (`--demo` only).
    pub faucet: Option<crate::faucet::Faucet>,
}

/// The router: metrics, health and the public and private REST API.
pub fn router(state: HttpState) -> Router {
    let public_api = gateway_json::public_router(state.market_view.clone(), state.engine_config.clone());
    let private_api = gateway_json::private_router(state.private_api.clone());
    let mut router = Router::new().route("/metrics", get(metrics)).route("/health", get(health));
    if let Some(web) = &state.web {
        // Browsers asking for `/` get the page; at merge, the WebSocket handler at `/` answers
        // non-upgrade requests with `crate::web::root_redirect` instead.
        let path = web.path.clone();
        router = router.route(
            "/",
            get(move |headers: axum::http::HeaderMap| async move {
                if crate::web::is_websocket_upgrade(&headers) {
                    // No WebSocket API on this branch yet.
                    axum::http::StatusCode::NOT_FOUND.into_response()
                } else {
                    crate::web::root_redirect(&path)
                }
            }),
        );
    }
    let mut router = router.with_state(state.clone()).merge(public_api).merge(private_api);
    if let Some(web) = state.web {
        router = router.merge(crate::web::router(web));
    }
    if let Some(faucet) = state.faucet {
        router = router.merge(faucet.router());
    }
    router
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
    let mut gauges = gauges.to_vec();
    gauges.push((
        "exchange_marketdata_stale",
        "1 when the market view lost events and its books are untrustworthy (REST depth answers 503).",
        f64::from(u8::from(state.market_view.is_stale())),
    ));
    let mut counters = Vec::new();
    if let Some(binary) = &state.binary {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        gauges.push((
            "exchange_binary_connections",
            "Open connections of the SBE gateway.",
            load(&binary.connections) as f64,
        ));
        counters.extend([
            ("exchange_binary_logons_total", "Sessions established on the SBE gateway.", load(&binary.logons)),
            (
                "exchange_binary_logon_failures_total",
                "Logons refused by the SBE gateway.",
                load(&binary.logon_failures),
            ),
            ("exchange_binary_commands_total", "Commands the SBE gateway put on the ring.", load(&binary.commands)),
            (
                "exchange_binary_business_rejects_total",
                "BusinessRejects sent by the SBE gateway.",
                load(&binary.business_rejects),
            ),
            (
                "exchange_binary_ingress_busy_total",
                "SBE commands refused because the ring was full.",
                load(&binary.ingress_busy),
            ),
        ]);
    }
    if let Some(fix) = &state.fix {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        gauges.push((
            "exchange_fix_connections",
            "Open connections of the FIX gateway.",
            load(&fix.connections) as f64,
        ));
        counters.extend([
            ("exchange_fix_logons_total", "Sessions logged on at the FIX gateway.", load(&fix.logons)),
            ("exchange_fix_logon_failures_total", "Logons refused by the FIX gateway.", load(&fix.logon_failures)),
            ("exchange_fix_messages_in_total", "FIX messages received.", load(&fix.messages_in)),
            ("exchange_fix_garbled_total", "Garbled FIX messages ignored.", load(&fix.garbled)),
            ("exchange_fix_commands_total", "Commands the FIX gateway put on the ring.", load(&fix.commands)),
            ("exchange_fix_session_rejects_total", "Session-level Rejects sent.", load(&fix.session_rejects)),
            ("exchange_fix_business_rejects_total", "BusinessMessageRejects sent.", load(&fix.business_rejects)),
            ("exchange_fix_throttled_total", "FIX messages refused by the rate limit.", load(&fix.throttled)),
            (
                "exchange_fix_ingress_busy_total",
                "FIX commands refused because the ring was full.",
                load(&fix.ingress_busy),
            ),
            ("exchange_fix_resend_requests_total", "ResendRequests served.", load(&fix.resend_requests)),
        ]);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&gauges, &counters))
}

async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    format!("ok {}\n", state.stats.last_sequence.load(Ordering::Relaxed))
}
