//! `camesh-bench`: the loopback benchmark harness.
//!
//! Starts real camesh nodes over QUIC on 127.0.0.1, measures every figure of DESIGN.md's
//! "Numbers we hold ourselves to" that exists so far next to a baseline from the same run,
//! prints a table and writes JSON. `--quick` finishes in under 5 minutes on 2 cores.
//!
//! ```text
//! cargo run --release -p camesh-bench -- --quick
//! cargo run --release -p camesh-bench -- --only latency,ttff --json /tmp/r.json
//! ```

use std::path::PathBuf;
use std::time::Instant;

use camesh_bench::report::{Figure, Report, Verdict};
use camesh_bench::sections::{self, Ctx};
use camesh_bench::{procstat, quic_baseline, server};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "camesh-bench", about = "camesh loopback benchmark harness")]
struct Args {
    /// Shorter windows and fewer joins: under 5 minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value_os_t = default_json())]
    json: PathBuf,
    /// Run only these sections (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Section>,
    /// Skip these sections (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<Section>,
    /// Throughput at this many streams only, for `--fixed-secs` (to profile the serving
    /// node at a known load) instead of the ramp.
    #[arg(long)]
    fixed_streams: Option<usize>,
    /// Before each section, wait up to this many seconds for other processes to leave
    /// the cores alone (default: 10 with --quick, 60 otherwise).
    #[arg(long)]
    quiet_wait: Option<u64>,
    #[arg(long, default_value_t = 30)]
    fixed_secs: u64,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Plain quinn: bulk Gbit/s, paced-frame latency, handshake (the baselines).
    Quinn,
    /// Capture-to-viewer latency: direct, and added per forwarding hop (1 and 2 hops).
    Latency,
    /// Time to first frame, cold and warm, 2 s and 10 s GOP, GOP cache on and off.
    Ttff,
    /// 4 Mbit/s streams one node serves; Gbit/s and CPU per Gbit.
    Throughput,
    /// One camera to 1, 10, 50 viewers.
    Fanout,
    /// RSS per stream and per subscriber.
    Memory,
    /// The web app in headless Chromium: cold time to first frame, capture-to-drawn latency.
    Browser,
    /// A simulated fleet of 100 and 1,000 nodes: discovery, revocation, gossip and DHT
    /// bytes at rest, RSS per node.
    Scale,
    /// Store-and-forward over a 4 Mbit/s link in network namespaces: replication goodput,
    /// shore's catch-up time, live latency while replication runs (root; release bins).
    Replication,
    /// Fan-out against GStreamer's RTSP server (shared media, RTSP/TCP readers): CPU per
    /// viewer at 10 and 50 viewers, same stream, same run.
    Peers,
    /// Camera-class budget: the release camesh-node pulling a 1080p 4 Mbit/s RTSP stream,
    /// alone and with one viewer, beside ffmpeg remuxing it (CPU, RSS, where RSS goes).
    Camera,
    /// Failover with the real watch machine: a forwarder lost, a camera silent for 3 s, a
    /// camera's source restarted; the time until the viewer shows video again.
    Failover,
}

const ALL: [Section; 12] = [
    Section::Quinn,
    Section::Latency,
    Section::Ttff,
    Section::Throughput,
    Section::Fanout,
    Section::Memory,
    Section::Browser,
    Section::Scale,
    Section::Replication,
    Section::Peers,
    Section::Camera,
    Section::Failover,
];

/// Child processes the harness starts itself.
#[derive(Debug, Subcommand)]
enum Role {
    /// (internal) The serving camera node, driven over stdin/stdout.
    #[command(hide = true)]
    ServeNode {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        fleet_root: String,
        #[arg(long)]
        gop_cache_bytes: usize,
    },
    /// (internal) The plain quinn sender, driven over stdin/stdout.
    #[command(hide = true)]
    ServeQuinn,
}

