//! Waits you can quote: how long a client joining an area's queue now is
//! likely to wait for a mentor pair, as a range.
//!
//! A client's pair comes from the free places of the area's mentors or,
//! once those are taken by the clients ahead, from the pairs that
//! discharges and ended engagements free. Both arrive at the rates the area
//! has shown over a recent window (allocations confirmed, pairs freed, per
//! day), so the wait of the `n`-th client in the queue is modelled as the
//! time to the `n`-th event of a Poisson process at that rate: an Erlang
//! distribution. With `f` free pairs, the client is allocated at the
//! allocation rate when `n ≤ f`; otherwise they wait for `n − f` pairs to be
//! freed, at the rate pairs are freed. The range quoted is that
//! distribution's 50th and 90th percentiles, in whole days rounded up.
//!
//! Where an area has too little recent history (no event of the kind in
//! the window) the programme's configured rates stand in, and the answer
//! says so ([`Basis::ProgrammeDefault`]).
//!
//! The client's needs narrow the mentors who may take them: a client who
//! committed a crime a safety exclusion names never gets a mentor the rule
//! excludes. Only the free places of the mentors left count, and pairs are
//! freed for this client at the area's rate times the share of the area's
//! mentor capacity that may take them.

use std::sync::Arc;

use cpm_proto::v1::{CrimeType, LivedExperience};

use crate::db::{self, MentorPlaces};
use crate::safety::{self, Exclusion};

/// What the estimate is computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WaitInputs {
    /// Clients already waiting in the area, ahead of the one asking about.
    pub queue_ahead: i64,
    /// Places free with proposable mentors of the area.
    pub free_places: i64,
    /// Allocations confirmed in the area over the window.
    pub allocations: i64,
    /// Allocations that ended (pairs freed) in the area over the window.
    pub pairs_freed: i64,
    pub window_days: f64,
    /// The share (0–1) of the area's mentor capacity that may take this
    /// client: 1 unless a safety exclusion rules mentors out.
    pub eligible_share: f64,
}

/// The programme's rates for an area without recent history, per week.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DefaultRates {
    pub allocations_per_week: f64,
    pub pairs_freed_per_week: f64,
}

/// Where the rates came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    Observed,
    ProgrammeDefault,
}

/// A quoted wait.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WaitEstimate {
    pub p50_days: i32,
    pub p90_days: i32,
    pub allocations_per_week: f64,
    pub pairs_freed_per_week: f64,
    pub basis: Basis,
}

/// Mentors per client: every client has a pair.
const MENTORS_PER_CLIENT: i64 = 2;
/// A quote beyond this is not a quote; it is capped (about five years).
const MAX_DAYS: f64 = 1_826.0;

/// The wait range for the next client to join the queue described by `inputs`.
pub fn estimate(inputs: &WaitInputs, defaults: &DefaultRates) -> WaitEstimate {
    let window = inputs.window_days.max(1.0);
    let mut basis = Basis::Observed;
    let mut per_day = |observed: i64, default_per_week: f64| {
        if observed > 0 {
            observed as f64 / window
        } else {
            basis = Basis::ProgrammeDefault;
            default_per_week / 7.0
        }
    };
    let allocation_rate = per_day(inputs.allocations, defaults.allocations_per_week);
    let freeing_rate = per_day(inputs.pairs_freed, defaults.pairs_freed_per_week)
        * inputs.eligible_share.clamp(0.0, 1.0);
    let position = inputs.queue_ahead.max(0) + 1;
    let free_pairs = inputs.free_places.max(0) / MENTORS_PER_CLIENT;
    let (events, rate) = if position <= free_pairs {
        (position, allocation_rate)
    } else {
        (position - free_pairs, freeing_rate)
    };
    let days = |p: f64| {
        let value = erlang_quantile(events as u32, rate, p);
        value.ceil().min(MAX_DAYS) as i32
    };
    WaitEstimate {
        p50_days: days(0.5),
        p90_days: days(0.9),
        allocations_per_week: allocation_rate * 7.0,
        pairs_freed_per_week: freeing_rate * 7.0,
        basis,
    }
}

/// The load a quote is computed from, as EstimateWait shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AreaLoad {
    /// Clients already waiting in the area: the queue a new client joins.
    pub clients_waiting: i64,
    /// Places free with the area's proposable mentors who may take the client.
    pub free_mentor_places: i64,
    /// See [`WaitInputs::eligible_share`].
    pub eligible_share: f64,
}

/// Quotes waits under the programme's configuration: the recent window,
/// the rates standing in where history is thin, and the safety exclusions.
#[derive(Clone, Debug)]
pub struct Quoter {
    window_days: u32,
    defaults: DefaultRates,
    exclusions: Arc<Vec<Exclusion>>,
}

impl Quoter {
    /// The quoter of `config`, whose exclusions were validated at start.
    pub fn new(config: &crate::Config) -> Self {
        Self {
            window_days: config.wait_window_days,
            defaults: config.default_rates(),
            exclusions: Arc::new(safety::resolve(&config.safety_exclusions).unwrap_or_default()),
        }
    }

