//! A generated programme replayed through the platform on its development
//! clock, and the report read back from it: the report's figures, per
//! year, engagement lengths, waits, savings, the comparison cohort and the
//! mentors' waits from training to a first client included, are the ones
//! the plan intended. A platform without the clock refuses the replay.

use std::collections::BTreeMap;
use std::time::Instant;

use cpm::report::{gather, render, render_short};
use cpm::simulate::timeline::calendar_year;
use cpm::simulate::{PlanOptions, SimulateOptions, run};

use crate::harness::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_replayed_programme_shows_the_figures_it_was_generated_with() {
    let mut env = TestEnv::new().await;
    env.settings.platform.dev.simulated_clock = true;
    let platform = env.start_all().await;
    let today = chrono::Utc::now().date_naive();
    let plan = PlanOptions {
        seed: 42,
        size: 0.05,
        areas: env.settings.platform.programme.areas.clone(),
        today,
    };
    let started = Instant::now();
    let summary = run(SimulateOptions::new(
        &platform.endpoint(),
        env.authenticator.clone(),
        plan,
    ))
    .await
    .expect("the programme replays");
    eprintln!(
        "replayed in {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        summary.render()
    );
    let intended = summary.programme.intended();
    assert_eq!(intended.referrals, 27);
    assert_eq!(summary.contacts_logged as i64, intended.contacts.total);

    let figures = gather(&platform.endpoint(), &env.authenticator)
        .await
        .expect("the report's figures");

    // Referrals and supported per year: each programme year in its own
    // calendar year, as the development clock stamped them.
    assert_eq!(figures.referrals(), intended.referrals);
    assert_eq!(figures.supported(), intended.supported);
    let by_year: BTreeMap<i32, (u32, u32)> = figures
        .by_year
        .iter()
        .map(|(year, row)| (*year, (row.referrals, row.supported)))
        .collect();
    let intended_by_year: BTreeMap<i32, (u32, u32)> = intended
        .by_year
        .iter()
        .map(|(year, counts)| (calendar_year(today, *year), *counts))
        .collect();
    assert_eq!(by_year, intended_by_year);
    assert_eq!(by_year.len(), 4);

    // Non-engagement by stage and reason, as the plan apportioned it.
    assert_eq!(figures.not_taken_on(), intended.not_taken_on);
    assert_eq!(figures.assessment.still_open, 0);

    // Contacts per case file.
    let contacts = figures
        .contacts
        .contacts_per_client
        .expect("contacts per client");
    assert_eq!(contacts.clients as u32, intended.contacts.clients);
    assert_eq!(i64::from(contacts.max), intended.contacts.max);
    assert!((contacts.mean - intended.contacts.mean()).abs() < 1e-9);
    assert_eq!(
        [
            contacts.up_to_49,
            contacts.from_50_to_99,
            contacts.from_100_to_199,
            contacts.from_200
        ]
        .map(|n| n as u32),
        intended.contacts.buckets
    );

    // Engagement lengths, in days between the allocation and the end of
    // support, as the plan timed them.
    let engaged: Vec<i64> = summary
        .programme
        .referrals
        .iter()
        .filter_map(|r| {
            let t = &r.timeline;
            Some((t.ended_at?.date_naive() - t.allocated_at?.date_naive()).num_days())
        })
        .collect();
    let engagement = figures.contacts.engagement.expect("engagement lengths");
    assert_eq!(engagement.case_files as usize, engaged.len());
    assert_eq!(
        i64::from(engagement.max_days),
        *engaged.iter().max().unwrap()
    );
    let mean = engaged.iter().sum::<i64>() as f64 / engaged.len() as f64;
    assert!(
        (engagement.mean_days - mean).abs() < 0.05,
        "{engagement:?} vs {mean}"
    );
    assert!(engagement.mean_days > 30.0, "{engagement:?}");

    // Referrer waits: the first check 1 to 10 days after the referral, the
    // decision 1 to 14 days after that.
    let to_first_check = figures.assessment.to_first_check.expect("waits");
    let to_decision = figures.assessment.to_decision.expect("waits");
    assert_eq!(to_first_check.count as u32, intended.referrals);
    assert!(
        (24.0..=240.0).contains(&to_first_check.median_hours),
        "{to_first_check:?}"
    );
    assert!(
        (48.0..=24.0 * 24.0).contains(&to_decision.median_hours),
        "{to_decision:?}"
    );

    // Impact: the demand before support priced by the agreed formula, the
    // follow-up a year after discharge, the savings the plan intends and
    // the return on the cost recorded.
    assert_eq!(figures.before.clients, intended.supported);
    assert_eq!(figures.before.pence, intended.before_pence);
    assert_eq!(figures.impact.programme_cost_pence, intended.cost_pence);
    assert_eq!(figures.impact.clients_without_figures, 0);
    assert_eq!(summary.follow_ups as u32, intended.supported);
    let total = figures.impact.total.clone().expect("savings");
    assert_eq!(total.clients as u32, intended.supported);
    assert!(
        (total.saving_pence - intended.saving_pence).abs() <= i64::from(intended.supported),
        "saving {} vs intended {}",
        total.saving_pence,
        intended.saving_pence
    );
    let roi = figures.impact.return_per_pound.expect("a return per pound");
    let intended_roi = intended.saving_pence as f64 / intended.cost_pence as f64;
    assert!((roi - intended_roi).abs() < 1e-3, "{roi} vs {intended_roi}");

    // The comparison cohort: the referrals not taken on that the plan gave
    // follow-up figures, a year after the decision (or the engagement
    // ended) on the development clock, priced the same way.
    let planned = &intended.comparison;
    assert!(planned.clients > 0, "{planned:?}");
    assert_eq!(summary.comparison_follow_ups as u32, planned.clients);
    let comparison = figures.impact.comparison.clone().expect("a comparison row");
    assert_eq!(comparison.clients as u32, planned.clients);
    assert_eq!(
        [
            comparison.calls_before,
            comparison.calls_after,
            comparison.police_staff_hours_before,
            comparison.police_staff_hours_after
        ],
        [
            planned.calls_before,
            planned.calls_after,
            planned.hours_before,
            planned.hours_after
        ]
        .map(|n| n as f64),
        "both windows are 12 months: nothing is scaled"
    );
    assert_eq!(comparison.saving_pence, planned.saving_pence);
    assert_eq!(
        comparison.never_called_again as u32,
        planned.never_called_again
    );

    // The profile covers every supported client; the mentors are all on the register.
    assert_eq!(figures.profile.clients, intended.supported);
    assert_eq!(
        figures.mentors.by_status.values().sum::<u32>(),
        intended.mentors
    );
    // Training to a first client: every mentor the plan paired, trained in
    // the cohort it chose, got their first client on the planned day.
    let mut first_client_days = figures.mentors.first_client_days.clone();
    first_client_days.sort_unstable();
    assert!(!first_client_days.is_empty());
    assert_eq!(first_client_days, intended.first_client_days);
    assert_eq!(figures.mentors.waiting_days.len() as u32, intended.waiting);

    let report = render(&figures);
    for heading in [
        "## Referrals and clients supported",
        "## Not taken on: stage and reason",
        "## Profile of the clients supported",
        "## Contacts per client",
        "## Mentors: from training to a first client",
        "| wait since training | had a first client | still waiting |",
        "## Referrer waits",
        "## Impact",
        "| comparison: not taken on |",
        "for the comparison cohort",
        "Regression to the mean",
    ] {
        assert!(
            report.contains(heading),
            "{heading} missing from:\n{report}"
        );
    }
    assert!(report.matches("<svg").count() >= 4);
    // CPM_SIMULATION_REPORT=report.md keeps the full report for a look.
    if let Ok(path) = std::env::var("CPM_SIMULATION_REPORT") {
        std::fs::write(path, &report).expect("the report is written");
    }
    let short = render_short(&figures);
    eprintln!("{short}");
    assert!(
        short.contains(&format!("Referrals: {}", intended.referrals)),
        "{short}"
    );
    assert!(short.contains("return per £1: £"), "{short}");
    assert!(
        short.contains(&format!(
            "had a first client: {}",
            intended.first_client_days.len()
        )),
        "{short}"
    );
    assert!(
        short.contains("without it (comparison cohort of"),
        "{short}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_without_the_development_clock_refuses_the_replay() {
    let env = TestEnv::new().await;
    assert!(!env.settings.platform.dev.simulated_clock);
    let platform = env.start_all().await;
    let plan = PlanOptions {
        seed: 42,
        size: 0.01,
        areas: env.settings.platform.programme.areas.clone(),
        today: chrono::Utc::now().date_naive(),
    };
    let error = run(SimulateOptions::new(
        &platform.endpoint(),
        env.authenticator.clone(),
        plan,
    ))
    .await
    .expect_err("simulated time is refused");
    let message = format!("{error:#}");
    assert!(message.contains("dev.simulated_clock"), "{message}");

    // Nothing was stamped in the past: no referral reached the platform.
    let figures = gather(&platform.endpoint(), &env.authenticator)
        .await
        .expect("the report's figures");
    assert_eq!(figures.referrals(), 0);
}
