//! The server's own view of a run: its wire-to-wire and stage histograms
//! (`exchange_wire_to_wire_seconds`, `exchange_stage_seconds`, see the exchange's
//! docs/operations.md) scraped from `/metrics` before and after the run.
//!
//! The server's histograms cover its whole life (Prometheus histograms are never reset), so the
//! run's share is the difference of the two scrapes, bucket by bucket; its percentiles are read
//! off that difference by linear interpolation within the bucket (the buckets are 10 per decade,
//! so a percentile is within about 12% of the server's own figure, and exact in which bucket).

use crate::http::{Client, request};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// What a series is: (gateway, message type, stage; `total` for the whole wire-to-wire time).
pub type SeriesKey = (String, String, String);

/// Label value of the wire-to-wire series in [`SeriesKey`]'s stage.
pub const TOTAL: &str = "total";

/// The stages in path order (as the server names them), for printing.
const STAGE_ORDER: [&str; 7] =
    [TOTAL, "decode", "ingress_wait", "journal_commit", "engine", "egress_wait", "encode_write"];

/// One scrape: per series, the cumulative bucket counts by upper bound (seconds; +Inf last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Cumulative counts per bucket, ascending bounds.
    pub series: BTreeMap<SeriesKey, Vec<(f64, u64)>>,
}

/// The labels of one Prometheus sample line `name{labels} value`, as (key, value) pairs.
fn labels(text: &str) -> Vec<(&str, &str)> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.trim_start_matches(','), value.trim_end_matches('"')))
        })
        .collect()
}

impl Scrape {
    /// Reads the wire-to-wire and stage buckets out of a Prometheus text.
    pub fn parse(text: &str) -> Self {
        let mut series: BTreeMap<SeriesKey, Vec<(f64, u64)>> = BTreeMap::new();
        for line in text.lines() {
            let (is_stage, rest) = if let Some(rest) = line.strip_prefix("exchange_wire_to_wire_seconds_bucket{") {
                (false, rest)
            } else if let Some(rest) = line.strip_prefix("exchange_stage_seconds_bucket{") {
                (true, rest)
            } else {
                continue;
            };
            let Some((label_text, value)) = rest.split_once("} ") else { continue };
            let Ok(count) = value.trim().parse::<f64>() else { continue };
            let pairs = labels(label_text);
            let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string());
            let (Some(gateway), Some(message), Some(le)) = (get("gateway"), get("message"), get("le")) else {
                continue;
            };
            let stage = if is_stage {
                let Some(stage) = get("stage") else { continue };
                stage
            } else {
                TOTAL.to_owned()
            };
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
            series.entry((gateway, message, stage)).or_default().push((bound, count as u64));
        }
        for buckets in series.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Self { series }
    }

    /// Scrapes `http://address/metrics`.
    ///
    /// # Errors
    /// The server cannot be reached or does not answer 200.
    pub fn fetch(address: &str) -> Result<Self, String> {
        let mut client = Client::connect(address)?;
        let response = client.call(&request("GET", "/metrics", &[], None))?;
        if response.status != 200 {
            return Err(format!("GET http://{address}/metrics: status {}", response.status));
        }
        Ok(Self::parse(&String::from_utf8_lossy(&response.body)))
    }
}

/// One series over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerRow {
    /// `sbe`, `fix` or `rest`.
    pub gateway: String,
    /// `NewOrder`, `CancelOrder`, …
    pub message: String,
    /// `total` or a stage.
    pub stage: String,
    /// Commands recorded during the run.
    pub count: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
}

/// The server's wire-to-wire latency of one run: every series recorded into during it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerLatency {
    /// Wire-to-wire (`total`) and stage rows, by gateway and message type, stages in path order.
    pub rows: Vec<ServerRow>,
}

