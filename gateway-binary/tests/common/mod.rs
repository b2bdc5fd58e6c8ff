//! Test harness: a real gateway on a loopback port in front of a real engine. The engine loop is
//! the runtime's minus the journal (durability is the runtime's concern, tested there): pop the
//! ingress ring, execute, publish every event to the egress ring with its origin.

#![allow(dead_code)]

use codec::{Command, UserId};
use engine::bus::{BroadcastRing, IngressCommand, IngressRing};
use engine::testkit::commands;
use engine::{CommandContext, Engine, EngineConfig};
use gateway_binary::client::{Client, api_key_of};
use gateway_binary::{BinaryGateway, Credentials, GatewayConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Secret of test user `n`: 32 bytes of `n + 100`.
pub fn secret(user: u64) -> [u8; 32] {
    [(user + 100) as u8; 32]
}

pub struct Harness {
    pub address: SocketAddr,
    pub credentials: Arc<Credentials>,
    gateway: Option<BinaryGateway>,
    stop: Arc<AtomicBool>,
    engine: Option<std::thread::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Harness {
    /// Users 1..=users registered and funded with BTC and USDC.
    pub fn start(users: u64, configure: impl FnOnce(&mut GatewayConfig)) -> Self {
        let mut config = GatewayConfig { listen: "127.0.0.1:0".parse().unwrap(), ..GatewayConfig::default() };
        configure(&mut config);
        let ingress = Arc::new(IngressRing::new(1024));
        let egress = BroadcastRing::new(1 << 16);
        let credentials = Arc::new(Credentials::default());
        let mut engine_config = EngineConfig::sample();
        engine_config.limits.orders_per_market_max = 4096;
        let mut engine = Engine::new(&engine_config).unwrap();
        let mut events = Vec::new();
        let mut sequence = 0;
        for user in 1..=users {
            credentials.insert(api_key_of(&secret(user)), UserId::new(user));
            for (asset, amount) in [(0, 100_000_000), (1, 10_000_000_000)] {
                sequence += 1;
                engine.execute(CommandContext::new(sequence, 0), &commands::deposit(user, asset, amount), &mut events);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let engine_thread = {
            let (ingress, egress, stop) = (ingress.clone(), egress.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut events = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Some(IngressCommand { origin, command }) = ingress.pop() else {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                        continue;
                    };
                    sequence += 1;
                    events.clear();
                    engine.execute(CommandContext::new(sequence, sequence), &command, &mut events);
                    for event in &events {
                        egress.publish(origin, event);
                    }
                }
            })
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let gateway = runtime.block_on(BinaryGateway::start(config, credentials.clone(), ingress, &egress)).unwrap();
        Self {
            address: gateway.local_addr(),
            credentials,
            gateway: Some(gateway),
            stop,
            engine: Some(engine_thread),
            runtime: Some(runtime),
        }
    }

    pub fn client(&self, user: u64) -> Client {
        Client::connect(self.address, &secret(user), 1).unwrap()
    }

    pub fn gateway(&self) -> &BinaryGateway {
        self.gateway.as_ref().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(engine) = self.engine.take() {
            let _ = engine.join();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

/// A GTC limit on BTC_USDC (market 1).
pub fn limit(side: codec::Side, price: u64, lots: u64, client_order_id: u64) -> Command {
    commands::limit(0, 1, side, price, lots, codec::TimeInForce::Gtc, client_order_id)
}
