//! `mesh cameras --onvif`: ONVIF cameras on the LAN (WS-Discovery), and with their
//! credentials their profiles' RTSP URIs and a ready `[[camera]]` entry for a camera
//! node's config. Needs no fleet: it talks to the cameras only.

use std::time::Duration;

use anyhow::{Context, Result};
use camesh_node::config::OnvifConfig;
use camesh_node::onvif::{client::Onvif, discovery};

/// A camera id from a device's name: lower case, `[a-z0-9_-]`, at most 64 characters.
fn slug(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
        .collect();
    let s = s.trim_matches('-').chars().take(64).collect::<String>();
    if s.is_empty() {
        "camera".into()
    } else {
        s
    }
}

/// Percent-encodes a URL userinfo part.
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `rtsp://host/..` with `user:password@` put in.
fn with_credentials(uri: &str, user: &str, password: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) if !user.is_empty() && !rest.contains('@') => {
            format!("{scheme}://{}:{}@{rest}", userinfo(user), userinfo(password))
        }
        _ => uri.to_owned(),
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

pub async fn run(timeout: Duration, user: Option<&str>, password: Option<&str>) -> Result<()> {
    eprintln!(
        "probing the LAN for ONVIF cameras for {}...",
        humantime::format_duration(timeout)
    );
    let found = discovery::probe(timeout).await.context("WS-Discovery probe")?;
    if found.is_empty() {
        println!("no ONVIF camera answered (is this host on the cameras' LAN, and is multicast allowed?)");
        return Ok(());
    }
    for f in &found {
        let name = f.scope("name").unwrap_or_else(|| "(unnamed)".into());
        let hw = f.scope("hardware").unwrap_or_default();
        let xaddr = f.xaddrs.first().cloned().unwrap_or_default();
        println!("ONVIF camera {name:?} {hw} at {xaddr}");
        let Some(user) = user else { continue };
        let password = password.unwrap_or("");
        let cfg = OnvifConfig {
            url: xaddr.clone(),
            user: user.to_owned(),
            password: password.to_owned(),
            profile: String::new(),
            events: false,
        };
        let profiles = match Onvif::new(cfg).media_profiles().await {
            Ok(p) => p,
            Err(e) => {
                println!("  cannot read its profiles: {e}");
                continue;
            }
        };
        for (p, uri) in &profiles {
            println!(
                "  profile {} {:?} {}x{} {}",
                p.token,
                p.name,
                p.width,
                p.height,
                uri.as_deref().unwrap_or("(no stream URI)")
            );
        }
        // Main: the largest picture; sub: the smallest, when there are two or more.
        let mut with_uri: Vec<_> = profiles
            .iter()
            .filter_map(|(p, u)| u.as_ref().map(|u| (p, u)))
            .collect();
        with_uri.sort_by_key(|(p, _)| std::cmp::Reverse(u64::from(p.width) * u64::from(p.height)));
        let Some((_, main)) = with_uri.first() else { continue };
        println!("\n# for the camera node's config.toml:");
        println!("[[camera]]");
        println!("id = {}", toml_str(&slug(&name)));
        println!("name = {}", toml_str(&name));
        println!("source = {}", toml_str(&with_credentials(main, user, password)));
        if with_uri.len() > 1 {
            if let Some((_, sub)) = with_uri.last() {
                println!("sub_source = {}", toml_str(&with_credentials(sub, user, password)));
            }
        }
        println!("\n[camera.onvif]");
        println!("url = {}", toml_str(&xaddr));
        println!("user = {}", toml_str(user));
        println!("password = {}\n", toml_str(password));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_credentials() {
        assert_eq!(slug("Door Cam #2"), "door-cam--2");
        assert_eq!(slug("  "), "camera");
        assert_eq!(
            with_credentials("rtsp://10.0.0.5:554/main", "ad min", "p@ss:w"),
            "rtsp://ad%20min:p%40ss%3Aw@10.0.0.5:554/main"
        );
        assert_eq!(with_credentials("rtsp://u:p@h/x", "a", "b"), "rtsp://u:p@h/x");
    }
}
