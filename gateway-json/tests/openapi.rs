//! The OpenAPI document served at `GET /api/v1/openapi.json` parses as OpenAPI 3 and documents
//! every route of the public and private routers, with every method they answer: the routes are
//! read from the routers themselves (their debug form lists the paths) and each method is probed
//! (anything but 405 means the router serves it), so a route added without `#[utoipa::path]`
//! and an entry in `openapi::ApiDoc` fails here.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use engine::EngineConfig;
use engine::bus::{BroadcastRing, IngressRing};
use gateway_binary::Credentials;
use gateway_json::{AccountViews, PrivateState, RestGateway, private_router, public_router};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use tower::ServiceExt;

/// The paths a router serves, from its debug form (`paths: {RouteId(0): "/api/v1/...", ..}`).
fn router_paths(router: &Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let mut paths = BTreeSet::new();
    for piece in debug.split('"').skip(1).step_by(2) {
        if piece.starts_with('/') {
            paths.insert(piece.to_string());
        }
    }
    paths
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let config = Arc::new(EngineConfig::sample());
    let view = Arc::new(marketdata::MarketView::new(&config));
    let egress = BroadcastRing::new(1024);
    let gateway = RestGateway::start(Arc::new(AccountViews::new()), egress.subscribe_from(0)).unwrap();
    let state =
        PrivateState::new(&gateway, Arc::new(Credentials::default()), Arc::new(IngressRing::new(8)), config.clone());
    let router = public_router(view, config).merge(private_router(state));

    let response = router
        .clone()
        .oneshot(Request::builder().uri("/api/v1/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    let document: Value = serde_json::from_slice(&bytes).expect("the document is JSON");
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", document["openapi"]);
    let documented = document["paths"].as_object().expect("paths");
    // Every documented operation has responses and refers only to schemas that exist.
    let schemas = document["components"]["schemas"].as_object().expect("schemas");
    let text = String::from_utf8_lossy(&bytes);
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling schema reference {name}");
    }

    // The fallback's internal catch-all and the empty fallback router's "/" are not routes.
    let paths: BTreeSet<String> = router_paths(&router).into_iter().filter(|p| !p.contains("__private__")).collect();
    assert!(paths.len() >= 18, "routes found in the router: {paths:?}");
    let mut missing = Vec::new();
    for path in &paths {
        let mut served = Vec::new();
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
            let request = Request::builder().method(method.clone()).uri(path).body(Body::empty()).unwrap();
            let status = router.clone().oneshot(request).await.unwrap().status();
            if status != StatusCode::METHOD_NOT_ALLOWED && status != StatusCode::NOT_FOUND {
                served.push(method);
            }
        }
        if path == "/" && served.is_empty() {
            continue;
        }
        assert!(!served.is_empty(), "{path} answers no method");
        for method in served {
            let operation = documented.get(path).and_then(|item| item.get(method.as_str().to_lowercase()));
            match operation {
                Some(operation) => assert!(operation["responses"].is_object(), "{method} {path}: no responses"),
                None => missing.push(format!("{method} {path}")),
            }
        }
    }
    assert!(missing.is_empty(), "routes without OpenAPI documentation: {missing:?}");
    // And the document lists nothing the routers do not serve.
    for path in documented.keys() {
        assert!(paths.contains(path), "documented but not routed: {path}");
    }
    assert!(paths.contains("/wapi/v1/history/fills") && paths.contains("/api/v1/openapi.json"), "{paths:?}");
    gateway.shutdown();
}
