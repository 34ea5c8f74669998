//! Board reports on contacts: contacts per client (mean, max and the
//! evaluation's buckets ≤49 / 50–99 / 100–199 / 200+), minutes per
//! activity, engagement length, and mentors whose open case files had no
//! contact logged for a while (30 days by default). Each report is figures,
//! the same figures as CSV (`measure,category,value`), and a hand-written
//! SVG bar chart of the contacts-per-client buckets.
//!
//! Coordinators see the case files of their areas, admins every one. A
//! "client" is a case file; engagement runs from opening to discharge or
//! closure (to now while open).

use chrono::{DateTime, TimeDelta, Utc};
use cpm_proto::v1::{
    ActivityMinutes, CaseState, ContactActivity, ContactsPerClient, ContactsReportRequest,
    ContactsReportResponse, EngagementLength, QuietMentor,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::timestamp;
use sqlx::PgConnection;

use crate::commands::CaseError;
use crate::domain::report_areas;

/// Mentors are quiet after this many days without a contact unless asked.
pub const DEFAULT_QUIET_DAYS: i32 = 30;
/// The longest quiet period a report may ask for.
pub const MAX_QUIET_DAYS: i32 = 366;
/// Days in the months engagement length is bucketed by.
const SIX_MONTHS_DAYS: i64 = 183;
const TWELVE_MONTHS_DAYS: i64 = 365;

/// A valid contacts report request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactsQuery {
    /// Lower-cased; `None` for every area.
    pub areas: Option<Vec<String>>,
    pub quiet_days: i32,
}

impl ContactsQuery {
    pub fn parse(request: &ContactsReportRequest, caller: &Caller) -> Result<Self, CaseError> {
        let mut violations = FieldViolations::new();
        let quiet_days = match request.quiet_days {
            0 => DEFAULT_QUIET_DAYS,
            days if (1..=MAX_QUIET_DAYS).contains(&days) => days,
            _ => {
                violations.add(
                    "quiet_days",
                    format!("must be between 1 and {MAX_QUIET_DAYS}, or 0 for 30"),
                );
                0
            }
        };
        if !violations.is_empty() {
            return Err(CaseError::Invalid(violations));
        }
        Ok(Self {
            areas: report_areas(caller, &request.area)?,
            quiet_days,
        })
    }
}

/// Contacts per client from each case file's count.
pub fn contacts_per_client(counts: &[i64]) -> ContactsPerClient {
    let clip = |value: usize| i32::try_from(value).unwrap_or(i32::MAX);
    let within = |range: std::ops::RangeInclusive<i64>| {
        clip(counts.iter().filter(|count| range.contains(count)).count())
    };
    let total: i64 = counts.iter().sum();
    ContactsPerClient {
        clients: clip(counts.len()),
        mean: if counts.is_empty() {
            0.0
        } else {
            total as f64 / counts.len() as f64
        },
        max: counts
            .iter()
            .max()
            .map_or(0, |max| i32::try_from(*max).unwrap_or(i32::MAX)),
        up_to_49: within(0..=49),
        from_50_to_99: within(50..=99),
        from_100_to_199: within(100..=199),
        from_200: within(200..=i64::MAX),
    }
}

/// Engagement length from each case file's days.
pub fn engagement_length(days: &[i64]) -> EngagementLength {
    let clip = |value: usize| i32::try_from(value).unwrap_or(i32::MAX);
    let count = |keep: &dyn Fn(i64) -> bool| clip(days.iter().filter(|day| keep(**day)).count());
    EngagementLength {
        case_files: clip(days.len()),
        mean_days: if days.is_empty() {
            0.0
        } else {
            days.iter().sum::<i64>() as f64 / days.len() as f64
        },
        max_days: days
            .iter()
            .max()
            .map_or(0, |max| i32::try_from(*max).unwrap_or(i32::MAX)),
        under_6_months: count(&|day| day < SIX_MONTHS_DAYS),
        from_6_to_12_months: count(&|day| (SIX_MONTHS_DAYS..=TWELVE_MONTHS_DAYS).contains(&day)),
        over_12_months: count(&|day| day > TWELVE_MONTHS_DAYS),
    }
}

/// Every activity in enum order, with its contacts and minutes (zero when none).
pub fn minutes_per_activity(rows: &[(i32, i64, i64)]) -> Vec<ActivityMinutes> {
    (1..=9)
        .filter_map(|value| ContactActivity::try_from(value).ok())
        .map(|activity| {
            let (contacts, minutes) = rows
                .iter()
                .filter(|(value, _, _)| *value == activity as i32)
                .fold((0, 0), |(contacts, minutes), (_, c, m)| {
                    (contacts + c, minutes + m)
                });
            ActivityMinutes {
                activity: activity as i32,
                contacts: i32::try_from(contacts).unwrap_or(i32::MAX),
                minutes,
            }
        })
        .collect()
}

