//! The README's tour, run as the README writes it (#19): every line of the README's
//! code blocks marked `sh tour` is a command, run in order with `bash`, against real
//! `camesh-node` daemons and `mesh` commands on 127.0.0.1. A comment line right under a
//! command (`# label: value`, starting in the first column) is its documented output:
//! some line the command prints must match it, or the test fails naming the README line.
//! Change a command or its output in either place and this test fails.
//!
//! Documented output is a pattern: `...` is any text, `<name>` and `word...` are values
//! (the first match binds them: `# peer id: <camera peer id>` binds the camera's peer id,
//! and later commands get it where the README writes `<camera peer id>`), and in an
//! address such as `/ip4/192.168.1.20/udp/40211/quic-v1/p2p/<camera peer id>` only the
//! protocol names must be equal.
//!
//! What the test changes, and only that, so that it is safe to run beside other tests:
//! - `/tmp/` in a command is a fresh temporary folder (also the working directory, with
//!   `fixtures/` linked into it), `HOME` is a folder in it (the admin's
//!   `~/.config/camesh/mesh`), and the binaries are the workspace's `target/debug` ones;
//! - every `mesh` gets `--no-mdns --listen /ip4/127.0.0.1/udp/0/quic-v1`, and every
//!   `camesh-node ... run` the same plus `-b` with the addresses of the daemons started
//!   before it; `mesh` finds them through `CAMESH_BOOTSTRAP` (its `-b`), in place of the
//!   LAN's mDNS the README relies on;
//! - `ffplay -` is `ffprobe -probesize 300000 -analyzeduration 1000000 -`, which must
//!   find H.264 video (and stops reading after a second or so of it);
//! - `CAMESH_FLEET_PASSPHRASE` answers `--encrypt`'s passphrase prompt;
//! - `camesh-node ... run` and `mesh fleet invite` run in the background (the test waits
//!   for their documented lines), and before the first `mesh recordings` the test waits
//!   until the NVR has recorded 10 s, so that `--from -8s` has video.
//!
//! After the tour it checks what the README promises beyond single lines: `mesh watch
//! --duration`'s last stats line counts the frames the file holds, and the daemons' logs
//! (stderr to a file, default level) hold no escape codes, only log lines (no raw libav
//! output) and no Kademlia bootstrap warnings, and that no `mesh` command logged anything
//! at its default level (warn) on the way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camesh_tests::{bin, have};
use regex::Regex;

/// One command of the tour with the README line it is on and its documented output.
#[derive(Debug, Clone)]
struct Step {
    line: usize,
    cmd: String,
    docs: Vec<(usize, String)>,
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).expect("README.md")
}

/// The commands of the README's `sh tour` blocks, in order.
fn tour_steps(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_tour = false;
    let mut after_cmd = false;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if !in_tour {
            in_tour = line.trim() == "```sh tour";
            after_cmd = false;
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_tour = false;
            continue;
        }
        let is_doc = line.starts_with("# ") && !line[2..].starts_with([' ', '(']);
        if is_doc && after_cmd {
            if let Some(s) = steps.last_mut() {
                s.docs.push((n, line[2..].to_owned()));
            }
            continue;
        }
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            // Prose comments and continuation lines; a blank line ends the output.
            if line.trim().is_empty() || !line.starts_with(' ') {
                after_cmd = false;
            }
            continue;
        }
        steps.push(Step {
            line: n,
            cmd: line.to_owned(),
            docs: Vec::new(),
        });
        after_cmd = true;
    }
    steps
}

const PROTOCOLS: &[&str] = &[
    "ip4",
    "ip6",
    "udp",
    "tcp",
    "quic-v1",
    "webrtc-direct",
    "certhash",
    "p2p",
    "p2p-circuit",
];

