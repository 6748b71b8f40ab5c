//! The Prometheus text exposition format (version 0.0.4), written by hand (pure): one
//! `# HELP` and `# TYPE` per family, samples with escaped label values, counters named
//! `*_total`.

use std::fmt::Write;

/// Metric types this writer emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Builds an exposition. Families must be declared (with [`Exposition::family`]) before
/// their samples; a family with no samples still shows its HELP and TYPE.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let mut e = Exposition::default();
        e.family("camesh_frames_total", Kind::Counter, "Frames.\nReally")
            .sample("camesh_frames_total", &[("camera", "a\"b\\c\nd")], 42.0)
            .family("camesh_fps", Kind::Gauge, "fps")
            .sample("camesh_fps", &[], 29.97)
            .sample("camesh_fps", &[("x", "")], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP camesh_frames_total Frames.\\nReally\n# TYPE camesh_frames_total counter\n\
             camesh_frames_total{camera=\"a\\\"b\\\\c\\nd\"} 42\n\
             # HELP camesh_fps fps\n# TYPE camesh_fps gauge\ncamesh_fps 29.97\ncamesh_fps{x=\"\"} +Inf\n"
        );
    }
}
