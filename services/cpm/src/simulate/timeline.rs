//! When each step of a planned referral happens, so the replay can send
//! the platform's development clock the programme's own times: a referral
//! in its programme year, checks and a decision days later, a pair of
//! mentors weeks after that, contacts tapering over an engagement of weeks
//! to about 19 months, discharge, and the follow-up demand figures a year
//! after support ended.
//!
//! Programme year 1 is the calendar year nine years before today, so that
//! every engagement and its twelve-month follow-up window have ended by
//! today: the platform refuses follow-up figures before their window passed
//! and any time in the future.

use chrono::{DateTime, Datelike as _, Days, Months, NaiveDate, TimeDelta, Utc, Weekday};
use rand::Rng as _;
use rand::rngs::StdRng;

/// The months the follow-up figures cover: the plan's after-demand is a
/// year's (the second follow-up window, 12 months by default).
pub const FOLLOW_UP_MONTHS: u32 = 12;

/// The longest engagement, in days (the evaluation's longest was 19 months).
const LONGEST_ENGAGEMENT_DAYS: f64 = 580.0;

/// The times of one referral's steps; those it never reaches are `None` or empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    pub referred_at: DateTime<Utc>,
    /// The first check; later checks follow an hour apart.
    pub first_check_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    /// The pair of mentors confirmed (the case file opens then).
    pub allocated_at: Option<DateTime<Utc>>,
    /// One time per planned contact, in order.
    pub contacts_at: Vec<DateTime<Utc>>,
    /// Discharged, or ended by a re-assessment.
    pub ended_at: Option<DateTime<Utc>>,
    /// When the follow-up demand figures are supplied (supported clients).
    pub follow_up_on: Option<NaiveDate>,
}

/// The calendar year programme year `year` (1 to 4) falls in.
pub fn calendar_year(today: NaiveDate, year: u8) -> i32 {
    today.year() - 9 + i32::from(year)
}

/// A time on `day` within working hours.
fn working_time(rng: &mut StdRng, day: NaiveDate) -> DateTime<Utc> {
    let seconds = rng.random_range(9 * 3600..17 * 3600);
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc() + TimeDelta::seconds(seconds)
}

fn days(rng: &mut StdRng, low: i64, high: i64) -> TimeDelta {
    TimeDelta::seconds(rng.random_range(low * 86_400..=high * 86_400))
}

/// Draws the times of a referral of programme `year` with `contacts`
/// contacts; `supported` and `engaged` say how far it gets (engaged: a
/// pair was allocated, whether or not support ended in discharge).
pub fn draw(
    rng: &mut StdRng,
    today: NaiveDate,
    year: u8,
    engaged: bool,
    supported: bool,
    contacts: usize,
) -> Timeline {
    let first_day = NaiveDate::from_ymd_opt(calendar_year(today, year), 1, 1).expect("a date");
    let day = first_day + Days::new(rng.random_range(0..365));
    let referred_at = working_time(rng, day);
    let first_check_at = referred_at + days(rng, 1, 10);
    let decided_at = first_check_at + days(rng, 1, 14);
    let mut timeline = Timeline {
        referred_at,
        first_check_at,
        decided_at,
        allocated_at: None,
        contacts_at: Vec::new(),
        ended_at: None,
        follow_up_on: None,
    };
    if !engaged {
        return timeline;
    }
    let allocated_at = decided_at + days(rng, 1, 60);
    // Heavier clients stay longer: about two days a contact, so the
    // evaluation's 200+ contacts run past a year and most end within six months.
    let engagement_days = if supported {
        (20.0 + 2.1 * contacts as f64 * rng.random_range(0.8..1.2)).min(LONGEST_ENGAGEMENT_DAYS)
    } else {
        rng.random_range(14.0..90.0)
    };
    let engagement = TimeDelta::seconds((engagement_days * 86_400.0) as i64);
    let first_visit = allocated_at + days(rng, 1, 7);
    let span = (allocated_at + engagement - first_visit).max(TimeDelta::days(1));
    // Early visits close together, tapering (position^1.6 of the span).
    let last = contacts.saturating_sub(1).max(1) as f64;
    timeline.contacts_at = (0..contacts)
        .map(|n| {
            let position = (n as f64 / last).powf(1.6);
            first_visit + TimeDelta::seconds((span.num_seconds() as f64 * position) as i64)
        })
        .collect();
    let last_contact = timeline.contacts_at.last().copied().unwrap_or(first_visit);
    let ended_at = last_contact + days(rng, 1, 14);
    timeline.allocated_at = Some(allocated_at);
    timeline.ended_at = Some(ended_at);
    if supported {
        timeline.follow_up_on = Some(follow_up_after(ended_at));
    }
    timeline
}

