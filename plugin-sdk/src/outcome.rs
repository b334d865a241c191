use crate::Value;
use crate::bindings::medic::plugin::types as wit;

/// How a call went, as the plugin judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The check passed, or the action did what was asked.
    Success,
    /// The check found a problem, or the action could not reach its goal.
    Failure,
    /// A check could not decide (for example, no data yet).
    Inconclusive,
}

/// The result of a call: a status, a one-line summary, outputs and metrics.
///
/// ```
/// use medic_plugin_sdk::Outcome;
///
/// let outcome = Outcome::success("200 in 12 ms")
///     .output("status", 200i64)
///     .metric("latency_ms", 12.0);
/// assert_eq!(outcome.metrics[0].1, 12.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Success, failure or inconclusive.
    pub status: Status,
    /// One line for a person.
    pub summary: String,
    /// Values later steps can use as `steps.ID.outputs.NAME`, and that `revert` receives.
    pub outputs: Vec<(String, Value)>,
    /// Numbers for gates and thresholds.
    pub metrics: Vec<(String, f64)>,
}

impl Outcome {
    fn new(status: Status, summary: impl Into<String>) -> Self {
        Outcome {
            status,
            summary: summary.into(),
            outputs: Vec::new(),
            metrics: Vec::new(),
        }
    }

    /// The check passed or the action succeeded.
    pub fn success(summary: impl Into<String>) -> Self {
        Self::new(Status::Success, summary)
    }

    /// The check failed or the action did not reach its goal.
    pub fn failure(summary: impl Into<String>) -> Self {
        Self::new(Status::Failure, summary)
    }

    /// The check could not decide.
    pub fn inconclusive(summary: impl Into<String>) -> Self {
        Self::new(Status::Inconclusive, summary)
    }

    /// Adds an output value.
    pub fn output(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.outputs.push((name.into(), value.into()));
        self
    }

    /// Adds a metric.
    pub fn metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.push((name.into(), value));
        self
    }

    pub(crate) fn into_wit(self) -> wit::Outcome {
        wit::Outcome {
            status: match self.status {
                Status::Success => wit::Status::Success,
                Status::Failure => wit::Status::Failure,
                Status::Inconclusive => wit::Status::Inconclusive,
            },
            summary: self.summary,
            outputs: self
                .outputs
                .into_iter()
                .map(|(n, v)| (n, v.into_wit()))
                .collect(),
            metrics: self
                .metrics
                .into_iter()
                .map(|(name, value)| wit::Metric { name, value })
                .collect(),
        }
    }
}
