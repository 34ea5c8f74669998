//! The comparison cohort: referrals not taken on (at the decision, or
//! ended during engagement) whose demand in the year after is known, to
//! read the supported clients' fall against.
//!
//! Neither the evaluation nor the slides give this cohort's figures, so
//! the numbers here are **assumptions**, named in docs/simulate.md: the
//! police data team can supply follow-up figures for half of the referrals
//! not taken on, and without support demand regresses only part of the way
//! towards the mean (clients are referred at a peak): one in ten stops
//! calling, the others keep 50-100% of their calls and of their police
//! staff hours, a quarter fewer on average. Supported clients keep about
//! 14% of their calls by the plan (56 in 150 never call again, the others
//! keep 5-40%).

use rand::Rng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;

use super::plan::{Outcome, PlannedReferral, price};
use super::timeline;

/// ASSUMPTION: the share of referrals not taken on with follow-up figures.
pub const SHARE_WITH_FIGURES: f64 = 0.5;
/// ASSUMPTION: the share of the comparison cohort who never call again.
pub const NEVER_CALLED_AGAIN: f64 = 0.1;
/// ASSUMPTION: how much of their demand the others keep, drawn uniformly.
pub const KEPT: std::ops::Range<f64> = 0.5..1.0;

/// Picks which referrals not taken on get follow-up figures (exactly
/// [`SHARE_WITH_FIGURES`] of them, rounded) and draws their demand in the
/// year after, supplied a week after that year.
pub fn draw(rng: &mut StdRng, referrals: &mut [PlannedReferral]) {
    let mut not_taken_on: Vec<usize> = referrals
        .iter()
        .enumerate()
        .filter(|(_, referral)| !referral.supported())
        .map(|(index, _)| index)
        .collect();
    let with_figures = (not_taken_on.len() as f64 * SHARE_WITH_FIGURES).round() as usize;
    not_taken_on.shuffle(rng);
    not_taken_on.truncate(with_figures);
    not_taken_on.sort_unstable();
    for index in not_taken_on {
        let referral = &mut referrals[index];
        let (calls, hours) = if rng.random_bool(NEVER_CALLED_AGAIN) {
            (0, 0)
        } else {
            (
                (f64::from(referral.calls_before) * rng.random_range(KEPT)).round() as i32,
                (f64::from(referral.hours_before) * rng.random_range(KEPT)).round() as i32,
            )
        };
        referral.calls_after = calls;
        referral.hours_after = hours;
        let times = &mut referral.timeline;
        let ended = match referral.outcome {
            Outcome::NotTakenOn(_) => times.decided_at,
            _ => times.ended_at.expect("an engagement ended"),
        };
        times.follow_up_on = Some(timeline::follow_up_after(ended));
    }
}

/// Demand before and after of a group of referrals, priced by the agreed
/// formula: what the impact report's row for the group should show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemandTotals {
    pub clients: u32,
    pub calls_before: i64,
    pub calls_after: i64,
    pub hours_before: i64,
    pub hours_after: i64,
    pub saving_pence: i64,
    pub never_called_again: u32,
}

impl DemandTotals {
    pub fn add(&mut self, referral: &PlannedReferral) {
        self.clients += 1;
        self.calls_before += i64::from(referral.calls_before);
        self.calls_after += i64::from(referral.calls_after);
        self.hours_before += i64::from(referral.hours_before);
        self.hours_after += i64::from(referral.hours_after);
        self.saving_pence += price(referral.calls_before, referral.hours_before)
            - price(referral.calls_after, referral.hours_after);
        self.never_called_again +=
            u32::from(referral.calls_after == 0 && referral.hours_after == 0);
    }

    /// The share of the calls before that remained after, `None` without calls.
    pub fn calls_kept(&self) -> Option<f64> {
        (self.calls_before > 0).then(|| self.calls_after as f64 / self.calls_before as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::Programme;
    use super::*;
    use chrono::{Months, NaiveDate};
    use rand::SeedableRng as _;

    fn programme(size: f64) -> Programme {
        Programme::generate(&crate::simulate::plan::test_options(size, 5))
    }

    #[test]
    fn half_of_the_referrals_not_taken_on_get_figures_a_year_after_support_ended() {
        let programme = programme(1.0);
        let today = NaiveDate::from_ymd_opt(2026, 5, 1).expect("a date");
        let not_supported: Vec<_> = programme
            .referrals
            .iter()
            .filter(|r| !r.supported())
            .collect();
        let with_figures: Vec<_> = not_supported
            .iter()
            .filter(|r| r.timeline.follow_up_on.is_some())
            .collect();
        assert_eq!(not_supported.len(), 164);
        assert_eq!(with_figures.len(), 82);
        assert!(
            with_figures
                .iter()
                .any(|r| matches!(r.outcome, Outcome::EndedDuringEngagement { .. })),
            "engagements ended count among those not taken on"
        );
        for referral in with_figures {
            let times = &referral.timeline;
            let ended = times.ended_at.unwrap_or(times.decided_at).date_naive();
            let supplied = times.follow_up_on.expect("figures");
            assert!(supplied > ended + Months::new(12) && supplied < today);
            assert!(referral.calls_after <= referral.calls_before);
            assert!(referral.hours_after <= referral.hours_before);
        }
    }

    #[test]
    fn without_support_demand_falls_far_less_than_with_it() {
        let intended = programme(1.0).intended();
        let comparison = intended.comparison;
        assert_eq!(comparison.clients, 82);
        let kept = comparison.calls_kept().expect("calls before");
        assert!((0.55..0.85).contains(&kept), "comparison kept {kept}");
        assert!(comparison.never_called_again < comparison.clients / 4);
        assert!(comparison.saving_pence > 0);
        let supported: (i64, i64) = programme(1.0)
            .referrals
            .iter()
            .filter(|r| r.supported())
            .fold((0, 0), |(before, after), r| {
                (
                    before + i64::from(r.calls_before),
                    after + i64::from(r.calls_after),
                )
            });
        let supported_kept = supported.1 as f64 / supported.0 as f64;
        assert!(supported_kept < 0.25, "supported kept {supported_kept}");
    }

    #[test]
    fn supported_clients_are_left_as_they_were() {
        let programme = programme(0.1);
        let mut redrawn = programme.referrals.clone();
        draw(&mut StdRng::seed_from_u64(1), &mut redrawn);
        for (planned, again) in programme.referrals.iter().zip(&redrawn) {
            if planned.supported() {
                assert_eq!(planned, again);
            }
        }
    }
}
