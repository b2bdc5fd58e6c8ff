//! The OpenAPI document served at `GET /api/v1/openapi.json` parses as OpenAPI 3 and documents
//! every route of every REST router (public, private, sessions, admin, AMM: merged as
//! exchange/src/http.rs does), with every method they answer: the routes are
//! read from the routers themselves (their debug form lists the paths) and each method is probed
//! (anything but 405 means the router serves it), so a route added without `#[utoipa::path]`
//! and an entry in `openapi::ApiDoc` fails here. Every security requirement names a defined scheme,
//! and every signed endpoint requires one.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use engine::EngineConfig;
use engine::bus::{BroadcastRing, IngressRing};
use gateway_binary::Credentials;
use gateway_json::{
    AccountViews, AdminState, PrivateState, RestGateway, UserStore, UsersConfig, admin_router, amm, private_router,
    public_router, sessions_router,
};
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
    let credentials = Arc::new(Credentials::default());
    let dir = std::env::temp_dir().join(format!("openapi-users-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let users = Arc::new(UserStore::open(UsersConfig::new(&dir), credentials.clone()).unwrap());
    let state = PrivateState::new(&gateway, credentials, Arc::new(IngressRing::new(8)), config.clone())
        .with_users(users.clone());
    // Every REST router of the server (exchange/src/http.rs), the admin API included.
    let router = public_router(view.clone(), config)
        .merge(private_router(state.clone()))
        .merge(sessions_router(users.clone()))
        .merge(admin_router(AdminState::new("admin-token", state.clone(), users)))
        .merge(amm::amm_router(state, view));

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
    assert!(paths.len() >= 33, "routes found in the router: {paths:?}");
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
    for path in ["/wapi/v1/history/fills", "/api/v1/openapi.json", "/api/v1/account/keys", "/api/v1/admin/deposits"] {
        assert!(paths.contains(path), "{path} not in {paths:?}");
    }
    assert!(paths.contains("/api/v1/amm/swap") && paths.contains("/api/v1/amm/pools"), "{paths:?}");

    // Security: the three schemes exist, every requirement names one of them, and every operation
    // with the signature headers (a signed endpoint) requires the signature or a session token.
    let schemes = document["components"]["securitySchemes"].as_object().expect("securitySchemes");
    assert_eq!(schemes["session"]["scheme"], "bearer", "{schemes:?}");
    assert_eq!(schemes["session"]["bearerFormat"], "JWT", "{schemes:?}");
    assert_eq!(schemes["admin"]["scheme"], "bearer", "{schemes:?}");
    assert_eq!((&schemes["signature"]["type"], &schemes["signature"]["in"]), (&"apiKey".into(), &"header".into()));
    assert!(schemes["signature"]["description"].as_str().is_some_and(|d| d.contains("not a static API key")));
    let mut signed = 0;
    for (path, item) in documented {
        for (method, operation) in item.as_object().unwrap() {
            let requirements = operation["security"].as_array().map(Vec::as_slice).unwrap_or_default();
            for requirement in requirements {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: undefined security scheme {name}");
                }
            }
            let has_signature = operation["parameters"]
                .as_array()
                .is_some_and(|parameters| parameters.iter().any(|p| p["name"] == "X-Signature" && p["in"] == "header"));
            if has_signature {
                signed += 1;
                let names: BTreeSet<&str> =
                    requirements.iter().flat_map(|r| r.as_object().unwrap().keys()).map(String::as_str).collect();
                assert_eq!(names, BTreeSet::from(["session", "signature"]), "{method} {path}");
            }
            if path.starts_with("/api/v1/admin/") {
                assert_eq!(operation["security"], serde_json::json!([{"admin": []}]), "{method} {path}");
            }
        }
    }
    assert!(signed >= 15, "signed operations: {signed}");
    gateway.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
