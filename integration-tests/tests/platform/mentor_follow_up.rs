//! After a pair is allocated: the early fit check ends a pair that is not
//! working and the client is re-matched (the former mentors lose the case,
//! the history stays); mentors marked incompatible are never proposed or
//! allocated together; coordinators see mentors waiting since training and
//! check-ins due, and each alert is announced once for notifications.

use std::time::Duration;

use chrono::Utc;
use cpm::Target;
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::{
    Allocation, AllocationEndReason, ConfirmAllocationRequest, ContactActivity, ContactChannel,
    GetCaseFileRequest, ListMentorAlertsRequest, LogContactRequest, MarkPairIncompatibleRequest,
    Mentor, MentorAlert, MentorAlertKind, ProposePoolMatchesRequest, RecordCheckInRequest,
    RegisterMentorRequest, ReportPoorFitRequest,
};
use tonic::Code;

use crate::harness::{Authed, TestEnv, connect, eventually, violated_fields};
use crate::mentor_matching::{WAIT, accept_client, admin, confirm, mentor, propose, register};

const AREA: &str = "Darlington";

/// Proposes pairs for the client, then confirms `pair`: a proposed pair,
/// as a coordinator confirms one.
pub(crate) async fn allocate(
    matching: &mut MentorMatchingServiceClient<Authed>,
    referral_id: &str,
    pair: [&Mentor; 2],
) -> Allocation {
    confirm(matching, referral_id, pair).await.unwrap()
}

