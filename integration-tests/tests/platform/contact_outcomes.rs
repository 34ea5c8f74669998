//! contact-logging's outcomes through the real platform: goals sealed and
//! followed to an end, demand before support from `referral.submitted` and
//! follow-ups after discharge, the impact report by the versioned formula
//! beside a comparison cohort, and the contacts report with CSV and SVG.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::{
    ContactActivity, ContactsReportRequest, Demand, DemandFigures, DemandWindow, DischargeRequest,
    GetDemandRequest, GoalState, ImpactReportRequest, ListGoalsRequest, LogContactRequest,
    RecordDemandRequest, RecordGoalProgressRequest, RecordProgrammeCostRequest, ReferralStatus,
    ReferralStatusChanged, ReferralSubmitted, SetGoalRequest,
};
use cpm_runtime::auth::Role;
use prost::Message as _;

use crate::bus::publish_raw;
use crate::contact_logging::{erase, open_case_file_in};
use crate::harness::{Authed, TestEnv, connect, eventually, violated_fields};

type Contacts = ContactLoggingServiceClient<Authed>;

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn at(time: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(cpm_runtime::grpc::values::timestamp(time))
}

fn today() -> String {
    Utc::now().date_naive().to_string()
}

fn admin(env: &TestEnv, channel: &tonic::transport::Channel) -> Contacts {
    ContactLoggingServiceClient::new(
        cpm::client::authed(channel, &env.token("admin", Role::Admin, None, None)).unwrap(),
    )
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Announces a referral as referral intake does, with its demand.
async fn submit(
    env: &TestEnv,
    referral_id: &str,
    area: &str,
    calls: i32,
    demand: Option<DemandFigures>,
) {
    let submitted = ReferralSubmitted {
        referral_id: referral_id.into(),
        agency_id: "agency-durham".into(),
        area: area.into(),
        submitted_at: at(Utc::now() - chrono::Duration::days(400)),
        emergency_calls_last_12_months: calls,
        demand,
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &submitted);
    publish_raw(env, ReferralSubmitted::TYPE, &envelope.encode_to_vec()).await;
}

/// Announces that a referral was not taken on, `days` ago.
async fn not_taken_on(env: &TestEnv, referral_id: &str, days: i64) {
    let changed = ReferralStatusChanged {
        referral_id: referral_id.into(),
        agency_id: "agency-durham".into(),
        status: ReferralStatus::NotTakenOn as i32,
        previous_status: ReferralStatus::UnderAssessment as i32,
        changed_at: at(Utc::now() - chrono::Duration::days(days)),
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &changed);
    publish_raw(env, ReferralStatusChanged::TYPE, &envelope.encode_to_vec()).await;
}

/// Discharges a case file and dates the discharge 13 months back, so both
/// follow-up windows have passed.
async fn discharge_long_ago(contacts: &mut Contacts, pool: &sqlx::PgPool, referral_id: &str) {
    contacts
        .discharge(DischargeRequest {
            referral_id: referral_id.into(),
            reason: "goals met".into(),
            outcome: cpm_proto::v1::DischargeOutcome::GoalsAchieved as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    sqlx::query(
        "UPDATE contact_logging.case_file SET discharged_at = now() - interval '13 months' \
         WHERE referral_id = $1::uuid",
    )
    .bind(referral_id)
    .execute(pool)
    .await
    .unwrap();
}

fn follow_up(
    referral_id: &str,
    window: DemandWindow,
    police_calls: i32,
    hours: f64,
) -> RecordDemandRequest {
    RecordDemandRequest {
        referral_id: referral_id.into(),
        window: window as i32,
        police_calls,
        police_staff_hours: hours,
        supplied_by: "Durham Constabulary data team".into(),
        supplied_on: today(),
        ..Default::default()
    }
}

async fn demand_known(contacts: &Contacts, referral_id: &str) {
    eventually(
        Duration::from_secs(20),
        "the referral's demand is kept",
        || {
            let mut contacts = contacts.clone();
            let referral_id = referral_id.to_owned();
            async move {
                contacts
                    .get_demand(GetDemandRequest { referral_id })
                    .await
                    .is_ok_and(|response| !response.into_inner().current.is_empty())
            }
        },
    )
    .await;
}

fn goal_request(referral_id: &str) -> SetGoalRequest {
    SetGoalRequest {
        referral_id: referral_id.into(),
        goal: "walk to the GOAL-SECRET-41 cafe on my own".into(),
        reality: "I have not been out alone since spring".into(),
        options: "go with a mentor first, or take the bus".into(),
        way_forward: "walk there together on Tuesday".into(),
        target_date: (Utc::now() + chrono::Duration::days(90))
            .date_naive()
            .to_string(),
        commitment: 6,
    }
}

/// A goal is refused field by field and nothing is stored; it is set sealed,
/// followed with progress to an end (after which it takes no more), seen
/// only by the case's mentor and the staff of its area, and after the
/// client's erasure its text is gone and nothing new is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goals_are_sealed_followed_to_an_end_and_refused_after_erasure() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut darlington =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let referral_id = new_id();
    let mentor_id = open_case_file_in(&env, &darlington, &referral_id, "Darlington").await;
    let pool = env.database().await;

    let refused = darlington
        .set_goal(SetGoalRequest {
            referral_id: referral_id.clone(),
            goal: " ".into(),
            reality: "x".repeat(4001),
            options: "a bell \u{7}".into(),
            way_forward: "together".into(),
            target_date: "2020-01-01".into(),
            commitment: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&refused),
        ["goal", "reality", "options", "target_date", "commitment"]
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contact_logging.goal").await,
        0
    );

    let mut mentor = ContactLoggingServiceClient::new(env.mentor(&channel, &mentor_id));
    let goal = mentor
        .set_goal(goal_request(&referral_id))
        .await
        .unwrap()
        .into_inner()
        .goal
        .unwrap();
    assert_eq!(goal.state, GoalState::Ongoing as i32);
    assert_eq!(goal.commitment, 6);
    assert_eq!(goal.goal, goal_request(&referral_id).goal);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM contact_logging.goal WHERE goal_sealed IS NOT NULL \
             AND position(convert_to('GOAL-SECRET', 'UTF8') in goal_sealed) = 0"
        )
        .await,
        1,
        "the goal is sealed, with no readable copy"
    );

    let bad = darlington
        .record_goal_progress(RecordGoalProgressRequest {
            referral_id: referral_id.clone(),
            goal_id: "x".into(),
            note: "fine".into(),
            commitment: 11,
            state: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["goal_id", "commitment"]);
    let unknown = darlington
        .record_goal_progress(RecordGoalProgressRequest {
            referral_id: referral_id.clone(),
            goal_id: new_id(),
            note: "fine".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let progress = |note: &str, commitment: i32, state: GoalState| RecordGoalProgressRequest {
        referral_id: referral_id.clone(),
        goal_id: goal.goal_id.clone(),
        note: note.into(),
        commitment,
        state: state as i32,
    };
    let updated = darlington
        .record_goal_progress(progress("went with a mentor", 8, GoalState::Unspecified))
        .await
        .unwrap()
        .into_inner()
        .goal
        .unwrap();
    assert_eq!((updated.commitment, updated.progress.len()), (8, 1));
    let achieved = mentor
        .record_goal_progress(progress("", 0, GoalState::Achieved))
        .await
        .unwrap()
        .into_inner()
        .goal
        .unwrap();
    assert_eq!(achieved.state, GoalState::Achieved as i32);
    assert_eq!(achieved.commitment, 8, "unchanged by an update without one");
    let ended = darlington
        .record_goal_progress(progress("one more", 0, GoalState::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(ended.code(), tonic::Code::FailedPrecondition);

    let mut other_mentor = ContactLoggingServiceClient::new(env.mentor(&channel, &new_id()));
    let mut east_durham =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    for status in [
        other_mentor
            .list_goals(ListGoalsRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .unwrap_err(),
        east_durham
            .set_goal(goal_request(&referral_id))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    let listed = mentor
        .list_goals(ListGoalsRequest {
            referral_id: referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .goals;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].way_forward, "walk there together on Tuesday");
    assert_eq!(listed[0].progress[0].note, "went with a mentor");
    assert_eq!(listed[0].progress[0].commitment, 8);
    assert_eq!(listed[0].progress[1].state, GoalState::Achieved as i32);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM contact_logging.personal_data_read \
             WHERE purpose = 'ListGoals' AND role = 'mentor'"
        )
        .await,
        1,
        "reading goal text is audited"
    );

    erase(&env, &referral_id).await;
    eventually(
        Duration::from_secs(20),
        "the goal text is forgotten",
        || {
            let pool = pool.clone();
            async move {
                count(
                    &pool,
                    "SELECT count(*) FROM contact_logging.goal WHERE goal_sealed IS NULL",
                )
                .await
                    == 1
            }
        },
    )
    .await;
    let listed = darlington
        .list_goals(ListGoalsRequest {
            referral_id: referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .goals;
    assert_eq!((listed[0].goal.as_str(), listed[0].state), ("", 2));
    let refused = darlington
        .set_goal(goal_request(&referral_id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contact_logging.goal").await,
        1,
        "nothing new about an erased client"
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// The referral's demand becomes the demand before support, with who gave
/// it; follow-ups are refused until support ended and the window passed,
/// then kept with who supplied them, the latest per window in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_before_comes_from_the_referral_and_follow_ups_wait_for_their_window() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut darlington =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let pool = env.database().await;
    let referral_id = new_id();
    submit(
        &env,
        &referral_id,
        "Darlington",
        30,
        Some(DemandFigures {
            police_calls: 20,
            ambulance_calls: 4,
            nhs_111_calls: 2,
            other_calls: 0,
            police_staff_hours: 80.0,
        }),
    )
    .await;
    let mentor_id = open_case_file_in(&env, &darlington, &referral_id, "Darlington").await;
    demand_known(&darlington, &referral_id).await;
    let current = darlington
        .get_demand(GetDemandRequest {
            referral_id: referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .current;
    let before = &current[0];
    assert_eq!(before.window, DemandWindow::BeforeSupport as i32);
    assert_eq!(
        (
            before.police_calls,
            before.ambulance_calls,
            before.other_calls,
            before.months
        ),
        (20, 4, 4, 12),
        "calls not given by service count as other"
    );
    assert_eq!(before.police_staff_hours, 80.0);
    assert_eq!(before.supplied_by, "referrer (agency agency-durham)");
    assert_eq!(before.recorded_by, "referral-intake");

    let open = darlington
        .record_demand(follow_up(&referral_id, DemandWindow::FirstFollowUp, 1, 2.0))
        .await
        .unwrap_err();
    assert_eq!(open.code(), tonic::Code::FailedPrecondition);
    let bad = darlington
        .record_demand(RecordDemandRequest {
            referral_id: referral_id.clone(),
            window: 0,
            police_calls: -1,
            police_staff_hours: f64::NAN,
            supplied_by: "\u{202E}".into(),
            supplied_on: "2999-01-01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        [
            "window",
            "police_calls",
            "police_staff_hours",
            "supplied_by",
            "supplied_on"
        ]
    );

    darlington
        .discharge(DischargeRequest {
            referral_id: referral_id.clone(),
            reason: "goals met".into(),
            outcome: cpm_proto::v1::DischargeOutcome::GoalsAchieved as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let too_soon = darlington
        .record_demand(follow_up(&referral_id, DemandWindow::FirstFollowUp, 1, 2.0))
        .await
        .unwrap_err();
    assert_eq!(too_soon.code(), tonic::Code::FailedPrecondition);
    assert!(
        too_soon.message().contains("record it from then"),
        "{too_soon:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contact_logging.demand_figure").await,
        1,
        "a refused figure changes nothing"
    );

    sqlx::query(
        "UPDATE contact_logging.case_file SET discharged_at = now() - interval '13 months' \
         WHERE referral_id = $1::uuid",
    )
    .bind(&referral_id)
    .execute(&pool)
    .await
    .unwrap();
    let first = darlington
        .record_demand(follow_up(&referral_id, DemandWindow::FirstFollowUp, 1, 2.0))
        .await
        .unwrap()
        .into_inner()
        .figure
        .unwrap();
    assert_eq!(
        (first.months, first.recorded_by.as_str()),
        (6, "coordinator")
    );
    darlington
        .record_demand(follow_up(
            &referral_id,
            DemandWindow::SecondFollowUp,
            0,
            0.0,
        ))
        .await
        .unwrap();
    darlington
        .record_demand(RecordDemandRequest {
            police_calls: 24,
            supplied_by: "Durham Constabulary data team".into(),
            ..follow_up(&referral_id, DemandWindow::BeforeSupport, 24, 90.0)
        })
        .await
        .unwrap();
    let demand = darlington
        .get_demand(GetDemandRequest {
            referral_id: referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        demand
            .current
            .iter()
            .map(|figure| (figure.window, figure.police_calls))
            .collect::<Vec<_>>(),
        [(1, 24), (2, 1), (3, 0)],
        "the latest figure per window is in use"
    );
    assert_eq!(demand.history.len(), 4);
    assert_eq!(
        demand.history[3].recorded_by, "referral-intake",
        "newest first"
    );

    let mut east_durham =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let hidden = east_durham
        .get_demand(GetDemandRequest {
            referral_id: referral_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    let hidden = east_durham
        .record_demand(follow_up(
            &referral_id,
            DemandWindow::SecondFollowUp,
            9,
            9.0,
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);
    let mut mentor = ContactLoggingServiceClient::new(env.mentor(&channel, &mentor_id));
    let denied = mentor
        .get_demand(GetDemandRequest {
            referral_id: referral_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM contact_logging.demand_figure").await,
        4
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A referral submitted through referral intake carries its demand, by
/// service, to contact logging as the demand before support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_referrals_demand_reaches_contact_logging() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::CONTACT_LOGGING])
        .await;
    let channel = connect(&platform).await;
    let mut intake =
        cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient::new(
            env.referrer(&channel, "agency-demand"),
        );
    let referral = crate::harness::submit(
        &mut intake,
        cpm_proto::v1::SubmitReferralRequest {
            demand: Some(Demand {
                police_calls: 7,
                ambulance_calls: 3,
                nhs_111_calls: 1,
                other_calls: 0,
                police_staff_hours: 21.5,
                safeguarding_reports: 2,
            }),
            ..crate::harness::referral_request("Darlington")
        },
    )
    .await;
    let admin = admin(&env, &channel);
    demand_known(&admin, &referral.referral_id).await;
    let before = admin
        .clone()
        .get_demand(GetDemandRequest {
            referral_id: referral.referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .current
        .remove(0);
    assert_eq!(
        (
            before.police_calls,
            before.ambulance_calls,
            before.nhs_111_calls,
            before.other_calls
        ),
        (7, 3, 1, 1),
        "12 calls referred, 11 of them by service"
    );
    assert_eq!(before.police_staff_hours, 21.5);
    assert_eq!(before.supplied_by, "referrer (agency agency-demand)");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Two discharged clients and one referral not taken on, priced by the
/// agreed formula: per client, cohort and area, who never called again,
/// the comparison cohort beside them, the return per pound of the cost an
/// admin recorded, and the caveat; a coordinator sees their area only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_impact_report_prices_clients_beside_a_comparison_cohort_and_states_the_caveat() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let pool = env.database().await;
    let demand = |police_calls, hours| {
        Some(DemandFigures {
            police_calls,
            police_staff_hours: hours,
            ..Default::default()
        })
    };

    // Darlington: 40 calls and 100 hours a year before; none after.
    let quiet = new_id();
    submit(&env, &quiet, "Darlington", 40, demand(40, 100.0)).await;
    open_case_file_in(&env, &admin, &quiet, "Darlington").await;
    demand_known(&admin, &quiet).await;
    discharge_long_ago(&mut admin, &pool, &quiet).await;
    for window in [DemandWindow::FirstFollowUp, DemandWindow::SecondFollowUp] {
        admin
            .record_demand(follow_up(&quiet, window, 0, 0.0))
            .await
            .unwrap();
    }
    // East Durham: 10 calls before; 2 calls and 4 hours in six months after.
    let rising = new_id();
    submit(&env, &rising, "East Durham", 10, demand(10, 0.0)).await;
    open_case_file_in(&env, &admin, &rising, "East Durham").await;
    demand_known(&admin, &rising).await;
    discharge_long_ago(&mut admin, &pool, &rising).await;
    admin
        .record_demand(follow_up(&rising, DemandWindow::FirstFollowUp, 2, 4.0))
        .await
        .unwrap();
    // Discharged without follow-up figures: counted apart.
    let unmeasured = new_id();
    open_case_file_in(&env, &admin, &unmeasured, "Darlington").await;
    discharge_long_ago(&mut admin, &pool, &unmeasured).await;
    // Not taken on 13 months ago: 20 calls before, 8 in six months after.
    let comparison = new_id();
    submit(&env, &comparison, "North Durham", 20, demand(20, 0.0)).await;
    not_taken_on(&env, &comparison, 400).await;
    demand_known(&admin, &comparison).await;
    eventually(
        Duration::from_secs(20),
        "the referral is not taken on",
        || {
            let pool = pool.clone();
            async move {
                count(
                    &pool,
                    "SELECT count(*) FROM contact_logging.referral_not_taken_on",
                )
                .await
                    == 1
            }
        },
    )
    .await;
    admin
        .record_demand(follow_up(&comparison, DemandWindow::FirstFollowUp, 8, 0.0))
        .await
        .unwrap();

    let bad = admin
        .record_programme_cost(RecordProgrammeCostRequest {
            period_start: "2026-04-01".into(),
            period_end: "2026-03-01".into(),
            cost_pence: -5,
            note: "\u{0}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["period_end", "cost_pence", "note"]);
    let mut darlington =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let denied = darlington
        .record_programme_cost(RecordProgrammeCostRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    admin
        .record_programme_cost(RecordProgrammeCostRequest {
            period_start: "2024-04-01".into(),
            period_end: "2027-03-31".into(),
            cost_pence: 100_000,
            note: "grant".into(),
        })
        .await
        .unwrap();

    let report = admin
        .impact_report(ImpactReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    let formula = report.formula.unwrap();
    assert_eq!(
        (
            formula.version.as_str(),
            formula.pence_per_emergency_call,
            formula.pence_per_police_staff_hour
        ),
        ("hiu-2019", 7_000, 5_750)
    );
    assert_eq!(report.clients.len(), 2);
    assert_eq!(report.clients_without_figures, 1);
    let quiet_client = report
        .clients
        .iter()
        .find(|client| client.referral_id == quiet)
        .unwrap();
    assert!(quiet_client.never_called_again);
    assert_eq!(quiet_client.saving_pence, 40 * 7_000 + 100 * 5_750);
    assert_eq!(
        quiet_client.after.as_ref().unwrap().supplied_by,
        "Durham Constabulary data team"
    );
    let rising_client = report
        .clients
        .iter()
        .find(|client| client.referral_id == rising)
        .unwrap();
    // Annualised: 4 calls and 8 hours after; (10 - 4) × £70 - 8 × £57.50.
    assert_eq!(rising_client.calls_after, 4.0);
    assert_eq!(rising_client.saving_pence, 6 * 7_000 - 8 * 5_750);
    let total = report.total.unwrap();
    assert_eq!((total.clients, total.never_called_again), (2, 1));
    assert_eq!(total.saving_pence, 855_000 - 4_000);
    assert_eq!(
        report
            .by_area
            .iter()
            .map(|area| (area.group.as_str(), area.clients))
            .collect::<Vec<_>>(),
        [("Darlington", 1), ("East Durham", 1)]
    );
    assert_eq!(report.by_cohort.len(), 1);
    let comparison_totals = report.comparison.unwrap();
    assert_eq!(comparison_totals.clients, 1);
    assert_eq!(comparison_totals.calls_after, 16.0);
    assert_eq!(comparison_totals.saving_pence, 4 * 7_000);
    assert_eq!(report.programme_cost_pence, 100_000);
    assert!((report.return_per_pound.unwrap() - 8.51).abs() < 1e-9);
    assert!(report.caveat.contains("Regression to the mean"));
    assert_eq!(report.csv.lines().count(), 3);

    let theirs = darlington
        .impact_report(ImpactReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        theirs
            .clients
            .iter()
            .map(|client| client.referral_id.as_str())
            .collect::<Vec<_>>(),
        [quiet.as_str()]
    );
    assert_eq!(theirs.comparison.unwrap().clients, 0);
    assert_eq!(
        (theirs.programme_cost_pence, theirs.return_per_pound),
        (0, None)
    );
    assert!(theirs.caveat.contains("Regression to the mean"));
    let other_area = darlington
        .impact_report(ImpactReportRequest {
            area: "North Durham".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other_area.code(), tonic::Code::PermissionDenied);
    let backwards = admin
        .impact_report(ImpactReportRequest {
            opened_from: "2026-05-01".into(),
            opened_to: "2026-04-01".into(),
            area: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&backwards), ["opened_to"]);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

fn formula(version: &str, pence_per_emergency_call: i64) -> toml::Value {
    let mut table = toml::Table::new();
    table.insert("version".into(), version.into());
    table.insert(
        "pence_per_emergency_call".into(),
        pence_per_emergency_call.into(),
    );
    toml::Value::Table(table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impact_formula_version_names_one_set_of_prices_for_good() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("contact_logging.impact", formula("board-2026", 8_000));
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    platform.stop().await.unwrap();

    env.settings
        .set("contact_logging.impact", formula("board-2026", 9_000));
    let refused = cpm::Platform::start(env.settings.clone(), &[Target::CONTACT_LOGGING])
        .await
        .err()
        .expect("a changed price under an old version is refused");
    assert!(
        format!("{refused:#}").contains("give the changed formula a new version"),
        "{refused:#}"
    );

    env.settings
        .set("contact_logging.impact", formula("board-2027", 9_000));
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let report = admin(&env, &channel)
        .impact_report(ImpactReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    let formula = report.formula.unwrap();
    assert_eq!(
        (formula.version.as_str(), formula.pence_per_emergency_call),
        ("board-2027", 9_000)
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

fn contact(referral_id: &str, activity: ContactActivity, minutes: i32) -> LogContactRequest {
    LogContactRequest {
        referral_id: referral_id.into(),
        activity: activity as i32,
        channel: cpm_proto::v1::ContactChannel::InPerson as i32,
        minutes,
        ..Default::default()
    }
}

/// Contacts per client, minutes per activity, engagement length and quiet
/// mentors for the coordinator's areas, as figures, CSV and an SVG chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contacts_report_covers_the_callers_areas_with_csv_and_a_chart() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut darlington =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let pool = env.database().await;

    let busy = new_id();
    open_case_file_in(&env, &admin, &busy, "Darlington").await;
    for (activity, minutes) in [
        (ContactActivity::HomeVisit, 60),
        (ContactActivity::Telephone, 15),
        (ContactActivity::Telephone, 15),
    ] {
        darlington
            .log_contact(contact(&busy, activity, minutes))
            .await
            .unwrap();
    }
    let idle = new_id();
    let idle_mentor = open_case_file_in(&env, &admin, &idle, "Darlington").await;
    sqlx::query(
        "UPDATE contact_logging.case_file SET opened_at = now() - interval '40 days' \
         WHERE referral_id = $1::uuid",
    )
    .bind(&idle)
    .execute(&pool)
    .await
    .unwrap();
    // The coordinator's contact does not make the idle case's mentor active.
    darlington
        .log_contact(contact(&idle, ContactActivity::Telephone, 5))
        .await
        .unwrap();
    let elsewhere = new_id();
    open_case_file_in(&env, &admin, &elsewhere, "East Durham").await;
    admin
        .log_contact(contact(&elsewhere, ContactActivity::CaseNotes, 10))
        .await
        .unwrap();

    let report = darlington
        .contacts_report(ContactsReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    let per_client = report.contacts_per_client.unwrap();
    assert_eq!(
        (
            per_client.clients,
            per_client.max,
            per_client.mean,
            per_client.up_to_49
        ),
        (2, 3, 2.0, 2)
    );
    let minutes: Vec<(i32, i32, i64)> = report
        .minutes_per_activity
        .iter()
        .filter(|activity| activity.contacts > 0)
        .map(|activity| (activity.activity, activity.contacts, activity.minutes))
        .collect();
    assert_eq!(
        minutes,
        [
            (ContactActivity::HomeVisit as i32, 1, 60),
            (ContactActivity::Telephone as i32, 3, 35)
        ]
    );
    let engagement = report.engagement.unwrap();
    assert_eq!((engagement.case_files, engagement.max_days), (2, 40));
    assert_eq!(
        report
            .quiet_mentors
            .iter()
            .map(|mentor| (
                mentor.mentor_id.as_str(),
                mentor.last_contact_logged_at.is_none()
            ))
            .collect::<Vec<_>>(),
        [(idle_mentor.as_str(), true)]
    );
    // Once the mentor logs a contact, they are no longer quiet.
    ContactLoggingServiceClient::new(env.mentor(&channel, &idle_mentor))
        .log_contact(contact(&idle, ContactActivity::TextOrEmail, 5))
        .await
        .unwrap();
    let quiet = darlington
        .contacts_report(ContactsReportRequest::default())
        .await
        .unwrap()
        .into_inner()
        .quiet_mentors;
    assert!(quiet.is_empty(), "{quiet:?}");
    assert!(report.csv.contains("contacts_per_client,clients,2\n"));
    assert!(
        report
            .csv
            .contains("minutes_per_activity,CONTACT_ACTIVITY_TELEPHONE,35\n")
    );
    assert!(
        report
            .svg
            .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
    );

    let everything = admin
        .contacts_report(ContactsReportRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everything.contacts_per_client.unwrap().clients, 3);
    let bad = darlington
        .contacts_report(ContactsReportRequest {
            quiet_days: 400,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["quiet_days"]);
    let mut mentor = ContactLoggingServiceClient::new(env.mentor(&channel, &idle_mentor));
    let denied = mentor
        .contacts_report(ContactsReportRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
