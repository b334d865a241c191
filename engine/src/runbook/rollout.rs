//! Rollout strategies: how traffic moves to a candidate, stage by stage.
//!
//! A strategy turns into stages: the candidate's share of traffic at each stage, and how
//! long that stage bakes before the next. `canary` takes explicit weights, `linear` a step
//! and an interval, `all_at_once` and `blue_green` switch everything in one stage
//! (`blue_green` keeps watching through a rollback window instead of baking: its analysis
//! starts one interval after the switch and passes only at the window's end, so a breach
//! anywhere in the window switches traffic back to blue). The AWS
//! CodeDeploy predefined configurations are accepted unchanged, with or without their
//! `CodeDeployDefault.` prefix and `Lambda`/`ECS` infix, so people coming from CodeDeploy
//! read them as they know them (`Canary10Percent5Minutes`, `Linear10PercentEvery1Minute`,
//! `AllAtOnce`, ...).
//!
//! [`expand`] turns a runbook's `[rollout]` into ordinary steps before validation: per
//! stage, the route calls (each undone by its plugin's revert) and the analysis checks as
//! gates (the stage's bake is the first gate's delay). Everything else (recording, retries,
//! rollback newest first, so traffic returns to stable before anything else is undone)
//! is what any step gets.

use std::time::Duration;

/// One stage: the candidate's share of traffic, then how long it bakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Percent of traffic on the candidate, 1 to 100.
    pub weight: u8,
    /// How long traffic stays at this weight, being analysed, before the next stage.
    pub bake: Duration,
}

/// A strategy, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Canary {
        weights: Vec<u8>,
        bake: Duration,
    },
    Linear {
        step: u8,
        interval: Duration,
    },
    AllAtOnce {
        bake: Duration,
    },
    /// Everything at once after pre-promotion checks; the old version stays ready for
    /// `rollback_window`.
    BlueGreen {
        rollback_window: Duration,
    },
}

impl Strategy {
    /// The stages, in order; the last always has weight 100.
    pub fn stages(&self) -> Vec<Stage> {
        match self {
            Strategy::Canary { weights, bake } => weights
                .iter()
                .map(|w| Stage {
                    weight: *w,
                    bake: if *w == 100 { Duration::ZERO } else { *bake },
                })
                .collect(),
            Strategy::Linear { step, interval } => {
                let step = (*step).clamp(1, 100);
                let mut out: Vec<Stage> = (1..)
                    .map(|i| u16::from(step) * i)
                    .take_while(|w| *w < 100)
                    .map(|w| Stage {
                        weight: w as u8,
                        bake: *interval,
                    })
                    .collect();
                out.push(Stage {
                    weight: 100,
                    bake: Duration::ZERO,
                });
                out
            }
            Strategy::AllAtOnce { bake } => vec![Stage {
                weight: 100,
                bake: *bake,
            }],
            Strategy::BlueGreen { rollback_window } => vec![Stage {
                weight: 100,
                bake: *rollback_window,
            }],
        }
    }

    /// The time traffic spends baking before full promotion, with every analysis passing.
    pub fn total_bake(&self) -> Duration {
        self.stages().iter().map(|s| s.bake).sum()
    }
}

/// Checks canary weights: increasing, 1 to 100, ending at 100.
pub fn check_weights(weights: &[i64]) -> Result<Vec<u8>, String> {
    if weights.is_empty() {
        return Err("a canary needs at least one weight, e.g. [5, 25, 50, 100]".into());
    }
    let mut out = Vec::with_capacity(weights.len());
    for w in weights {
        if !(1..=100).contains(w) {
            return Err(format!("weight {w} is not a percentage from 1 to 100"));
        }
        let w = *w as u8;
        if out.last().is_some_and(|prev| *prev >= w) {
            return Err(format!(
                "weights must increase: {w} follows {}",
                out.last().copied().unwrap_or_default()
            ));
        }
        out.push(w);
    }
    if out.last() != Some(&100) {
        return Err("the last weight must be 100 (full promotion)".into());
    }
    Ok(out)
}

