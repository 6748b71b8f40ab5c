//! A strict parser of the Prometheus text exposition format (0.0.4), for checking
//! `/metrics`: every line must be a `# HELP`, a `# TYPE` (once per family, before its
//! samples), another comment, blank, or a sample `name{label="value",...} value
//! [timestamp]` with valid names, properly escaped label values and a float value.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parsed exposition: samples and each family's type.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the sample `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
    }

    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// The family a sample belongs to (histogram/summary suffixes map to their base).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.contains_key(base) {
                return base;
            }
        }
    }
    name
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helped = HashSet::new();
    let mut sampled = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |why: &str| Err(format!("line {n}: {why}: {line:?}"));
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("HELP ") {
                let name = r.split(' ').next().unwrap_or("");
                if !valid_metric_name(name) {
                    return err("bad metric name in HELP");
                }
                if !helped.insert(name.to_owned()) {
                    return err("second HELP for a family");
                }
            } else if let Some(r) = rest.strip_prefix("TYPE ") {
                let mut parts = r.split_whitespace();
                let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
                    return err("TYPE needs a name and a type");
                };
                if !valid_metric_name(name) {
                    return err("bad metric name in TYPE");
                }
                if !matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                    return err("unknown type");
                }
                if sampled.contains(name) {
                    return err("TYPE after the family's samples");
                }
                if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return err("second TYPE for a family");
                }
            }
            continue;
        }
        // A sample.
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return err("bad metric name");
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start();
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let Some(eq) = r.find('=') else {
                    return err("label without '='");
                };
                let lname = r[..eq].trim();
                if !valid_label_name(lname) {
                    return err("bad label name");
                }
                let Some(mut v) = r[eq + 1..].strip_prefix('"') else {
                    return err("label value not quoted");
                };
                let mut value = String::new();
                loop {
                    let mut chars = v.chars();
                    match chars.next() {
                        None => return err("unterminated label value"),
                        Some('"') => {
                            v = chars.as_str();
                            break;
                        }
                        Some('\\') => match chars.next() {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => return err("bad escape in label value"),
                        },
                        Some('\n') => return err("raw newline in label value"),
                        Some(c) => value.push(c),
                    }
                    v = chars.as_str();
                }
                labels.push((lname.to_owned(), value));
                r = v.trim_start();
                if let Some(after) = r.strip_prefix(',') {
                    r = after;
                } else if !r.starts_with('}') {
                    return err("expected ',' or '}' after a label");
                }
            }
        }
        let mut fields = rest.split_whitespace();
        let Some(value) = fields.next().and_then(parse_value) else {
            return err("missing or bad value");
        };
        if let Some(ts) = fields.next() {
            if ts.parse::<i64>().is_err() {
                return err("bad timestamp");
            }
        }
        if fields.next().is_some() {
            return err("trailing fields");
        }
        let family = family_of(name, &out.types).to_owned();
        if out.types.get(&family).is_some_and(|t| t == "counter") && (value < 0.0 || value.is_nan()) {
            return err("negative counter");
        }
        sampled.insert(family);
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\",y=\"\"} 3\nb 1.5e3 1700000000\n";
        let e = parse(ok).expect("valid");
        assert_eq!(e.value("a_total", &[("x", "q\"\n")]), Some(3.0));
        assert_eq!(e.value("b", &[]), Some(1500.0));
        for bad in [
            "a{x=y} 1",
            "a{x=\"y} 1",
            "1a 1",
            "a 1 2 3",
            "a notanumber",
            "# TYPE a counter\n# TYPE a counter\n",
            "a 1\n# TYPE a gauge\n",
            "# TYPE a counter\na -1\n",
            "a{x=\"\\q\"} 1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
