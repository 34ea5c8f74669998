//! `cpm report`: the evaluation's tables from what the services hold,
//! gathered through their public RPCs ([`gather`]) and printed as Markdown
//! with inline SVG charts ([`render`], [`render_short`]). Where the
//! platform cannot give a figure the report says so instead of inventing
//! one; docs/simulate.md lists those gaps.
//!
//! DEVELOPMENT ONLY: referral intake lists referrals to their own agency
//! only, so the report mints a referrer token per registered agency (and
//! admin tokens) with the configured shared key.

mod svg;

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::risk_assessment_service_client::RiskAssessmentServiceClient;
use cpm_proto::v1::{
    AssessmentStatsRequest, AssessmentStatsResponse, ContactActivity, ContactsReportRequest,
    ContactsReportResponse, CrimeType, DemandWindow, EstimateWaitRequest, EstimateWaitResponse,
    Gender, GetDemandRequest, GetReferralRequest, ImpactReportRequest, ImpactReportResponse,
    ImpactTotals, ListAgenciesRequest, ListMentorsRequest, ListReferralsRequest, MentorStatus,
    NonEngagementReason, NonEngagementStage, Referral, ReferralStatus, Vulnerability,
};
use cpm_runtime::auth::{Authenticator, Role};

use crate::client::{Authed, authed, connect};

/// One calendar year of referrals, by when they were submitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct YearRow {
    pub referrals: u32,
    /// In support or discharged.
    pub supported: u32,
    pub not_taken_on: u32,
    pub withdrawn: u32,
    /// Still being assessed or waiting for mentors.
    pub open: u32,
}

/// The supported clients' profile, from their referrals.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub clients: u32,
    pub erased: u32,
    /// Gender → ages at referral.
    pub ages: BTreeMap<i32, Vec<i64>>,
    pub vulnerabilities: BTreeMap<i32, u32>,
    pub victim_of: BTreeMap<i32, u32>,
    pub perpetrator_of: BTreeMap<i32, u32>,
    pub victims: u32,
    pub perpetrators: u32,
    pub neither: u32,
}

/// The mentor register.
#[derive(Clone, Debug, Default)]
pub struct Mentors {
    pub by_status: BTreeMap<i32, u32>,
    /// Cohort → (trained, had a client, still waiting).
    pub cohorts: BTreeMap<String, (u32, u32, u32)>,
    /// Days since training of the mentors still waiting for a first client.
    pub waiting_days: Vec<i64>,
    /// Days from training to the first allocation of the mentors who had
    /// one (mentor matching shows staff when it was confirmed).
    pub first_client_days: Vec<i64>,
}

/// The supported clients' demand in the months before support, priced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DemandBefore {
    pub clients: u32,
    pub calls: i64,
    pub hours: f64,
    pub pence: i64,
}

/// Everything the report shows, as the platform gave it.
#[derive(Clone, Debug)]
pub struct Figures {
    pub generated_on: NaiveDate,
    pub by_year: BTreeMap<i32, YearRow>,
    pub assessment: AssessmentStatsResponse,
    pub profile: Profile,
    pub contacts: ContactsReportResponse,
    pub mentors: Mentors,
    pub waits: Vec<(String, EstimateWaitResponse)>,
    pub impact: ImpactReportResponse,
    pub before: DemandBefore,
}

impl Figures {
    pub fn referrals(&self) -> u32 {
        self.by_year.values().map(|y| y.referrals).sum()
    }

    pub fn supported(&self) -> u32 {
        self.by_year.values().map(|y| y.supported).sum()
    }

    /// (stage, reason) → referrals not (or no longer) taken on.
    pub fn not_taken_on(&self) -> BTreeMap<(i32, i32), u32> {
        let mut counts = BTreeMap::new();
        for outcome in &self.assessment.outcomes {
            *counts.entry((outcome.stage, outcome.reason)).or_default() +=
                u32::try_from(outcome.count).unwrap_or(0);
        }
        counts
    }
}

fn mint(
    authenticator: &Authenticator,
    channel: &tonic::transport::Channel,
    role: Role,
    agency: Option<&str>,
) -> anyhow::Result<Authed> {
    let token = authenticator.mint("cpm-report", role, agency, None, chrono::Duration::hours(1))?;
    authed(channel, &token)
}

