//! The age of an assessment: how many working days it has waited for its
//! first check, and whether that passes the first-assessment target. The
//! count is in working days because the target is set in them, so a weekend
//! never counts against the coordinators.

use chrono::{DateTime, Datelike, NaiveDate, Utc, Weekday};

/// Working days (Monday to Friday) after `from` up to and including `to`:
/// 0 on the same day, 1 from a Friday to the next Monday. Public holidays
/// are not known to the system and count as working days.
pub fn working_days_between(from: NaiveDate, to: NaiveDate) -> i64 {
    if to <= from {
        return 0;
    }
    let days = (to - from).num_days();
    let (full_weeks, remainder) = (days / 7, days % 7);
    // Every full week holds five working days; the days left over follow
    // `from` directly.
    let mut day = from.weekday();
    let mut extra = 0;
    for _ in 0..remainder {
        day = day.succ();
        if is_working_day(day) {
            extra += 1;
        }
    }
    full_weeks * 5 + extra
}

/// How long an assessment has waited for its first check, against the
/// target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age {
    pub working_days: i64,
    pub overdue: bool,
}

/// The first-assessment target: so many working days from the referral to
/// the first check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgeRule {
    pub target_working_days: i64,
}

impl AgeRule {
    /// Counts up to the first check once there is one, else up to `now`;
    /// overdue once the count passes the target.
    pub fn age(
        &self,
        referred_at: DateTime<Utc>,
        first_checked_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Age {
        let until = first_checked_at.unwrap_or(now);
        let working_days = working_days_between(referred_at.date_naive(), until.date_naive());
        Age {
            working_days,
            overdue: working_days > self.target_working_days,
        }
    }
}

/// Monday to Friday.
fn is_working_day(day: Weekday) -> bool {
    !matches!(day, Weekday::Sat | Weekday::Sun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: i32, month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, month, day).unwrap()
    }

    /// Counting one day at a time, as the rule reads.
    fn working_days_by_hand(from: NaiveDate, to: NaiveDate) -> i64 {
        from.iter_days()
            .skip(1)
            .take_while(|day| *day <= to)
            .filter(|day| is_working_day(day.weekday()))
            .count() as i64
    }

    #[test]
    fn working_days_skip_weekends() {
        // 2024-06-03 is a Monday.
        let monday = date(2024, 6, 3);
        assert_eq!(working_days_between(monday, monday), 0);
        assert_eq!(working_days_between(monday, date(2024, 6, 7)), 4);
        assert_eq!(working_days_between(monday, date(2024, 6, 10)), 5);
        assert_eq!(working_days_between(date(2024, 6, 7), date(2024, 6, 10)), 1);
        assert_eq!(working_days_between(date(2024, 6, 8), date(2024, 6, 9)), 0);
        assert_eq!(working_days_between(date(2024, 6, 8), date(2024, 6, 10)), 1);
        assert_eq!(working_days_between(date(2024, 6, 10), monday), 0);
        for start in 0..14 {
            let from = monday + chrono::Duration::days(start);
            for length in 0..40 {
                let to = from + chrono::Duration::days(length);
                assert_eq!(
                    working_days_between(from, to),
                    working_days_by_hand(from, to),
                    "{from} to {to}"
                );
            }
        }
    }

    #[test]
    fn an_assessment_is_overdue_after_the_target_without_a_check() {
        let rule = AgeRule {
            target_working_days: 5,
        };
        let referred = date(2024, 6, 3).and_hms_opt(9, 0, 0).unwrap().and_utc();
        let day = |n: i64| referred + chrono::Duration::days(n);
        // Five working days later (next Monday) it is due, not yet overdue.
        assert_eq!(
            rule.age(referred, None, day(7)),
            Age {
                working_days: 5,
                overdue: false
            }
        );
        assert_eq!(
            rule.age(referred, None, day(8)),
            Age {
                working_days: 6,
                overdue: true
            }
        );
        // A first check on the Friday stops the clock.
        assert_eq!(
            rule.age(referred, Some(day(4)), day(30)),
            Age {
                working_days: 4,
                overdue: false
            }
        );
        // A late first check stays late.
        assert!(rule.age(referred, Some(day(9)), day(30)).overdue);
    }
}
