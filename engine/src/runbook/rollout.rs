//! Rollout strategies: how traffic moves to a candidate, stage by stage.
//!
//! A strategy turns into stages: the candidate's share of traffic at each stage, and how
//! long that stage bakes before the next. `canary` takes explicit weights, `linear` a step
//! and an interval, `all_at_once` and `blue_green` switch everything in one stage
//! (`blue_green` keeps the old version for a rollback window instead of baking). The AWS
//! CodeDeploy predefined configurations are accepted unchanged, with or without their
//! `CodeDeployDefault.` prefix and `Lambda`/`ECS` infix, so people coming from CodeDeploy
//! read them as they know them (`Canary10Percent5Minutes`, `Linear10PercentEvery1Minute`,
//! `AllAtOnce`, ...).
//!
//! This module is the foundation of the `[rollout]` block (issue #6): stage computation and
//! the CodeDeploy names; the block itself is not wired into runbooks yet.

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