/// The AWS CodeDeploy predefined deployment configurations, as strategies.
pub fn codedeploy(name: &str) -> Option<Strategy> {
    let bare = name.strip_prefix("CodeDeployDefault.").unwrap_or(name);
    let bare = bare
        .strip_prefix("Lambda")
        .or_else(|| bare.strip_prefix("ECS"))
        .unwrap_or(bare);
    let minutes = |m: u64| Duration::from_secs(m * 60);
    if bare == "AllAtOnce" {
        return Some(Strategy::AllAtOnce {
            bake: Duration::ZERO,
        });
    }
    // CanaryNPercentMMinutes: N% first, then everything after M minutes.
    if let Some(rest) = bare.strip_prefix("Canary") {
        let (pct, rest) = rest.split_once("Percent")?;
        let m = rest.strip_suffix("Minutes")?;
        let pct: u8 = pct.parse().ok().filter(|p| (1..100).contains(p))?;
        return Some(Strategy::Canary {
            weights: vec![pct, 100],
            bake: minutes(m.parse().ok()?),
        });
    }
    // LinearNPercentEveryMMinute(s): N% more every M minutes.
    if let Some(rest) = bare.strip_prefix("Linear") {
        let (pct, rest) = rest.split_once("PercentEvery")?;
        let m = rest
            .strip_suffix("Minutes")
            .or_else(|| rest.strip_suffix("Minute"))?;
        let pct: u8 = pct.parse().ok().filter(|p| (1..100).contains(p))?;
        return Some(Strategy::Linear {
            step: pct,
            interval: minutes(m.parse().ok()?),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(s: &Strategy) -> Vec<u8> {
        s.stages().iter().map(|s| s.weight).collect()
    }

    #[test]
    fn codedeploy_names_read_as_they_do_in_codedeploy() {
        let c = codedeploy("CodeDeployDefault.LambdaCanary10Percent5Minutes").unwrap();
        assert_eq!(weights(&c), [10, 100]);
        assert_eq!(c.stages()[0].bake, Duration::from_secs(300));
        assert_eq!(c, codedeploy("Canary10Percent5Minutes").unwrap());
        assert_eq!(
            c,
            codedeploy("CodeDeployDefault.ECSCanary10Percent5Minutes").unwrap()
        );

        let l = codedeploy("Linear10PercentEvery1Minute").unwrap();
        assert_eq!(weights(&l), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(l.total_bake(), Duration::from_secs(9 * 60));
        assert_eq!(
            l,
            codedeploy("CodeDeployDefault.ECSLinear10PercentEvery1Minutes").unwrap()
        );
        let l3 = codedeploy("LambdaLinear10PercentEvery3Minutes").unwrap();
        assert_eq!(l3.total_bake(), Duration::from_secs(27 * 60));

        assert_eq!(
            weights(&codedeploy("CodeDeployDefault.AllAtOnce").unwrap()),
            [100]
        );
        for bad in [
            "Canary0Percent5Minutes",
            "Canary10Percent",
            "Linear10Percent",
            "Rolling",
            "",
        ] {
            assert_eq!(codedeploy(bad), None, "{bad}");
        }
    }

    #[test]
    fn linear_steps_that_do_not_divide_100_end_at_100() {
        let l = Strategy::Linear {
            step: 30,
            interval: Duration::from_secs(60),
        };
        assert_eq!(weights(&l), [30, 60, 90, 100]);
        assert_eq!(l.stages().last().unwrap().bake, Duration::ZERO);
    }

    #[test]
    fn canary_weights_are_checked() {
        assert_eq!(check_weights(&[5, 25, 50, 100]).unwrap(), [5, 25, 50, 100]);
        assert!(check_weights(&[]).unwrap_err().contains("at least one"));
        assert!(
            check_weights(&[10, 5, 100])
                .unwrap_err()
                .contains("must increase")
        );
        assert!(
            check_weights(&[10, 50])
                .unwrap_err()
                .contains("must be 100")
        );
        assert!(
            check_weights(&[0, 100])
                .unwrap_err()
                .contains("from 1 to 100")
        );
        let c = Strategy::Canary {
            weights: vec![5, 50, 100],
            bake: Duration::from_secs(120),
        };
        assert_eq!(c.total_bake(), Duration::from_secs(240));
        let bg = Strategy::BlueGreen {
            rollback_window: Duration::from_secs(600),
        };
        assert_eq!(
            bg.stages(),
            [Stage {
                weight: 100,
                bake: Duration::from_secs(600)
            }]
        );
    }
}

/// A rollout as planned: the stages, and the steps each one became.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolloutPlan {
    pub strategy: String,
    pub stages: Vec<StagePlan>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StagePlan {
    pub weight: u8,
    pub bake: Duration,
    /// The ids of the steps generated for this stage.
    pub steps: Vec<String>,
}

use std::collections::BTreeMap;

use toml::Spanned;

use super::diag::Diagnostic;
use super::model::{
    ApprovalDecl, GateDecl, OnFailure, RollbackDecl, RolloutDecl, RunbookDoc, StepDecl,
};
use super::plan::parse_duration;

fn duration_of(v: &Spanned<String>, what: &str, diags: &mut Vec<Diagnostic>) -> Duration {
    parse_duration(v.get_ref()).unwrap_or_else(|e| {
        diags.push(Diagnostic::at(v.span(), format!("rollout {what}: {e}")));
        Duration::ZERO
    })
}

/// The strategy a `[rollout]` declares, checking that its fields fit it.
fn strategy(r: &RolloutDecl, diags: &mut Vec<Diagnostic>) -> Option<Strategy> {
    let name = r.strategy.get_ref().as_str();
    let span = r.strategy.span();
    let bake = r.bake.as_ref().map(|b| duration_of(b, "bake", diags));
    let given: Vec<&str> = [
        ("weights", r.weights.is_some()),
        ("step", r.step.is_some()),
        ("interval", r.interval.is_some()),
        ("bake", r.bake.is_some()),
        ("rollback_window", r.rollback_window.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(n, _)| *n)
    .collect();
    let allow = |ok: &[&str], diags: &mut Vec<Diagnostic>| {
        for g in &given {
            if !ok.contains(g) {
                diags.push(Diagnostic::at(
                    span.clone(),
                    format!("rollout strategy `{name}` takes no `{g}`"),
                ));
            }
        }
    };
    match name {
        "canary" => {
            allow(&["weights", "bake"], diags);
            let Some(w) = &r.weights else {
                diags.push(
                    Diagnostic::at(span, "a canary rollout needs `weights`")
                        .help("e.g. weights = [5, 25, 50, 100], bake = \"5m\""),
                );
                return None;
            };
            match check_weights(w.get_ref()) {
                Ok(weights) => Some(Strategy::Canary {
                    weights,
                    bake: bake.unwrap_or_default(),
                }),
                Err(e) => {
                    diags.push(Diagnostic::at(w.span(), format!("rollout weights: {e}")));
                    None
                }
            }
        }
        "linear" => {
            allow(&["step", "interval"], diags);
            let (Some(step), Some(interval)) = (&r.step, &r.interval) else {
                diags.push(
                    Diagnostic::at(span, "a linear rollout needs `step` and `interval`")
                        .help("e.g. step = 10, interval = \"1m\""),
                );
                return None;
            };
            let interval = duration_of(interval, "interval", diags);
            match u8::try_from(*step.get_ref())
                .ok()
                .filter(|s| (1..100).contains(s))
            {
                Some(step) => Some(Strategy::Linear { step, interval }),
                None => {
                    diags.push(Diagnostic::at(
                        step.span(),
                        format!(
                            "rollout step {} is not a percentage from 1 to 99",
                            step.get_ref()
                        ),
                    ));
                    None
                }
            }
        }
        "all_at_once" => {
            allow(&["bake"], diags);
            Some(Strategy::AllAtOnce {
                bake: bake.unwrap_or_default(),
            })
        }
        "blue_green" => {
            allow(&["rollback_window"], diags);
            Some(Strategy::BlueGreen {
                rollback_window: r
                    .rollback_window
                    .as_ref()
                    .map(|w| duration_of(w, "rollback_window", diags))
                    .unwrap_or_default(),
            })
        }
        other => match codedeploy(other) {
            Some(s) => {
                allow(&[], diags);
                Some(s)
            }
            None => {
                diags.push(
                    Diagnostic::at(span, format!("`{other}` is not a rollout strategy")).help(
                        "use canary, linear, all_at_once, blue_green, or a CodeDeploy name such as Canary10Percent5Minutes",
                    ),
                );
                None
            }
        },
    }
}

/// `{{ rollout.weight }}` and `{{ rollout.remaining }}` in a route's parameters, filled in
/// for a stage; a value that is only the template becomes an integer.
fn fill(v: &toml::Value, weight: u8) -> toml::Value {
    static TEMPLATE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\{\{\s*rollout\.(weight|remaining)\s*\}\}").expect("valid")
    });
    let re = &*TEMPLATE;
    let value = |name: &str| {
        if name == "weight" {
            weight
        } else {
            100 - weight
        }
    };
    match v {
        toml::Value::String(s) => {
            if let Some(c) = re.captures(s.trim())
                && c.get(0).is_some_and(|m| m.as_str() == s.trim())
            {
                return toml::Value::Integer(i64::from(value(&c[1])));
            }
            toml::Value::String(
                re.replace_all(s, |c: &regex::Captures| value(&c[1]).to_string())
                    .into_owned(),
            )
        }
        toml::Value::Array(a) => toml::Value::Array(a.iter().map(|x| fill(x, weight)).collect()),
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| (k.clone(), fill(x, weight)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A route's or smoke test's parameters for one stage.
fn fill_with(
    with: &BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    weight: u8,
) -> BTreeMap<Spanned<String>, Spanned<toml::Value>> {
    with.iter()
        .map(|(k, v)| (k.clone(), Spanned::new(v.span(), fill(v.get_ref(), weight))))
        .collect()
}

/// A message about a generated step with its stage left out (`rollout_10_errors` ->
/// `rollout_*_errors`), to recognise the same mistake repeated at every stage.
pub fn stage_free(message: &str) -> std::borrow::Cow<'_, str> {
    static STAGE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\brollout_[0-9]+").expect("valid"));
    STAGE.replace_all(message, "rollout_*")
}

/// Expands `[rollout]` into steps appended to the runbook's `[[steps]]`. Every generated
/// step rolls back on failure; route steps are undone by their plugin's revert, newest first,
/// so a breach puts traffic back on the stable version before anything else is undone.
///
/// A rollout with mistakes is still expanded (one full stage stands in for a strategy that
/// did not parse), so the mistakes in its route, smoke and analysis calls are reported with
/// the rest; the plan is then `None`.
pub fn expand(doc: &mut RunbookDoc) -> (Option<RolloutPlan>, Vec<Diagnostic>) {
    let Some(decl) = doc.rollout.take() else {
        return (None, Vec::new());
    };
    let whole = decl.span();
    let r = decl.into_inner();
    let mut diags = Vec::new();
    let strategy = strategy(&r, &mut diags);
    if r.route.is_empty() {
        diags.push(
            Diagnostic::at(
                whole.clone(),
                "a rollout needs at least one [[rollout.route]]",
            )
            .help("the plugin call that moves traffic, e.g. uses = \"router\""),
        );
    }
    if r.analysis.is_empty() {
        diags.push(
            Diagnostic::at(whole.clone(), "a rollout needs [[rollout.analysis]] checks")
                .help("health checks and rollback criteria are declared before the change starts"),
        );
    }
    let stages = strategy.as_ref().map_or_else(
        || {
            vec![Stage {
                weight: 100,
                bake: Duration::ZERO,
            }]
        },
        Strategy::stages,
    );
    for w in &r.approve_before {
        if !stages.iter().any(|s| i64::from(s.weight) == *w.get_ref()) {
            let weights: Vec<String> = stages.iter().map(|s| s.weight.to_string()).collect();
            diags.push(Diagnostic::at(
                w.span(),
                format!(
                    "approve_before: no stage has weight {} (stages: {})",
                    w.get_ref(),
                    weights.join(", ")
                ),
            ));
        }
    }
    let rollback = |span: std::ops::Range<usize>| {
        Some(Spanned::new(span, RollbackDecl::Keyword("revert".into())))
    };
    let mut planned = Vec::new();
    for stage in &stages {
        let w = stage.weight;
        let mut ids = Vec::new();
        for (j, route) in r.route.iter().enumerate() {
            let route_span = route.span();
            let route = route.get_ref();
            let id = if r.route.len() == 1 {
                format!("rollout_{w}")
            } else {
                format!("rollout_{w}_{}", j + 1)
            };
            let approval = (j == 0
                && r.approve_before
                    .iter()
                    .any(|a| *a.get_ref() == i64::from(w)))
            .then(|| {
                Spanned::new(
                    route_span.clone(),
                    ApprovalDecl {
                        timeout: Spanned::new(route_span.clone(), "1h".to_owned()),
                        prompt: Some(format!("move {w}% of traffic to the candidate?")),
                    },
                )
            });
            let with = fill_with(&route.with, w);
            ids.push(id.clone());
            doc.steps.push(Spanned::new(
                route_span.clone(),
                StepDecl {
                    id: Spanned::new(route.uses.span(), id),
                    uses: route.uses.clone(),
                    description: Some(format!("{w}% of traffic to the candidate")),
                    with,
                    timeout: route.timeout.clone(),
                    on_failure: Some(Spanned::new(route_span.clone(), OnFailure::Rollback)),
                    when: None,
                    retry: None,
                    gate: None,
                    rollback: rollback(route_span.clone()),
                    approval,
                    fleet: None,
                },
            ));
        }
        for smoke in &r.smoke {
            let s_span = smoke.span();
            let smoke = smoke.get_ref();
            let id = format!("rollout_{w}_smoke_{}", smoke.name.get_ref());
            ids.push(id.clone());
            doc.steps.push(Spanned::new(
                s_span.clone(),
                StepDecl {
                    id: Spanned::new(smoke.name.span(), id),
                    uses: smoke.uses.clone(),
                    description: Some(format!("smoke test after the move to {w}%")),
                    with: fill_with(&smoke.with, w),
                    timeout: smoke.timeout.clone(),
                    on_failure: Some(Spanned::new(s_span.clone(), OnFailure::Rollback)),
                    when: None,
                    retry: None,
                    gate: None,
                    rollback: None,
                    approval: None,
                    fleet: None,
                },
            ));
        }
        for (k, a) in r.analysis.iter().enumerate() {
            let a_span = a.span();
            let a = a.get_ref();
            let id = format!("rollout_{w}_{}", a.name.get_ref());
            let ms = |d: Duration| Spanned::new(a_span.clone(), format!("{}ms", d.as_millis()));
            // Blue/green watches through its rollback window (a breach in it switches back to
            // blue); the others bake first and then decide.
            let window = match &strategy {
                Some(Strategy::BlueGreen { rollback_window }) => Some(*rollback_window),
                _ => None,
            };
            let delay = match window {
                // Metrics need an interval of traffic on green before they say anything.
                Some(_) => Some(a.interval.clone()),
                None => (k == 0 && !stage.bake.is_zero()).then(|| ms(stage.bake)),
            };
            let (hold, timeout) = match (window, parse_duration(a.timeout.get_ref())) {
                (Some(w), Ok(t)) => (Some(ms(w)), ms(w + t)),
                _ => (None, a.timeout.clone()),
            };
            ids.push(id.clone());
            doc.steps.push(Spanned::new(
                a_span.clone(),
                StepDecl {
                    id: Spanned::new(a.name.span(), id),
                    uses: a.uses.clone(),
                    description: Some(format!("analysis of the {w}% stage")),
                    with: a.with.clone(),
                    timeout: None,
                    on_failure: Some(Spanned::new(a_span.clone(), OnFailure::Rollback)),
                    when: None,
                    retry: None,
                    gate: Some(Spanned::new(
                        a_span.clone(),
                        GateDecl {
                            delay,
                            interval: a.interval.clone(),
                            successes: a.consecutive_successes.clone(),
                            failures: a.failure_limit.clone(),
                            timeout,
                            hold,
                            // An analysis that cannot decide waits for a person rather than
                            // aborting a rollout that may be fine.
                            inconclusive: Some(Spanned::new(a_span.clone(), "pause".to_owned())),
                        },
                    )),
                    rollback: None,
                    approval: None,
                    fleet: None,
                },
            ));
        }
        planned.push(StagePlan {
            weight: w,
            bake: stage.bake,
            steps: ids,
        });
    }
    let plan = (diags.is_empty() && strategy.is_some()).then(|| RolloutPlan {
        strategy: r.strategy.into_inner(),
        stages: planned,
    });
    (plan, diags)
}
