//! Network namespaces for tests that need a real LAN (mDNS does not run on loopback) or
//! NAT routers between peers ([`NatLab`]).
//!
//! [`Lab`] creates namespaces named after the test and the process id, connects them
//! with veth pairs on a private subnet that exists only inside them, and deletes them
//! all when dropped. Needs root and `ip`; [`Lab::available`] says why not otherwise.

use std::process::Command;

#[derive(Debug)]
pub struct Lab {
    names: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// `Err(reason)` when namespaces cannot be used here.
    pub fn available() -> Result<(), String> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not running as root".into());
        }
        ip(&["netns", "list"]).map_err(|e| format!("`ip netns` unavailable: {e}"))
    }

    /// Two namespaces `<tag>a`/`<tag>b` joined by a veth pair 10.77.<n>.1/.2.
    pub fn pair(tag: &str, subnet: u8) -> Result<(Self, [String; 2], [String; 2]), String> {
        let pid = std::process::id() % 100_000;
        let a = format!("cm{tag}{pid}a");
        let b = format!("cm{tag}{pid}b");
        let lab = Lab {
            names: vec![a.clone(), b.clone()],
        };
        for n in [&a, &b] {
            let _ = ip(&["netns", "del", n]);
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        let (va, vb) = (format!("v{pid}a"), format!("v{pid}b"));
        ip(&[
            "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
        ])?;
        let addr_a = format!("10.77.{subnet}.1");
        let addr_b = format!("10.77.{subnet}.2");
        ip(&["-n", &a, "addr", "add", &format!("{addr_a}/24"), "dev", &va])?;
        ip(&["-n", &b, "addr", "add", &format!("{addr_b}/24"), "dev", &vb])?;
        ip(&["-n", &a, "link", "set", &va, "up", "multicast", "on"])?;
        ip(&["-n", &b, "link", "set", &vb, "up", "multicast", "on"])?;
        Ok((lab, [a, b], [addr_a, addr_b]))
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn exec(ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// A NAT lab: a public segment (a bridge in a namespace of its own, 100.64.77.0/24) with
/// hosts on it, and hosts behind NAT routers that each have the segment on their outside.
///
/// - [`Nat::Cone`]: endpoint-independent mapping (masquerade keeps the source port; the
///   mapping is the same for every destination) and a rule dropping NEW packets that
///   arrive on the outside, so an early punch packet cannot claim the port (it is
///   dropped before conntrack confirms it) and simultaneous punches meet.
/// - [`Nat::Symmetric`]: `masquerade fully-random`, a new random port per destination.
///
/// Every address exists only inside namespaces the lab created; dropping it deletes them
/// (veth pairs go with them), also when a test panics.
#[derive(Debug)]
pub struct NatLab {
    names: Vec<String>,
    prefix: String,
    inet: String,
    links: u32,
    publics: u8,
    nats: u8,
    renumbered: u8,
}

/// How a NAT router maps ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    Cone,
    Symmetric,
}

/// A namespace and its address.
#[derive(Debug, Clone)]
pub struct Host {
    pub ns: String,
    pub ip: String,
}

/// A host behind a NAT router.
#[derive(Debug, Clone)]
pub struct Natted {
    pub host: Host,
    /// The router's namespace.
    pub router: String,
    /// The router's address on the public segment.
    pub outside_ip: String,
    outside_dev: String,
    inside_dev: String,
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `program args` inside namespace `ns`.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Public segment prefix (CGNAT space, unlikely to collide with anything real; it only
/// exists inside the lab's namespaces anyway).
const PUBLIC: &str = "100.64.77";

impl NatLab {
    /// `Err(reason)` when the lab cannot run here (needs root, `ip netns`, `nft`, `tc`).
    pub fn available() -> Result<(), String> {
        Lab::available()?;
        run("nft", &["--version"]).map_err(|e| format!("nftables unavailable: {e}"))?;
        run("tc", &["-V"]).map_err(|e| format!("tc unavailable: {e}"))
    }

    /// An empty public segment; namespace names start with `cm<tag><pid>`.
    pub fn new(tag: &str) -> Result<Self, String> {
        let prefix = format!("cm{tag}{}", std::process::id() % 100_000);
        let inet = format!("{prefix}inet");
        let mut lab = NatLab {
            names: Vec::new(),
            prefix,
            inet: inet.clone(),
            links: 0,
            publics: 0,
            nats: 0,
            renumbered: 0,
        };
        lab.namespace(&inet)?;
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    fn namespace(&mut self, name: &str) -> Result<(), String> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        self.names.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// A veth pair between two namespaces; returns the device names (a's, b's).
    fn link(&mut self, a: &str, b: &str) -> Result<(String, String), String> {
        self.links += 1;
        let pid = std::process::id() % 100_000;
        let (da, db) = (format!("v{pid}l{}a", self.links), format!("v{pid}l{}b", self.links));
        ip(&[
            "link", "add", &da, "netns", a, "type", "veth", "peer", "name", &db, "netns", b,
        ])?;
        ip(&["-n", a, "link", "set", &da, "up"])?;
        ip(&["-n", b, "link", "set", &db, "up"])?;
        Ok((da, db))
    }

    /// Attaches namespace `ns` to the public segment with address `addr`; returns its device.
    fn attach(&mut self, ns: &str, addr: &str) -> Result<String, String> {
        let inet = self.inet.clone();
        let (dev, port) = self.link(ns, &inet)?;
        ip(&["-n", &inet, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", &dev])?;
        Ok(dev)
    }

    /// A host with a public address (a relay, a server).
    pub fn public(&mut self, name: &str) -> Result<Host, String> {
        self.publics += 1;
        let ns = format!("{}{name}", self.prefix);
        self.namespace(&ns)?;
        let ip_addr = format!("{PUBLIC}.{}", 10 + self.publics);
        self.attach(&ns, &ip_addr)?;
        Ok(Host { ns, ip: ip_addr })
    }

    /// A host on a private LAN (10.77.<n>.2) behind its own NAT router.
    pub fn behind_nat(&mut self, name: &str, nat: Nat) -> Result<Natted, String> {
        self.nats += 1;
        let n = self.nats;
        let router = format!("{}{name}r", self.prefix);
        let ns = format!("{}{name}", self.prefix);
        self.namespace(&router)?;
        self.namespace(&ns)?;
        let outside_ip = format!("{PUBLIC}.{}", 100 + n);
        let outside_dev = self.attach(&router, &outside_ip)?;
        let (inside_dev, host_dev) = self.link(&router, &ns)?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("10.77.{n}.1/24"),
            "dev",
            &inside_dev,
        ])?;
        let host_ip = format!("10.77.{n}.2");
        ip(&["-n", &ns, "addr", "add", &format!("{host_ip}/24"), "dev", &host_dev])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &format!("10.77.{n}.1")])?;
        in_ns(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        let masquerade = match nat {
            Nat::Cone => "masquerade persistent",
            Nat::Symmetric => "masquerade fully-random",
        };
        let rules = format!(
            "table ip camesh {{\n\
             chain post {{ type nat hook postrouting priority srcnat; policy accept; oifname \"{outside_dev}\" {masquerade}; }}\n\
             chain pre {{ type filter hook prerouting priority -150; policy accept; iifname \"{outside_dev}\" ct state new drop; }}\n\
             chain filt {{ type filter hook forward priority filter; policy accept; }}\n\
             chain block {{ type filter hook prerouting priority -160; policy accept; }}\n\
             }}\n"
        );
        nft_script(&router, &rules)?;
        Ok(Natted {
            host: Host { ns, ip: host_ip },
            router,
            outside_ip,
            outside_dev,
            inside_dev,
        })
    }

    /// The router's public address changes, as a carrier NAT rebinding or a router
    /// reboot does: a new address on the public segment, the old one removed (which
    /// drops every mapping masqueraded to it), and with `new_ports` the mappings move to
    /// another port range too. Peers' packets to the old address go nowhere; the host
    /// itself sees nothing change.
    pub fn renumber(&mut self, n: &mut Natted, new_ports: bool) -> Result<(), String> {
        self.renumbered += 1;
        let new_ip = format!("{PUBLIC}.{}", 200u32 + u32::from(self.renumbered));
        let dev = n.outside_dev.clone();
        // The new address must survive the old (primary) one's removal.
        for scope in ["all", dev.as_str()] {
            in_ns(
                &n.router,
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{scope}.promote_secondaries=1")],
            )?;
        }
        ip(&["-n", &n.router, "addr", "add", &format!("{new_ip}/24"), "dev", &dev])?;
        if new_ports {
            nft_script(
                &n.router,
                &format!(
                    "flush chain ip camesh post\n\
                     add rule ip camesh post oifname \"{dev}\" meta l4proto {{ tcp, udp }} masquerade to :20000-29999 persistent\n\
                     add rule ip camesh post oifname \"{dev}\" masquerade persistent\n"
                ),
            )?;
        }
        ip(&[
            "-n",
            &n.router,
            "addr",
            "del",
            &format!("{}/24", n.outside_ip),
            "dev",
            &dev,
        ])?;
        n.outside_ip = new_ip;
        Ok(())
    }

    /// Drops `percent` % of the packets the router forwards to and from the host
    /// (nftables `numgen random`; this kernel has no netem).
    pub fn set_loss(&self, n: &Natted, percent: u32) -> Result<(), String> {
        // Forwarded traffic both ways passes the forward hook once.
        nft_script(
            &n.router,
            &format!("add rule ip camesh filt numgen random mod 100 < {percent} drop\n"),
        )
    }

    /// Cuts the direct path between two NATed hosts (each router drops what arrives from
    /// the other's public address), so only a relay connects them; see [`Self::unblock`].
    pub fn block_direct(&self, a: &Natted, b: &Natted) -> Result<(), String> {
        nft_script(
            &a.router,
            &format!("add rule ip camesh block ip saddr {} drop\n", b.outside_ip),
        )?;
        nft_script(
            &b.router,
            &format!("add rule ip camesh block ip saddr {} drop\n", a.outside_ip),
        )
    }

    /// Undoes [`Self::block_direct`] for these routers.
    pub fn unblock(&self, routers: &[&Natted]) -> Result<(), String> {
        for n in routers {
            nft_script(&n.router, "flush chain ip camesh block\n")?;
        }
        Ok(())
    }

    /// Limits the host's link to `kbit` kbit/s each way (a token bucket on both of the
    /// router's devices).
    pub fn set_rate(&self, n: &Natted, kbit: u32) -> Result<(), String> {
        for dev in [&n.outside_dev, &n.inside_dev] {
            in_ns(
                &n.router,
                "tc",
                &[
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{kbit}kbit"),
                    "burst",
                    "32kb",
                    "latency",
                    "100ms",
                ],
            )?;
        }
        Ok(())
    }
}

/// A TCP listener bound to `addr` inside namespace `ns` (e.g. its 127.0.0.1, which only
/// programs in that namespace reach). A socket belongs to the namespace it was made in,
/// so a thread of its own enters `ns` (setns), binds, and ends; the listener is used from
/// anywhere in this process. Non-blocking, ready for `tokio::net::TcpListener::from_std`.
pub fn bind_tcp_in(ns: &str, addr: std::net::SocketAddr) -> Result<std::net::TcpListener, String> {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
        let l = std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr} in {path}: {e}"))?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(l)
    })
    .join()
    .map_err(|_| "the binding thread panicked".to_owned())?
}

/// Runs an nft script (`nft -f -`, one command a line) inside namespace `ns`.
/// Takes the link through `dev` in namespace `ns` down (everything through it dropped,
/// both ways, by an nft table `flap`) or up again.
pub fn set_link(ns: &str, dev: &str, up: bool) -> Result<(), String> {
    let rules = if up {
        "delete table inet flap\n".to_owned()
    } else {
        format!(
            "add table inet flap\n\
             add chain inet flap input {{ type filter hook input priority -10; }}\n\
             add chain inet flap output {{ type filter hook output priority -10; }}\n\
             add rule inet flap input iifname \"{dev}\" drop\n\
             add rule inet flap output oifname \"{dev}\" drop\n"
        )
    };
    nft_script(ns, &rules)
}

pub fn nft_script(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft: no stdin")?
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// A program running in a namespace, its stdout and stderr going to `log`; killed (and
/// reaped) when dropped, so a failing test leaves no process behind.
#[derive(Debug)]
pub struct Proc {
    child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: std::path::PathBuf) -> Result<Self, String> {
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning {cmd:?}: {e}"))?;
        Ok(Self { child, log })
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `limit`) until the output contains `needle`.
    pub fn wait_for(&mut self, needle: &str, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.output().contains(needle) {
                return true;
            }
            if std::time::Instant::now() >= deadline || !self.running() {
                return self.output().contains(needle);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits at most `limit` for the program to exit on its own; `None` if it did not.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGINT (Ctrl-C: the program ends as a user would end it), then waits at most
    /// `limit` for it to exit.
    pub fn interrupt(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.wait_exit(limit)
    }

    /// SIGKILL, as a crash or a power cut would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
