//! `mesh view`: the fleet in a browser. Starts the local HTTP gateway on this mesh peer
//! (127.0.0.1 by default) and prints its URL: a page with every camera playing live,
//! `/cam/<id>/live.mp4` for VLC/ffplay, `/cam/<id>/snapshot.jpg` and `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use camesh_node::gateway::{Gateway, GatewayOptions};
use camesh_node::NodeHandle;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port to serve on (0: any free port).
    #[arg(long, short, default_value_t = 8090)]
    port: u16,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Allow a non-loopback --bind: anyone who reaches it sees the video, unauthenticated.
    #[arg(long)]
    public: bool,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// HTTP clients per camera.
    #[arg(long, default_value_t = 8)]
    max_clients: usize,
}

pub async fn run(node: &NodeHandle, args: &Args) -> Result<()> {
    let opts = GatewayOptions {
        listen: SocketAddr::new(args.bind, args.port),
        allow_remote: args.public,
        max_clients_per_camera: args.max_clients.max(1),
        ..GatewayOptions::default()
    };
    let gw = Gateway::start(node.clone(), opts)
        .await
        .context("starting the gateway (is the port in use? try --port 0)")?;
    let url = gw.url();
    println!("mesh view: {url}");
    println!("  live page   {url}");
    println!("  a camera    {url}cam/<id>/live.mp4   (ffplay, VLC; ?profile=sub)");
    println!("  snapshot    {url}cam/<id>/snapshot.jpg");
    println!("  metrics     {url}metrics");
    println!("  cameras     {url}api/cameras");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    tokio::select! {
        _ = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    gw.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(2), gw.stopped()).await;
    Ok(())
}
