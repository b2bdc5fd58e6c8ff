//! A real FIX gateway on a loopback port in front of a real engine loop, with one FIX session
//! per load-test user registered the way `exchange --load-users N` does it (SenderCompID
//! `LOAD<user id>` → `EXCHANGE`, the user's load-test key) and the users funded. The pattern of
//! gateway-fix's own test harness: pop the ingress ring, execute, publish every event with its
//! origin.

use codec::UserId;
use engine::bus::{BroadcastRing, IngressRing};
use engine::testkit::{EngineLoop, commands};
use engine::{CommandContext, Engine, EngineConfig};
use gateway_fix::{FixGateway, GatewayConfig, SessionConfig};
use loadgen::users::{LOAD_USER_FIRST, load_user_secret};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct FixHarness {
    pub address: SocketAddr,
    store_dir: PathBuf,
    gateway: Option<FixGateway>,
    engine: Option<EngineLoop>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FixHarness {
    /// Load users `LOAD_USER_FIRST..+users`, each with a FIX session and funded with
    /// 10,000,000 units of every asset.
    pub fn start(users: u64) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let store_dir = std::env::temp_dir().join(format!(
            "loadgen-fix-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&store_dir);
        let config = GatewayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store_dir: store_dir.clone(),
            ..GatewayConfig::default()
        };
        let ingress = Arc::new(IngressRing::new(1024));
        let egress = BroadcastRing::new(1 << 16);
        let engine_config = EngineConfig::sample();
        let mut engine = Engine::new(&engine_config).unwrap();
        let mut events = Vec::new();
        let mut sequence = 0;
        let mut sessions = Vec::new();
        for user in LOAD_USER_FIRST..LOAD_USER_FIRST + users {
            let key = ed25519_dalek::SigningKey::from_bytes(&load_user_secret(user));
            sessions.push(SessionConfig {
                sender_comp_id: format!("LOAD{user}"),
                target_comp_id: "EXCHANGE".into(),
                user_id: UserId::new(user),
                public_key: key.verifying_key().to_bytes(),
            });
            for asset in &engine_config.assets {
                sequence += 1;
                let amount = 10u64.pow(u32::from(asset.decimals)) * 10_000_000;
                let deposit = commands::deposit(user, asset.id.get(), amount);
                engine.execute(CommandContext::new(sequence, 0), &deposit, &mut events);
            }
        }
        let engine_loop = EngineLoop::start(engine, sequence, ingress.clone(), egress.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let gateway = runtime.block_on(FixGateway::start(config, sessions, &engine_config, ingress, &egress)).unwrap();
        Self {
            address: gateway.local_addr(),
            store_dir,
            gateway: Some(gateway),
            engine: Some(engine_loop),
            runtime: Some(runtime),
        }
    }
}

impl Drop for FixHarness {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
        drop(self.engine.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}
