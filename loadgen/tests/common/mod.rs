//! Test harness: a real SBE gateway on a loopback port in front of a real engine, with the
//! load-test users registered and funded the way `exchange --load-users N` does it. Copied in
//! spirit from gateway-binary's test harness: the engine loop is the runtime's minus the journal
//! (pop the ingress ring, execute, publish every event to the egress ring with its origin).

#![allow(dead_code)]

pub mod fix;

use codec::UserId;
use engine::bus::{BroadcastRing, IngressRing};
use engine::testkit::{EngineLoop, commands};
use engine::{CommandContext, Engine, EngineConfig};
use gateway_binary::client::api_key_of;
use gateway_binary::{BinaryGateway, Credentials, GatewayConfig};
use loadgen::users::{LOAD_USER_FIRST, load_user_secret};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Harness {
    pub address: SocketAddr,
    gateway: Option<BinaryGateway>,
    engine: Option<EngineLoop>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Harness {
    /// Load users `LOAD_USER_FIRST..+users` registered with their documented secrets and funded
    /// with 10,000,000 units of every asset.
    pub fn start(users: u64) -> Self {
        let config = GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), ..GatewayConfig::default() };
        let ingress = Arc::new(IngressRing::new(1024));
        let egress = BroadcastRing::new(1 << 16);
        let credentials = Arc::new(Credentials::default());
        let engine_config = EngineConfig::sample();
        let mut engine = Engine::new(&engine_config).unwrap();
        let mut events = Vec::new();
        let mut sequence = 0;
        for user in LOAD_USER_FIRST..LOAD_USER_FIRST + users {
            credentials.insert(api_key_of(&load_user_secret(user)), UserId::new(user));
            for asset in &engine_config.assets {
                sequence += 1;
                let amount = 10u64.pow(u32::from(asset.decimals)) * 10_000_000;
                let deposit = commands::deposit(user, asset.id.get(), amount);
                engine.execute(CommandContext::new(sequence, 0), &deposit, &mut events);
            }
        }
        let engine_loop = EngineLoop::start(engine, sequence, ingress.clone(), egress.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let gateway = runtime.block_on(BinaryGateway::start(config, credentials, ingress, &egress)).unwrap();
        Self {
            address: gateway.local_addr(),
            gateway: Some(gateway),
            engine: Some(engine_loop),
            runtime: Some(runtime),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
        drop(self.engine.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}