    /// The wait range of a client who committed `perpetrator_of` joining
    /// `area`'s queue now (leaving `excluded_referral`, the client
    /// themselves, out of the queue ahead), and the load it came from.
    pub async fn quote(
        &self,
        connection: &mut sqlx::PgConnection,
        area: &str,
        perpetrator_of: &[CrimeType],
        excluded_referral: Option<uuid::Uuid>,
    ) -> Result<(AreaLoad, WaitEstimate), sqlx::Error> {
        let window = i32::try_from(self.window_days).unwrap_or(i32::MAX);
        let history = db::area_history(connection, area, excluded_referral, window).await?;
        let places = db::area_places(connection, area).await?;
        let load = eligible_load(&places, &self.exclusions, perpetrator_of, &history);
        let estimate = estimate(
            &WaitInputs {
                queue_ahead: history.clients_waiting,
                free_places: load.free_mentor_places,
                allocations: history.allocations,
                pairs_freed: history.pairs_freed,
                window_days: f64::from(self.window_days),
                eligible_share: load.eligible_share,
            },
            &self.defaults,
        );
        Ok((load, estimate))
    }
}

/// Publishes `matching.area_wait_quoted` for each of `areas`: the range a
/// client joining its queue now would be quoted (needs aside), so referral
/// intake can acknowledge a referral with its area's current wait.
pub async fn publish_area_waits(
    handle: &cpm_runtime::bus::ServiceHandle,
    quoter: &Quoter,
    areas: &[String],
) -> Result<usize, sqlx::Error> {
    let mut transaction = handle.begin().await?;
    let now = chrono::Utc::now();
    for area in areas {
        let (_, estimate) = quoter.quote(&mut transaction, area, &[], None).await?;
        cpm_runtime::bus::outbox::enqueue(
            &mut transaction,
            crate::NAME,
            &cpm_proto::v1::AreaWaitQuoted {
                area: area.clone(),
                p50_days: estimate.p50_days,
                p90_days: estimate.p90_days,
                quoted_at: Some(cpm_runtime::grpc::values::timestamp(now)),
            },
        )
        .await?;
    }
    transaction.commit().await?;
    Ok(areas.len())
}

/// The free places and capacity share of the mentors in `places` whom no
/// exclusion rules out for a client who committed `perpetrator_of`. An area
/// without mentors yet counts as wholly eligible: nobody is excluded.
fn eligible_load(
    places: &[MentorPlaces],
    exclusions: &[Exclusion],
    perpetrator_of: &[CrimeType],
    history: &db::AreaHistory,
) -> AreaLoad {
    let (mut capacity, mut eligible_capacity, mut free) = (0_i64, 0_i64, 0_i64);
    for mentor in places {
        capacity += i64::from(mentor.capacity.max(0));
        let experience: Vec<LivedExperience> = mentor
            .lived_experience
            .iter()
            .filter_map(|value| LivedExperience::try_from(*value).ok())
            .collect();
        if safety::excluded_by(exclusions, perpetrator_of, &experience).is_none() {
            eligible_capacity += i64::from(mentor.capacity.max(0));
            free += i64::from(mentor.free_places.max(0));
        }
    }
    AreaLoad {
        clients_waiting: history.clients_waiting,
        free_mentor_places: free,
        eligible_share: if capacity == 0 {
            1.0
        } else {
            eligible_capacity as f64 / capacity as f64
        },
    }
}

/// P(T ≤ t) for the time to the `k`-th event at `rate` per day:
/// 1 − Σ_{i<k} e^{−rt} (rt)^i / i!, summed in logs so large `k` stays exact.
fn erlang_cdf(k: u32, rate: f64, t: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    let x = rate * t;
    let mut log_term = -x; // i = 0
    let mut tail = 0.0;
    for i in 0..k {
        if i > 0 {
            log_term += x.ln() - f64::from(i).ln();
        }
        tail += log_term.exp();
    }
    (1.0 - tail).clamp(0.0, 1.0)
}