fn report(allocation: &Allocation, incompatible: bool) -> ReportPoorFitRequest {
    ReportPoorFitRequest {
        allocation_id: allocation.allocation_id.clone(),
        reason: "the client and the pair are not getting on".into(),
        mentors_incompatible: incompatible,
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn sees_case(cases: &ContactLoggingServiceClient<Authed>, referral_id: &str) -> Code {
    match cases
        .clone()
        .get_case_file(GetCaseFileRequest {
            referral_id: referral_id.into(),
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_that_is_not_working_is_ended_early_and_the_client_rematched() {
    let env = TestEnv::new().await;
    let platform = env.start(&Target::ALL).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut mentors = Vec::new();
    for _ in 0..4 {
        mentors.push(register(&mut admin, AREA).await);
    }
    let client = accept_client(&env, &admin, AREA).await;
    let first = allocate(&mut admin, &client, [&mentors[0], &mentors[1]]).await;
    let first_pair = sorted(first.mentor_ids.clone());
    let first_mentor =
        ContactLoggingServiceClient::new(env.mentor(&channel, &mentors[0].mentor_id));
    eventually(WAIT, "the first pair has the case", || {
        let cases = first_mentor.clone();
        let client = client.clone();
        async move { sees_case(&cases, &client).await == Code::Ok }
    })
    .await;

    // Only the pair's own mentors, or staff, may say it is not working;
    // only staff may mark the mentors incompatible.
    let mut outsider =
        MentorMatchingServiceClient::new(env.mentor(&channel, &mentors[2].mentor_id));
    let refused = outsider
        .report_poor_fit(report(&first, false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let mut as_mentor =
        MentorMatchingServiceClient::new(env.mentor(&channel, &mentors[0].mentor_id));
    let refused = as_mentor
        .report_poor_fit(report(&first, true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let invalid = as_mentor
        .report_poor_fit(ReportPoorFitRequest {
            reason: " ".into(),
            ..report(&first, false)
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&invalid), ["reason"]);

    let ended = as_mentor
        .report_poor_fit(report(&first, false))
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();
    assert!(!ended.active);
    assert_eq!(ended.end_reason(), AllocationEndReason::PoorFit);
    assert!(ended.ended_at.is_some());
    let again = as_mentor
        .report_poor_fit(report(&first, false))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "ended once");

    // The client is proposed again, never with the pair that did not work.
    let proposals = propose(&mut admin, &client).await.unwrap();
    assert!(!proposals.is_empty(), "the client waits again");
    assert!(
        proposals
            .iter()
            .all(|pair| sorted(pair.clone()) != first_pair),
        "{proposals:?}"
    );
    let second = allocate(&mut admin, &client, [&mentors[2], &mentors[3]]).await;
    assert!(second.active);

    // The former mentors lose the case; the new pair has it.
    let third_mentor =
        ContactLoggingServiceClient::new(env.mentor(&channel, &mentors[2].mentor_id));
    eventually(WAIT, "the case moves to the new pair", || {
        let (first_mentor, third_mentor) = (first_mentor.clone(), third_mentor.clone());
        let client = client.clone();
        async move {
            sees_case(&first_mentor, &client).await == Code::NotFound
                && sees_case(&third_mentor, &client).await == Code::Ok
        }
    })
    .await;

    // Both allocations are kept, the first with who ended it and why.
    let database = env.database().await;
    let history: Vec<(bool, i32, Option<String>)> = sqlx::query_as(
        "SELECT active, end_reason, end_note FROM mentor_matching.allocation \
         WHERE referral_id = $1::uuid ORDER BY confirmed_at",
    )
    .bind(&client)
    .fetch_all(&database)
    .await
    .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0],
        (
            false,
            AllocationEndReason::PoorFit as i32,
            Some("the client and the pair are not getting on".into())
        )
    );
    assert!(history[1].0);
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_first_contacts_a_pair_is_no_longer_ended_as_a_poor_fit() {
    let env = TestEnv::new().await;
    let platform = env.start(&Target::ALL).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let pair = [
        register(&mut admin, AREA).await,
        register(&mut admin, AREA).await,
    ];
    let client = accept_client(&env, &admin, AREA).await;
    let allocation = allocate(&mut admin, &client, [&pair[0], &pair[1]]).await;
    let mut cases = ContactLoggingServiceClient::new(env.mentor(&channel, &pair[0].mentor_id));
    eventually(WAIT, "the case opens", || {
        let cases = cases.clone();
        let client = client.clone();
        async move { sees_case(&cases, &client).await == Code::Ok }
    })
    .await;
    // The default window is six contacts; a seventh is past it.
    for _ in 0..7 {
        cases
            .log_contact(LogContactRequest {
                referral_id: client.clone(),
                activity: ContactActivity::Telephone as i32,
                channel: ContactChannel::InPerson as i32,
                minutes: 20,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let database = env.database().await;
    eventually(WAIT, "matching counts the contacts", || {
        let database = database.clone();
        let id = allocation.allocation_id.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT contacts FROM mentor_matching.allocation WHERE allocation_id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&database)
            .await
            .unwrap()
                == 7
        }
    })
    .await;
    let late = admin
        .report_poor_fit(report(&allocation, false))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("early fit window"), "{late:?}");
    let active: bool = sqlx::query_scalar(
        "SELECT active FROM mentor_matching.allocation WHERE allocation_id = $1::uuid",
    )
    .bind(&allocation.allocation_id)
    .fetch_one(&database)
    .await
    .unwrap();
    assert!(active, "nothing changed");
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentors_marked_incompatible_are_never_proposed_or_allocated_together() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mentors = [
        register(&mut admin, AREA).await,
        register(&mut admin, AREA).await,
        register(&mut admin, AREA).await,
    ];
    let elsewhere = register(&mut admin, "Stockton").await;
    let mut coordinator = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &[AREA]));
    let mark = |ids: [&Mentor; 2]| MarkPairIncompatibleRequest {
        mentor_ids: ids.map(|m| m.mentor_id.clone()).to_vec(),
        reason: "they fell out at training".into(),
    };
    let invalid = coordinator
        .mark_pair_incompatible(mark([&mentors[0], &mentors[0]]))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&invalid), ["mentor_ids"]);
    let outside = coordinator
        .mark_pair_incompatible(mark([&mentors[0], &elsewhere]))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::NotFound, "a mentor of another area");
    coordinator
        .mark_pair_incompatible(mark([&mentors[1], &mentors[0]]))
        .await
        .unwrap();

    let client = accept_client(&env, &admin, AREA).await;
    let marked = sorted(vec![
        mentors[0].mentor_id.clone(),
        mentors[1].mentor_id.clone(),
    ]);
    let proposals: Vec<Vec<String>> = propose(&mut admin, &client)
        .await
        .unwrap()
        .into_iter()
        .map(sorted)
        .collect();
    assert_eq!(
        proposals.len(),
        2,
        "the two other pairs of three: {proposals:?}"
    );
    assert!(!proposals.contains(&marked));
    let refused = admin
        .confirm_allocation(ConfirmAllocationRequest {
            referral_id: client.clone(),
            mentor_ids: marked.clone(),
            reason: "we know best".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("never to be proposed together"));
    confirm(&mut admin, &client, [&mentors[0], &mentors[2]])
        .await
        .unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}

async fn alerts(
    matching: &mut MentorMatchingServiceClient<Authed>,
    area: &str,
) -> Result<Vec<MentorAlert>, tonic::Status> {
    Ok(matching
        .list_mentor_alerts(ListMentorAlertsRequest {
            area: area.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .alerts)
}

fn days_ago(days: i64) -> String {
    (Utc::now().date_naive() - chrono::Duration::days(days)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentors_waiting_since_training_or_due_a_check_in_are_reported_and_announced_once() {
    let mut env = TestEnv::new().await;
    env.settings.set("mentor_matching.alert_sweep_secs", 10);
    let platform = env.start(&Target::ALL).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let trained = |days: i64| RegisterMentorRequest {
        display_name: format!("Mentor {}", uuid::Uuid::new_v4().simple()),
        training_completed_on: days_ago(days),
        ..mentor(AREA)
    };
    let waiting = admin
        .register_mentor(trained(40))
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    let recent = admin
        .register_mentor(trained(10))
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    let report = alerts(&mut admin, AREA).await.unwrap();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].mentor_id, waiting.mentor_id);
    assert_eq!(report[0].kind(), MentorAlertKind::WaitingSinceTraining);
    assert_eq!(report[0].days, 40);
    assert_eq!(report[0].since, days_ago(40));

    // Allocated, both become ACTIVE: no longer waiting, next check-in in
    // 90 days. A check-in recorded as 100 days ago makes it overdue.
    let client = accept_client(&env, &admin, AREA).await;
    confirm(&mut admin, &client, [&waiting, &recent])
        .await
        .unwrap();
    assert_eq!(alerts(&mut admin, AREA).await.unwrap(), []);
    let next = admin
        .record_check_in(RecordCheckInRequest {
            mentor_id: recent.mentor_id.clone(),
            held_on: days_ago(100),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.next_due_on, days_ago(10));
    let report = alerts(&mut admin, AREA).await.unwrap();
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(report[0].mentor_id, recent.mentor_id);
    assert_eq!(report[0].kind(), MentorAlertKind::CheckInOverdue);
    assert_eq!(report[0].days, 10);

    let database = env.database().await;
    let read: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mentor_matching.mentor_data_read \
         WHERE purpose = 'ListMentorAlerts' AND mentor_id = $1::uuid",
    )
    .bind(&waiting.mentor_id)
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(read, 1, "the alert's reading is recorded");
    database.close().await;

    // A coordinator of another area sees none of it and may not ask for it.
    let mut other = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Stockton"]));
    assert_eq!(alerts(&mut other, "").await.unwrap(), []);
    assert_eq!(
        alerts(&mut other, AREA).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let future = admin
        .record_check_in(RecordCheckInRequest {
            mentor_id: recent.mentor_id.clone(),
            held_on: days_ago(-1),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&future), ["held_on"]);
    let bad_token = admin
        .list_mentor_alerts(ListMentorAlertsRequest {
            page_token: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_token), ["page_token"]);

    // The sweep announces the overdue check-in once; notifications keeps it.
    let database = env.database().await;
    let kept = |database: sqlx::PgPool, mentor: String| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM notifications.staff_alert WHERE mentor_id = $1::uuid",
        )
        .bind(mentor)
        .fetch_one(&database)
        .await
        .unwrap()
    };
    eventually(
        Duration::from_secs(30),
        "the alert reaches notifications",
        || {
            let check = kept(database.clone(), recent.mentor_id.clone());
            async move { check.await == 1 }
        },
    )
    .await;
    // Two more sweeps later it is still announced once.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(kept(database.clone(), recent.mentor_id.clone()).await, 1);
    let raised: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mentor_matching.mentor_alert_raised WHERE mentor_id = $1::uuid",
    )
    .bind(&recent.mentor_id)
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(raised, 1);

    // The area's coordinators find it among their staff alerts; it is
    // delivered by that listing, and other areas' coordinators never see it.
    let staff_alerts = |areas: &[&str]| {
        cpm_proto::v1::notifications_service_client::NotificationsServiceClient::new(
            env.coordinator_in(&channel, areas),
        )
    };
    let list = |undelivered_only: bool| cpm_proto::v1::ListStaffAlertsRequest {
        undelivered_only,
        ..Default::default()
    };
    let listed = staff_alerts(&[AREA])
        .list_staff_alerts(list(true))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    let alert = listed
        .iter()
        .find(|alert| alert.mentor_id == recent.mentor_id)
        .expect("the overdue check-in is listed");
    assert_eq!(alert.kind, cpm_proto::v1::StaffAlertKind::Mentor as i32);
    assert_eq!(
        alert.mentor_alert_kind,
        MentorAlertKind::CheckInOverdue as i32
    );
    assert!(alert.delivered_at.is_some());
    let again = staff_alerts(&[AREA])
        .list_staff_alerts(list(true))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(
        again
            .iter()
            .all(|alert| alert.mentor_id != recent.mentor_id),
        "delivered once"
    );
    let elsewhere = staff_alerts(&["Stockton"])
        .list_staff_alerts(list(false))
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(elsewhere.is_empty(), "{elsewhere:?}");

    // A check-in today clears it.
    let next = admin
        .record_check_in(RecordCheckInRequest {
            mentor_id: recent.mentor_id.clone(),
            held_on: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.next_due_on, days_ago(-90));
    assert_eq!(alerts(&mut admin, AREA).await.unwrap(), []);
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_pool_matching_proposes_one_pair_per_client_within_capacity_and_stores_them() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    // Four mentors with one place each: two pairs for three clients.
    for _ in 0..4 {
        admin
            .register_mentor(RegisterMentorRequest {
                display_name: format!("Mentor {}", uuid::Uuid::new_v4().simple()),
                capacity: 1,
                ..mentor(AREA)
            })
            .await
            .unwrap();
    }
    register(&mut admin, "Stockton").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(accept_client(&env, &admin, AREA).await);
    }
    let mut coordinator = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &[AREA]));
    let batch = coordinator
        .propose_pool_matches(ProposePoolMatchesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.proposals.len(), 2, "{batch:?}");
    assert_eq!(batch.unmatched_referral_ids.len(), 1);
    let mut used: Vec<String> = batch
        .proposals
        .iter()
        .flat_map(|p| p.proposal.as_ref().unwrap().mentor_ids.clone())
        .collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 4, "no mentor beyond their one place");
    let total: f64 = batch
        .proposals
        .iter()
        .map(|p| p.proposal.as_ref().unwrap().score)
        .sum();
    assert!((batch.total_score - total).abs() < 1e-9);
    let outside = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Stockton"]))
        .propose_pool_matches(ProposePoolMatchesRequest { area: AREA.into() })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);

    // Every mentor the batch named is recorded as read.
    let database = env.database().await;
    let read: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT mentor_id) FROM mentor_matching.mentor_data_read \
         WHERE purpose = 'ProposePoolMatches'",
    )
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(read, 4);
    database.close().await;

    // Each pair is a stored proposal: confirming it needs no reason.
    let first = &batch.proposals[0];
    let confirmed = coordinator
        .confirm_allocation(ConfirmAllocationRequest {
            referral_id: first.referral_id.clone(),
            mentor_ids: first.proposal.as_ref().unwrap().mentor_ids.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();
    assert_eq!(
        confirmed.proposal_id,
        first.proposal.as_ref().unwrap().proposal_id
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

fn weights(version: &str, area: f64) -> toml::Value {
    let mut table = toml::Table::new();
    table.insert("version".into(), version.into());
    table.insert("area".into(), area.into());
    toml::Value::Table(table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weights_version_names_one_set_of_weights_for_good() {
    let mut env = TestEnv::new().await;
    env.settings
        .set("mentor_matching.weights", weights("trial-1", 3.0));
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    platform.stop().await.unwrap();

    // The same version with another weight is refused at start.
    env.settings
        .set("mentor_matching.weights", weights("trial-1", 4.0));
    let refused = cpm::Platform::start(env.settings.clone(), &[Target::MENTOR_MATCHING])
        .await
        .err()
        .expect("a changed weight under an old version is refused");
    assert!(
        format!("{refused:#}").contains("give the changed weights a new version"),
        "{refused:#}"
    );

    // Under a new version it starts, and proposals carry that version.
    env.settings
        .set("mentor_matching.weights", weights("trial-2", 4.0));
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    register(&mut admin, AREA).await;
    register(&mut admin, AREA).await;
    let client = accept_client(&env, &admin, AREA).await;
    let proposal = admin
        .propose_matches(cpm_proto::v1::ProposeMatchesRequest {
            referral_id: client,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .proposals
        .remove(0);
    assert_eq!(proposal.weights_version, "trial-2");
    assert!(
        proposal.reasons[0].contains("(+4)"),
        "{:?}",
        proposal.reasons
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}