fn date_of(timestamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    timestamp.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
}

async fn all_referrals(
    authenticator: &Authenticator,
    channel: &tonic::transport::Channel,
    admin: &Authed,
) -> anyhow::Result<Vec<Referral>> {
    let mut intake = ReferralIntakeServiceClient::new(admin.clone());
    let mut agencies = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = intake
            .list_agencies(ListAgenciesRequest {
                page_size: 500,
                page_token,
            })
            .await
            .context("ListAgencies")?
            .into_inner();
        agencies.extend(page.agencies);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut referrals = Vec::new();
    for agency in agencies {
        let mut client = ReferralIntakeServiceClient::new(mint(
            authenticator,
            channel,
            Role::Referrer,
            Some(&agency.agency_id),
        )?);
        let mut page_token = String::new();
        loop {
            let page = match client
                .list_referrals(ListReferralsRequest {
                    page_size: 500,
                    page_token,
                    ..Default::default()
                })
                .await
            {
                Ok(page) => page.into_inner(),
                // A suspended agency's referrers are refused; its referrals are not counted.
                Err(status) if status.code() == tonic::Code::PermissionDenied => break,
                Err(status) => return Err(anyhow::anyhow!("ListReferrals: {status}")),
            };
            referrals.extend(page.referrals);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    Ok(referrals)
}

fn supported(status: ReferralStatus) -> bool {
    matches!(
        status,
        ReferralStatus::InSupport | ReferralStatus::Discharged
    )
}

/// Reads every figure the report shows from the platform at `endpoint`.
pub async fn gather(endpoint: &str, authenticator: &Authenticator) -> anyhow::Result<Figures> {
    let channel = connect(endpoint)
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))?;
    let admin = mint(authenticator, &channel, Role::Admin, None)?;
    let now = Utc::now();

    let referrals = all_referrals(authenticator, &channel, &admin).await?;
    let mut by_year: BTreeMap<i32, YearRow> = BTreeMap::new();
    for referral in &referrals {
        let year = date_of(referral.submitted_at.as_ref()).map_or(0, |d| d.year());
        let row = by_year.entry(year).or_default();
        row.referrals += 1;
        match referral.status() {
            status if supported(status) => row.supported += 1,
            ReferralStatus::NotTakenOn => row.not_taken_on += 1,
            ReferralStatus::Withdrawn => row.withdrawn += 1,
            _ => row.open += 1,
        }
    }

    // The supported clients' profile: one audited read per referral
    // (referral intake has no aggregate of its own).
    let mut intake = ReferralIntakeServiceClient::new(admin.clone());
    let mut profile = Profile::default();
    let mut discharged = Vec::new();
    for referral in referrals.iter().filter(|r| supported(r.status())) {
        if referral.status() == ReferralStatus::Discharged {
            discharged.push(referral.referral_id.clone());
        }
        let full = intake
            .get_referral(GetReferralRequest {
                referral_id: referral.referral_id.clone(),
            })
            .await
            .context("GetReferral")?
            .into_inner()
            .referral
            .context("GetReferral returned no referral")?;
        profile.clients += 1;
        if full.erased {
            profile.erased += 1;
            continue;
        }
        let client = full.client.unwrap_or_default();
        let submitted = date_of(full.submitted_at.as_ref()).map(|d| d.date_naive());
        let born = NaiveDate::parse_from_str(&client.date_of_birth, "%Y-%m-%d").ok();
        if let (Some(submitted), Some(born)) = (submitted, born) {
            let age = submitted.years_since(born).map_or(0, i64::from);
            profile.ages.entry(client.gender).or_default().push(age);
        }
        let details = full.details.unwrap_or_default();
        for v in &details.vulnerabilities {
            *profile.vulnerabilities.entry(*v).or_default() += 1;
        }
        for c in &details.victim_of {
            *profile.victim_of.entry(*c).or_default() += 1;
        }
        for c in &details.perpetrator_of {
            *profile.perpetrator_of.entry(*c).or_default() += 1;
        }
        match (
            details.victim_of.is_empty(),
            details.perpetrator_of.is_empty(),
        ) {
            (true, true) => profile.neither += 1,
            (victim, perpetrator) => {
                profile.victims += u32::from(!victim);
                profile.perpetrators += u32::from(!perpetrator);
            }
        }
    }

    let assessment = RiskAssessmentServiceClient::new(admin.clone())
        .assessment_stats(AssessmentStatsRequest {
            from: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            to: Some(prost_types::Timestamp {
                seconds: now.timestamp() + 86_400,
                nanos: 0,
            }),
            area: String::new(),
        })
        .await
        .context("AssessmentStats")?
        .into_inner();

    let mut logging = ContactLoggingServiceClient::new(admin.clone());
    let contacts = logging
        .contacts_report(ContactsReportRequest {
            area: String::new(),
            quiet_days: 0,
        })
        .await
        .context("ContactsReport")?
        .into_inner();
    let impact = logging
        .impact_report(ImpactReportRequest::default())
        .await
        .context("ImpactReport")?
        .into_inner();
    let formula = impact.formula.clone().unwrap_or_default();
    let mut before = DemandBefore::default();
    for referral_id in &discharged {
        let demand = logging
            .get_demand(GetDemandRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .context("GetDemand")?
            .into_inner();
        if let Some(figure) = demand
            .current
            .iter()
            .find(|f| f.window == DemandWindow::BeforeSupport as i32)
        {
            let calls = i64::from(
                figure.police_calls
                    + figure.ambulance_calls
                    + figure.nhs_111_calls
                    + figure.other_calls,
            );
            before.clients += 1;
            before.calls += calls;
            before.hours += figure.police_staff_hours;
            before.pence += calls * formula.pence_per_emergency_call
                + (figure.police_staff_hours * formula.pence_per_police_staff_hour as f64).round()
                    as i64;
        }
    }

    let mut matching = MentorMatchingServiceClient::new(admin.clone());
    let mut mentors = Mentors::default();
    let today = now.date_naive();
    let mut page_token = String::new();
    loop {
        let page = matching
            .list_mentors(ListMentorsRequest {
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
            .context("ListMentors")?
            .into_inner();
        for mentor in &page.mentors {
            *mentors.by_status.entry(mentor.status).or_default() += 1;
            let cohort = if mentor.training_cohort.is_empty() {
                "(none recorded)".to_owned()
            } else {
                mentor.training_cohort.clone()
            };
            let row = mentors.cohorts.entry(cohort).or_default();
            row.0 += 1;
            let trained = NaiveDate::parse_from_str(&mentor.training_completed_on, "%Y-%m-%d").ok();
            let first = date_of(mentor.first_allocated_at.as_ref()).map(|d| d.date_naive());
            if let (Some(trained), Some(first)) = (trained, first) {
                mentors.first_client_days.push((first - trained).num_days());
            }
            match mentor.status() {
                MentorStatus::Trained => {
                    row.2 += 1;
                    if let Some(trained) = trained {
                        mentors.waiting_days.push((today - trained).num_days());
                    }
                }
                MentorStatus::Active | MentorStatus::Sabbatical | MentorStatus::Left => row.1 += 1,
                _ => {}
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }

    let mut waits = Vec::new();
    let areas: std::collections::BTreeSet<String> = referrals
        .iter()
        .map(|r| r.area.clone())
        .filter(|a| !a.is_empty())
        .collect();
    for area in areas {
        let wait = matching
            .estimate_wait(EstimateWaitRequest {
                area: area.clone(),
                perpetrator_of: Vec::new(),
            })
            .await
            .context("EstimateWait")?
            .into_inner();
        waits.push((area, wait));
    }

    Ok(Figures {
        generated_on: today,
        by_year,
        assessment,
        profile,
        contacts,
        mentors,
        waits,
        impact,
        before,
    })
}

fn pounds(pence: i64) -> String {
    let sign = if pence < 0 { "-" } else { "" };
    let pence = pence.unsigned_abs();
    let whole = (pence / 100).to_string();
    let mut grouped = String::new();
    for (n, digit) in whole.chars().enumerate() {
        if n > 0 && (whole.len() - n).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}£{grouped}.{:02}", pence % 100)
}

fn name<E: TryFrom<i32>>(value: i32, prefix: &str, as_str: fn(&E) -> &'static str) -> String {
    match E::try_from(value) {
        Ok(e) => as_str(&e)
            .trim_start_matches(prefix)
            .to_lowercase()
            .replace('_', " "),
        Err(_) => format!("unknown ({value})"),
    }
}

fn stage_name(value: i32) -> String {
    name::<NonEngagementStage>(
        value,
        "NON_ENGAGEMENT_STAGE_",
        NonEngagementStage::as_str_name,
    )
}
fn reason_name(value: i32) -> String {
    name::<NonEngagementReason>(
        value,
        "NON_ENGAGEMENT_REASON_",
        NonEngagementReason::as_str_name,
    )
}

fn percent(part: u32, whole: u32) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * f64::from(part) / f64::from(whole))
    }
}

fn year_label(year: i32) -> String {
    if year == 0 {
        "unknown".into()
    } else {
        year.to_string()
    }
}

/// The full report, Markdown with inline SVG charts.
pub fn render(figures: &Figures) -> String {
    let mut md = String::new();
    let push = |md: &mut String, line: &str| {
        md.push_str(line);
        md.push('\n');
    };
    push(&mut md, "# CPM programme evaluation report");
    push(&mut md, "");
    push(
        &mut md,
        &format!(
            "Generated on {} from what the platform's services hold (referral intake, risk \
             assessment, mentor matching, contact logging).",
            figures.generated_on
        ),
    );

    // 1. Referrals vs supported per year.
    push(
        &mut md,
        "\n## Referrals and clients supported, by year of referral\n",
    );
    push(
        &mut md,
        "| year | referrals | supported | not taken on | withdrawn | still open |",
    );
    push(&mut md, "|---|---:|---:|---:|---:|---:|");
    for (year, row) in &figures.by_year {
        push(
            &mut md,
            &format!(
                "| {} | {} | {} ({}) | {} | {} | {} |",
                year_label(*year),
                row.referrals,
                row.supported,
                percent(row.supported, row.referrals),
                row.not_taken_on,
                row.withdrawn,
                row.open
            ),
        );
    }
    push(
        &mut md,
        &format!(
            "| **all** | **{}** | **{}** | | | |",
            figures.referrals(),
            figures.supported()
        ),
    );
    let bars: Vec<(String, Vec<i64>)> = figures
        .by_year
        .iter()
        .map(|(year, row)| {
            (
                year_label(*year),
                vec![i64::from(row.referrals), i64::from(row.supported)],
            )
        })
        .collect();
    push(&mut md, "");
    push(
        &mut md,
        &svg::grouped_bars(
            "Referrals and supported by year",
            &["referrals", "supported"],
            &bars,
        ),
    );

    // 2. Non-engagement by stage and reason.
    let a = &figures.assessment;
    push(&mut md, "\n## Not taken on: stage and reason\n");
    push(
        &mut md,
        &format!(
            "Of {} referrals assessed: {} accepted (and not ended since), {} not taken on or \
             ended, {} still open, {} withdrawn before a decision.\n",
            a.referrals, a.accepted, a.not_taken_on, a.still_open, a.closed
        ),
    );
    push(&mut md, "| stage | reason | referred to | referrals |");
    push(&mut md, "|---|---|---|---:|");
    for outcome in &a.outcomes {
        let referred_to = match cpm_proto::v1::ReferredTo::try_from(outcome.referred_to) {
            Ok(cpm_proto::v1::ReferredTo::Unspecified) | Err(_) => String::new(),
            Ok(r) => r
                .as_str_name()
                .trim_start_matches("REFERRED_TO_")
                .to_lowercase()
                .replace('_', " "),
        };
        push(
            &mut md,
            &format!(
                "| {} | {} | {} | {} |",
                stage_name(outcome.stage),
                reason_name(outcome.reason),
                referred_to,
                outcome.count
            ),
        );
    }
    let by_stage: BTreeMap<String, i64> =
        a.outcomes.iter().fold(BTreeMap::new(), |mut map, outcome| {
            *map.entry(stage_name(outcome.stage)).or_default() += i64::from(outcome.count);
            map
        });
    let bars: Vec<(String, i64)> = by_stage.into_iter().collect();
    push(&mut md, "");
    push(&mut md, &svg::bars("Not taken on, by stage", &bars));

    // 3. Client profile.
    let p = &figures.profile;
    push(&mut md, "\n## Profile of the clients supported\n");
    push(
        &mut md,
        &format!(
            "{} clients in support or discharged ({} erased on request and left out). Read one \
             referral at a time: each read is in referral intake's audit trail.\n",
            p.clients, p.erased
        ),
    );
    push(
        &mut md,
        "| gender | clients | share | mean age | youngest | oldest |",
    );
    push(&mut md, "|---|---:|---:|---:|---:|---:|");
    let profiled = p.clients - p.erased;
    for (gender, ages) in &p.ages {
        let mean = ages.iter().sum::<i64>() as f64 / ages.len().max(1) as f64;
        push(
            &mut md,
            &format!(
                "| {} | {} | {} | {:.1} | {} | {} |",
                name::<Gender>(*gender, "GENDER_", Gender::as_str_name),
                ages.len(),
                percent(ages.len() as u32, profiled),
                mean,
                ages.iter().min().unwrap_or(&0),
                ages.iter().max().unwrap_or(&0)
            ),
        );
    }
    push(
        &mut md,
        &format!(
            "\nVictims of crime: {}; perpetrators: {}; neither: {}.\n",
            p.victims, p.perpetrators, p.neither
        ),
    );
    let table = |md: &mut String,
                 title: &str,
                 counts: &BTreeMap<i32, u32>,
                 label: &dyn Fn(i32) -> String| {
        let mut rows: Vec<(&i32, &u32)> = counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        md.push_str(&format!("| {title} | clients | share |\n|---|---:|---:|\n"));
        for (value, count) in rows {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                label(*value),
                count,
                percent(*count, profiled)
            ));
        }
        md.push('\n');
    };
    table(&mut md, "vulnerability", &p.vulnerabilities, &|v| {
        name::<Vulnerability>(v, "VULNERABILITY_", Vulnerability::as_str_name)
    });
    table(&mut md, "victim of", &p.victim_of, &|c| {
        name::<CrimeType>(c, "CRIME_TYPE_", CrimeType::as_str_name)
    });
    table(&mut md, "perpetrator of", &p.perpetrator_of, &|c| {
        name::<CrimeType>(c, "CRIME_TYPE_", CrimeType::as_str_name)
    });

    // 4. Contacts.
    let c = figures.contacts.contacts_per_client.unwrap_or_default();
    push(&mut md, "## Contacts per client\n");
    push(
        &mut md,
        &format!(
            "{} case files (clients supported and engagements ended); mean {:.1} contacts, most \
             {} (attempts included).\n",
            c.clients, c.mean, c.max
        ),
    );
    push(&mut md, "| contacts | clients |");
    push(&mut md, "|---|---:|");
    for (label, count) in [
        ("49 or fewer", c.up_to_49),
        ("50–99", c.from_50_to_99),
        ("100–199", c.from_100_to_199),
        ("200 or more", c.from_200),
    ] {
        push(&mut md, &format!("| {label} | {count} |"));
    }
    push(&mut md, "");
    push(&mut md, figures.contacts.svg.trim_end());
    push(&mut md, "\n| activity | contacts | hours |");
    push(&mut md, "|---|---:|---:|");
    for activity in &figures.contacts.minutes_per_activity {
        push(
            &mut md,
            &format!(
                "| {} | {} | {:.1} |",
                name::<ContactActivity>(
                    activity.activity,
                    "CONTACT_ACTIVITY_",
                    ContactActivity::as_str_name
                ),
                activity.contacts,
                activity.minutes as f64 / 60.0
            ),
        );
    }
    if let Some(e) = &figures.contacts.engagement {
        push(
            &mut md,
            &format!(
                "\nEngagement length: {} case files, mean {:.1} days, longest {} days; {} under 6 \
                 months, {} 6–12 months, {} over 12 months.",
                e.case_files,
                e.mean_days,
                e.max_days,
                e.under_6_months,
                e.from_6_to_12_months,
                e.over_12_months
            ),
        );
    }

    // 5. Mentors: training to first client.
    let m = &figures.mentors;
    push(&mut md, "\n## Mentors: from training to a first client\n");
    push(&mut md, "| status | mentors |");
    push(&mut md, "|---|---:|");
    for (status, count) in &m.by_status {
        push(
            &mut md,
            &format!(
                "| {} | {} |",
                name::<MentorStatus>(*status, "MENTOR_STATUS_", MentorStatus::as_str_name),
                count
            ),
        );
    }
    let matched = waiting_buckets(&m.first_client_days);
    let waiting = waiting_buckets(&m.waiting_days);
    push(
        &mut md,
        &format!(
            "\nFrom training to a first client: {} mentors had one{}; {} are still waiting, \
             counted to today. The evaluation asks for a minimum standard for this wait \
             (of 32 mentors it surveyed: 6 within a month, 10 in 1–2 months, 2 in 2–4, 1 in \
             4–6, 2 after 10–12, 11 still waiting).\n",
            m.first_client_days.len(),
            median_days(&m.first_client_days)
                .map(|days| format!(", after a median of {days} days"))
                .unwrap_or_default(),
            m.waiting_days.len()
        ),
    );
    push(
        &mut md,
        "| wait since training | had a first client | still waiting |",
    );
    push(&mut md, "|---|---:|---:|");
    for ((label, had), (_, still)) in matched.iter().zip(&waiting) {
        push(&mut md, &format!("| {label} | {had} | {still} |"));
    }
    push(&mut md, "");
    push(
        &mut md,
        &svg::grouped_bars(
            "Mentors by wait from training to a first client",
            &["had a first client", "still waiting"],
            &matched
                .iter()
                .zip(&waiting)
                .map(|((label, had), (_, still))| {
                    (
                        (*label).to_owned(),
                        vec![i64::from(*had), i64::from(*still)],
                    )
                })
                .collect::<Vec<_>>(),
        ),
    );
    push(&mut md, "");
    push(
        &mut md,
        "| training cohort | trained | had a client | still waiting |",
    );
    push(&mut md, "|---|---:|---:|---:|");
    for (cohort, (trained, active, waiting)) in &m.cohorts {
        push(
            &mut md,
            &format!("| {cohort} | {trained} | {active} | {waiting} |"),
        );
    }

    // 6. Referrer waits.
    push(&mut md, "\n## Referrer waits\n");
    push(
        &mut md,
        "| from referral to | referrals | median days | 90th percentile days |",
    );
    push(&mut md, "|---|---:|---:|---:|");
    for (label, distribution) in [
        ("first check", &a.to_first_check),
        ("decision", &a.to_decision),
    ] {
        let d = (*distribution).unwrap_or_default();
        push(
            &mut md,
            &format!(
                "| {label} | {} | {:.1} | {:.1} |",
                d.count,
                d.median_hours / 24.0,
                d.p90_hours / 24.0
            ),
        );
    }
    push(
        &mut md,
        "\nThe wait a newly accepted client faces now, as told to referrers:\n",
    );
    push(
        &mut md,
        "| area | waiting | free places | median days | 90% within days | basis |",
    );
    push(&mut md, "|---|---:|---:|---:|---:|---|");
    for (area, wait) in &figures.waits {
        push(
            &mut md,
            &format!(
                "| {area} | {} | {} | {} | {} | {} |",
                wait.clients_waiting,
                wait.free_mentor_places,
                wait.p50_days,
                wait.p90_days,
                wait.basis()
                    .as_str_name()
                    .trim_start_matches("WAIT_BASIS_")
                    .to_lowercase()
                    .replace('_', " ")
            ),
        );
    }

    // 7. Impact.
    let i = &figures.impact;
    let formula = i.formula.clone().unwrap_or_default();
    push(&mut md, "\n## Impact\n");
    push(
        &mut md,
        &format!(
            "Formula `{}`: {} per emergency call, {} per police staff hour.\n",
            formula.version,
            pounds(formula.pence_per_emergency_call),
            pounds(formula.pence_per_police_staff_hour)
        ),
    );
    let b = &figures.before;
    push(
        &mut md,
        &format!(
            "Demand of the {} discharged clients in the 12 months before support: {} calls and \
             {:.0} police staff hours, costing {}.\n",
            b.clients,
            b.calls,
            b.hours,
            pounds(b.pence)
        ),
    );
    let total = i.total.clone().unwrap_or_default();
    if total.clients > 0 {
        push(
            &mut md,
            "| group | clients | calls before | calls after | hours before | hours after | saving | never called again |",
        );
        push(&mut md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let comparison = i.comparison.as_ref().filter(|c| c.clients > 0);
        for t in std::iter::once(&total)
            .chain(&i.by_cohort)
            .chain(comparison)
        {
            let group = match t.group.as_str() {
                "comparison" => "comparison: not taken on",
                "all" => "all discharged",
                group => group,
            };
            push(
                &mut md,
                &format!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                    group,
                    t.clients,
                    t.calls_before,
                    t.calls_after,
                    t.police_staff_hours_before,
                    t.police_staff_hours_after,
                    pounds(t.saving_pence),
                    t.never_called_again
                ),
            );
        }
        push(&mut md, "");
        push(&mut md, &comparison_sentence(&total, comparison));
    } else {
        push(
            &mut md,
            "Savings: **not available yet** — no discharged client has both a before and a \
             follow-up figure; follow-up figures are accepted only once their window after \
             discharge has passed.",
        );
    }
    push(
        &mut md,
        &format!(
            "\n{} discharged clients lack a follow-up figure and are left out of the savings.",
            i.clients_without_figures
        ),
    );
    push(
        &mut md,
        &format!(
            "Programme cost recorded: {}. Return per £1 invested: {}.",
            pounds(i.programme_cost_pence),
            match i.return_per_pound {
                Some(r) if total.clients > 0 => format!("£{r:.2}"),
                _ => "not available (no savings figures yet)".to_owned(),
            }
        ),
    );
    push(&mut md, &format!("\n> **Caveat.** {}", i.caveat));
    md
}

