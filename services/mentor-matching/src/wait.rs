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
    let freeing_rate = per_day(inputs.pairs_freed, defaults.pairs_freed_per_week);
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
}
