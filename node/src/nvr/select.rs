//! What the NVR records, and with which retention (pure).
//!
//! `[[nvr.record]]` rules name a camera id (`*`: every camera) or a tag. A camera is
//! recorded when any rule matches it; the first matching rule gives its retention: its
//! own maximum age (or the section's), and its own quota, `quota_share` of
//! `nvr.quota_bytes` (per camera the rule matches). The shared quota applies on top.

use std::time::Duration;

use crate::config::{NvrSection, RecordRule};
use crate::record::recorder::CameraPolicy;
use crate::record::RecorderConfig;

/// The first rule that matches a camera.
pub fn rule_for<'a>(rules: &'a [RecordRule], camera: &str, tags: &[String]) -> Option<&'a RecordRule> {
    rules.iter().find(|r| {
        if r.tag.is_empty() {
            r.camera == "*" || r.camera == camera
        } else {
            tags.contains(&r.tag)
        }
    })
}

/// Camera ids named outright (recorded without waiting for discovery).
pub fn named_cameras(rules: &[RecordRule]) -> Vec<String> {
    let mut ids: Vec<String> = rules
        .iter()
        .filter(|r| r.tag.is_empty() && r.camera != "*")
        .map(|r| r.camera.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Whether some rule needs the fleet's camera list (a tag or `*`).
pub fn needs_discovery(rules: &[RecordRule]) -> bool {
    rules.iter().any(|r| !r.tag.is_empty() || r.camera == "*")
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

/// The retention of one recorded camera.
pub fn camera_policy(section: &NvrSection, rule: &RecordRule, camera: &str) -> CameraPolicy {
    let quota = (rule.quota_share > 0.0 && section.quota_bytes > 0)
        .then(|| (section.quota_bytes as f64 * rule.quota_share).floor() as u64);
    CameraPolicy {
        camera: camera.to_owned(),
        max_age: secs(rule.max_age_s).or(secs(section.max_age_s)),
        quota_bytes: quota,
    }
}

/// The recorder's configuration for a section.
pub fn recorder_config(section: &NvrSection) -> RecorderConfig {
    RecorderConfig {
        segment_duration: Duration::from_secs(section.segment_duration_s),
        fsync_interval: Duration::from_millis(section.fsync_interval_ms),
        max_age: secs(section.max_age_s),
        quota_bytes: (section.quota_bytes > 0).then_some(section.quota_bytes),
        retention_interval: Duration::from_secs(section.retention_interval_s),
        ..RecorderConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(camera: &str, tag: &str, age: u64, share: f64) -> RecordRule {
        RecordRule {
            camera: camera.into(),
            tag: tag.into(),
            max_age_s: age,
            quota_share: share,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_tags_match() {
        let rules = vec![
            rule("cam1", "", 10, 0.0),
            rule("", "door", 20, 0.0),
            rule("*", "", 30, 0.0),
        ];
        assert_eq!(
            rule_for(&rules, "cam1", &["door".into()]).map(|r| r.max_age_s),
            Some(10)
        );
        assert_eq!(
            rule_for(&rules, "cam2", &["door".into()]).map(|r| r.max_age_s),
            Some(20)
        );
        assert_eq!(rule_for(&rules, "cam3", &[]).map(|r| r.max_age_s), Some(30));
        assert!(rule_for(&rules[..2], "cam3", &["yard".into()]).is_none());
        assert_eq!(named_cameras(&rules), vec!["cam1".to_owned()]);
        assert!(needs_discovery(&rules));
        assert!(!needs_discovery(&rules[..1]));
    }

    #[test]
    fn policies_take_the_rule_then_the_section() {
        let section = NvrSection {
            quota_bytes: 1000,
            max_age_s: 60,
            ..NvrSection::default()
        };
        let p = camera_policy(&section, &rule("cam1", "", 0, 0.25), "cam1");
        assert_eq!(p.max_age, Some(Duration::from_secs(60)));
        assert_eq!(p.quota_bytes, Some(250));
        let p = camera_policy(&section, &rule("cam1", "", 5, 0.0), "cam1");
        assert_eq!((p.max_age, p.quota_bytes), (Some(Duration::from_secs(5)), None));
        let c = recorder_config(&section);
        assert_eq!(c.quota_bytes, Some(1000));
        assert_eq!(c.fsync_interval, Duration::from_secs(1));
        c.validate().expect("defaults are valid");
    }
}