/// The share of calls before that remained after, as a fall in percent.
fn calls_fall(totals: &ImpactTotals) -> Option<f64> {
    (totals.calls_before > 0.0).then(|| 100.0 * (1.0 - totals.calls_after / totals.calls_before))
}

/// The discharged clients' fall in calls beside the comparison cohort's,
/// or why there is no comparison.
fn comparison_sentence(total: &ImpactTotals, comparison: Option<&ImpactTotals>) -> String {
    let fall = |t: &ImpactTotals| {
        calls_fall(t).map_or("no calls before".to_owned(), |f| format!("{f:.0}%"))
    };
    match comparison {
        Some(c) => format!(
            "Calls fell by {} for the {} discharged clients and by {} for the comparison cohort \
             ({} referrals not taken on, with follow-up figures): read the difference, not the \
             whole fall, as what support may have achieved.",
            fall(total),
            total.clients,
            fall(c),
            c.clients
        ),
        None => "No comparison cohort: no referral not taken on has both a before and a \
                 follow-up figure, so nothing shows how demand fell without support."
            .to_owned(),
    }
}

/// The median of `days`, `None` without any (the lower middle of an even count).
pub fn median_days(days: &[i64]) -> Option<i64> {
    let mut sorted = days.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// Waits since training in the evaluation's bands.
pub fn waiting_buckets(days: &[i64]) -> Vec<(&'static str, u32)> {
    let bands: [(&str, i64, i64); 6] = [
        ("under 1 month", 0, 30),
        ("1–2 months", 31, 60),
        ("2–4 months", 61, 120),
        ("4–6 months", 121, 180),
        ("6–12 months", 181, 365),
        ("over 12 months", 366, i64::MAX),
    ];
    bands
        .iter()
        .map(|(label, low, high)| {
            (
                *label,
                days.iter().filter(|d| (*low..=*high).contains(*d)).count() as u32,
            )
        })
        .collect()
}

/// A few headline lines, no charts.
pub fn render_short(figures: &Figures) -> String {
    let c = figures.contacts.contacts_per_client.unwrap_or_default();
    let not_taken_on: u32 = figures.not_taken_on().values().sum();
    let mut stages: Vec<(String, u32)> = figures
        .not_taken_on()
        .into_iter()
        .fold(
            BTreeMap::<String, u32>::new(),
            |mut map, ((stage, _), n)| {
                *map.entry(stage_name(stage)).or_default() += n;
                map
            },
        )
        .into_iter()
        .collect();
    stages.sort_by_key(|stage| std::cmp::Reverse(stage.1));
    let formula = figures.impact.formula.clone().unwrap_or_default();
    let mut out = String::from("## CPM evaluation report (short)\n\n");
    out.push_str(&format!(
        "- Referrals: {}; supported: {} ({}); not taken on: {}{}.\n",
        figures.referrals(),
        figures.supported(),
        percent(figures.supported(), figures.referrals()),
        not_taken_on,
        if stages.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                stages
                    .iter()
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    out.push_str(&format!(
        "- Contacts per client: mean {:.1}, most {}; {} ≤49, {} 50–99, {} 100–199, {} 200+.\n",
        c.mean, c.max, c.up_to_49, c.from_50_to_99, c.from_100_to_199, c.from_200
    ));
    let m = &figures.mentors;
    out.push_str(&format!(
        "- Mentors: {}; had a first client: {}{}; still waiting: {}.\n",
        m.by_status.values().sum::<u32>(),
        m.first_client_days.len(),
        median_days(&m.first_client_days)
            .map(|days| format!(" (a median {days} days after training)"))
            .unwrap_or_default(),
        m.waiting_days.len()
    ));
    let total = figures.impact.total.clone().unwrap_or_default();
    out.push_str(&format!(
        "- Demand before support (discharged clients, formula `{}`): {}; savings: {}; cost \
         recorded: {}; return per £1: {}.\n",
        formula.version,
        pounds(figures.before.pence),
        if total.clients > 0 {
            format!("{} ({} clients)", pounds(total.saving_pence), total.clients)
        } else {
            "not yet available (follow-up windows still open)".to_owned()
        },
        pounds(figures.impact.programme_cost_pence),
        match figures.impact.return_per_pound {
            Some(r) if total.clients > 0 => format!("£{r:.2}"),
            _ => "not available".to_owned(),
        }
    ));
    let comparison = figures
        .impact
        .comparison
        .as_ref()
        .filter(|c| c.clients > 0)
        .and_then(|c| Some((c.clients, calls_fall(c)?)));
    out.push_str(&match (calls_fall(&total), comparison) {
        (Some(supported), Some((clients, without))) => format!(
            "- Caveat: regression to the mean — calls fell {supported:.0}% after support, \
             {without:.0}% without it (comparison cohort of {clients}).\n"
        ),
        _ => "- Caveat: regression to the mean — read savings beside the comparison cohort \
              (none with figures yet).\n"
            .to_owned(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pounds_are_grouped_with_pence() {
        assert_eq!(pounds(0), "£0.00");
        assert_eq!(pounds(19_300_000), "£193,000.00");
        assert_eq!(pounds(-5_750), "-£57.50");
        assert_eq!(pounds(286_091_000), "£2,860,910.00");
    }

    #[test]
    fn waiting_mentors_fall_in_the_evaluations_bands() {
        let buckets = waiting_buckets(&[0, 30, 31, 90, 150, 200, 400, 730]);
        let counts: Vec<u32> = buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [2, 1, 1, 1, 1, 2]);
    }

    #[test]
    fn the_median_wait_is_the_lower_middle() {
        assert_eq!(median_days(&[]), None);
        assert_eq!(median_days(&[40]), Some(40));
        assert_eq!(median_days(&[90, 10, 40]), Some(40));
        assert_eq!(median_days(&[90, 10, 40, 20]), Some(20));
    }

    #[test]
    fn the_fall_is_read_beside_the_comparison_cohort_or_its_absence_said() {
        let totals = |clients, before, after| ImpactTotals {
            clients,
            calls_before: before,
            calls_after: after,
            ..ImpactTotals::default()
        };
        let sentence = comparison_sentence(&totals(10, 200.0, 30.0), Some(&totals(4, 80.0, 60.0)));
        assert!(
            sentence.contains("fell by 85% for the 10 discharged"),
            "{sentence}"
        );
        assert!(
            sentence.contains("by 25% for the comparison cohort (4 referrals"),
            "{sentence}"
        );
        let none = comparison_sentence(&totals(10, 200.0, 30.0), None);
        assert!(none.starts_with("No comparison cohort"), "{none}");
    }

    #[test]
    fn enum_names_read_as_words() {
        assert_eq!(
            stage_name(NonEngagementStage::InitialRiskAssessment as i32),
            "initial risk assessment"
        );
        assert_eq!(reason_name(99), "unknown (99)");
    }
}
