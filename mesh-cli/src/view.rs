//! `mesh view`: the fleet in a browser. Starts the local HTTP gateway on this mesh peer
//! (127.0.0.1 by default) and prints its URL: a page with every camera playing live,
//! `/cam/<id>/live.mp4` for VLC/ffplay, `/cam/<id>/snapshot.jpg` and `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use camesh_node::gateway::users::{users_path, GatewayUsers};
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
    /// Allow a non-loopback --bind. Every request then needs a viewer's own name and
    /// token (HTTP Basic; add viewers with `mesh view-user add`), and each viewer sees
    /// only its cameras. Plain HTTP: use it on a network you trust or behind TLS.
    #[arg(long)]
    public: bool,
    /// Viewers file for --public (default: <data-dir>/gateway-users.toml).
    #[arg(long)]
    users: Option<PathBuf>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = crate::parse_duration)]
    duration: Option<Duration>,
    /// HTTP clients per camera.
    #[arg(long, default_value_t = 8)]
    max_clients: usize,
    /// Also serve the web app's static files (its built folder, web/dist) under /app/.
    #[arg(long, value_name = "DIR", env = "CAMESH_WEB_APP")]
    web_app: Option<PathBuf>,
}

pub async fn run(node: &NodeHandle, dir: &Path, args: &Args) -> Result<()> {
    let users = if args.public {
        let path = args.users.clone().unwrap_or_else(|| users_path(dir));
        let users = GatewayUsers::load(&path)?;
        if users.is_empty() {
            bail!(
                "--public needs viewers, each with its own token: `mesh view-user add <name> --cameras <ids|*>` writes {}",
                path.display()
            );
        }
        eprintln!(
            "mesh view: serving {} viewer(s) from {}; tokens travel in clear over plain HTTP",
            users.list().len(),
            path.display()
        );
        Some(Arc::new(users))
    } else {
        None
    };
    let opts = GatewayOptions {
        listen: SocketAddr::new(args.bind, args.port),
        allow_remote: args.public,
        users,
        max_clients_per_camera: args.max_clients.max(1),
        web_app: args.web_app.clone(),
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
    if args.web_app.is_some() {
        println!("  web app     {url}app/");
    }
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

/// `mesh view-user`: the viewers of `mesh view --public`.
#[derive(clap::Subcommand, Debug)]
pub enum UserCmd {
    /// Add a viewer and print its token (shown once; the file keeps only its hash).
    Add {
        name: String,
        /// Camera ids the viewer may watch, or '*' for every camera (and /metrics).
        #[arg(long, value_delimiter = ',', required = true)]
        cameras: Vec<String>,
    },
    /// Remove a viewer: its token stops working when the gateway next starts.
    Remove { name: String },
    /// List viewers and their cameras.
    List,
}

pub fn user(dir: &Path, cmd: &UserCmd) -> Result<()> {
    let path = users_path(dir);
    let mut users = GatewayUsers::load(&path)?;
    match cmd {
        UserCmd::Add { name, cameras } => {
            let token = users.add(name, cameras.clone())?;
            users.save(&path)?;
            println!("viewer {name} may watch {}", cameras.join(","));
            println!("token: {token}");
            println!("  a browser asks for it; players take http://{name}:{token}@<host>:<port>/cam/<id>/live.mp4");
        }
        UserCmd::Remove { name } => {
            users.remove(name)?;
            users.save(&path)?;
            println!("viewer {name} removed (a running `mesh view --public` keeps it until restarted)");
        }
        UserCmd::List => {
            if users.is_empty() {
                println!("no viewers ({})", path.display());
            }
            for u in users.list() {
                println!("{:<24} {}", u.name, u.cameras.join(","));
            }
        }
    }
    Ok(())
}