/// A CSV field: quoted when it holds a comma, quote or line break, and
/// prefixed with `'` when a spreadsheet would read it as a formula.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// The report's figures as `measure,category,value` rows.
pub fn report_csv(report: &ContactsReportResponse) -> String {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut add = |measure: &str, category: &str, value: String| {
        rows.push((measure.to_owned(), category.to_owned(), value));
    };
    if let Some(per_client) = &report.contacts_per_client {
        add(
            "contacts_per_client",
            "clients",
            per_client.clients.to_string(),
        );
        add(
            "contacts_per_client",
            "mean",
            format!("{:.1}", per_client.mean),
        );
        add("contacts_per_client", "max", per_client.max.to_string());
        add(
            "contacts_per_client",
            "0-49",
            per_client.up_to_49.to_string(),
        );
        add(
            "contacts_per_client",
            "50-99",
            per_client.from_50_to_99.to_string(),
        );
        add(
            "contacts_per_client",
            "100-199",
            per_client.from_100_to_199.to_string(),
        );
        add(
            "contacts_per_client",
            "200+",
            per_client.from_200.to_string(),
        );
    }
    for activity in &report.minutes_per_activity {
        let name = ContactActivity::try_from(activity.activity)
            .map(|activity| activity.as_str_name())
            .unwrap_or("UNKNOWN");
        add("contacts_per_activity", name, activity.contacts.to_string());
        add("minutes_per_activity", name, activity.minutes.to_string());
    }
    if let Some(engagement) = &report.engagement {
        add(
            "engagement",
            "case_files",
            engagement.case_files.to_string(),
        );
        add(
            "engagement",
            "mean_days",
            format!("{:.1}", engagement.mean_days),
        );
        add("engagement", "max_days", engagement.max_days.to_string());
        add(
            "engagement",
            "under_6_months",
            engagement.under_6_months.to_string(),
        );
        add(
            "engagement",
            "6_to_12_months",
            engagement.from_6_to_12_months.to_string(),
        );
        add(
            "engagement",
            "over_12_months",
            engagement.over_12_months.to_string(),
        );
    }
    for mentor in &report.quiet_mentors {
        let last = mentor
            .last_contact_logged_at
            .as_ref()
            .and_then(cpm_runtime::grpc::values::from_timestamp)
            .map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
        add("quiet_mentor", &mentor.mentor_id, last);
    }
    let mut csv = String::from("measure,category,value\n");
    for (measure, category, value) in rows {
        csv.push_str(&format!(
            "{},{},{}\n",
            csv_field(&measure),
            csv_field(&category),
            csv_field(&value)
        ));
    }
    csv
}

/// Text safe inside SVG markup.
fn xml_text(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A bar chart of the contacts-per-client buckets, as a standalone SVG.
pub fn contacts_chart(per_client: &ContactsPerClient) -> String {
    let bars = [
        ("49 or fewer", per_client.up_to_49),
        ("50-99", per_client.from_50_to_99),
        ("100-199", per_client.from_100_to_199),
        ("200 or more", per_client.from_200),
    ];
    let (width, height, top, bottom, bar_width, gap) = (480, 300, 40, 250, 80, 30);
    let tallest = bars
        .iter()
        .map(|(_, count)| *count)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Contacts per client\">\n\
         <title>Contacts per client ({} clients, mean {:.1})</title>\n\
         <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-family=\"sans-serif\" \
         font-size=\"16\">Contacts per client</text>\n\
         <line x1=\"30\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#333333\"/>\n",
        per_client.clients,
        per_client.mean,
        width / 2,
        width - 20
    );
    for (index, (label, count)) in bars.iter().enumerate() {
        let x = 40 + index as i32 * (bar_width + gap);
        let bar_height = (bottom - top - 20) * count / tallest;
        let y = bottom - bar_height;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"{bar_width}\" height=\"{bar_height}\" \
             fill=\"#1f6f8b\"><title>{label}: {count}</title></rect>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
             font-size=\"13\">{count}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
             font-size=\"12\">{}</text>\n",
            x + bar_width / 2,
            y - 6,
            x + bar_width / 2,
            bottom + 20,
            xml_text(label)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

async fn contacts_per_case_file(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT count(k.contact_id) AS \"contacts!\" FROM contact_logging.case_file c \
         LEFT JOIN contact_logging.contact k ON k.case_file_id = c.case_file_id \
         WHERE ($1::text[] IS NULL OR lower(c.area) = ANY($1)) \
         GROUP BY c.case_file_id",
        areas
    )
    .fetch_all(connection)
    .await
}

async fn activity_totals(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
) -> Result<Vec<(i32, i64, i64)>, sqlx::Error> {
    Ok(sqlx::query!(
        "SELECT k.activity, count(*) AS \"contacts!\", sum(k.minutes)::bigint AS \"minutes!\" \
         FROM contact_logging.contact k \
         JOIN contact_logging.case_file c ON c.case_file_id = k.case_file_id \
         WHERE ($1::text[] IS NULL OR lower(c.area) = ANY($1)) \
         GROUP BY k.activity",
        areas
    )
    .fetch_all(connection)
    .await?
    .into_iter()
    .map(|row| (row.activity, row.contacts, row.minutes))
    .collect())
}

async fn engagement_days(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT (COALESCE(discharged_at, closed_at, now())::date - opened_at::date)::bigint \
         AS \"days!\" FROM contact_logging.case_file \
         WHERE ($1::text[] IS NULL OR lower(area) = ANY($1))",
        areas
    )
    .fetch_all(connection)
    .await
}

