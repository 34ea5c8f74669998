//! A generated programme replayed through the platform, and the report
//! read back from it: the report's figures are the ones the plan intended.

use std::time::Instant;

use cpm::report::{gather, render, render_short};
use cpm::simulate::{PlanOptions, SimulateOptions, run};

use crate::harness::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_replayed_programme_shows_the_figures_it_was_generated_with() {
    let env = TestEnv::new().await;
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

    // Referrals and supported: every programme year lands on the replay's
    // calendar year, as referral intake stamps referrals when they arrive.
    assert_eq!(figures.referrals(), intended.referrals);
    assert_eq!(figures.supported(), intended.supported);
    let years: Vec<i32> = figures.by_year.keys().copied().collect();
    assert_eq!(years, [chrono::Datelike::year(&chrono::Utc::now())]);

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

    // Impact: the demand before support priced by the agreed formula, the
    // cost recorded, and no savings until follow-up windows have passed.
    assert_eq!(figures.before.clients, intended.supported);
    assert_eq!(figures.before.pence, intended.before_pence);
    assert_eq!(figures.impact.programme_cost_pence, intended.cost_pence);
    assert_eq!(
        figures.impact.clients_without_figures as u32,
        intended.supported
    );
    assert_eq!(figures.impact.total.clone().unwrap_or_default().clients, 0);
    assert!(
        summary
            .limits
            .iter()
            .any(|l| l.contains("follow-up demand"))
    );

    // The profile covers every supported client; the mentors are all on the register.
    assert_eq!(figures.profile.clients, intended.supported);
    assert_eq!(
        figures.mentors.by_status.values().sum::<u32>(),
        intended.mentors
    );

    let report = render(&figures);
    for heading in [
        "## Referrals and clients supported",
        "## Not taken on: stage and reason",
        "## Profile of the clients supported",
        "## Contacts per client",
        "## Mentors: from training to a first client",
        "## Referrer waits",
        "## Impact",
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
}
