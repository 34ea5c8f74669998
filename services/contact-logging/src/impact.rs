//! Impact: what the fall in demand after support saved, priced with the
//! agreed formula (`[contact_logging.impact]`: £70 per emergency call and
//! £57.50 per police staff hour by default, version `hiu-2019`).
//!
//! A version names one formula for good: the service records each version
//! with its values when it starts, and refuses to start when a version it
//! ran with before now carries other values, so a report's version always
//! says how it was priced.
//!
//! Per client, the figures in use are annualised (scaled to 12 months)
//! before and after, so a 12-month before window and a 6-month follow-up
//! compare fairly; the after figure is the longest follow-up recorded.
//! Money is whole pence. See docs/impact.md, which also explains the
//! regression-to-the-mean caveat every report states ([`CAVEAT`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, Utc};
use cpm_proto::v1::{
    CaseState, ClientImpact, ImpactFormula, ImpactReportRequest, ImpactReportResponse,
    ImpactTotals, ProgrammeCost, RecordProgrammeCostRequest,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_text, timestamp};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::CaseError;
use crate::demand::{DemandRow, current_figures, figure_to_proto};
use crate::domain::{parse_day, report_areas};
use crate::reports::csv_field;

/// The formula's version unless configured otherwise.
pub const DEFAULT_FORMULA_VERSION: &str = "hiu-2019";
/// The longest formula version, in characters.
pub const MAX_VERSION_CHARS: usize = 40;
/// The most one call or one staff hour may be priced at (£1,000,000).
pub const MAX_PENCE: i64 = 100_000_000;
/// The most one programme cost may be (£1,000,000,000).
pub const MAX_COST_PENCE: i64 = 100_000_000_000;
/// The longest programme cost note.
pub const MAX_NOTE: usize = 1000;

/// Stated by every impact report.
pub const CAVEAT: &str = "Regression to the mean: clients are referred when their demand is at \
its peak, and high demand often falls afterwards without any intervention. A fall from before \
to after support therefore overstates what support achieved; read the savings beside the \
comparison cohort (referrals not taken on), not as proof of cause.";

/// The agreed costing formula, as configuration. Change `version` whenever
/// a price changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Formula {
    pub version: String,
    pub pence_per_emergency_call: i64,
    pub pence_per_police_staff_hour: i64,
}

impl Default for Formula {
    fn default() -> Self {
        Self {
            version: DEFAULT_FORMULA_VERSION.to_owned(),
            pence_per_emergency_call: 7_000,
            pence_per_police_staff_hour: 5_750,
        }
    }
}

impl Formula {
    /// `version` is 1 to 40 printable ASCII characters; each price is more
    /// than 0 and at most £1,000,000. The problem names the field.
    pub fn validate(&self) -> Result<(), String> {
        let version = &self.version;
        if version.is_empty()
            || version.chars().count() > MAX_VERSION_CHARS
            || !version.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(format!(
                "impact.version must be 1 to {MAX_VERSION_CHARS} printable ASCII characters \
                 without spaces"
            ));
        }
        for (name, pence) in [
            ("pence_per_emergency_call", self.pence_per_emergency_call),
            (
                "pence_per_police_staff_hour",
                self.pence_per_police_staff_hour,
            ),
        ] {
            if !(1..=MAX_PENCE).contains(&pence) {
                return Err(format!("impact.{name} must be between 1 and {MAX_PENCE}"));
            }
        }
        Ok(())
    }

    /// The price of `calls` calls and `hours` staff hours, in whole pence.
    pub fn price(&self, calls: f64, hours: f64) -> i64 {
        (calls * self.pence_per_emergency_call as f64
            + hours * self.pence_per_police_staff_hour as f64)
            .round() as i64
    }

    fn to_proto(&self) -> ImpactFormula {
        ImpactFormula {
            version: self.version.clone(),
            pence_per_emergency_call: self.pence_per_emergency_call,
            pence_per_police_staff_hour: self.pence_per_police_staff_hour,
        }
    }
}

