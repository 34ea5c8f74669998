//! Who mentors whom, and when each mentor was trained, on the programme's
//! own timeline.
//!
//! The plan pairs the mentors itself, client by client in the order the
//! pairs are allocated: two mentors of the client's area with a place free
//! at that time (a mentor's client holds a place from allocation to the end
//! of support) whom no safety rule excludes, those still without a first
//! client first. An area without a free pair trains another mentor. Knowing
//! each mentor's first client, it trains them in the monthly cohort that
//! leaves the wait the evaluation reports (6 within a month, 10 in 1-2
//! months, ...; [`FIRST_CLIENT_WAITS`]), the nearest cohort to it and at
//! least a week before that client. So the report's training-to-first-client
//! figures can be checked against the plan: the replay confirms each
//! planned pair at its planned time.
//!
//! Mentors still waiting belong to recent cohorts (two weeks to two years
//! before today, after the replayed years, so no client reached them);
//! mentors trained for other organisations to cohorts of the last two
//! years. A mentor the plan could give no client (an area with few) waits
//! with them.

use chrono::{DateTime, Days, NaiveDate, Utc};
use mentor_matching::safety;
use rand::Rng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;

use super::plan::{FIRST_CLIENT_WAITS, MentorRole, PlannedMentor, PlannedReferral};

/// The shortest wait from training to a first client the plan leaves.
pub const MIN_WAIT_DAYS: u64 = 7;

/// The clients a mentor holds a place for at `at`, of `cases` (allocated, ended).
fn load(cases: &[(DateTime<Utc>, DateTime<Utc>)], at: DateTime<Utc>) -> usize {
    cases
        .iter()
        .filter(|(from, to)| *from <= at && at < *to)
        .count()
}

/// Days from training to a first client, drawn from the evaluation's waits.
fn first_client_wait(rng: &mut StdRng) -> u64 {
    let total: u32 = FIRST_CLIENT_WAITS.iter().map(|w| w.2).sum();
    let mut pick = rng.random_range(0..total);
    for (low, high, count) in FIRST_CLIENT_WAITS {
        if pick < count {
            return rng.random_range(low..=high);
        }
        pick -= count;
    }
    unreachable!("the pick is below the total")
}

/// Days a mentor still waiting has waited by today: the 11 of 32 the
/// evaluation found waiting, some for months, one for two years.
fn still_waiting(rng: &mut StdRng) -> u64 {
    const WAITS: [(u64, u32); 7] = [
        (14, 2),
        (45, 2),
        (90, 2),
        (150, 2),
        (240, 1),
        (400, 1),
        (730, 1),
    ];
    let mut pick = rng.random_range(0..WAITS.iter().map(|w| w.1).sum::<u32>());
    for (days, count) in WAITS {
        if pick < count {
            return days;
        }
        pick -= count;
    }
    unreachable!("the pick is below the total")
}

/// Pairs every referral that reaches mentors (setting its `pair`), adds a
/// mentor where an area has no free pair, and trains every mentor.
pub fn assign(
    rng: &mut StdRng,
    today: NaiveDate,
    referrals: &mut [PlannedReferral],
    mentors: &mut Vec<PlannedMentor>,
) {
    let rules = safety::resolve(&safety::default_rules()).expect("the default rules resolve");
    let mut cases: Vec<Vec<(DateTime<Utc>, DateTime<Utc>)>> = vec![Vec::new(); mentors.len()];
    let mut engaged: Vec<usize> = (0..referrals.len())
        .filter(|index| referrals[*index].timeline.allocated_at.is_some())
        .collect();
    engaged.sort_by_key(|index| (referrals[*index].timeline.allocated_at, *index));
    for index in engaged {
        let referral = &referrals[index];
        let times = &referral.timeline;
        let (from, to) = (
            times.allocated_at.expect("engaged"),
            times.ended_at.expect("an engagement ends"),
        );
        let mut free: Vec<usize> = (0..mentors.len())
            .filter(|m| {
                let mentor = &mentors[*m];
                mentor.role == MentorRole::Mentoring
                    && mentor.area == referral.area
                    && load(&cases[*m], from) < mentor.capacity as usize
                    && safety::excluded_by(
                        &rules,
                        &referral.perpetrator_of,
                        &mentor.lived_experience,
                    )
                    .is_none()
            })
            .collect();
        while free.len() < 2 {
            let area = referral.area.clone();
            let n = mentors.len() + 1;
            mentors.push(PlannedMentor::draw(
                rng,
                n,
                &area,
                MentorRole::Mentoring,
                true,
            ));
            cases.push(Vec::new());
            free.push(mentors.len() - 1);
        }
        free.shuffle(rng);
        free.sort_by_key(|m| (!cases[*m].is_empty(), load(&cases[*m], from)));
        let pair = [free[0], free[1]];
        for m in pair {
            cases[m].push((from, to));
        }
        referrals[index].pair = Some(pair);
    }

    let yesterday = today - Days::new(1);
    for (mentor, cases) in mentors.iter_mut().zip(&cases) {
        let first = cases.iter().map(|(from, _)| from.date_naive()).min();
        match (mentor.role, first) {
            (MentorRole::Mentoring, Some(first)) => mentor.train(
                first - Days::new(first_client_wait(rng)),
                first - Days::new(MIN_WAIT_DAYS),
            ),
            (MentorRole::Declined, _) => {
                mentor.train(today - Days::new(rng.random_range(30..=700)), yesterday)
            }
            _ => {
                mentor.role = MentorRole::Waiting;
                mentor.train(today - Days::new(still_waiting(rng)), yesterday);
            }
        }
    }
}