/// A documented output line as a regex, and the placeholder of each capture group.
fn compile(doc: &str, vars: &HashMap<String, String>) -> (Regex, Vec<String>) {
    let remark = Regex::new(r"\s{2,}\(.*\)\s*$").expect("regex");
    let doc = remark.replace(doc, "");
    // Whitespace separates tokens, except inside <...>.
    let mut tokens: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in doc.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ => {}
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    let mut groups = Vec::new();
    let mut placeholder = |name: &str, groups: &mut Vec<String>, inner: &str| match vars.get(name) {
        Some(v) => regex::escape(v),
        None => {
            groups.push(name.to_owned());
            format!("({inner})")
        }
    };
    // `text<name>text`: literal text around placeholders.
    let pieces =
        |tok: &str, groups: &mut Vec<String>, placeholder: &mut dyn FnMut(&str, &mut Vec<String>, &str) -> String| {
            let mut out = String::new();
            let mut rest = tok;
            while let Some(a) = rest.find('<') {
                let Some(b) = rest[a..].find('>') else { break };
                out.push_str(&regex::escape(&rest[..a]));
                out.push_str(&placeholder(&rest[a..a + b + 1], groups, r"[^\s/;,]+"));
                rest = &rest[a + b + 1..];
            }
            out.push_str(&regex::escape(rest));
            out
        };
    let mut parts: Vec<(bool, String)> = Vec::new();
    for tok in &tokens {
        let re = if tok == "..." {
            ".*?".to_owned()
        } else if tok.starts_with('/') {
            tok.split('/')
                .map(|seg| {
                    if seg.is_empty() || PROTOCOLS.contains(&seg) {
                        regex::escape(seg)
                    } else if seg.contains('<') {
                        pieces(seg, &mut groups, &mut placeholder)
                    } else {
                        r"[^/\s]+".to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/")
        } else if tok.ends_with("...") && !tok.contains('<') {
            let prefix = tok.rfind(':').map_or("", |i| &tok[..=i]);
            placeholder(tok, &mut groups, &format!(r"{}\S+", regex::escape(prefix)))
        } else {
            pieces(tok, &mut groups, &mut placeholder)
        };
        parts.push((tok == "...", re));
    }
    let mut re = String::from(r"^\s*");
    for (i, (dots, part)) in parts.iter().enumerate() {
        if i > 0 {
            re.push_str(if *dots || parts[i - 1].0 { r"\s*" } else { r"\s+" });
        }
        re.push_str(part);
    }
    (Regex::new(&re).unwrap_or_else(|e| panic!("{doc:?}: {e}")), groups)
}

/// Finds an output line matching `doc`, the last one (a command's final stats line);
/// binds its placeholders into `vars`.
fn matches(doc: &str, output: &str, vars: &mut HashMap<String, String>) -> bool {
    let (re, groups) = compile(doc, vars);
    for line in output.lines().rev() {
        let Some(c) = re.captures(line) else { continue };
        let mut found: HashMap<String, String> = HashMap::new();
        let consistent = groups.iter().enumerate().all(|(i, name)| {
            let v = c.get(i + 1).map_or("", |m| m.as_str()).to_owned();
            found.entry(name.clone()).or_insert_with(|| v.clone()) == &v
        });
        if consistent {
            vars.extend(found);
            return true;
        }
    }
    false
}

const LISTEN: &str = "--no-mdns --listen /ip4/127.0.0.1/udp/0/quic-v1";

/// The tour's world: its folder, environment, daemons and bound values.
struct Tour {
    dir: PathBuf,
    bin_dir: PathBuf,
    vars: HashMap<String, String>,
    bootstrap: Vec<String>,
    daemons: Vec<(String, Child)>,
    logs: Vec<PathBuf>,
    n: usize,
}

impl Drop for Tour {
    fn drop(&mut self) {
        for (_, c) in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Tour {
    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args(["-o", "pipefail", "-c", script]).current_dir(&self.dir);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CAMESH_") || k.starts_with("XDG_") {
                cmd.env_remove(k);
            }
        }
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", self.bin_dir.display()))
            .env("HOME", self.dir.join("home"))
            .env("CAMESH_FLEET_PASSPHRASE", "correct horse battery staple")
            .env("CAMESH_BOOTSTRAP", self.bootstrap.join(","))
            .stdin(Stdio::null());
        cmd
    }

    /// The README's command with the test's substitutions (see the module docs).
    fn rewrite(&self, cmd: &str) -> String {
        let mut s = cmd.replace("/tmp/", &format!("{}/", self.dir.display()));
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for name in names {
            s = s.replace(name.as_str(), &self.vars[name]);
        }
        s = s.replace(
            "ffplay -",
            "ffprobe -hide_banner -probesize 300000 -analyzeduration 1000000 -",
        );
        if let Some(rest) = s.strip_prefix("mesh ") {
            s = format!("mesh {LISTEN} {rest}");
        }
        if is_daemon_run(cmd) {
            s.push(' ');
            s.push_str(LISTEN);
            for b in &self.bootstrap {
                s.push_str(" -b ");
                s.push_str(b);
            }
        }
        s
    }

    fn files(&mut self) -> (PathBuf, PathBuf) {
        self.n += 1;
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        (
            logs.join(format!("{:02}.out", self.n)),
            logs.join(format!("{:02}.err", self.n)),
        )
    }

    fn step(&mut self, step: &Step) {
        if step.cmd.starts_with("mesh recordings") {
            self.wait_for_recording(10.0);
        }
        let script = self.rewrite(&step.cmd);
        let (out, err) = self.files();
        let mut cmd = self.command(&script);
        cmd.stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&err).expect("err"));
        let started = Instant::now();
        let mut child = cmd.spawn().expect("bash runs");
        let background = is_daemon_run(&step.cmd) || step.cmd.starts_with("mesh fleet invite");
        let output = || {
            format!(
                "{}{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            )
        };
        let limit = Duration::from_secs(if background { 30 } else { 90 });
        if background {
            self.logs.push(err.clone());
            // Wait for its documented lines while it runs.
            loop {
                let text = output();
                let mut vars = self.vars.clone();
                if step.docs.iter().all(|(_, d)| matches(d, &text, &mut vars)) {
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "README line {}: `{}` exited ({status}) before printing its documented output:\n{text}",
                        step.line, step.cmd
                    );
                }
                assert!(
                    started.elapsed() < limit,
                    "README line {}: `{}` printed no documented output within {limit:?}:\n{text}",
                    step.line,
                    step.cmd
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            if is_daemon_run(&step.cmd) {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                self.bootstrap.extend(
                    text.lines()
                        .filter_map(|l| l.strip_prefix("listening: "))
                        .filter(|a| a.contains("/quic-v1/"))
                        .map(str::to_owned),
                );
            }
            self.daemons.push((step.cmd.clone(), child));
        } else {
            let status = loop {
                if let Some(s) = child.try_wait().expect("wait") {
                    break s;
                }
                if started.elapsed() > limit {
                    let _ = child.kill();
                    panic!(
                        "README line {}: `{}` still running after {limit:?}:\n{}",
                        step.line,
                        step.cmd,
                        output()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let text = output();
            assert!(
                status.success(),
                "README line {}: `{}` failed ({status}); ran `{script}`:\n{text}",
                step.line,
                step.cmd
            );
            if step.cmd.contains("| ffplay") {
                assert!(
                    text.contains("Video: h264"),
                    "README line {}: `{}`: the player found no H.264 video:\n{text}",
                    step.line,
                    step.cmd
                );
            }
            self.logs.push(err.clone());
        }
        let text = output();
        for (n, doc) in &step.docs {
            assert!(
                matches(doc, &text, &mut self.vars),
                "README line {n}: `{}` did not print `# {doc}`; it printed:\n{text}",
                step.cmd
            );
        }
        println!(
            "{:>6.1}s  line {:>3}: {}",
            started.elapsed().as_secs_f64(),
            step.line,
            step.cmd
        );
    }

    /// Polls `mesh recordings cam1 --json` until `secs` of cam1 are recorded.
    fn wait_for_recording(&mut self, secs: f64) {
        let started = Instant::now();
        loop {
            let out = self
                .command(&format!("mesh {LISTEN} recordings cam1 --json"))
                .output()
                .expect("mesh runs");
            let recorded: f64 = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["recorded"].as_bool() == Some(true))
                .map(|v| (v["to_us"].as_i64().unwrap_or(0) - v["from_us"].as_i64().unwrap_or(0)) as f64 / 1e6)
                .sum();
            if recorded >= secs {
                println!(
                    "{:>6.1}s  (waited for the NVR to record {recorded:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the NVR recorded only {recorded:.1} s of cam1 within 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

fn is_daemon_run(cmd: &str) -> bool {
    let words: Vec<&str> = cmd.split_whitespace().take_while(|w| !w.starts_with('#')).collect();
    words.first() == Some(&"camesh-node") && words.contains(&"run")
}

#[test]
fn the_readme_tour_works_as_typed() {
    for tool in ["ffprobe", "bash"] {
        if !camesh_tests::can_run("tour", if have(tool) { Ok(()) } else { Err(format!("no {tool}")) }) {
            return;
        }
    }
    let steps = tour_steps(&readme());
    let text: Vec<&str> = steps.iter().map(|s| s.cmd.as_str()).collect();
    for want in [
        "mesh fleet init",
        "camesh-node --data-dir /tmp/cam init --role camera",
        "camesh-node --data-dir /tmp/nvr init --role nvr",
        "mesh fleet admit",
        "mesh fleet invite",
        "fleet join",
        "camesh-node --data-dir /tmp/cam run",
        "camesh-node --data-dir /tmp/nvr run",
        "mesh grant ",
        "grant-install",
        "mesh cameras",
        "mesh watch",
        "mesh peers",
        "mesh path",
        "mesh recordings",
        "mesh play",
        "mesh export",
        "mesh verify",
        "mesh lock",
        "mesh revoke",
        "mesh audit",
    ] {
        assert!(
            text.iter().any(|c| c.contains(want)),
            "the README's tour has no `{want}` any more"
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // CAMESH_TOUR_KEEP=1 keeps the folder (logs/NN.out|err of each command) to look at.
    let (root, _guard) = if std::env::var_os("CAMESH_TOUR_KEEP").is_some() {
        let kept = tmp.keep();
        println!("tour folder: {}", kept.display());
        (kept, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };
    std::fs::create_dir_all(root.join("home")).expect("home");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    std::os::unix::fs::symlink(fixtures.canonicalize().expect("fixtures"), root.join("fixtures"))
        .expect("link fixtures");
    let mut tour = Tour {
        dir: root.clone(),
        bin_dir: bin("mesh").parent().expect("bin dir").to_owned(),
        vars: HashMap::new(),
        bootstrap: Vec::new(),
        daemons: Vec::new(),
        logs: Vec::new(),
        n: 0,
    };
    bin("camesh-node");
    let started = Instant::now();
    for step in &steps {
        tour.step(step);
    }
    println!(
        "tour: {} commands in {:.1} s",
        steps.len(),
        started.elapsed().as_secs_f64()
    );

    // `mesh audit | head -1`: a reader that has gone before mesh writes ends it quietly
    // (it panicked on the broken pipe).
    let mut audit = tour
        .command("mesh audit -n 1000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh audit runs");
    drop(audit.stdout.take());
    let out = audit.wait_with_output().expect("mesh audit ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "mesh audit into a closed pipe: {} {err}",
        out.status
    );

    // `mesh watch -o clip.h264 --duration 3s`: the last stats line counts what the file holds.
    let frames: u64 = tour
        .vars
        .get("<frames>")
        .expect("the watch's stats line was documented")
        .parse()
        .expect("a count");
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(tour.dir.join("clip.h264"))
        .output()
        .expect("ffprobe");
    let packets: u64 = String::from_utf8_lossy(&probe.stdout).trim().parse().expect("packets");
    println!("mesh watch --duration 3s: stats line says {frames} frames, ffprobe counts {packets}");
    assert!(frames > 0, "the last stats line says frames 0");
    assert!(
        frames.abs_diff(packets) <= 1,
        "the last stats line says {frames} frames, clip.h264 holds {packets}"
    );

    // The logs, as a file: no colour codes, no raw libav lines, no Kademlia noise.
    let log_line = Regex::new(r"^\d{4}-\d\d-\d\dT\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR) ").expect("regex");
    for log in &tour.logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            !text.contains('\x1b'),
            "{}: escape codes in a log file:\n{text}",
            log.display()
        );
        assert!(
            !text.contains("Failed to trigger bootstrap"),
            "{}: Kademlia's bootstrap warning at the default level:\n{text}",
            log.display()
        );
    }
    let daemon_logs: Vec<&PathBuf> = tour
        .logs
        .iter()
        .filter(|p| {
            let out = p.with_extension("out");
            std::fs::read_to_string(out).is_ok_and(|t| t.contains("listening: "))
        })
        .collect();
    assert!(daemon_logs.len() >= 2, "the camera's and the NVR's logs");
    // mesh at its default level: a user on the tour's path sees no log lines at all.
    for log in tour.logs.iter().filter(|p| !daemon_logs.contains(p)) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let logged: Vec<&str> = text.lines().filter(|l| log_line.is_match(l)).collect();
        assert!(
            logged.is_empty(),
            "{}: mesh logged at its default level on the tour's path:\n{}",
            log.display(),
            logged.join("\n")
        );
    }
    for log in daemon_logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                log_line.is_match(line),
                "{}: a line that is not a log line (raw library output?): {line:?}",
                log.display()
            );
        }
    }
}

#[test]
fn documented_output_patterns() {
    let mut vars = HashMap::new();
    assert!(matches(
        "fleet root: 5Kd3N...",
        "fleet:      acme\nfleet root: 4XTT9a\n",
        &mut vars
    ));
    assert_eq!(vars["5Kd3N..."], "4XTT9a");
    assert!(matches("peer id: <camera peer id>", "peer id: 12D3Koo1", &mut vars));
    assert!(matches(
        "listening: /ip4/192.168.1.20/udp/40211/quic-v1/p2p/<camera peer id>",
        "listening: /ip4/127.0.0.1/udp/5555/quic-v1/p2p/12D3Koo1",
        &mut vars
    ));
    assert!(!matches(
        "listening: /ip4/192.168.1.20/udp/40211/quic-v1/p2p/<camera peer id>",
        "listening: /ip4/127.0.0.1/udp/5555/quic-v1/p2p/12D3KooOTHER",
        &mut vars
    ));
    assert!(!matches(
        "listening: /ip4/1.2.3.4/udp/5/webrtc-direct/certhash/uEiD.../p2p/<camera peer id>",
        "listening: /ip4/127.0.0.1/udp/5555/quic-v1/p2p/12D3Koo1",
        &mut vars
    ));
    assert!(matches("camesh-grant:...", "camesh-grant:abc\n", &mut vars));
    assert_eq!(vars["camesh-grant:..."], "camesh-grant:abc");
    assert!(!matches("camesh-invite:...", "camesh-grant:abc\n", &mut vars));
    assert!(matches(
        "cam1: ... | frames <frames> skips 0 gaps 0",
        "cam1: 0.0 fps 0 kbit/s latency p50 0.0 ms max 0.0 ms | frames 0 skips 0 gaps 0\ncam1:  30.0 fps  900 kbit/s latency p50 1.0 ms max 2.0 ms | frames 91 skips 0 gaps 0",
        &mut vars
    ));
    assert_eq!(vars["<frames>"], "91");
    assert!(matches(
        "locked #<lock id> cam1 ...",
        "locked #3 cam1 2026-...",
        &mut vars
    ));
    assert_eq!(vars["<lock id>"], "3");
    assert!(matches(
        "fleet root: 5Kd3N...   (give this to every node)",
        "fleet root: 4XTT9a",
        &mut vars
    ));
    let steps = tour_steps("x\n```sh tour\n# prose: not output\nmesh a   # note\n# out: <v>\n#   (aside: no)\n\nmesh b\n```\n```sh\nmesh c\n```\n");
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0].docs.len(), 1, "{steps:?}");
    assert_eq!(steps[0].docs[0].1, "out: <v>");
    assert!(steps[1].docs.is_empty());
}

#[test]
fn readme_config_examples_parse() {
    let text = readme();
    let mut blocks = 0;
    let mut rest = text.as_str();
    while let Some(a) = rest.find("```toml\n") {
        let body = &rest[a + 8..];
        let end = body.find("```").expect("closed block");
        let config = format!("[node]\nrole = \"camera\"\nfleet_id = \"acme\"\n\n{}", &body[..end]);
        let c =
            camesh_node::config::Config::parse(&config).unwrap_or_else(|e| panic!("README toml block: {e}\n{config}"));
        c.validate()
            .unwrap_or_else(|e| panic!("README toml block: {e}\n{config}"));
        blocks += 1;
        rest = &body[end..];
    }
    assert!(blocks >= 1, "the README's camera example is a ```toml block");
}