/// Records the configured formula under its version, or refuses to start
/// when that version was used before with other values.
pub async fn register_formula(pool: &sqlx::PgPool, formula: &Formula) -> anyhow::Result<()> {
    let json = serde_json::to_string(formula)?;
    let mut connection = pool.acquire().await?;
    sqlx::query!(
        "INSERT INTO contact_logging.impact_formula_version (version, formula) VALUES ($1, $2) \
         ON CONFLICT (version) DO NOTHING",
        formula.version,
        json
    )
    .execute(&mut *connection)
    .await?;
    let recorded = sqlx::query_scalar!(
        "SELECT formula FROM contact_logging.impact_formula_version WHERE version = $1",
        formula.version
    )
    .fetch_one(&mut *connection)
    .await?;
    let recorded: Formula = serde_json::from_str(&recorded)?;
    if &recorded != formula {
        anyhow::bail!(
            "contact_logging.impact: version {:?} was used before with other values \
             ({recorded:?}); give the changed formula a new version",
            formula.version
        );
    }
    Ok(())
}

/// `value` over `months` scaled to 12 months.
pub fn annualised(value: f64, months: i32) -> f64 {
    value * 12.0 / f64::from(months.max(1))
}

/// One client's demand before and after support, annualised, and its price.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub calls_before: f64,
    pub hours_before: f64,
    pub calls_after: f64,
    pub hours_after: f64,
    pub saving_pence: i64,
    pub never_called_again: bool,
}

/// The outcome of `before` and the follow-ups `after` (at least one): the
/// longest follow-up is the after figure; the client never called again
/// when every follow-up is zero.
pub fn outcome(before: &DemandRow, after: &[&DemandRow], formula: &Formula) -> Option<Outcome> {
    let latest = after
        .iter()
        .max_by_key(|row| (row.months, row.demand_window))?;
    let calls_before = annualised(before.calls() as f64, before.months);
    let hours_before = annualised(before.police_staff_hours, before.months);
    let calls_after = annualised(latest.calls() as f64, latest.months);
    let hours_after = annualised(latest.police_staff_hours, latest.months);
    Some(Outcome {
        calls_before,
        hours_before,
        calls_after,
        hours_after,
        saving_pence: formula.price(calls_before - calls_after, hours_before - hours_after),
        never_called_again: after
            .iter()
            .all(|row| row.calls() == 0 && row.police_staff_hours == 0.0),
    })
}

/// The sums of `outcomes` under `group`.
pub fn totals<'a>(group: &str, outcomes: impl IntoIterator<Item = &'a Outcome>) -> ImpactTotals {
    let mut totals = ImpactTotals {
        group: group.to_owned(),
        ..ImpactTotals::default()
    };
    for outcome in outcomes {
        totals.clients += 1;
        totals.calls_before += outcome.calls_before;
        totals.police_staff_hours_before += outcome.hours_before;
        totals.calls_after += outcome.calls_after;
        totals.police_staff_hours_after += outcome.hours_after;
        totals.saving_pence += outcome.saving_pence;
        totals.never_called_again += i32::from(outcome.never_called_again);
    }
    totals
}

/// Savings per pound of programme cost; `None` without a cost.
pub fn return_per_pound(saving_pence: i64, cost_pence: i64) -> Option<f64> {
    (cost_pence > 0).then(|| saving_pence as f64 / cost_pence as f64)
}

/// A valid impact report request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpactQuery {
    pub opened_from: Option<NaiveDate>,
    pub opened_to: Option<NaiveDate>,
    /// Lower-cased; `None` for every area.
    pub areas: Option<Vec<String>>,
}

impl ImpactQuery {
    pub fn parse(request: &ImpactReportRequest, caller: &Caller) -> Result<Self, CaseError> {
        let mut violations = FieldViolations::new();
        let opened_from = parse_day("opened_from", &request.opened_from, false, &mut violations);
        let opened_to = parse_day("opened_to", &request.opened_to, false, &mut violations);
        if let (Some(from), Some(to)) = (opened_from, opened_to)
            && to < from
        {
            violations.add("opened_to", "must not be before opened_from");
        }
        if !violations.is_empty() {
            return Err(CaseError::Invalid(violations));
        }
        Ok(Self {
            opened_from,
            opened_to,
            areas: report_areas(caller, &request.area)?,
        })
    }
}

/// A valid programme cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProgrammeCost {
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub cost_pence: i64,
    pub note: String,
}

