//! The HTTP listener: `/metrics` (Prometheus text), `/health`, and the public and signed REST API
//! of gateway-json (`/api/v1/...`, docs/rest-api.md), with registration, login, API key
//! management and (when an admin token is configured) the admin API, and its WebSocket API
//! (`GET /` and `/ws` with `Upgrade: websocket`, docs/websocket-api.md); the trading page
//! (`/app/`, where browsers asking for `/` are sent; docs/web.md) and, in demo mode, the faucet.

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
    /// Registered users, API keys and sessions.
    pub users: Arc<gateway_json::UserStore>,
    /// The admin API's bearer token; `None`: the admin API is not served.
    pub admin_token: Option<String>,
    /// The WebSocket endpoint's state (publisher, keys, limits).
    pub websocket: gateway_json::WsState,
    /// The trading page, when served (docs/web.md).
    pub web: Option<crate::web::WebConfig>,
    /// Where `GET /api/v1/trades/history` reads (the Postgres sink's trades); `None`: memory.
    pub trade_source: Option<Arc<dyn gateway_json::TradeSource>>,
    /// The demo faucet (`--demo` only).
    pub faucet: Option<crate::faucet::Faucet>,
    /// The demo flow's fair prices (`--demo` only; `exchange_demo_fair_price`).
    pub demo: Option<Arc<crate::demo::DemoStats>>,
    /// The running sinks' counters (`exchange_sink_*`; none without sinks).
    pub sinks: crate::publishers::SinkStats,
    /// On a replicated primary, its epoch (the offset of its marker in the journal topic):
    /// `exchange_cluster_role` 1 and `exchange_cluster_epoch`. `None`: not replicated.
    pub cluster_epoch: Option<i64>,
    /// On a replicated primary, when each phase of its promotion was reached
    /// (`exchange_cluster_promotion_*_ms`).
    pub cluster_promotion: Option<Arc<crate::promotion::PromotionTimeline>>,
    /// On a replicated primary, its commands topic consumer's counters
    /// (`exchange_cluster_commands_*_total`).
    pub cluster_commands: Option<CommandsTopicStats>,
    /// On a replicated primary and a gateway process, its users topic reader's counters
    /// (`exchange_cluster_users_*_total`).
    pub cluster_users: Option<Arc<UsersTopicStats>>,
}

/// The counters of a reader of the users topic (`cluster::users`, docs/deployment.md "User
/// directory"): a gateway process's, or the one a primary read the directory with (since it
/// started as a standby).
#[derive(Debug, Default)]
pub struct UsersTopicStats {
    /// Records that changed the directory here.
    pub applied: std::sync::atomic::AtomicU64,
    /// Records already known here (read again).
    pub known: std::sync::atomic::AtomicU64,
    /// Records of a superseded epoch (a deposed primary's late writes), ignored.
    pub superseded: std::sync::atomic::AtomicU64,
    /// Records refused: malformed or contradicting this directory (logged as errors).
    pub refused: std::sync::atomic::AtomicU64,
}

/// The counters of a replicated primary's commands topic consumer
/// (`cluster::commands::CommandsConsumer`).
#[derive(Clone, Default)]
pub struct CommandsTopicStats {
    /// Records read.
    pub read: Arc<std::sync::atomic::AtomicU64>,
    /// Commands pushed into the ingress ring.
    pub pushed: Arc<std::sync::atomic::AtomicU64>,
    /// Commands skipped as already applied.
    pub skipped: Arc<std::sync::atomic::AtomicU64>,
    /// Records skipped as not a command with a gateway origin, or too long.
    pub malformed: Arc<std::sync::atomic::AtomicU64>,
}