struct QuietRow {
    mentor_id: String,
    open_case_files: i64,
    last_contact_logged_at: Option<DateTime<Utc>>,
}

/// Mentors of open case files who have logged nothing on them since
/// `since` (a mentor whose cases all opened after `since` is not yet
/// quiet). Contacts staff logged do not count for a mentor; contacts from
/// before the logger's mentor ID was kept count for every mentor of the case.
async fn quiet_mentors(
    connection: &mut PgConnection,
    areas: Option<&[String]>,
    since: DateTime<Utc>,
) -> Result<Vec<QuietRow>, sqlx::Error> {
    sqlx::query_as!(
        QuietRow,
        "SELECT m.mentor_id, count(DISTINCT c.case_file_id) AS \"open_case_files!\", \
         max(k.logged_at) AS last_contact_logged_at \
         FROM contact_logging.case_mentor m \
         JOIN contact_logging.case_file c ON c.case_file_id = m.case_file_id \
         LEFT JOIN contact_logging.contact k ON k.case_file_id = c.case_file_id \
           AND (k.mentor_id = m.mentor_id \
                OR (k.mentor_id IS NULL AND k.logged_by_role = 'mentor')) \
         WHERE c.state = $1 AND ($2::text[] IS NULL OR lower(c.area) = ANY($2)) \
         GROUP BY m.mentor_id \
         HAVING COALESCE(max(k.logged_at), min(c.opened_at)) < $3 \
         ORDER BY m.mentor_id",
        CaseState::Open as i32,
        areas,
        since
    )
    .fetch_all(connection)
    .await
}

