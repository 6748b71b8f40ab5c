//! Network namespaces for tests that need a real LAN (mDNS does not run on loopback).
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
