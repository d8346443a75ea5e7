//! Results: medians of interleaved rounds, ratios, a table and JSON.

use std::fmt;

use serde::Serialize;

/// One scenario's measurements.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// Its name, such as `memory-bytes`.
    pub name: String,
    /// What is measured and in which unit.
    pub unit: Unit,
    /// The raw client's result per round (empty when there is no raw side).
    pub raw: Vec<f64>,
    /// bindery's result per round.
    pub bindery: Vec<f64>,
    /// The target for bindery/raw (or for the absolute figure), from SPEC §9.
    pub target: Option<Target>,
    /// What limits the figure, for the reader.
    pub note: String,
}

/// What a figure measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Messages per second: higher is better.
    MessagesPerSecond,
    /// Milliseconds of latency: lower is better.
    Milliseconds,
    /// Mebibytes of peak resident memory: lower is better.
    MebibytesRss,
}

/// A goal from SPEC §9.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// bindery must reach this fraction of the raw client.
    RatioAtLeast(f64),
    /// bindery must reach this absolute figure.
    AtLeast(f64),
    /// The second figure may be at most this multiple of the first (memory
    /// growth with the backlog).
    RatioAtMost(f64),
}

impl Scenario {
    /// The median raw figure.
    pub fn raw_median(&self) -> Option<f64> {
        median(&self.raw)
    }

    /// The median bindery figure.
    pub fn bindery_median(&self) -> Option<f64> {
        median(&self.bindery)
    }

    /// bindery's median over raw's median.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.bindery_median()? / self.raw_median()?)
    }

    /// Whether the target is met (`None` when there is none to meet).
    pub fn meets_target(&self) -> Option<bool> {
        match self.target? {
            Target::RatioAtLeast(goal) => Some(self.ratio()? >= goal),
            Target::AtLeast(goal) => Some(self.bindery_median()? >= goal),
            Target::RatioAtMost(limit) => Some(self.ratio()? <= limit),
        }
    }
}

/// The median of `values`.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Every scenario of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The machine, for the record.
    pub machine: String,
    /// How many interleaved rounds each pair ran.
    pub rounds: usize,
    /// The scenarios.
    pub scenarios: Vec<Scenario>,
}

impl Report {
    /// The report as JSON, with medians and ratios spelled out.
    pub fn to_json(&self) -> serde_json::Value {
        let scenarios: Vec<serde_json::Value> = self
            .scenarios
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "unit": s.unit,
                    "raw": s.raw,
                    "bindery": s.bindery,
                    "raw_median": s.raw_median(),
                    "bindery_median": s.bindery_median(),
                    "ratio": s.ratio(),
                    "target": s.target,
                    "meets_target": s.meets_target(),
                    "note": s.note,
                })
            })
            .collect();
        serde_json::json!({ "machine": self.machine, "rounds": self.rounds, "scenarios": scenarios })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "machine: {}; {} interleaved rounds per pair; medians",
            self.machine, self.rounds
        )?;
        writeln!(
            f,
            "{:<34} {:>14} {:>14} {:>7} {:>12} {:>5}",
            "scenario", "raw", "bindery", "ratio", "target", "met"
        )?;
        for s in &self.scenarios {
            let unit = match s.unit {
                Unit::MessagesPerSecond => "msg/s",
                Unit::Milliseconds => "ms",
                Unit::MebibytesRss => "MiB",
            };
            let number = |v: Option<f64>| {
                v.map_or("-".to_owned(), |v| match s.unit {
                    Unit::Milliseconds => format!("{v:.3} {unit}"),
                    _ => format!("{v:.1} {unit}"),
                })
            };
            let target = match s.target {
                Some(Target::RatioAtLeast(r)) => format!(">= {r}x"),
                Some(Target::AtLeast(v)) => format!(">= {v:.0}"),
                Some(Target::RatioAtMost(r)) => format!("<= {r}x"),
                None => "-".to_owned(),
            };
            let met = match s.meets_target() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            writeln!(
                f,
                "{:<34} {:>14} {:>14} {:>7} {:>12} {:>5}",
                s.name,
                number(s.raw_median()),
                number(s.bindery_median()),
                s.ratio().map_or("-".to_owned(), |r| format!("{r:.2}")),
                target,
                met
            )?;
        }
        for s in self.scenarios.iter().filter(|s| !s.note.is_empty()) {
            writeln!(f, "  {}: {}", s.name, s.note)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let scenario = Scenario {
            name: "x".into(),
            unit: Unit::MessagesPerSecond,
            raw: vec![100.0, 110.0, 90.0],
            bindery: vec![85.0, 80.0, 90.0],
            target: Some(Target::RatioAtLeast(0.8)),
            note: String::new(),
        };
        assert_eq!(scenario.ratio(), Some(0.85));
        assert_eq!(scenario.meets_target(), Some(true));
    }
}