/// The contacts report for `query`, as of `now`.
pub async fn contacts_report(
    handle: &ServiceHandle,
    query: &ContactsQuery,
    now: DateTime<Utc>,
) -> Result<ContactsReportResponse, CaseError> {
    let areas = query.areas.as_deref();
    let mut transaction = handle.begin().await?;
    let counts = contacts_per_case_file(&mut transaction, areas).await?;
    let activities = activity_totals(&mut transaction, areas).await?;
    let days = engagement_days(&mut transaction, areas).await?;
    let since = now - TimeDelta::days(i64::from(query.quiet_days));
    let quiet = quiet_mentors(&mut transaction, areas, since).await?;
    transaction.commit().await?;
    let per_client = contacts_per_client(&counts);
    let svg = contacts_chart(&per_client);
    let mut report = ContactsReportResponse {
        contacts_per_client: Some(per_client),
        minutes_per_activity: minutes_per_activity(&activities),
        engagement: Some(engagement_length(&days)),
        quiet_mentors: quiet
            .into_iter()
            .map(|row| QuietMentor {
                mentor_id: row.mentor_id,
                open_case_files: i32::try_from(row.open_case_files).unwrap_or(i32::MAX),
                last_contact_logged_at: row.last_contact_logged_at.map(timestamp),
            })
            .collect(),
        csv: String::new(),
        svg,
    };
    report.csv = report_csv(&report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpm_runtime::auth::Role;

    #[test]
    fn contacts_per_client_uses_the_evaluations_buckets() {
        let per_client = contacts_per_client(&[3, 49, 50, 99, 100, 199, 200, 266]);
        assert_eq!(per_client.clients, 8);
        assert_eq!(per_client.max, 266);
        assert_eq!(
            (
                per_client.up_to_49,
                per_client.from_50_to_99,
                per_client.from_100_to_199,
                per_client.from_200
            ),
            (2, 2, 2, 2)
        );
        assert!((per_client.mean - 120.75).abs() < 1e-9);
        assert_eq!(contacts_per_client(&[]), ContactsPerClient::default());
    }

    #[test]
    fn engagement_is_bucketed_by_six_and_twelve_months() {
        let engagement = engagement_length(&[0, 182, 183, 365, 366, 578]);
        assert_eq!(engagement.case_files, 6);
        assert_eq!(engagement.max_days, 578);
        assert_eq!(
            (
                engagement.under_6_months,
                engagement.from_6_to_12_months,
                engagement.over_12_months
            ),
            (2, 2, 2)
        );
    }

    #[test]
    fn every_activity_is_listed_once_with_zero_when_unused() {
        let rows = [
            (ContactActivity::HomeVisit as i32, 2, 190),
            (ContactActivity::Telephone as i32, 1, 15),
        ];
        let activities = minutes_per_activity(&rows);
        assert_eq!(activities.len(), 9);
        assert_eq!(activities[0].activity, ContactActivity::CaseNotes as i32);
        assert_eq!((activities[0].contacts, activities[0].minutes), (0, 0));
        let home = &activities[ContactActivity::HomeVisit as usize - 1];
        assert_eq!((home.contacts, home.minutes), (2, 190));
    }

    #[test]
    fn csv_fields_are_quoted_and_never_read_as_formulas() {
        assert_eq!(csv_field("Darlington"), "Darlington");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("-5"), "'-5");
    }

    #[test]
    fn the_report_csv_and_chart_carry_the_buckets() {
        let per_client = contacts_per_client(&[10, 60, 250]);
        let report = ContactsReportResponse {
            contacts_per_client: Some(per_client),
            minutes_per_activity: minutes_per_activity(&[(3, 1, 50)]),
            engagement: Some(engagement_length(&[10])),
            quiet_mentors: vec![QuietMentor {
                mentor_id: "m-1".into(),
                open_case_files: 1,
                last_contact_logged_at: None,
            }],
            ..Default::default()
        };
        let csv = report_csv(&report);
        assert!(csv.starts_with("measure,category,value\n"));
        assert!(csv.contains("contacts_per_client,0-49,1\n"));
        assert!(csv.contains("contacts_per_client,200+,1\n"));
        assert!(csv.contains("minutes_per_activity,CONTACT_ACTIVITY_HOME_VISIT,50\n"));
        assert!(csv.contains("quiet_mentor,m-1,never\n"));
        let svg = contacts_chart(&per_client);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 4, "one bar per bucket");
        assert!(svg.contains("<title>200 or more: 1</title>"));
    }

    fn caller(role: Role, areas: &[&str]) -> Caller {
        Caller {
            subject: "someone".into(),
            role,
            agency_id: None,
            mentor_id: None,
            areas: areas.iter().map(|area| (*area).to_owned()).collect(),
        }
    }

    #[test]
    fn a_report_covers_the_callers_areas_and_refuses_another() {
        let coordinator = caller(Role::Coordinator, &["Darlington", "East Durham"]);
        let all = ContactsQuery::parse(&ContactsReportRequest::default(), &coordinator).unwrap();
        assert_eq!(
            all.areas,
            Some(vec!["darlington".to_owned(), "east durham".to_owned()])
        );
        assert_eq!(all.quiet_days, 30);
        let one = ContactsQuery::parse(
            &ContactsReportRequest {
                area: "east durham".into(),
                quiet_days: 14,
            },
            &coordinator,
        )
        .unwrap();
        assert_eq!(one.areas, Some(vec!["east durham".to_owned()]));
        let other = ContactsQuery::parse(
            &ContactsReportRequest {
                area: "North Durham".into(),
                ..Default::default()
            },
            &coordinator,
        )
        .unwrap_err();
        assert_eq!(
            tonic::Status::from(other).code(),
            tonic::Code::PermissionDenied
        );
        let admin =
            ContactsQuery::parse(&ContactsReportRequest::default(), &caller(Role::Admin, &[]))
                .unwrap();
        assert_eq!(admin.areas, None, "an admin's report covers every area");
    }

    #[test]
    fn bad_report_requests_name_their_fields() {
        let coordinator = caller(Role::Coordinator, &["Darlington"]);
        for request in [
            ContactsReportRequest {
                quiet_days: -1,
                ..Default::default()
            },
            ContactsReportRequest {
                quiet_days: MAX_QUIET_DAYS + 1,
                ..Default::default()
            },
        ] {
            let CaseError::Invalid(violations) =
                ContactsQuery::parse(&request, &coordinator).unwrap_err()
            else {
                panic!("not a field violation");
            };
            assert_eq!(violations.fields().collect::<Vec<_>>(), ["quiet_days"]);
        }
        let CaseError::Invalid(violations) = ContactsQuery::parse(
            &ContactsReportRequest {
                area: "Darl\u{0}ington".into(),
                ..Default::default()
            },
            &coordinator,
        )
        .unwrap_err() else {
            panic!("not a field violation");
        };
        assert_eq!(violations.fields().collect::<Vec<_>>(), ["area"]);
    }
}