impl NewProgrammeCost {
    pub fn parse(request: &RecordProgrammeCostRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let start = parse_day("period_start", &request.period_start, true, &mut violations);
        let end = parse_day("period_end", &request.period_end, true, &mut violations);
        if let (Some(start), Some(end)) = (start, end)
            && end < start
        {
            violations.add("period_end", "must not be before period_start");
        }
        if !(1..=MAX_COST_PENCE).contains(&request.cost_pence) {
            violations.add(
                "cost_pence",
                format!("must be between 1 and {MAX_COST_PENCE}"),
            );
        }
        check_text("note", &request.note, false, MAX_NOTE, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            period_start: start.expect("validated"),
            period_end: end.expect("validated"),
            cost_pence: request.cost_pence,
            note: request.note.clone(),
        })
    }
}

/// Records what the programme cost over a period.
pub async fn record_programme_cost(
    handle: &ServiceHandle,
    caller: &Caller,
    cost: &NewProgrammeCost,
) -> Result<ProgrammeCost, CaseError> {
    let mut connection = handle.pool().acquire().await?;
    let programme_cost_id = Uuid::now_v7();
    let recorded_at = Utc::now().trunc_subsecs(6);
    sqlx::query!(
        "INSERT INTO contact_logging.programme_cost (programme_cost_id, period_start, \
         period_end, cost_pence, note, recorded_by, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        programme_cost_id,
        cost.period_start,
        cost.period_end,
        cost.cost_pence,
        cost.note,
        caller.subject,
        recorded_at
    )
    .execute(&mut *connection)
    .await?;
    tracing::info!(%programme_cost_id, "programme cost recorded");
    Ok(ProgrammeCost {
        programme_cost_id: programme_cost_id.to_string(),
        period_start: cost.period_start.to_string(),
        period_end: cost.period_end.to_string(),
        cost_pence: cost.cost_pence,
        note: cost.note.clone(),
        recorded_by: caller.subject.clone(),
        recorded_at: Some(timestamp(recorded_at)),
    })
}

/// A referral the report prices: a discharged client or a comparison one.
struct Priced {
    referral_id: Uuid,
    area: String,
    since: DateTime<Utc>,
}

async fn discharged_clients(
    connection: &mut PgConnection,
    query: &ImpactQuery,
) -> Result<Vec<Priced>, sqlx::Error> {
    sqlx::query_as!(
        Priced,
        "SELECT referral_id, area, opened_at AS since FROM contact_logging.case_file \
         WHERE state = $1 AND ($2::text[] IS NULL OR lower(area) = ANY($2)) \
           AND ($3::date IS NULL OR opened_at >= $3::date) \
           AND ($4::date IS NULL OR opened_at < $4::date + 1) \
         ORDER BY opened_at, referral_id",
        CaseState::Discharged as i32,
        query.areas.as_deref(),
        query.opened_from,
        query.opened_to
    )
    .fetch_all(connection)
    .await
}

/// Referrals not taken on (and never discharged), by when they were referred.
async fn comparison_referrals(
    connection: &mut PgConnection,
    query: &ImpactQuery,
) -> Result<Vec<Priced>, sqlx::Error> {
    sqlx::query_as!(
        Priced,
        "SELECT r.referral_id, r.area, r.submitted_at AS since \
         FROM contact_logging.referral r \
         JOIN contact_logging.referral_not_taken_on n USING (referral_id) \
         WHERE NOT EXISTS (SELECT 1 FROM contact_logging.case_file c \
                           WHERE c.referral_id = r.referral_id AND c.state = $1) \
           AND ($2::text[] IS NULL OR lower(r.area) = ANY($2)) \
           AND ($3::date IS NULL OR r.submitted_at >= $3::date) \
           AND ($4::date IS NULL OR r.submitted_at < $4::date + 1) \
         ORDER BY r.submitted_at, r.referral_id",
        CaseState::Discharged as i32,
        query.areas.as_deref(),
        query.opened_from,
        query.opened_to
    )
    .fetch_all(connection)
    .await
}

/// The programme cost of every recorded period overlapping the report's.
async fn programme_cost(
    connection: &mut PgConnection,
    query: &ImpactQuery,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT COALESCE(sum(cost_pence), 0)::bigint AS \"cost!\" \
         FROM contact_logging.programme_cost \
         WHERE ($1::date IS NULL OR period_end >= $1) AND ($2::date IS NULL OR period_start <= $2)",
        query.opened_from,
        query.opened_to
    )
    .fetch_one(connection)
    .await
}

