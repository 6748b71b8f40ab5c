//! The text `camesh-node init` writes: a role's config (as [`Config::to_toml`] renders it)
//! followed by commented examples of the sections that role uses, so a user finds the
//! keys in the file instead of in the source. The file parses and runs as written; each
//! example parses too once uncommented (see the tests).

use super::{Config, RecordRule, Role};

/// An IP camera's main and sub streams over RTSP, and a looped file.
const CAMERA_EXAMPLE: &str = r#"[[camera]]
id = "cam1"
name = "Front door"
# The main stream; the password is never logged.
source = "rtsp://viewer:secret@192.168.1.64:554/Streaming/Channels/101"
# The low-resolution stream: what viewers get when they ask for profile `sub`.
sub_source = "rtsp://viewer:secret@192.168.1.64:554/Streaming/Channels/102"
rtsp_transport = "tcp"
tags = ["outdoor"]

[[camera]]
id = "lobby"
# A file (Annex B .h264, or any container ffmpeg opens), relative to this file, looped.
source = "clips/lobby.h264"
"#;

/// Record rules by id and by tag, each with its own retention.
const NVR_EXAMPLE: &str = r#"[[nvr.record]]
camera = "cam1"
max_age_s = 2592000
quota_share = 0.25

[[nvr.record]]
tag = "outdoor"
max_age_s = 604800
"#;

fn commented(intro: &str, example: &str) -> String {
    let mut out = String::from("\n");
    for line in intro.lines().chain([""]).chain(example.lines()) {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl Config {
    /// The config file `camesh-node init` writes for this config's role: an NVR gets an
    /// `[nvr]` section (recording every camera it holds a `record` grant for, when no
    /// rule is set) and each role the commented examples of its sections.
    pub fn init_text(&self) -> String {
        let mut config = self.clone();
        let examples = match config.node.role {
            Role::Camera => commented(
                "Cameras this node serves (`camesh-node run --camera ID=PATH` adds more).\nAn IP camera's main and sub stream over RTSP, and a file:",
                CAMERA_EXAMPLE,
            ),
            Role::Nvr => {
                if config.nvr.records.is_empty() {
                    config.nvr.records.push(RecordRule {
                        camera: "*".into(),
                        ..RecordRule::default()
                    });
                }
                commented(
                    "What to record: `camera = \"*\"` above records every camera this NVR holds a grant\nwith the `record` right for (`mesh grant <nvr peer id> --cameras '*' --rights record`,\nthen `mesh --data-dir <nvr data dir> grant-install <grant>`). Rules by id or tag\n(the first that matches wins), each with its own maximum age (s) and share of quota_bytes:",
                    NVR_EXAMPLE,
                )
            }
            _ => String::new(),
        };
        let mut text = config.to_toml();
        if config.node.role == Role::Nvr && !text.contains("[nvr]") {
            // Every NVR field at its default is skipped by the serializer; write them.
            text.push_str("\n[nvr]\n");
            text.push_str(&toml::to_string_pretty(&config.nvr).unwrap_or_default());
        }
        text + &examples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(role: Role) -> Config {
        let mut c = Config::preset(role);
        c.node.fleet_id = "acme".into();
        c
    }

    #[test]
    fn init_text_parses_back_to_the_same_config() {
        for role in [Role::Camera, Role::Nvr, Role::Viewer] {
            let text = base(role).init_text();
            let parsed = Config::parse(&text).unwrap_or_else(|e| panic!("{role}: {e}\n{text}"));
            parsed.validate().expect("valid");
            assert_eq!(parsed.node.role, role);
        }
    }

    #[test]
    fn an_nvr_gets_an_nvr_section_that_records_every_granted_camera() {
        let text = base(Role::Nvr).init_text();
        assert!(text.contains("\n[nvr]\n"), "{text}");
        assert!(text.contains("# [[nvr.record]]"), "{text}");
        let parsed = Config::parse(&text).expect("parses");
        assert_eq!(parsed.nvr.records.len(), 1);
        assert_eq!(parsed.nvr.records[0].camera, "*");
        assert_eq!(
            parsed.nvr.segment_duration_s,
            crate::config::NvrSection::default().segment_duration_s
        );
    }

    #[test]
    fn a_camera_gets_an_rtsp_example_with_a_sub_stream() {
        let text = base(Role::Camera).init_text();
        assert!(text.contains("# source = \"rtsp://"), "{text}");
        assert!(text.contains("# sub_source = \"rtsp://"), "{text}");
        assert!(Config::parse(&text).expect("parses").cameras.is_empty());
    }

    #[test]
    fn the_examples_parse_once_uncommented() {
        let cams = Config::parse(&format!("[node]\nrole = \"camera\"\n{CAMERA_EXAMPLE}")).expect("camera example");
        assert_eq!(cams.cameras.len(), 2);
        assert!(cams.cameras[0].sub_source.is_some());
        let nvr = Config::parse(&format!("[node]\nrole = \"nvr\"\n\n[nvr]\n{NVR_EXAMPLE}")).expect("nvr example");
        assert_eq!(nvr.nvr.records.len(), 2);
        assert_eq!(nvr.nvr.records[1].tag, "outdoor");
        // Uncommenting the written lines gives the same example back.
        let text = base(Role::Camera).init_text();
        let start = text.find("# [[camera]]").expect("example");
        let uncommented: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = Config::parse(&format!("[node]\nrole = \"camera\"\n{uncommented}")).expect("uncommented");
        assert_eq!(parsed.cameras, cams.cameras);
    }
}