/// When the figures for the twelve months after support ended at `ended`
/// (a discharge, a decision not to take the referral on, an engagement
/// ended) are supplied: a week after that window closed.
pub fn follow_up_after(ended: DateTime<Utc>) -> NaiveDate {
    ended.date_naive() + Months::new(FOLLOW_UP_MONTHS) + Days::new(7)
}

/// The day the training cohort of `year`-`month` completes: the month's
/// last Saturday (two full days end on one; five evenings by then).
pub fn cohort_completion(year: i32, month: u32) -> NaiveDate {
    let next = NaiveDate::from_ymd_opt(year, month, 1).expect("a month") + Months::new(1);
    let last = next.pred_opt().expect("a day before");
    let back =
        (last.weekday().num_days_from_monday() + 7 - Weekday::Sat.num_days_from_monday()) % 7;
    last - Days::new(u64::from(back))
}

/// The monthly cohort completing nearest to `target` and no later than
/// `latest` (which must not be before `target`).
pub fn nearest_cohort(target: NaiveDate, latest: NaiveDate) -> NaiveDate {
    let month = NaiveDate::from_ymd_opt(target.year(), target.month(), 1).expect("a month");
    [month - Months::new(1), month, month + Months::new(1)]
        .into_iter()
        .map(|m| cohort_completion(m.year(), m.month()))
        .filter(|day| *day <= latest)
        .min_by_key(|day| (*day - target).num_days().abs())
        .expect("the cohort of the month before `target` completes before it")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn every_step_follows_the_last_and_the_follow_up_is_past_by_today() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 2).expect("a date");
        let mut rng = StdRng::seed_from_u64(3);
        for year in 1..=4 {
            for contacts in [3, 31, 120, 266] {
                let t = draw(&mut rng, today, year, true, true, contacts);
                assert_eq!(t.referred_at.year(), calendar_year(today, year));
                assert!(t.referred_at < t.first_check_at && t.first_check_at < t.decided_at);
                let allocated = t.allocated_at.expect("allocated");
                assert!(t.decided_at < allocated);
                assert_eq!(t.contacts_at.len(), contacts);
                assert!(t.contacts_at.windows(2).all(|w| w[0] <= w[1]));
                assert!(allocated < t.contacts_at[0]);
                let ended = t.ended_at.expect("ended");
                assert!(*t.contacts_at.last().expect("contacts") < ended);
                assert!((ended - allocated).num_days() <= 600);
                assert!(t.follow_up_on.expect("a follow-up") < today);
            }
        }
    }

    #[test]
    fn a_referral_not_taken_on_stops_at_the_decision() {
        let today = NaiveDate::from_ymd_opt(2026, 5, 1).expect("a date");
        let t = draw(&mut StdRng::seed_from_u64(1), today, 2, false, false, 0);
        assert!(t.allocated_at.is_none() && t.ended_at.is_none() && t.contacts_at.is_empty());
        assert!(t.follow_up_on.is_none());
    }

    #[test]
    fn a_cohort_completes_on_its_months_last_saturday_and_the_nearest_is_never_late() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a date");
        assert_eq!(cohort_completion(2026, 12), day(2026, 12, 26));
        assert_eq!(cohort_completion(2026, 10), day(2026, 10, 31));
        assert_eq!(cohort_completion(2027, 2), day(2027, 2, 27));
        // Nearest either side of the target...
        assert_eq!(
            nearest_cohort(day(2026, 11, 2), day(2027, 1, 1)),
            day(2026, 10, 31)
        );
        assert_eq!(
            nearest_cohort(day(2026, 11, 20), day(2027, 1, 1)),
            day(2026, 11, 28)
        );
        // ...but never after `latest`.
        assert_eq!(
            nearest_cohort(day(2026, 11, 20), day(2026, 11, 21)),
            day(2026, 10, 31)
        );
        assert_eq!(
            nearest_cohort(day(2026, 11, 29), day(2026, 12, 30)),
            day(2026, 11, 28)
        );
    }

    #[test]
    fn heavy_clients_are_supported_for_longer() {
        let today = NaiveDate::from_ymd_opt(2026, 5, 1).expect("a date");
        let mut rng = StdRng::seed_from_u64(9);
        let length = |t: &Timeline| (t.ended_at.unwrap() - t.allocated_at.unwrap()).num_days();
        let light = draw(&mut rng, today, 1, true, true, 10);
        let heavy = draw(&mut rng, today, 1, true, true, 250);
        assert!(length(&light) < 183, "{}", length(&light));
        assert!(length(&heavy) > 365, "{}", length(&heavy));
    }
}