/// Each referral's figures in use: before and follow-ups.
fn figures_of(rows: Vec<DemandRow>) -> BTreeMap<Uuid, Vec<DemandRow>> {
    let mut by_referral: BTreeMap<Uuid, Vec<DemandRow>> = BTreeMap::new();
    for row in rows {
        by_referral.entry(row.referral_id).or_default().push(row);
    }
    by_referral
}

/// The outcome of one referral with its figures, `None` without both a
/// before and a follow-up figure.
fn priced_outcome<'a>(
    figures: &'a BTreeMap<Uuid, Vec<DemandRow>>,
    referral_id: Uuid,
    formula: &Formula,
) -> Option<(Outcome, &'a DemandRow, &'a DemandRow)> {
    let rows = figures.get(&referral_id)?;
    let before = rows
        .iter()
        .find(|row| row.window() == cpm_proto::v1::DemandWindow::BeforeSupport)?;
    let after: Vec<&DemandRow> = rows
        .iter()
        .filter(|row| row.window() != cpm_proto::v1::DemandWindow::BeforeSupport)
        .collect();
    let latest = *after
        .iter()
        .max_by_key(|row| (row.months, row.demand_window))?;
    Some((outcome(before, &after, formula)?, before, latest))
}

/// The impact report for `caller`.
pub async fn impact_report(
    handle: &ServiceHandle,
    formula: &Formula,
    query: &ImpactQuery,
) -> Result<ImpactReportResponse, CaseError> {
    let mut transaction = handle.begin().await?;
    let clients = discharged_clients(&mut transaction, query).await?;
    let comparison = comparison_referrals(&mut transaction, query).await?;
    let ids: Vec<Uuid> = clients
        .iter()
        .chain(&comparison)
        .map(|priced| priced.referral_id)
        .collect();
    let figures = figures_of(current_figures(&mut transaction, &ids).await?);
    // Only an admin's whole-programme report sets savings against the
    // programme's whole cost.
    let cost = match query.areas {
        None => programme_cost(&mut transaction, query).await?,
        Some(_) => 0,
    };
    transaction.commit().await?;

    let mut rows = Vec::new();
    let mut outcomes: Vec<(i32, String, Outcome)> = Vec::new();
    let mut without_figures = 0;
    for client in &clients {
        let Some((outcome, before, after)) = priced_outcome(&figures, client.referral_id, formula)
        else {
            without_figures += 1;
            continue;
        };
        let cohort_year = client.since.year();
        rows.push(ClientImpact {
            referral_id: client.referral_id.to_string(),
            area: client.area.clone(),
            cohort_year,
            calls_before: outcome.calls_before,
            police_staff_hours_before: outcome.hours_before,
            calls_after: outcome.calls_after,
            police_staff_hours_after: outcome.hours_after,
            saving_pence: outcome.saving_pence,
            never_called_again: outcome.never_called_again,
            before: Some(figure_to_proto(before)),
            after: Some(figure_to_proto(after)),
        });
        outcomes.push((cohort_year, client.area.clone(), outcome));
    }
    let comparison_outcomes: Vec<Outcome> = comparison
        .iter()
        .filter_map(|referral| priced_outcome(&figures, referral.referral_id, formula))
        .map(|(outcome, _, _)| outcome)
        .collect();

    let mut cohorts: BTreeMap<i32, Vec<&Outcome>> = BTreeMap::new();
    let mut areas: BTreeMap<String, Vec<&Outcome>> = BTreeMap::new();
    for (year, area, outcome) in &outcomes {
        cohorts.entry(*year).or_default().push(outcome);
        areas.entry(area.clone()).or_default().push(outcome);
    }
    let total = totals("all", outcomes.iter().map(|(_, _, outcome)| outcome));
    let return_per_pound = return_per_pound(total.saving_pence, cost);
    let csv = clients_csv(&rows);
    Ok(ImpactReportResponse {
        formula: Some(formula.to_proto()),
        by_cohort: cohorts
            .iter()
            .map(|(year, group)| totals(&year.to_string(), group.iter().copied()))
            .collect(),
        by_area: areas
            .iter()
            .map(|(area, group)| totals(area, group.iter().copied()))
            .collect(),
        total: Some(total),
        clients: rows,
        clients_without_figures: without_figures,
        comparison: Some(totals("comparison", &comparison_outcomes)),
        programme_cost_pence: cost,
        return_per_pound,
        caveat: CAVEAT.to_owned(),
        csv,
    })
}

