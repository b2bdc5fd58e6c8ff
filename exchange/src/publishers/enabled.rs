//! The sinks, built in (feature `sinks`).

use crate::config::Config;
use crate::metrics::{HistogramSample, SinkSample};
use crate::runtime::{Retention, Runtime};
use engine::EngineConfig;
use sinks::kafka::{KafkaConfig, KafkaSink};
use sinks::postgres::{PostgresSink, Reference};
use sinks::redis::{RedisConfig, RedisSink};
use sinks::{Driver, DriverConfig, DriverStats, History, Sink, WRITE_LATENCY_BOUNDS_NS};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The sinks the configuration turns on, not yet started.
pub struct Planned {
    sinks: Vec<(Box<dyn Sink>, Arc<AtomicU64>)>,
}

/// Builds the configured sinks and registers their pruning floors in `retention` (before the
/// runtime starts, so no snapshot cycle can prune what they need).
///
/// # Errors
/// A bad API key in the configuration, or a sink that cannot be created.
pub fn plan(config: &Config, engine_config: &EngineConfig, retention: &Retention) -> Result<Planned, String> {
    let mut sinks: Vec<(Box<dyn Sink>, Arc<AtomicU64>)> = Vec::new();
    if let Some(section) = &config.sinks.postgres {
        let mut api_keys = Vec::new();
        for key in &config.api_keys {
            api_keys.push((key.user_id, key.key()?));
        }
        let reference = Reference { engine_config: engine_config.clone(), api_keys };
        let sink = PostgresSink::new(&section.url, reference).map_err(|e| e.to_string())?;
        sinks.push((Box::new(sink), retention.register()));
    }
    if let Some(section) = &config.sinks.kafka {
        let kafka = KafkaConfig {
            brokers: section.brokers.clone(),
            orders_topic: section.orders_topic.clone(),
            trades_topic: section.trades_topic.clone(),
            balances_topic: section.balances_topic.clone(),
            book_topic: section.book_topic.clone(),
            pools_topic: section.pools_topic.clone(),
            partitions: section.partitions,
            replication: section.replication,
        };
        sinks.push((Box::new(KafkaSink::new(kafka).map_err(|e| e.to_string())?), retention.register()));
    }
    if let Some(section) = &config.sinks.redis {
        let redis = RedisConfig {
            url: section.url.clone(),
            prefix: section.prefix.clone(),
            depth: section.depth,
            trades: section.trades,
            interval: Duration::from_millis(section.interval_ms.max(1)),
        };
        sinks.push((Box::new(RedisSink::new(redis, engine_config.clone())), retention.register()));
    }
    Ok(Planned { sinks })
}

impl Planned {
    /// Starts every planned sink on the running runtime.
    ///
    /// # Errors
    /// A thread cannot be spawned.
    pub fn start(self, config: &Config, engine_config: &EngineConfig, runtime: &Runtime) -> std::io::Result<Sinks> {
        let history = History {
            engine_config: engine_config.clone(),
            journal_dir: config.journal_dir(),
            snapshot_dir: config.snapshot_dir(),
        };
        let mut drivers = Vec::new();
        for (sink, floor) in self.sinks {
            let stats = runtime.stats.clone();
            let durable = move || stats.last_sequence.load(Ordering::Acquire);
            let driver =
                Driver::start(sink, DriverConfig::default(), history.clone(), runtime.egress.clone(), durable, floor)?;
            tracing::info!(sink = driver.name(), "sink started");
            drivers.push(driver);
        }
        Ok(Sinks { drivers })
    }
}

/// The running sinks.
pub struct Sinks {
    drivers: Vec<Driver>,
}

/// The live counters of every running sink, for `/metrics` (cheap to clone).
#[derive(Clone, Default)]
pub struct SinkStats {
    drivers: Vec<(&'static str, Arc<DriverStats>)>,
}

impl SinkStats {
    /// Every sink's counters now.
    pub fn samples(&self) -> Vec<SinkSample> {
        self.drivers
            .iter()
            .map(|(name, stats)| {
                let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
                SinkSample {
                    name,
                    cursor: stats.cursor.load(Ordering::Acquire),
                    commands: load(&stats.commands),
                    replayed: load(&stats.replayed),
                    failures: load(&stats.failures),
                    lags: load(&stats.lags),
                    connected: stats.connected.load(Ordering::Acquire),
                    write_ns: HistogramSample {
                        bounds: &WRITE_LATENCY_BOUNDS_NS,
                        counts: stats.write_latency.bucket_counts().to_vec(),
                        sum: stats.write_latency.sum_ns(),
                    },
                }
            })
            .collect()
    }
}

impl Sinks {
    /// No sinks (a gateway process: the primary's sinks write the history).
    pub fn none() -> Self {
        Self { drivers: Vec::new() }
    }

    /// The live counters of every sink.
    pub fn stats(&self) -> SinkStats {
        SinkStats { drivers: self.drivers.iter().map(|d| (d.name(), d.stats())).collect() }
    }

    /// `(name, cursor)` of every sink.
    pub fn cursors(&self) -> Vec<(&'static str, u64)> {
        self.drivers.iter().map(|d| (d.name(), d.stats().cursor.load(Ordering::Relaxed))).collect()
    }

    /// Lets every sink write what the (stopped) engine published, then stops them.
    pub fn shutdown(self, deadline: Duration) {
        for driver in self.drivers {
            driver.shutdown(deadline);
        }
    }
}
