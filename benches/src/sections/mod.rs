//! The measured sections. Each one starts what it needs (serving process, viewers),
//! measures, pushes [`Figure`]s and raw numbers into the [`Ctx`], and stops everything.

pub mod browser;
pub mod camera;
pub mod failover;
pub mod fanout;
pub mod latency;
pub mod memory;
pub mod peers;
pub mod quinn;
pub mod replication;
pub mod rtsp;
pub mod scale;
pub mod throughput;
pub mod ttff;

use std::time::Duration;

use serde::Serialize;

use crate::report::Figure;
use crate::stats::Latency;

/// What later sections compare against.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Baselines {
    /// Plain quinn, rustls defaults, one stream, as fast as it goes.
    pub quinn_gbit_s: Option<f64>,
    pub quinn_gbit_per_core: Option<f64>,
    /// Plain quinn, paced 4 Mbit/s frames.
    pub quinn_latency: Option<Latency>,
    pub quinn_handshake_ms: Option<f64>,
}

/// State shared by the sections of one run.
#[derive(Debug)]
pub struct Ctx {
    pub quick: bool,
    /// Throughput at one fixed load instead of the ramp: `(streams, seconds)` (profiling).
    pub fixed_streams: Option<(usize, u64)>,
    pub figures: Vec<Figure>,
    pub raw: serde_json::Map<String, serde_json::Value>,
    pub base: Baselines,
}

impl Ctx {
    pub fn new(quick: bool) -> Self {
        Ctx {
            quick,
            fixed_streams: None,
            figures: Vec::new(),
            raw: serde_json::Map::new(),
            base: Baselines::default(),
        }
    }

    /// `quick` in the quick run, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    pub fn secs(&self, quick: u64, full: u64) -> Duration {
        Duration::from_secs(self.pick(quick, full))
    }

    pub fn push(&mut self, f: Figure) {
        self.figures.push(f);
    }

    pub fn raw<T: Serialize>(&mut self, key: &str, v: &T) {
        self.raw
            .insert(key.into(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null));
    }
}

/// Milliseconds, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