fn default_json() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/results.json")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    camesh_bench::init_tracing();
    let args = Args::parse();
    match args.role {
        Some(Role::ServeNode {
            dir,
            fleet_root,
            gop_cache_bytes,
        }) => {
            return server::serve(server::ChildArgs {
                dir,
                fleet_root,
                gop_cache_bytes,
            })
            .await
        }
        Some(Role::ServeQuinn) => return quic_baseline::serve().await,
        None => {}
    }
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let machine = procstat::machine();
    let mode = if args.quick { "quick" } else { "full" };
    eprintln!(
        "camesh-bench ({mode}) on {} x {}, {} GB RAM",
        machine.cpus, machine.cpu_model, machine.mem_total_gb
    );
    let run_meter = (procstat::machine_busy_seconds(), procstat::cpu_seconds_with_children());
    let mut ctx = Ctx::new(args.quick);
    ctx.fixed_streams = args.fixed_streams.map(|n| (n, args.fixed_secs));
    for s in ALL {
        if (!args.only.is_empty() && !args.only.contains(&s)) || args.skip.contains(&s) {
            continue;
        }
        let quiet_limit = std::time::Duration::from_secs(args.quiet_wait.unwrap_or(if args.quick { 10 } else { 60 }));
        let busy = procstat::wait_quiet(quiet_limit, 0.15).await;
        if busy >= 0.15 {
            eprintln!("   (other processes still use {busy:.2} cores; measuring anyway)");
        }
        let t = Instant::now();
        let meter = procstat::BusyMeter::start();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!("== {s:?}");
        let result = match s {
            Section::Quinn => sections::quinn::run(&mut ctx).await,
            Section::Latency => sections::latency::run(&mut ctx).await,
            Section::Ttff => sections::ttff::run(&mut ctx).await,
            Section::Throughput => sections::throughput::run(&mut ctx).await,
            Section::Fanout => sections::fanout::run(&mut ctx).await,
            Section::Memory => sections::memory::run(&mut ctx).await,
            Section::Browser => sections::browser::run(&mut ctx).await,
            Section::Scale => sections::scale::run(&mut ctx).await,
            Section::Replication => sections::replication::run(&mut ctx).await,
            Section::Peers => sections::peers::run(&mut ctx).await,
            Section::Camera => sections::camera::run(&mut ctx).await,
            Section::Failover => sections::failover::run(&mut ctx).await,
        };
        if let Err(e) = result {
            eprintln!("   {s:?} failed: {e:#}");
            let mut f = Figure::na(&format!("{s:?}").to_lowercase(), "section failed", "error");
            f.verdict = Verdict::Miss;
            f.note = format!("{e:#}");
            ctx.push(f);
        }
        let (machine_cores, harness_cores) = meter.cores();
        eprintln!(
            "   {s:?} took {:.0} s; machine busy {machine_cores:.2} cores on average (harness {harness_cores:.2}, serving processes and others the rest)",
            t.elapsed().as_secs_f64()
        );
        ctx.raw(
            &format!("machine_load_{s:?}").to_lowercase(),
            &serde_json::json!({ "seconds": t.elapsed().as_secs_f64(), "machine_busy_cores": machine_cores,
                "harness_cores": harness_cores, "loadavg_at_start": load.trim() }),
        );
    }
    // Everything the machine did that was not this run (other users' builds and tests):
    // the numbers above shared the cores with it.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let secs = started.elapsed().as_secs_f64();
    let others = ((procstat::machine_busy_seconds() - run_meter.0)
        - (procstat::cpu_seconds_with_children() - run_meter.1))
        .max(0.0)
        / secs;
    ctx.push(
        Figure::new("machine", "other processes' CPU during the run", others, "cores")
            .target_text("~0 on a quiet machine")
            .note(format!(
                "the {} cores were shared with this much other work on average; latency tails and capacity suffer first",
                procstat::machine().cpus
            )),
    );
    let report = Report {
        machine,
        mode: mode.into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix_s,
        duration_s: started.elapsed().as_secs_f64(),
        figures: ctx.figures,
        raw: {
            let mut raw = ctx.raw;
            raw.insert("baselines".into(), serde_json::to_value(&ctx.base)?);
            raw
        },
    };
    println!("\n{}", report.table());
    println!("total {:.0} s; JSON: {}", report.duration_s, args.json.display());
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    Ok(())
}