/// The `p`-quantile of that time, in days, found by bisection; the cap
/// when the rate is zero.
fn erlang_quantile(k: u32, rate: f64, p: f64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    if rate <= 0.0 || !rate.is_finite() {
        return MAX_DAYS;
    }
    let (mut low, mut high) = (0.0, MAX_DAYS);
    if erlang_cdf(k, rate, high) < p {
        return MAX_DAYS;
    }
    for _ in 0..60 {
        let mid = (low + high) / 2.0;
        if erlang_cdf(k, rate, mid) < p {
            low = mid;
        } else {
            high = mid;
        }
    }
    high
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: DefaultRates = DefaultRates {
        allocations_per_week: 1.0,
        pairs_freed_per_week: 0.5,
    };

    fn inputs(queue_ahead: i64, free_places: i64, allocations: i64, freed: i64) -> WaitInputs {
        WaitInputs {
            queue_ahead,
            free_places,
            allocations,
            pairs_freed: freed,
            window_days: 90.0,
            eligible_share: 1.0,
        }
    }

    #[test]
    fn the_first_event_at_rate_one_a_day_is_exponential() {
        // Median ln 2, 90th percentile ln 10.
        assert!((erlang_quantile(1, 1.0, 0.5) - 2f64.ln()).abs() < 1e-9);
        assert!((erlang_quantile(1, 1.0, 0.9) - 10f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn the_erlang_median_is_close_to_its_mean_for_many_events() {
        // Mean k/rate = 500 days; the median sits just below it.
        let median = erlang_quantile(250, 0.5, 0.5);
        assert!((497.0..500.0).contains(&median), "{median}");
    }

    #[test]
    fn a_free_pair_means_the_allocation_rate_decides() {
        // 18 allocations in 90 days: 0.2 a day; first in the queue.
        let estimate = estimate(&inputs(0, 4, 18, 9), &DEFAULTS);
        assert_eq!(estimate.basis, Basis::Observed);
        assert_eq!(estimate.p50_days, 4, "ln 2 / 0.2 = 3.47");
        assert_eq!(estimate.p90_days, 12, "ln 10 / 0.2 = 11.5");
        assert!((estimate.allocations_per_week - 1.4).abs() < 1e-9);
    }

    #[test]
    fn behind_the_free_pairs_the_wait_is_for_pairs_to_be_freed() {
        // Two free pairs, five ahead: the sixth client waits for four pairs
        // freed at 9 / 90 = 0.1 a day: median ≈ 36.7 days.
        let estimate = estimate(&inputs(5, 4, 18, 9), &DEFAULTS);
        assert_eq!(estimate.p50_days, 37);
        assert!(estimate.p90_days > estimate.p50_days);
        let longer = super::estimate(&inputs(10, 4, 18, 9), &DEFAULTS);
        assert!(
            longer.p50_days > estimate.p50_days,
            "a longer queue waits longer"
        );
        let faster = super::estimate(&inputs(5, 4, 18, 18), &DEFAULTS);
        assert!(
            faster.p50_days < estimate.p50_days,
            "more discharges, shorter waits"
        );
    }

    #[test]
    fn an_area_without_history_uses_the_programme_rates_and_says_so() {
        let estimate = estimate(&inputs(0, 0, 0, 0), &DEFAULTS);
        assert_eq!(estimate.basis, Basis::ProgrammeDefault);
        // One pair to be freed at 0.5 a week: median 7 ln 2 / 0.5 = 9.7 days.
        assert_eq!(estimate.p50_days, 10);
        assert!((estimate.pairs_freed_per_week - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_zero_rate_quotes_the_cap_rather_than_nothing() {
        let none = DefaultRates {
            allocations_per_week: 0.0,
            pairs_freed_per_week: 0.0,
        };
        let estimate = estimate(&inputs(3, 0, 0, 0), &none);
        assert_eq!(estimate.p50_days, MAX_DAYS as i32);
        assert_eq!(estimate.p90_days, MAX_DAYS as i32);
    }

    #[test]
    fn mentors_a_safety_rule_excludes_neither_offer_places_nor_free_pairs() {
        let rules = safety::resolve(&safety::default_rules()).unwrap();
        let mentor = |experience: LivedExperience, capacity, free_places| MentorPlaces {
            lived_experience: vec![experience as i32],
            capacity,
            free_places,
        };
        let places = [
            mentor(LivedExperience::SexualOffenceVictim, 2, 2),
            mentor(LivedExperience::Homelessness, 3, 1),
            mentor(LivedExperience::Homelessness, 1, 1),
        ];
        let history = db::AreaHistory::default();
        let anyone = eligible_load(&places, &rules, &[CrimeType::Theft], &history);
        assert_eq!(anyone.free_mentor_places, 4);
        assert!((anyone.eligible_share - 1.0).abs() < 1e-9);
        let offender = eligible_load(&places, &rules, &[CrimeType::Rape], &history);
        assert_eq!(offender.free_mentor_places, 2);
        assert!((offender.eligible_share - 4.0 / 6.0).abs() < 1e-9);
        assert!(
            (eligible_load(&[], &rules, &[CrimeType::Rape], &history).eligible_share - 1.0).abs()
                < 1e-9
        );
    }

    #[test]
    fn fewer_eligible_mentors_mean_pairs_are_freed_for_the_client_more_slowly() {
        let everyone = estimate(&inputs(5, 0, 18, 9), &DEFAULTS);
        let half = estimate(
            &WaitInputs {
                eligible_share: 0.5,
                ..inputs(5, 0, 18, 9)
            },
            &DEFAULTS,
        );
        assert!(
            half.p50_days > everyone.p50_days,
            "{half:?} vs {everyone:?}"
        );
        assert!((half.pairs_freed_per_week - everyone.pairs_freed_per_week / 2.0).abs() < 1e-9);
    }
}