/// The value at quantile `q` of non-cumulative `counts` over `bounds` (seconds), interpolated
/// linearly within its bucket; the last finite bound for the overflow bucket.
fn quantile(buckets: &[(f64, u64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0, |b| b.1);
    if total == 0 {
        return 0.0;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut lower = 0.0;
    let mut below = 0u64;
    for &(bound, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if bound.is_infinite() {
                return lower;
            }
            let in_bucket = (cumulative - below) as f64;
            let fraction = if in_bucket > 0.0 { (rank - below as f64) / in_bucket } else { 1.0 };
            return lower + (bound - lower) * fraction;
        }
        if bound.is_finite() {
            lower = bound;
        }
        below = cumulative;
    }
    lower
}

impl ServerLatency {
    /// The run's share: `after` minus `before`, bucket by bucket.
    pub fn between(before: &Scrape, after: &Scrape) -> Self {
        let mut rows = Vec::new();
        for ((gateway, message, stage), buckets) in &after.series {
            let earlier = before.series.get(&(gateway.clone(), message.clone(), stage.clone()));
            let run: Vec<(f64, u64)> = buckets
                .iter()
                .map(|&(bound, count)| {
                    let was = earlier
                        .and_then(|e| e.iter().find(|(b, _)| b.total_cmp(&bound).is_eq()))
                        .map_or(0, |(_, c)| *c);
                    (bound, count.saturating_sub(was))
                })
                .collect();
            let count = run.last().map_or(0, |b| b.1);
            if count == 0 {
                continue;
            }
            rows.push(ServerRow {
                gateway: gateway.clone(),
                message: message.clone(),
                stage: stage.clone(),
                count,
                p50_ns: (quantile(&run, 0.5) * 1e9).round() as u64,
                p99_ns: (quantile(&run, 0.99) * 1e9).round() as u64,
            });
        }
        let order = |stage: &str| STAGE_ORDER.iter().position(|s| *s == stage).unwrap_or(STAGE_ORDER.len());
        rows.sort_by(|a, b| (&a.gateway, &a.message, order(&a.stage)).cmp(&(&b.gateway, &b.message, order(&b.stage))));
        Self { rows }
    }

    /// The wire-to-wire row of `gateway` and `message`, if any was recorded.
    pub fn total(&self, gateway: &str, message: &str) -> Option<&ServerRow> {
        self.rows.iter().find(|r| r.gateway == gateway && r.message == message && r.stage == TOTAL)
    }
}

impl fmt::Display for ServerLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() {
            return writeln!(f, "server-side: nothing recorded during the run");
        }
        writeln!(f, "server-side wire-to-wire (GET /metrics after minus before; read to write, µs):")?;
        writeln!(f, "  {:<5} {:<14} {:<15} {:>9} {:>10} {:>10}", "gw", "message", "stage", "count", "p50", "p99")?;
        for row in &self.rows {
            writeln!(
                f,
                "  {:<5} {:<14} {:<15} {:>9} {:>10.1} {:>10.1}",
                row.gateway,
                row.message,
                row.stage,
                row.count,
                row.p50_ns as f64 / 1e3,
                row.p99_ns as f64 / 1e3
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(total: [u64; 3], decode: [u64; 3]) -> String {
        format!(
            "# TYPE exchange_wire_to_wire_seconds histogram\n\
             exchange_wire_to_wire_seconds_bucket{{gateway=\"sbe\",message=\"NewOrder\",le=\"0.00001\"}} {}\n\
             exchange_wire_to_wire_seconds_bucket{{gateway=\"sbe\",message=\"NewOrder\",le=\"0.00002\"}} {}\n\
             exchange_wire_to_wire_seconds_bucket{{gateway=\"sbe\",message=\"NewOrder\",le=\"+Inf\"}} {}\n\
             exchange_stage_seconds_bucket{{gateway=\"sbe\",message=\"NewOrder\",stage=\"decode\",le=\"0.00001\"}} {}\n\
             exchange_stage_seconds_bucket{{gateway=\"sbe\",message=\"NewOrder\",stage=\"decode\",le=\"0.00002\"}} {}\n\
             exchange_stage_seconds_bucket{{gateway=\"sbe\",message=\"NewOrder\",stage=\"decode\",le=\"+Inf\"}} {}\n",
            total[0], total[1], total[2], decode[0], decode[1], decode[2]
        )
    }

    #[test]
    fn the_run_is_the_difference_of_two_scrapes() {
        // Before: 10 fast commands. During the run: 100 more, all between 10 and 20 µs.
        let before = Scrape::parse(&text([10, 10, 10], [10, 10, 10]));
        let after = Scrape::parse(&text([10, 110, 110], [110, 110, 110]));
        let run = ServerLatency::between(&before, &after);
        let total = run.total("sbe", "NewOrder").expect("total row");
        assert_eq!(total.count, 100);
        assert_eq!(total.p50_ns, 15_000, "half-way through the 10-20 µs bucket");
        assert_eq!(total.p99_ns, 19_900);
        assert_eq!(run.rows[1].stage, "decode");
        assert!(run.rows[1].p50_ns <= 10_000);
        // Nothing new: no rows.
        assert!(ServerLatency::between(&after, &after).rows.is_empty());
    }
}
