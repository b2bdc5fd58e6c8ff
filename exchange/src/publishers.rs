//! Wiring of the sinks (crate `sinks`): Kafka, Postgres and Redis, each on its own thread behind
//! a `sinks::Driver` that follows the egress ring and catches up from the journal.
//!
//! The `sinks` feature (on by default) builds them in; without it (`--no-default-features`, used
//! by the benchmark builds so CI does not compile sqlx and librdkafka in the release profile) a
//! configured sink is refused at start-up.

#[cfg(feature = "sinks")]
mod enabled;
#[cfg(feature = "sinks")]
pub use enabled::*;

#[cfg(not(feature = "sinks"))]
mod disabled {
    use crate::config::Config;
    use crate::runtime::{Retention, Runtime};
    use engine::EngineConfig;
    use std::time::Duration;

    /// No sinks in this build.
    pub struct Planned;

    /// Refuses a configuration with sinks: this build has none.
    ///
    /// # Errors
    /// A sink is configured.
    pub fn plan(config: &Config, _engine_config: &EngineConfig, _retention: &Retention) -> Result<Planned, String> {
        let sinks = &config.sinks;
        if sinks.postgres.is_some() || sinks.kafka.is_some() || sinks.redis.is_some() {
            return Err("sinks are configured but this build has no `sinks` feature".into());
        }
        Ok(Planned)
    }

    impl Planned {
        /// Nothing to start.
        ///
        /// # Errors
        /// Never.
        pub fn start(
            self,
            _config: &Config,
            _engine_config: &EngineConfig,
            _runtime: &Runtime,
        ) -> std::io::Result<Sinks> {
            Ok(Sinks)
        }
    }

    /// No running sinks.
    pub struct Sinks;

    /// No sink counters.
    #[derive(Clone, Default)]
    pub struct SinkStats;

    impl SinkStats {
        /// Empty.
        pub fn samples(&self) -> Vec<crate::metrics::SinkSample> {
            Vec::new()
        }
    }

    impl Sinks {
        /// No sinks.
        pub fn none() -> Self {
            Self
        }

        /// Empty.
        pub fn stats(&self) -> SinkStats {
            SinkStats
        }

        /// Empty.
        pub fn cursors(&self) -> Vec<(&'static str, u64)> {
            Vec::new()
        }

        /// Nothing to stop.
        pub fn shutdown(self, _deadline: Duration) {}
    }
}
#[cfg(not(feature = "sinks"))]
pub use disabled::*;
