//! `mesh path <camera>`: how this peer would get a camera's stream, and why.
//!
//! Lists every route to the camera (its own node, and the fleet members that forward it
//! now), each with how the connection is made (direct, relayed via a circuit relay, not
//! connected), the NAT status that node reports of itself (AutoNAT: public, private,
//! unknown), its measured round trip and the path policy's cost, and marks the route the
//! policy picks; the header gives this peer's own NAT status. With `--watch` it then
//! opens the stream over the chosen route and reports which route actually carries it,
//! and every failover or switch.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use camesh_node::reach::routes as route;
use camesh_node::watch::path::{Decision, Link, PathChooser, Route};
use camesh_node::watch::RouteOptions;
use camesh_node::watch::{WatchEvent, WatchOptions};
use camesh_node::{NodeHandle, PeerId};
use camesh_proto::pb;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
pub struct Args {
    /// Camera id.
    pub camera: String,
    /// How long to look for the camera and its forwarders.
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    pub timeout: Duration,
    /// Also consider these forwarders (peer ids), besides those found.
    #[arg(long)]
    pub via: Vec<PeerId>,
    /// Prefer forwarders over the direct route (spare a camera's thin uplink).
    #[arg(long)]
    pub prefer_via: bool,
    /// Open the stream over the chosen route for this long and report the route in use.
    #[arg(long, value_parser = crate::parse_duration)]
    pub watch: Option<Duration>,
}

/// How a connection is made, for people: direct, relayed via …X, not connected.
pub fn link_text(link: Link) -> String {
    match link {
        Link::Direct => "direct".into(),
        Link::Relayed(r) => format!("relayed via {}", short(&r)),
        Link::Unknown => "not connected".into(),
    }
}

fn short(p: &PeerId) -> String {
    let s = p.to_string();
    format!("…{}", &s[s.len().saturating_sub(8)..])
}

fn route_text(r: &Route) -> String {
    match r {
        Route::Direct(p) => format!("direct from {}", short(p)),
        Route::Forwarded(p) => format!("forwarded via {}", short(p)),
    }
}

pub async fn run(node: &NodeHandle, args: &Args) -> Result<()> {
    node.discover_cameras(args.timeout).await;
    let owners: Vec<PeerId> = node
        .resolve_camera(&args.camera)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    if owners.is_empty() {
        bail!(
            "camera {:?} not found within {:?} (try --bootstrap <addr>, or a longer --timeout)",
            args.camera,
            args.timeout
        );
    }
    for p in &owners {
        let _ = node.net().connect(Some(*p), Vec::new()).await;
    }
    let survey = route::survey(node.reach()).await;
    let found = route::forwarders_in(&survey, &args.camera, pb::Profile::Main);
    let mut via: Vec<PeerId> = found.iter().map(|(p, _)| *p).collect();
    for v in &args.via {
        if !via.contains(v) {
            via.push(*v);
        }
    }
    // Give ping a moment to measure new connections.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cands = route::candidates(node.reach(), &owners, &via, args.prefer_via).await;
    let chooser = PathChooser::new(Default::default());
    let now = std::time::Instant::now();
    let chosen = match chooser.decide(&cands, now) {
        Decision::Open(r) | Decision::Switch { to: r, .. } => Some(r),
        Decision::Stay | Decision::NoPath => None,
    };
    println!(
        "camera {} — routes to this peer ({}, NAT {}):",
        args.camera,
        node.peer_id(),
        route::reachability_text(node.net().reachability())
    );
    println!(
        "  {:<30} {:<24} {:<8} {:>9} {:>9} {:<8} PEER",
        "ROUTE", "CONNECTION", "NAT", "RTT", "COST", "VIEWERS"
    );
    for c in &cands {
        let viewers = found
            .iter()
            .find(|(p, _)| Route::Forwarded(*p) == c.route)
            .map_or("-".to_string(), |(_, f)| f.viewers.to_string());
        println!(
            "{} {:<30} {:<24} {:<8} {:>9} {:>9} {:<8} {}",
            if Some(c.route) == chosen { "*" } else { " " },
            route_text(&c.route),
            link_text(c.link),
            route::reachability_of(&survey, &c.route.peer()).map_or("-", route::reachability_text),
            c.rtt
                .map_or("-".into(), |r| format!("{:.1}ms", r.as_secs_f64() * 1000.0)),
            format!("{:.1}ms", chooser.cost(c, now) as f64 / 1000.0),
            viewers,
            c.route.peer()
        );
    }
    match chosen {
        Some(r) => println!("* chosen: {}", route_text(&r)),
        None => println!("no usable route"),
    }
    let Some(secs) = args.watch else { return Ok(()) };
    let mut opts = WatchOptions::new(args.camera.clone());
    opts.user_agent = format!("mesh path/{}", env!("CARGO_PKG_VERSION"));
    let mut routes = RouteOptions::via(via);
    routes.prefer_via = args.prefer_via;
    let cancel = CancellationToken::new();
    let mut events = if routes.via.is_empty() {
        node.watch(opts, cancel.clone())
    } else {
        node.watch_routes(opts, routes, cancel.clone())
    };
    let deadline = tokio::time::sleep(secs);
    tokio::pin!(deadline);
    let started = Instant::now();
    let mut frames = 0u64;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            ev = events.recv() => match ev {
                Some(WatchEvent::Started { peer, gap, .. }) => {
                    let how = if owners.contains(&peer) { "direct from" } else { "forwarded via" };
                    let link = link_text(route::link_of(node.peers().await.unwrap_or_default().iter().find(|p| p.peer == peer)));
                    println!(
                        "{:>6.1}s  stream {how} {peer} ({link}){}",
                        started.elapsed().as_secs_f64(),
                        gap.map_or(String::new(), |g| format!(", after {} ms without video", g.as_millis()))
                    );
                }
                Some(WatchEvent::Frame(_)) => frames += 1,
                Some(WatchEvent::Interrupted { error, .. }) => {
                    println!("{:>6.1}s  interrupted: {error}", started.elapsed().as_secs_f64())
                }
                Some(WatchEvent::Failed { error }) => bail!("{error}"),
                Some(WatchEvent::Switched { profile, reason }) => {
                    println!("{:>6.1}s  switched to {profile:?}: {reason}", started.elapsed().as_secs_f64())
                }
                None => break,
            }
        }
    }
    cancel.cancel();
    println!("{frames} frames in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