/// Each mentor's first client: when their first pair is allocated, by mentor.
pub fn first_clients(referrals: &[PlannedReferral], mentors: usize) -> Vec<Option<DateTime<Utc>>> {
    let mut first: Vec<Option<DateTime<Utc>>> = vec![None; mentors];
    for referral in referrals {
        if let (Some(pair), Some(at)) = (referral.pair, referral.timeline.allocated_at) {
            for m in pair {
                first[m] = Some(first[m].map_or(at, |earlier| earlier.min(at)));
            }
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::super::plan::Programme;
    use super::super::timeline::cohort_completion;
    use super::*;
    use chrono::Datelike as _;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, 1).expect("a date")
    }

    fn programme(size: f64, seed: u64) -> Programme {
        Programme::generate(&crate::simulate::plan::test_options(size, seed))
    }

    #[test]
    fn every_pair_is_two_free_mentors_of_the_area_whom_no_rule_excludes() {
        let rules = safety::resolve(&safety::default_rules()).unwrap();
        for (size, seed) in [(0.05, 42), (0.1, 2018), (1.0, 7)] {
            let programme = programme(size, seed);
            let mut cases = vec![Vec::new(); programme.mentors.len()];
            for referral in &programme.referrals {
                let times = &referral.timeline;
                let Some(allocated) = times.allocated_at else {
                    assert_eq!(referral.pair, None);
                    continue;
                };
                let [a, b] = referral.pair.expect("a pair");
                assert_ne!(a, b);
                for m in [a, b] {
                    let mentor = &programme.mentors[m];
                    assert_eq!(mentor.role, MentorRole::Mentoring);
                    assert_eq!(mentor.area, referral.area);
                    assert!(
                        safety::excluded_by(
                            &rules,
                            &referral.perpetrator_of,
                            &mentor.lived_experience
                        )
                        .is_none()
                    );
                    cases[m].push((allocated, times.ended_at.expect("ended")));
                }
            }
            for (mentor, cases) in programme.mentors.iter().zip(&cases) {
                for (from, _) in cases {
                    assert!(load(cases, *from) <= mentor.capacity as usize, "{size}");
                }
            }
        }
    }

    #[test]
    fn mentors_are_trained_in_cohorts_before_their_first_client() {
        for (size, seed) in [(0.05, 42), (1.0, 7)] {
            let programme = programme(size, seed);
            let firsts = first_clients(&programme.referrals, programme.mentors.len());
            for (mentor, first) in programme.mentors.iter().zip(firsts) {
                let day = mentor.trained_on;
                assert_eq!(day, cohort_completion(day.year(), day.month()));
                assert_eq!(mentor.cohort, day.format("%Y-%m").to_string());
                assert!(day < today());
                match mentor.role {
                    MentorRole::Mentoring => {
                        let first = first.expect("a mentoring mentor has a client");
                        let wait = (first.date_naive() - day).num_days();
                        assert!(wait >= MIN_WAIT_DAYS as i64, "{wait}");
                        assert!(wait <= 365 + 31, "{wait}");
                    }
                    _ => assert_eq!(first, None),
                }
            }
        }
    }

    #[test]
    fn waits_for_a_first_client_follow_the_evaluations() {
        let programme = programme(1.0, 7);
        let waits = programme.intended().first_client_days;
        let within_two_months = waits.iter().filter(|d| **d <= 60).count() as f64;
        let share = within_two_months / waits.len() as f64;
        // 16 of the 21 who had a client had one within two months.
        assert!((0.62..0.9).contains(&share), "{share}");
        let median = crate::report::median_days(&waits).unwrap();
        assert!((25..=60).contains(&median), "{median}");
        assert!(
            waits.iter().any(|d| *d > 290),
            "a few waited most of a year"
        );
        // Most mentors of the full programme mentor; the rest wait or declined.
        let mentoring = programme
            .mentors
            .iter()
            .filter(|m| m.role == MentorRole::Mentoring)
            .count();
        assert_eq!(waits.len(), mentoring);
        assert!(mentoring * 2 > programme.mentors.len(), "{mentoring}");
    }
}