/// The router: metrics, health, the public and private REST API and the WebSocket endpoint.
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` (per-IP WebSocket limit).
pub fn router(state: HttpState) -> Router {
    let public_api = gateway_json::public_router_with_trade_source(
        state.market_view.clone(),
        state.engine_config.clone(),
        state.trade_source.clone(),
    );
    let private_api = gateway_json::private_router(state.private_api.clone());
    let sessions = gateway_json::sessions_router(state.users.clone());
    let admin = state.admin_token.clone().map(|token| {
        gateway_json::admin_router(gateway_json::AdminState::new(token, state.private_api.clone(), state.users.clone()))
    });
    let amm_api = gateway_json::amm::amm_router(state.private_api.clone(), state.market_view.clone());
    let websocket = gateway_json::ws_router(state.websocket.clone());
    let (web, faucet) = (state.web.clone(), state.faucet.clone());
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
        .merge(public_api)
        .merge(private_api)
        .merge(sessions)
        .merge(amm_api)
        .merge(websocket);
    if let Some(faucet) = faucet {
        router = router.merge(faucet.router());
    }
    if let Some(web) = web {
        // `GET /` belongs to the WebSocket API; browsers (no `Upgrade`) are sent to the page.
        router = crate::web::redirect_browsers_at_root(router.merge(crate::web::router(web.clone())), &web.path);
    }
    match admin {
        Some(admin) => router.merge(admin),
        None => router,
    }
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
    let stats = &state.stats;
    gauges.push((
        "exchange_snapshot_shadow_lag_commands",
        "Commands the snapshotter's shadow engine is behind the engine thread.",
        stats.last_sequence.load(Ordering::Relaxed).saturating_sub(stats.shadow_sequence.load(Ordering::Relaxed))
            as f64,
    ));
    gauges.push((
        "exchange_snapshot_sequence",
        "Sequence of the newest snapshot written since start (0: none yet).",
        stats.snapshot_sequence.load(Ordering::Relaxed) as f64,
    ));
    gauges.push((
        "exchange_marketdata_stale",
        "1 when the market view lost events and its books are untrustworthy (REST depth answers 503).",
        f64::from(u8::from(state.market_view.is_stale())),
    ));
    if let Some(epoch) = state.cluster_epoch {
        gauges.push(("exchange_cluster_role", "0: standby, 1: primary (replicated journal).", 1.0));
        gauges.push((
            "exchange_cluster_epoch",
            "Offset of this primary's epoch marker in the journal topic.",
            epoch as f64,
        ));
    }
    if let Some(promotion) = &state.cluster_promotion {
        gauges.extend(promotion.gauges());
    }
    let mut counters = vec![(
        "exchange_snapshot_feed_overflows_total",
        "Commands the snapshot feed had no room for (the snapshotter read them from the journal).",
        stats.snapshot_feed_overflows.load(Ordering::Relaxed),
    )];
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    if let Some(commands) = &state.cluster_commands {
        counters.extend([
            ("exchange_cluster_commands_read_total", "Commands topic records read.", load(&commands.read)),
            (
                "exchange_cluster_commands_pushed_total",
                "Commands topic commands pushed to the engine.",
                load(&commands.pushed),
            ),
            (
                "exchange_cluster_commands_skipped_total",
                "Commands topic commands skipped as already applied.",
                load(&commands.skipped),
            ),
            (
                "exchange_cluster_commands_malformed_total",
                "Commands topic records skipped: not a command with a gateway origin, or too long.",
                load(&commands.malformed),
            ),
        ]);
    }
    if let Some(users) = &state.cluster_users {
        counters.extend([
            ("exchange_cluster_users_applied_total", "Users topic records applied here.", load(&users.applied)),
            ("exchange_cluster_users_known_total", "Users topic records already known here.", load(&users.known)),
            (
                "exchange_cluster_users_superseded_total",
                "Users topic records of a superseded primary, ignored.",
                load(&users.superseded),
            ),
            (
                "exchange_cluster_users_refused_total",
                "Users topic records refused: malformed or contradicting this directory.",
                load(&users.refused),
            ),
        ]);
    }
    let ws = state.websocket.publisher().stats();
    gauges.push(("exchange_ws_subscribers", "Open WebSocket subscribers.", load(&ws.subscribers) as f64));
    counters.extend([
        (
            "exchange_ws_frames_encoded_total",
            "Stream frames encoded (once per event and stream).",
            load(&ws.frames_encoded),
        ),
        ("exchange_ws_frames_queued_total", "Stream frames queued to subscribers.", load(&ws.frames_queued)),
        (
            "exchange_ws_frames_dropped_total",
            "Stream frames dropped for lagging subscribers.",
            load(&ws.frames_dropped),
        ),
        ("exchange_ws_lags_total", "Times a subscriber started lagging on a stream.", load(&ws.lags)),
        ("exchange_ws_lag_disconnects_total", "Subscribers closed for lagging.", load(&ws.lag_disconnects)),
    ]);
    if let Some(binary) = &state.binary {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        gauges.push((
            "exchange_binary_connections",
            "Open connections of the SBE gateway.",
            load(&binary.connections) as f64,
        ));
        gauges.push((
            "exchange_binary_logon_verifications_pending",
            "SBE logon signatures waiting for the verifier thread (io = thread).",
            load(&binary.logon_verifications_pending) as f64,
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
            ("exchange_fix_store_batches_total", "Batches appended to FIX session stores.", load(&fix.store_batches)),
            ("exchange_fix_store_syncs_total", "fsync calls of the FIX session stores.", load(&fix.store_syncs)),
        ]);
    }
    let sinks = state.sinks.samples();
    let mut families = crate::metrics::sink_families(&sinks, state.stats.last_sequence.load(Ordering::Acquire));
    if let Some(demo) = &state.demo {
        families.push(demo.fair_price_family(&state.engine_config));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&gauges, &counters, &families))
}

async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    format!("ok {}\n", state.stats.last_sequence.load(Ordering::Relaxed))
}