/// One row per client, with who supplied each figure and when.
pub fn clients_csv(rows: &[ClientImpact]) -> String {
    let mut csv = String::from(
        "referral_id,area,cohort_year,calls_before,police_staff_hours_before,calls_after,\
         police_staff_hours_after,saving_pence,never_called_again,before_supplied_by,\
         before_supplied_on,after_supplied_by,after_supplied_on\n",
    );
    for row in rows {
        let supplier = |figure: &Option<cpm_proto::v1::DemandFigure>| {
            figure.as_ref().map_or((String::new(), String::new()), |f| {
                (csv_field(&f.supplied_by), f.supplied_on.clone())
            })
        };
        let (before_by, before_on) = supplier(&row.before);
        let (after_by, after_on) = supplier(&row.after);
        csv.push_str(&format!(
            "{},{},{},{:.2},{:.2},{:.2},{:.2},{},{},{},{},{},{}\n",
            row.referral_id,
            csv_field(&row.area),
            row.cohort_year,
            row.calls_before,
            row.police_staff_hours_before,
            row.calls_after,
            row.police_staff_hours_after,
            row.saving_pence,
            row.never_called_again,
            before_by,
            before_on,
            after_by,
            after_on
        ));
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_proto::v1::DemandWindow;

    fn figure(window: DemandWindow, months: i32, police_calls: i32, hours: f64) -> DemandRow {
        DemandRow {
            demand_figure_id: Uuid::now_v7(),
            referral_id: Uuid::nil(),
            demand_window: window as i32,
            months,
            police_calls,
            ambulance_calls: 0,
            nhs_111_calls: 0,
            other_calls: 0,
            police_staff_hours: hours,
            supplied_by: "Durham Constabulary data team".into(),
            supplied_on: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            recorded_by: "coordinator".into(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn the_default_formula_is_the_agreed_one() {
        let formula = Formula::default();
        assert_eq!(formula.version, "hiu-2019");
        assert_eq!(formula.price(1.0, 0.0), 7_000, "£70 per call");
        assert_eq!(formula.price(0.0, 1.0), 5_750, "£57.50 per staff hour");
        // The pilot: 355 calls and 3,213 hours before support.
        assert_eq!(formula.price(355.0, 3213.0), 20_959_750);
        assert!(formula.validate().is_ok());
    }

    #[test]
    fn a_formula_with_a_bad_version_or_price_is_refused_naming_it() {
        for (formula, named) in [
            (
                Formula {
                    version: String::new(),
                    ..Formula::default()
                },
                "impact.version",
            ),
            (
                Formula {
                    version: "hiu 2019".into(),
                    ..Formula::default()
                },
                "impact.version",
            ),
            (
                Formula {
                    pence_per_emergency_call: 0,
                    ..Formula::default()
                },
                "impact.pence_per_emergency_call",
            ),
            (
                Formula {
                    pence_per_police_staff_hour: MAX_PENCE + 1,
                    ..Formula::default()
                },
                "impact.pence_per_police_staff_hour",
            ),
        ] {
            let problem = formula.validate().unwrap_err();
            assert!(problem.starts_with(named), "{problem}");
        }
    }

    #[test]
    fn figures_are_annualised_so_a_six_month_follow_up_compares_with_a_year_before() {
        let before = figure(DemandWindow::BeforeSupport, 12, 40, 100.0);
        let after = figure(DemandWindow::FirstFollowUp, 6, 5, 10.0);
        let outcome = outcome(&before, &[&after], &Formula::default()).unwrap();
        assert_eq!(outcome.calls_after, 10.0);
        assert_eq!(outcome.hours_after, 20.0);
        // (40 - 10) calls × £70 + (100 - 20) hours × £57.50.
        assert_eq!(outcome.saving_pence, 30 * 7_000 + 80 * 5_750);
        assert!(!outcome.never_called_again);
    }

    #[test]
    fn the_longest_follow_up_is_the_after_figure_and_never_calling_again_needs_every_one_zero() {
        let before = figure(DemandWindow::BeforeSupport, 12, 12, 0.0);
        let six = figure(DemandWindow::FirstFollowUp, 6, 0, 0.0);
        let twelve = figure(DemandWindow::SecondFollowUp, 12, 0, 0.0);
        let outcome = outcome(&before, &[&twelve, &six], &Formula::default()).unwrap();
        assert_eq!(outcome.calls_after, 0.0);
        assert!(outcome.never_called_again);
        assert_eq!(outcome.saving_pence, 12 * 7_000);

        let called = figure(DemandWindow::FirstFollowUp, 6, 1, 0.0);
        let outcome = super::outcome(&before, &[&called, &twelve], &Formula::default()).unwrap();
        assert!(!outcome.never_called_again, "a call in the first follow-up");
        assert_eq!(
            outcome.calls_after, 0.0,
            "the 12-month window is the after figure"
        );
        assert_eq!(super::outcome(&before, &[], &Formula::default()), None);
    }

    #[test]
    fn demand_that_rose_is_a_negative_saving() {
        let before = figure(DemandWindow::BeforeSupport, 12, 2, 1.0);
        let after = figure(DemandWindow::SecondFollowUp, 12, 4, 1.0);
        let outcome = outcome(&before, &[&after], &Formula::default()).unwrap();
        assert_eq!(outcome.saving_pence, -14_000);
    }

    #[test]
    fn totals_sum_clients_and_the_return_is_savings_per_pound_of_cost() {
        let before = figure(DemandWindow::BeforeSupport, 12, 10, 0.0);
        let zero = figure(DemandWindow::FirstFollowUp, 6, 0, 0.0);
        let some = figure(DemandWindow::FirstFollowUp, 6, 2, 0.0);
        let a = outcome(&before, &[&zero], &Formula::default()).unwrap();
        let b = outcome(&before, &[&some], &Formula::default()).unwrap();
        let sum = totals("2026", [&a, &b]);
        assert_eq!(sum.group, "2026");
        assert_eq!(sum.clients, 2);
        assert_eq!(sum.never_called_again, 1);
        assert_eq!(sum.saving_pence, 10 * 7_000 + 6 * 7_000);
        // The evaluation's £2,860,910 saved against £193,000 spent over three years.
        let roi = return_per_pound(286_091_000, 19_300_000).unwrap();
        assert!((roi - 14.82).abs() < 0.01, "{roi}");
        assert_eq!(return_per_pound(1, 0), None);
    }

    #[test]
    fn a_programme_cost_needs_a_period_in_order_and_a_positive_sum() {
        let fields = |request: &RecordProgrammeCostRequest| -> Vec<String> {
            NewProgrammeCost::parse(request)
                .unwrap_err()
                .fields()
                .map(str::to_owned)
                .collect()
        };
        let bad = RecordProgrammeCostRequest {
            period_start: "2026-04-01".into(),
            period_end: "2026-03-31".into(),
            cost_pence: 0,
            note: "grant\u{1b}[31m".into(),
        };
        assert_eq!(fields(&bad), ["period_end", "cost_pence", "note"]);
        let missing = RecordProgrammeCostRequest::default();
        assert_eq!(
            fields(&missing),
            ["period_start", "period_end", "cost_pence"]
        );
        let good = NewProgrammeCost::parse(&RecordProgrammeCostRequest {
            period_start: "2026-04-01".into(),
            period_end: "2027-03-31".into(),
            cost_pence: 17_000_000,
            note: "PCC grant 2026-27".into(),
        })
        .unwrap();
        assert_eq!(good.cost_pence, 17_000_000);
    }

    #[test]
    fn the_clients_csv_quotes_supplied_text_and_keeps_one_row_per_client() {
        let row = ClientImpact {
            referral_id: "r-1".into(),
            area: "Darlington".into(),
            cohort_year: 2026,
            calls_before: 12.0,
            saving_pence: 84_000,
            never_called_again: true,
            before: Some(cpm_proto::v1::DemandFigure {
                supplied_by: "=HYPERLINK(\"x\"), data team".into(),
                supplied_on: "2026-01-01".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let csv = clients_csv(&[row]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("referral_id,area,cohort_year"));
        assert!(
            lines[1].contains("\"'=HYPERLINK(\"\"x\"\"), data team\",2026-01-01"),
            "{}",
            lines[1]
        );
        assert!(lines[1].starts_with("r-1,Darlington,2026,12.00,"));
    }
}
