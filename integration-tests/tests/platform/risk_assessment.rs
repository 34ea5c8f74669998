//! Risk assessment over gRPC: the age of the queue, richer checks, the
//! override path, wrong-state calls, role refusals, the audit trail,
//! re-assessment ending support (mentors freed, case file closed, referrer
//! told), the history of a re-referred client, the outcome stats, a
//! client's free text sealed under their key and gone once they are erased,
//! and staff scoped to their areas, which must be the programme's.

use std::time::Duration;

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::risk_assessment_service_client::RiskAssessmentServiceClient;
use cpm_proto::v1::{
    Assessment, AssessmentState, AssessmentStatsRequest, CaseState, CheckKind, ClientErased,
    ConfirmAllocationRequest, ContactActivity, ContactChannel, DecideRequest, Decision,
    EngagementAction, EstimateWaitRequest, Gender, GetAssessmentRequest, GetCaseFileRequest,
    HomeVisit, KnownRisk, ListQueueRequest, LivedExperience, LogContactRequest,
    NonEngagementReason, NonEngagementStage, ProposeMatchesRequest, ReassessRequest,
    RecordCheckRequest, ReferralStatus, ReferralSubmitted, ReferredTo, RegisterMentorRequest,
    RiskLevel, Vulnerability, WillWantCapacityScores,
};
use cpm_runtime::auth::Role;
use cpm_runtime::client_keys::SealError;
use cpm_runtime::grpc::values::timestamp;
use prost::Message as _;
use tonic::transport::Channel;

use crate::bus::publish_raw;
use crate::harness::violated_fields as violations;
use crate::harness::{Authed, TestEnv, await_status, connect, eventually, referral_request};

const WAIT: Duration = Duration::from_secs(30);

type Assessments = RiskAssessmentServiceClient<Authed>;

fn assessments(env: &TestEnv, channel: &Channel) -> Assessments {
    RiskAssessmentServiceClient::new(env.coordinator(channel))
}

/// Submits a referral in `area` for `agency` and returns its ID.
async fn submit(env: &TestEnv, channel: &Channel, agency: &str, area: &str) -> String {
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(channel, agency));
    crate::harness::submit(&mut intake, referral_request(area))
        .await
        .referral_id
}

async fn try_assessment_of(client: &mut Assessments, referral_id: &str) -> Option<Assessment> {
    client
        .get_assessment(GetAssessmentRequest {
            referral_id: referral_id.to_owned(),
            ..Default::default()
        })
        .await
        .ok()
        .and_then(|response| response.into_inner().assessment)
}

/// Confirms `referral_id`'s possible link to `earlier` and waits for its
/// assessment to show the earlier referral.
async fn linked(
    env: &TestEnv,
    channel: &tonic::transport::Channel,
    client: &Assessments,
    referral_id: &str,
    earlier: &str,
) -> Assessment {
    crate::harness::decide_link(env, channel, referral_id, earlier, true).await;
    eventually(WAIT, "the confirmed link reaches the assessment", || {
        let mut client = client.clone();
        async move {
            try_assessment_of(&mut client, referral_id)
                .await
                .is_some_and(|assessment| assessment.earlier_referral_id == earlier)
        }
    })
    .await;
    try_assessment_of(&mut client.clone(), referral_id)
        .await
        .unwrap()
}

/// The referral's assessment, once `referral.submitted` has opened it.
async fn assessment_of(client: &Assessments, referral_id: &str) -> Assessment {
    eventually(WAIT, "the referral's assessment opens", || {
        let mut client = client.clone();
        async move { try_assessment_of(&mut client, referral_id).await.is_some() }
    })
    .await;
    try_assessment_of(&mut client.clone(), referral_id)
        .await
        .unwrap()
}

async fn record(
    client: &mut Assessments,
    assessment_id: &str,
    kind: CheckKind,
    satisfied: bool,
) -> Assessment {
    client
        .record_check(RecordCheckRequest {
            assessment_id: assessment_id.to_owned(),
            kind: kind as i32,
            satisfied,
            notes: "checked".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessment
        .unwrap()
}

/// Records the three required checks, satisfied, and accepts.
async fn accept(client: &mut Assessments, assessment_id: &str) -> Assessment {
    for kind in [
        CheckKind::AdultAtReferral,
        CheckKind::RiskToVolunteers,
        CheckKind::WillWantCapacity,
    ] {
        record(client, assessment_id, kind, true).await;
    }
    client
        .decide(DecideRequest {
            assessment_id: assessment_id.to_owned(),
            decision: Decision::Accept as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessment
        .unwrap()
}

async fn decline(
    client: &mut Assessments,
    assessment_id: &str,
    stage: NonEngagementStage,
    reason: NonEngagementReason,
    referred_to: ReferredTo,
) -> Assessment {
    client
        .decide(DecideRequest {
            assessment_id: assessment_id.to_owned(),
            decision: Decision::NotTakenOn as i32,
            stage: stage as i32,
            reason: reason as i32,
            referred_to: referred_to as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessment
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_coordinators_and_admins_see_or_change_assessments() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::RISK_ASSESSMENT]).await;
    let channel = connect(&platform).await;
    let referral_id = uuid::Uuid::now_v7().to_string();
    for caller in [
        env.referrer(&channel, "agency-roles"),
        env.mentor(&channel, &uuid::Uuid::now_v7().to_string()),
    ] {
        let mut client = RiskAssessmentServiceClient::new(caller);
        let denied = [
            client
                .list_queue(ListQueueRequest::default())
                .await
                .unwrap_err(),
            client
                .get_assessment(GetAssessmentRequest {
                    referral_id: referral_id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            client
                .reassess(ReassessRequest {
                    referral_id: referral_id.clone(),
                    action: EngagementAction::End as i32,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            client
                .assessment_stats(AssessmentStatsRequest::default())
                .await
                .unwrap_err(),
        ];
        for status in denied {
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        }
    }
    let mut anonymous = RiskAssessmentServiceClient::new(channel.clone());
    assert_eq!(
        anonymous
            .list_queue(ListQueueRequest::default())
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    // An admin passes the role check (and then finds nothing).
    let admin =
        cpm::client::authed(&channel, &env.token("admin", Role::Admin, None, None)).unwrap();
    let mut admin = RiskAssessmentServiceClient::new(admin);
    assert_eq!(
        admin
            .reassess(ReassessRequest {
                referral_id,
                action: EngagementAction::Continue as i32,
                ..Default::default()
            })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// The referrals in `area`'s queue (every area of the caller's when empty).
async fn queue(client: &mut Assessments, area: &str) -> Result<Vec<String>, tonic::Status> {
    Ok(client
        .list_queue(ListQueueRequest {
            area: area.into(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner()
        .assessments
        .into_iter()
        .map(|assessment| assessment.referral_id)
        .collect())
}

/// Stats of the referrals made in the hour either side of now, in `area`.
fn stats_around_now(area: &str) -> AssessmentStatsRequest {
    let now = chrono::Utc::now();
    AssessmentStatsRequest {
        from: Some(timestamp(now - chrono::Duration::hours(1))),
        to: Some(timestamp(now + chrono::Duration::hours(1))),
        area: area.into(),
    }
}

/// What risk assessment holds about `referral`: its checks, audit entries,
/// re-assessments and readings of its client's text, and its decision.
async fn footprint(pool: &sqlx::PgPool, referral: &str) -> [i64; 5] {
    const ASSESSMENT: &str = "JOIN risk_assessment.assessment a USING (assessment_id) \
                              WHERE a.referral_id = ANY($1)";
    let referrals = [uuid::Uuid::parse_str(referral).unwrap()];
    [
        count(
            pool,
            &format!("SELECT count(*) FROM risk_assessment.assessment_check {ASSESSMENT}"),
            &referrals,
        )
        .await,
        count(
            pool,
            &format!("SELECT count(*) FROM risk_assessment.assessment_audit {ASSESSMENT}"),
            &referrals,
        )
        .await,
        count(
            pool,
            &format!("SELECT count(*) FROM risk_assessment.review {ASSESSMENT}"),
            &referrals,
        )
        .await,
        count(
            pool,
            "SELECT count(*) FROM risk_assessment.personal_data_read WHERE referral_id = ANY($1)",
            &referrals,
        )
        .await,
        count(
            pool,
            "SELECT count(*) FROM risk_assessment.assessment \
             WHERE referral_id = ANY($1) AND decided_at IS NOT NULL",
            &referrals,
        )
        .await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_sees_and_changes_only_the_assessments_of_their_areas() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let channel = connect(&platform).await;
    let mut everywhere = assessments(&env, &channel);
    let ours = submit(&env, &channel, "agency-areas", "Darlington").await;
    let theirs = submit(&env, &channel, "agency-areas", "East Durham").await;
    let our_assessment = assessment_of(&everywhere, &ours).await.assessment_id;
    let their_assessment = assessment_of(&everywhere, &theirs).await.assessment_id;
    // East Durham's coordinators have written about their client.
    record(
        &mut everywhere,
        &their_assessment,
        CheckKind::AdultAtReferral,
        true,
    )
    .await;

    let mut darlington =
        RiskAssessmentServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    // The queue: all of their areas, or one of them however it is spelt.
    for area in ["", "Darlington", " darlington "] {
        assert_eq!(
            queue(&mut darlington, area).await.unwrap(),
            std::slice::from_ref(&ours),
            "{area:?}"
        );
    }
    // Another area's queue is refused, and says why.
    let status = queue(&mut darlington, "East Durham").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("East Durham") && status.message().contains("Darlington"),
        "{status:?}"
    );
    // An admin sees every area's.
    let admin =
        cpm::client::authed(&channel, &env.token("admin", Role::Admin, None, None)).unwrap();
    let mut admin = RiskAssessmentServiceClient::new(admin);
    let mut all = queue(&mut admin, "").await.unwrap();
    all.sort();
    let mut both = vec![ours.clone(), theirs.clone()];
    both.sort();
    assert_eq!(all, both);
    assert_eq!(
        queue(&mut admin, "East Durham").await.unwrap(),
        std::slice::from_ref(&theirs)
    );

    // Another area's assessment is one that does not exist, however it is
    // asked for, and nothing is recorded or read.
    let pool = env.database().await;
    let missing = darlington
        .get_assessment(GetAssessmentRequest {
            assessment_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let before = footprint(&pool, &theirs).await;
    let refusals = [
        darlington
            .get_assessment(GetAssessmentRequest {
                assessment_id: their_assessment.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        darlington
            .get_assessment(GetAssessmentRequest {
                referral_id: theirs.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        darlington
            .record_check(RecordCheckRequest {
                assessment_id: their_assessment.clone(),
                kind: CheckKind::RiskToVolunteers as i32,
                satisfied: false,
                notes: "not mine to write".into(),
                risk_level: RiskLevel::High as i32,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        darlington
            .decide(DecideRequest {
                assessment_id: their_assessment.clone(),
                decision: Decision::Accept as i32,
                rationale: "not mine to decide".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ];
    for status in refusals {
        assert_eq!(
            (status.code(), status.message()),
            (missing.code(), missing.message()),
            "{status:?}"
        );
    }
    assert_eq!(footprint(&pool, &theirs).await, before);

    // Nor can they re-assess another area's client in support.
    accept(&mut everywhere, &their_assessment).await;
    let before = footprint(&pool, &theirs).await;
    let status = darlington
        .reassess(ReassessRequest {
            referral_id: theirs.clone(),
            action: EngagementAction::End as i32,
            reason: NonEngagementReason::ClientDeclined as i32,
            rationale: "not mine to end".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (missing.code(), missing.message())
    );
    assert_eq!(footprint(&pool, &theirs).await, before);

    // Their stats count their own areas; another area's are refused.
    let stats = darlington
        .assessment_stats(stats_around_now(""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.referrals, stats.still_open, stats.accepted),
        (1, 1, 0)
    );
    let status = darlington
        .assessment_stats(stats_around_now("East Durham"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Their own assessment they work as before.
    let checked = record(
        &mut darlington,
        &our_assessment,
        CheckKind::AdultAtReferral,
        true,
    )
    .await;
    assert_eq!(checked.checks.len(), 1);

    // A coordinator whose token names no area sees none.
    let mut nowhere = RiskAssessmentServiceClient::new(env.coordinator_in(&channel, &[]));
    assert!(queue(&mut nowhere, "").await.unwrap().is_empty());
    assert!(try_assessment_of(&mut nowhere, &ours).await.is_none());

    // An admin sees and counts every area's.
    let shown = try_assessment_of(&mut admin, &theirs).await.unwrap();
    assert_eq!(shown.area, "East Durham");
    assert_eq!(
        shown.decision(),
        Decision::Accept,
        "accepted by East Durham"
    );
    assert_eq!(
        admin
            .assessment_stats(stats_around_now(""))
            .await
            .unwrap()
            .into_inner()
            .referrals,
        2
    );
    assert_eq!(
        admin
            .assessment_stats(stats_around_now("east durham"))
            .await
            .unwrap()
            .into_inner()
            .accepted,
        1
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_area_a_request_names_must_be_one_of_the_programme_s() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::RISK_ASSESSMENT]).await;
    let channel = connect(&platform).await;
    let admin =
        cpm::client::authed(&channel, &env.token("admin", Role::Admin, None, None)).unwrap();
    for mut client in [
        assessments(&env, &channel),
        RiskAssessmentServiceClient::new(admin),
    ] {
        // Registered areas, in any letter case, are found (and empty here).
        assert!(queue(&mut client, "south DURHAM").await.unwrap().is_empty());
        // A look-alike would be a queue nobody sees: it is refused.
        for area in [
            "Nowhere",
            "Darlington\u{200b}",
            "\u{200b}Darlington",
            "Darling\u{200d}ton",
            "Darlingt0n",
        ] {
            let status = queue(&mut client, area).await.unwrap_err();
            assert_eq!(violations(&status), ["area"], "{area:?}");
            let status = client
                .assessment_stats(stats_around_now(area))
                .await
                .unwrap_err();
            assert_eq!(violations(&status), ["area"], "{area:?}");
        }
    }
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_ages_assessments_in_working_days_and_flags_overdue_ones() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let channel = connect(&platform).await;
    let area = "Paging".to_owned();
    let older = submit(&env, &channel, "agency-queue", &area).await;
    let client = assessments(&env, &channel);
    let older_assessment = assessment_of(&client, &older).await;
    let newer = submit(&env, &channel, "agency-queue", &area).await;
    assessment_of(&client, &newer).await;

    // The older referral was made four weeks ago and never checked.
    let pool = env.database().await;
    sqlx::query(
        "UPDATE risk_assessment.assessment SET referred_at = now() - interval '28 days' \
         WHERE referral_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&older).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    let queue = client
        .clone()
        .list_queue(ListQueueRequest {
            area: area.clone(),
            page_size: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessments;
    let ids: Vec<&str> = queue.iter().map(|a| a.referral_id.as_str()).collect();
    assert_eq!(ids, [older.as_str(), newer.as_str()], "oldest first");
    // One to a page: the token carries on after the oldest.
    let first = client
        .clone()
        .list_queue(ListQueueRequest {
            area: area.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.assessments[0].referral_id, older);
    let second = client
        .clone()
        .list_queue(ListQueueRequest {
            area: area.clone(),
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.assessments[0].referral_id, newer);
    assert!(second.next_page_token.is_empty(), "the last page");
    assert_eq!(queue[0].working_days_open, 20);
    assert!(queue[0].overdue);
    assert!(queue[0].first_checked_at.is_none());
    assert!(queue[1].working_days_open <= 1);
    assert!(!queue[1].overdue);

    // A first check stops the clock where it stands: still overdue, late.
    let checked = record(
        &mut client.clone(),
        &older_assessment.assessment_id,
        CheckKind::AdultAtReferral,
        true,
    )
    .await;
    assert!(checked.first_checked_at.is_some());
    assert!(checked.overdue);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_state_calls_are_refused_and_every_change_is_audited() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let channel = connect(&platform).await;
    let referral_id = submit(&env, &channel, "agency-state", "Darlington").await;
    let mut client = assessments(&env, &channel);
    let assessment = assessment_of(&client, &referral_id).await;
    let id = assessment.assessment_id.clone();

    // An open assessment cannot be re-assessed.
    let status = client
        .reassess(ReassessRequest {
            referral_id: referral_id.clone(),
            action: EngagementAction::Continue as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // Accepting without the checks is refused.
    let status = client
        .decide(DecideRequest {
            assessment_id: id.clone(),
            decision: Decision::Accept as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("CHECK_KIND_ADULT_AT_REFERRAL"));

    // Invalid details are all reported together.
    let status = client
        .record_check(RecordCheckRequest {
            assessment_id: id.clone(),
            kind: CheckKind::HomeVisit as i32,
            satisfied: true,
            risk_level: RiskLevel::Low as i32,
            home_visit: Some(HomeVisit {
                attended_by: vec!["coordinator a".into()],
                referrer_co_visited: false,
                phone_contact_first: false,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&status),
        [
            "risk_level",
            "home_visit.attended_by",
            "home_visit.phone_contact_first"
        ]
    );
    // Referred on without saying to whom.
    let status = client
        .decide(DecideRequest {
            assessment_id: id.clone(),
            decision: Decision::NotTakenOn as i32,
            stage: NonEngagementStage::InitialRiskAssessment as i32,
            reason: NonEngagementReason::ReferredOn as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["referred_to"]);

    // The richer checks are recorded and shown.
    client
        .record_check(RecordCheckRequest {
            assessment_id: id.clone(),
            kind: CheckKind::DatabasesChecked as i32,
            satisfied: true,
            databases: vec!["police national computer".into(), "social care".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let shown = client
        .record_check(RecordCheckRequest {
            assessment_id: id.clone(),
            kind: CheckKind::ProfessionalsConsulted as i32,
            satisfied: true,
            professionals: vec!["GP".into(), "community psychiatric nurse".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessment
        .unwrap();
    let databases = shown
        .checks
        .iter()
        .find(|check| check.kind() == CheckKind::DatabasesChecked)
        .unwrap();
    assert_eq!(databases.databases.len(), 2);
    assert_eq!(databases.recorded_by, "coordinator");

    let declined = decline(
        &mut client,
        &id,
        NonEngagementStage::InitialRiskAssessment,
        NonEngagementReason::ReferredOn,
        ReferredTo::RestorativeIntervention,
    )
    .await;
    assert_eq!(declined.referred_to(), ReferredTo::RestorativeIntervention);

    // A decided assessment takes no more checks or decisions, and one not
    // taken on is never re-assessed.
    let status = client
        .record_check(RecordCheckRequest {
            assessment_id: id.clone(),
            kind: CheckKind::AdultAtReferral as i32,
            satisfied: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let status = client
        .decide(DecideRequest {
            assessment_id: id.clone(),
            decision: Decision::NotTakenOn as i32,
            stage: NonEngagementStage::HomeVisit as i32,
            reason: NonEngagementReason::ClientDeclined as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let status = client
        .reassess(ReassessRequest {
            referral_id: referral_id.clone(),
            action: EngagementAction::End as i32,
            reason: NonEngagementReason::ClientDeclined as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // Opening, two checks and the decision are audited; refusals are not.
    let pool = env.database().await;
    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, actor FROM risk_assessment.assessment_audit \
         WHERE assessment_id = $1 ORDER BY assessment_audit_id",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .fetch_all(&pool)
    .await
    .unwrap();
    let names: Vec<&str> = actions.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(
        names,
        ["opened", "check_recorded", "check_recorded", "decided"]
    );
    assert_eq!(actions[0].1, "risk-assessment");
    assert_eq!(actions[3].1, "coordinator");
    let tampering = sqlx::query("DELETE FROM risk_assessment.assessment_audit")
        .execute(&pool)
        .await;
    assert!(tampering.is_err(), "the audit trail is append-only");
    let tampering = sqlx::query("UPDATE risk_assessment.assessment_audit SET actor = 'x'")
        .execute(&pool)
        .await;
    assert!(tampering.is_err(), "the audit trail is append-only");
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overriding_a_recommendation_needs_a_rationale() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let channel = connect(&platform).await;
    let referral_id = submit(&env, &channel, "agency-override", "Darlington").await;
    let mut client = assessments(&env, &channel);
    let id = assessment_of(&client, &referral_id).await.assessment_id;

    record(&mut client, &id, CheckKind::AdultAtReferral, true).await;
    // Marked satisfied, but a HIGH risk speaks against taking the client on.
    client
        .record_check(RecordCheckRequest {
            assessment_id: id.clone(),
            kind: CheckKind::RiskToVolunteers as i32,
            satisfied: true,
            risk_level: RiskLevel::High as i32,
            notes: "volatile when drinking".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let scored = client
        .record_check(RecordCheckRequest {
            assessment_id: id.clone(),
            kind: CheckKind::WillWantCapacity as i32,
            satisfied: true,
            scores: Some(WillWantCapacityScores {
                will: 4,
                want: 5,
                capacity: 3,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessment
        .unwrap();
    assert_eq!(scored.recommendation(), Decision::NotTakenOn);

    let status = client
        .decide(DecideRequest {
            assessment_id: id.clone(),
            decision: Decision::Accept as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["rationale"]);
    let accepted = client
        .decide(DecideRequest {
            assessment_id: id.clone(),
            decision: Decision::Accept as i32,
            rationale: "seen at home with two staff; the risk is managed in pairs".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessment
        .unwrap();
    assert_eq!(accepted.decision(), Decision::Accept);
    assert_eq!(accepted.recommendation(), Decision::NotTakenOn);
    assert_eq!(accepted.decided_by, "coordinator");

    let pool = env.database().await;
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM risk_assessment.assessment_audit \
         WHERE assessment_id = $1 AND action = 'decided'",
    )
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(detail.contains("overridden"), "{detail}");
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

async fn register_mentor(matching: &mut MentorMatchingServiceClient<Authed>, area: &str) -> String {
    matching
        .register_mentor(RegisterMentorRequest {
            display_name: format!("Mentor {}", uuid::Uuid::new_v4().simple()),
            gender: Gender::Female as i32,
            area: area.to_owned(),
            lived_experience: vec![LivedExperience::MentalHealth as i32],
            capacity: 1,
            safeguarding_trained_on: "2026-01-25".into(),
            agreement_signed_on: "2026-02-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap()
        .mentor_id
}

async fn free_places(matching: &MentorMatchingServiceClient<Authed>, area: &str) -> i32 {
    matching
        .clone()
        .estimate_wait(EstimateWaitRequest {
            area: area.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .free_mentor_places
}

async fn proposals(matching: &MentorMatchingServiceClient<Authed>, referral_id: &str) -> usize {
    matching
        .clone()
        .propose_matches(ProposeMatchesRequest {
            referral_id: referral_id.to_owned(),
            limit: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .proposals
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_support_frees_the_mentors_closes_the_case_and_tells_the_referrer() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let area = "Stockton".to_owned();
    let agency = "agency-end";
    let mut matching = MentorMatchingServiceClient::new(env.coordinator(&channel));
    register_mentor(&mut matching, &area).await;
    register_mentor(&mut matching, &area).await;
    assert_eq!(free_places(&matching, &area).await, 2);

    // Two clients accepted; the first gets both mentors.
    let mut client = assessments(&env, &channel);
    let first = submit(&env, &channel, agency, &area).await;
    let second = submit(&env, &channel, agency, &area).await;
    let first_id = assessment_of(&client, &first).await.assessment_id;
    let second_id = assessment_of(&client, &second).await.assessment_id;
    accept(&mut client, &first_id).await;
    accept(&mut client, &second_id).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, agency));
    for referral_id in [&first, &second] {
        let awaiting = await_status(
            &mut intake,
            referral_id,
            ReferralStatus::AwaitingMentors,
            WAIT,
        )
        .await;
        // The referrer is quoted a range: the median start and the 90th percentile.
        let (start, latest) = (
            awaiting.estimated_start.expect("a median start"),
            awaiting.estimated_start_latest.expect("a latest start"),
        );
        assert!(latest.seconds >= start.seconds, "{start:?} .. {latest:?}");
    }
    let pair = matching
        .propose_matches(ProposeMatchesRequest {
            referral_id: first.clone(),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .proposals
        .remove(0)
        .mentor_ids;
    matching
        .confirm_allocation(ConfirmAllocationRequest {
            referral_id: first.clone(),
            mentor_ids: pair,
            reason: String::new(),
        })
        .await
        .unwrap();
    await_status(&mut intake, &first, ReferralStatus::InSupport, WAIT).await;
    assert_eq!(free_places(&matching, &area).await, 0);
    assert_eq!(
        proposals(&matching, &second).await,
        0,
        "both mentors are full"
    );

    // A home visit asks for a review; continuing resolves it.
    let mut contacts = ContactLoggingServiceClient::new(env.coordinator(&channel));
    eventually(WAIT, "the case file opens and takes a visit", || {
        let mut contacts = contacts.clone();
        let first = first.clone();
        async move {
            contacts
                .log_contact(LogContactRequest {
                    referral_id: first,
                    activity: ContactActivity::HomeVisit as i32,
                    channel: ContactChannel::InPerson as i32,
                    minutes: 60,
                    summary: "second visit".into(),
                    ..Default::default()
                })
                .await
                .is_ok()
        }
    })
    .await;
    eventually(WAIT, "the visit asks for a review", || {
        let mut client = client.clone();
        let first = first.clone();
        async move {
            try_assessment_of(&mut client, &first)
                .await
                .is_some_and(|assessment| assessment.open_reviews == 1)
        }
    })
    .await;
    let continued = client
        .reassess(ReassessRequest {
            referral_id: first.clone(),
            action: EngagementAction::Continue as i32,
            rationale: "going well".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(continued.review.unwrap().resolved_requests, 1);
    let assessment = continued.assessment.unwrap();
    assert_eq!(assessment.open_reviews, 0);
    assert_eq!(assessment.engagement(), EngagementAction::Continue);

    // Ending support: stage defaults to DURING_ENGAGEMENT.
    let ended = client
        .reassess(ReassessRequest {
            referral_id: first.clone(),
            action: EngagementAction::End as i32,
            reason: NonEngagementReason::RiskToVolunteers as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let review = ended.review.unwrap();
    assert_eq!(review.stage(), NonEngagementStage::DuringEngagement);
    assert_eq!(review.reviewed_by, "coordinator");
    let assessment = ended.assessment.unwrap();
    assert_eq!(assessment.reviews.len(), 2);
    assert_eq!(assessment.engagement(), EngagementAction::End);

    // The referrer sees the engagement ended, with its stage and reason.
    let referral = await_status(&mut intake, &first, ReferralStatus::NotTakenOn, WAIT).await;
    assert_eq!(
        referral.not_taken_on_stage(),
        NonEngagementStage::DuringEngagement
    );
    assert_eq!(
        referral.not_taken_on_reason(),
        NonEngagementReason::RiskToVolunteers
    );
    // The mentors are free again and can be proposed for the next client.
    eventually(WAIT, "the mentors are freed", || {
        let matching = matching.clone();
        let area = area.clone();
        async move { free_places(&matching, &area).await == 2 }
    })
    .await;
    assert!(proposals(&matching, &second).await > 0);
    // The case file is closed: no more contacts.
    eventually(WAIT, "the case file closes", || {
        let mut contacts = contacts.clone();
        let first = first.clone();
        async move {
            contacts
                .get_case_file(GetCaseFileRequest { referral_id: first })
                .await
                .unwrap()
                .into_inner()
                .case_file
                .unwrap()
                .state()
                == CaseState::Closed
        }
    })
    .await;
    let status = contacts
        .log_contact(LogContactRequest {
            referral_id: first.clone(),
            activity: ContactActivity::Telephone as i32,
            channel: ContactChannel::InPerson as i32,
            minutes: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // Nothing follows an END.
    for action in [EngagementAction::Continue, EngagementAction::End] {
        let status = client
            .reassess(ReassessRequest {
                referral_id: first.clone(),
                action: action as i32,
                reason: if action == EngagementAction::End {
                    NonEngagementReason::ClientDeclined as i32
                } else {
                    0
                },
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    }
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_referred_client_shows_the_earlier_assessments_once_a_coordinator_confirms_the_link() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-history"));
    let request = referral_request("Darlington");
    let first = crate::harness::submit(&mut intake, request.clone())
        .await
        .referral_id;
    let mut client = assessments(&env, &channel);
    let first_assessment = assessment_of(&client, &first).await;
    assert!(first_assessment.history.is_empty());
    assert!(first_assessment.earlier_referral_id.is_empty());
    decline(
        &mut client,
        &first_assessment.assessment_id,
        NonEngagementStage::HomeVisit,
        NonEngagementReason::ReferredOn,
        ReferredTo::Mediation,
    )
    .await;

    let mut again = request.clone();
    again.idempotency_key = uuid::Uuid::new_v4().to_string();
    let second = crate::harness::submit(&mut intake, again).await.referral_id;
    let unconfirmed = assessment_of(&client, &second).await;
    assert!(
        unconfirmed.history.is_empty(),
        "a fingerprint match shows no one's history"
    );
    let second_assessment = linked(&env, &channel, &client, &second, &first).await;
    assert_eq!(second_assessment.earlier_referral_id, first);
    assert_eq!(second_assessment.history.len(), 1);
    let earlier = &second_assessment.history[0];
    assert_eq!(earlier.referral_id, first);
    assert_eq!(earlier.assessment_id, first_assessment.assessment_id);
    assert_eq!(earlier.decision(), Decision::NotTakenOn);
    assert_eq!(earlier.stage(), NonEngagementStage::HomeVisit);
    assert_eq!(earlier.reason(), NonEngagementReason::ReferredOn);
    assert_eq!(earlier.referred_to(), ReferredTo::Mediation);
    assert_eq!(earlier.decided_by, "coordinator");
    assert!(earlier.decided_at.is_some());

    // A third referral sees the whole chain, newest first.
    decline(
        &mut client,
        &second_assessment.assessment_id,
        NonEngagementStage::ClientDeclined,
        NonEngagementReason::ClientDeclined,
        ReferredTo::Unspecified,
    )
    .await;
    let mut third = request.clone();
    third.idempotency_key = uuid::Uuid::new_v4().to_string();
    let third = crate::harness::submit(&mut intake, third).await.referral_id;
    let third_assessment = linked(&env, &channel, &client, &third, &second).await;
    let chain: Vec<&str> = third_assessment
        .history
        .iter()
        .map(|earlier| earlier.referral_id.as_str())
        .collect();
    assert_eq!(chain, [second.as_str(), first.as_str()]);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_break_outcomes_down_by_stage_and_reason_with_times() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let channel = connect(&platform).await;
    let area = "Durham".to_owned();
    let mut client = assessments(&env, &channel);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let referral_id = submit(&env, &channel, "agency-stats", &area).await;
        ids.push(assessment_of(&client, &referral_id).await.assessment_id);
    }
    // Another area's referral is not counted.
    let elsewhere = submit(&env, &channel, "agency-stats", "Hartlepool").await;
    assessment_of(&client, &elsewhere).await;

    accept(&mut client, &ids[0]).await;
    for id in &ids[1..3] {
        record(&mut client, id, CheckKind::WillWantCapacity, false).await;
        decline(
            &mut client,
            id,
            NonEngagementStage::InitialRiskAssessment,
            NonEngagementReason::NoWillWantOrCapacity,
            ReferredTo::Unspecified,
        )
        .await;
    }
    decline(
        &mut client,
        &ids[3],
        NonEngagementStage::OtherProfessionalsAdvice,
        NonEngagementReason::ReferredOn,
        ReferredTo::RestorativeIntervention,
    )
    .await;
    // ids[4] stays open.

    let now = chrono::Utc::now();
    let request = AssessmentStatsRequest {
        from: Some(timestamp(now - chrono::Duration::hours(1))),
        to: Some(timestamp(now + chrono::Duration::hours(1))),
        area: area.clone(),
    };
    let stats = client
        .assessment_stats(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.referrals, 5);
    assert_eq!(stats.still_open, 1);
    assert_eq!(stats.closed, 0);
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.not_taken_on, 3);
    let outcomes: Vec<(NonEngagementStage, NonEngagementReason, ReferredTo, i32)> = stats
        .outcomes
        .iter()
        .map(|outcome| {
            (
                outcome.stage(),
                outcome.reason(),
                outcome.referred_to(),
                outcome.count,
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                NonEngagementStage::InitialRiskAssessment,
                NonEngagementReason::NoWillWantOrCapacity,
                ReferredTo::Unspecified,
                2
            ),
            (
                NonEngagementStage::OtherProfessionalsAdvice,
                NonEngagementReason::ReferredOn,
                ReferredTo::RestorativeIntervention,
                1
            ),
        ]
    );
    let to_first_check = stats.to_first_check.unwrap();
    assert_eq!(to_first_check.count, 3, "the accepted one and two declined");
    assert!(to_first_check.median_hours >= 0.0);
    assert!(to_first_check.p90_hours >= to_first_check.median_hours);
    let to_decision = stats.to_decision.unwrap();
    assert_eq!(to_decision.count, 4);
    assert!(to_decision.p90_hours >= to_decision.median_hours);
    assert!(to_decision.p90_hours < 1.0, "decided within the test");

    // Every area: the other referral counts too.
    let everywhere = client
        .assessment_stats(AssessmentStatsRequest {
            area: String::new(),
            ..request.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(everywhere.referrals, 6);
    // A period before any referral is empty.
    let before = client
        .assessment_stats(AssessmentStatsRequest {
            from: Some(timestamp(now - chrono::Duration::days(30))),
            to: Some(timestamp(now - chrono::Duration::days(29))),
            area,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.referrals, 0);
    assert!(before.outcomes.is_empty());
    assert_eq!(before.to_decision.unwrap().count, 0);
    // A backwards period is refused.
    let status = client
        .assessment_stats(AssessmentStatsRequest {
            from: request.to,
            to: request.from,
            area: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status), ["to"]);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// What the coordinator wrote about the client: none of it may be stored readable.
const NOTE: &str = "disclosed a violent ex-partner who still visits";
const DATABASE: &str = "police national computer";
const RATIONALE: &str = "accepted: the ex-partner has a non-molestation order";
const REVIEW: &str = "continuing: settled since the order";

/// Announces that the client of `referral_id` was erased, as intake does.
async fn erase(env: &TestEnv, referral_id: &str) {
    let erased = ClientErased {
        referral_id: referral_id.to_owned(),
        agency_id: "agency-sealed".into(),
        erased_at: Some(timestamp(chrono::Utc::now())),
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &erased);
    publish_raw(env, ClientErased::TYPE, &envelope.encode_to_vec()).await;
}

/// `SELECT count(*)` (composed here from constants) with the referral IDs
/// as `$1` (uuid[]).
async fn count(pool: &sqlx::PgPool, sql: &str, referrals: &[uuid::Uuid]) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(referrals)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_s_free_text_is_stored_sealed_and_nothing_new_is_kept_once_erased() {
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::REFERRAL_INTAKE, Target::RISK_ASSESSMENT])
        .await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-sealed"));
    let mut request = referral_request("Darlington");
    request.known_risk_types = vec![KnownRisk::Violence as i32];
    let accepted = crate::harness::submit(&mut intake, request)
        .await
        .referral_id;
    let open = submit(&env, &channel, "agency-sealed", "Darlington").await;
    let mut client = assessments(&env, &channel);
    let accepted_id = assessment_of(&client, &accepted).await.assessment_id;
    let open_id = assessment_of(&client, &open).await.assessment_id;

    // (a) Checks with notes, databases and staff who visited; a decision
    // and a review with rationales.
    let check = |assessment_id: &str, kind: CheckKind| RecordCheckRequest {
        assessment_id: assessment_id.to_owned(),
        kind: kind as i32,
        satisfied: true,
        notes: NOTE.into(),
        ..Default::default()
    };
    for kind in [
        CheckKind::AdultAtReferral,
        CheckKind::RiskToVolunteers,
        CheckKind::WillWantCapacity,
    ] {
        client
            .record_check(check(&accepted_id, kind))
            .await
            .unwrap();
    }
    client
        .record_check(RecordCheckRequest {
            home_visit: Some(HomeVisit {
                attended_by: vec!["coordinator a".into(), "coordinator b".into()],
                referrer_co_visited: false,
                phone_contact_first: true,
            }),
            ..check(&accepted_id, CheckKind::HomeVisit)
        })
        .await
        .unwrap();
    for assessment_id in [&accepted_id, &open_id] {
        client
            .record_check(RecordCheckRequest {
                databases: vec![DATABASE.into()],
                ..check(assessment_id, CheckKind::DatabasesChecked)
            })
            .await
            .unwrap();
    }
    client
        .decide(DecideRequest {
            assessment_id: accepted_id.clone(),
            decision: Decision::Accept as i32,
            rationale: RATIONALE.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let reassessed = client
        .reassess(ReassessRequest {
            referral_id: accepted.clone(),
            action: EngagementAction::Continue as i32,
            rationale: REVIEW.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reassessed.review.unwrap().rationale, REVIEW);

    // (b) The API shows the text...
    let shown = try_assessment_of(&mut client, &accepted).await.unwrap();
    assert_eq!(shown.checks.len(), 5);
    assert!(shown.checks.iter().all(|check| check.notes == NOTE));
    let databases = shown
        .checks
        .iter()
        .find(|check| check.kind() == CheckKind::DatabasesChecked)
        .unwrap();
    assert_eq!(databases.databases, [DATABASE]);
    let visit = shown
        .checks
        .iter()
        .find(|check| check.kind() == CheckKind::HomeVisit)
        .unwrap();
    assert_eq!(visit.home_visit.as_ref().unwrap().attended_by.len(), 2);
    assert_eq!(shown.rationale, RATIONALE);
    assert_eq!(shown.reviews[0].rationale, REVIEW);
    assert_eq!(shown.known_risk_types, [KnownRisk::Violence as i32]);
    // ...and each reading of it is recorded, once per client per call.
    let reads: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM risk_assessment.personal_data_read \
         WHERE referral_id = $1::uuid AND reader = 'coordinator' AND purpose = 'GetAssessment'",
    )
    .bind(&accepted)
    .fetch_one(&env.database().await)
    .await
    .unwrap();
    assert!(reads >= 1, "GetAssessment's reading is audited");
    let queued = client
        .list_queue(ListQueueRequest {
            area: "Darlington".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessments;
    let queued = queued.iter().find(|a| a.referral_id == open).unwrap();
    assert_eq!(queued.checks[0].notes, NOTE);
    assert_eq!(queued.checks[0].databases, [DATABASE]);

    // ...which the tables hold only sealed: every plaintext column is empty.
    let pool = env.database().await;
    let referrals = [
        uuid::Uuid::parse_str(&accepted).unwrap(),
        uuid::Uuid::parse_str(&open).unwrap(),
    ];
    const CHECKS: &str = "SELECT count(*) FROM risk_assessment.assessment_check c \
         JOIN risk_assessment.assessment a USING (assessment_id) WHERE a.referral_id = ANY($1)";
    assert_eq!(count(&pool, CHECKS, &referrals).await, 6);
    assert_eq!(
        count(
            &pool,
            &format!(
                "{CHECKS} AND (c.notes <> '' OR c.databases IS NOT NULL \
                 OR c.professionals IS NOT NULL OR c.visit_attended_by IS NOT NULL)"
            ),
            &referrals
        )
        .await,
        0,
        "check text in plaintext"
    );
    let sealed_checks: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "{CHECKS} AND c.sealed_text IS NOT NULL \
         AND position(convert_to($2, 'UTF8') IN c.sealed_text) = 0"
    )))
    .bind(referrals)
    .bind(NOTE)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        sealed_checks, 6,
        "every check's text sealed, the note nowhere in the clear"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM risk_assessment.assessment WHERE referral_id = ANY($1) \
             AND rationale IS NULL AND rationale_sealed IS NOT NULL",
            &referrals
        )
        .await,
        1,
        "the decision's rationale sealed, not in plaintext"
    );
    const REVIEWS: &str = "SELECT count(*) FROM risk_assessment.review v \
         JOIN risk_assessment.assessment a USING (assessment_id) WHERE a.referral_id = ANY($1)";
    assert_eq!(
        count(
            &pool,
            &format!("{REVIEWS} AND v.rationale = '' AND v.rationale_sealed IS NOT NULL"),
            &referrals
        )
        .await,
        1,
        "the review's rationale sealed, not in plaintext"
    );

    // (c) Both clients are erased: nothing sealed opens, the categories go.
    erase(&env, &accepted).await;
    erase(&env, &open).await;
    eventually(WAIT, "the erased clients' text is gone", || {
        let mut client = client.clone();
        let (accepted, open) = (accepted.clone(), open.clone());
        async move {
            let (Some(accepted), Some(open)) = (
                try_assessment_of(&mut client, &accepted).await,
                try_assessment_of(&mut client, &open).await,
            ) else {
                return false;
            };
            [&accepted, &open]
                .iter()
                .flat_map(|assessment| &assessment.checks)
                .all(|check| check.notes.is_empty() && check.databases.is_empty())
                && accepted.rationale.is_empty()
                && accepted
                    .reviews
                    .iter()
                    .all(|review| review.rationale.is_empty())
        }
    })
    .await;
    let forgotten = try_assessment_of(&mut client, &accepted).await.unwrap();
    assert!(forgotten.known_risk_types.is_empty());
    assert_eq!(forgotten.checks.len(), 5, "the checks' codes stay");
    assert_eq!(forgotten.decided_by, "coordinator");
    let visit = forgotten
        .checks
        .iter()
        .find(|check| check.kind() == CheckKind::HomeVisit)
        .unwrap()
        .home_visit
        .clone()
        .unwrap();
    assert!(visit.attended_by.is_empty() && visit.phone_contact_first);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM risk_assessment.assessment WHERE referral_id = ANY($1) \
             AND (cardinality(vulnerabilities) > 0 OR cardinality(known_risk_types) > 0 \
               OR client_gender <> 0 OR rationale_sealed IS NOT NULL)",
            &referrals
        )
        .await,
        0,
        "categories and sealed rationale kept after erasure"
    );
    assert_eq!(
        count(
            &pool,
            &format!("{CHECKS} AND c.sealed_text IS NOT NULL"),
            &referrals
        )
        .await,
        0
    );

    // (d) Nothing new with text is accepted, and a refusal changes nothing.
    let refused = SealError::Erased.to_string();
    let audited = "SELECT count(*) FROM risk_assessment.assessment_audit u \
         JOIN risk_assessment.assessment a USING (assessment_id) \
         WHERE a.referral_id = ANY($1)";
    let audit_before = count(&pool, audited, &referrals).await;
    let status = client
        .record_check(check(&open_id, CheckKind::AdultAtReferral))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), refused);
    let status = client
        .decide(DecideRequest {
            assessment_id: open_id.clone(),
            decision: Decision::NotTakenOn as i32,
            stage: NonEngagementStage::InitialRiskAssessment as i32,
            reason: NonEngagementReason::ClientDeclined as i32,
            rationale: NOTE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), refused);
    let status = client
        .reassess(ReassessRequest {
            referral_id: accepted.clone(),
            action: EngagementAction::Pause as i32,
            rationale: NOTE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), refused);
    assert_eq!(count(&pool, CHECKS, &referrals).await, 6);
    assert_eq!(count(&pool, REVIEWS, &referrals).await, 1);
    assert_eq!(count(&pool, audited, &referrals).await, audit_before);
    let still_open = try_assessment_of(&mut client, &open).await.unwrap();
    assert_eq!(still_open.state(), AssessmentState::Open);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_handled_after_its_client_s_erasure_opens_without_categories() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::RISK_ASSESSMENT]).await;
    let channel = connect(&platform).await;
    let client = assessments(&env, &channel);
    let pool = env.database().await;
    let queue = env.queue("risk-assessment", "referrals");
    eventually(WAIT, "risk-assessment's queue exists", || async {
        env.queue_exists(&queue).await
    })
    .await;

    // The erasure is handled first (a late or redelivered submission).
    let referral_id = uuid::Uuid::now_v7();
    erase(&env, &referral_id.to_string()).await;
    eventually(WAIT, "the client's key is shredded", || async {
        count(
            &pool,
            "SELECT count(*) FROM risk_assessment.client_key \
             WHERE referral_id = ANY($1) AND erased_at IS NOT NULL",
            &[referral_id],
        )
        .await
            == 1
    })
    .await;
    let submitted = ReferralSubmitted {
        referral_id: referral_id.to_string(),
        agency_id: "agency-sealed".into(),
        area: "Darlington".into(),
        submitted_at: Some(timestamp(chrono::Utc::now())),
        vulnerabilities: vec![Vulnerability::VulnerableAndIsolated as i32],
        client_gender: Gender::Male as i32,
        known_risk_types: vec![KnownRisk::Violence as i32],
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &submitted);
    publish_raw(&env, ReferralSubmitted::TYPE, &envelope.encode_to_vec()).await;

    // The referral still gets its assessment, so its status flow goes on,
    // but none of the client's categories.
    let assessment = assessment_of(&client, &referral_id.to_string()).await;
    assert_eq!(assessment.state(), AssessmentState::Open);
    assert!(assessment.known_risk_types.is_empty());
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM risk_assessment.assessment WHERE referral_id = ANY($1) \
             AND cardinality(vulnerabilities) = 0 AND cardinality(known_risk_types) = 0 \
             AND client_gender = 0",
            &[referral_id],
        )
        .await,
        1
    );
    // Nor any text about them.
    let status = client
        .clone()
        .record_check(RecordCheckRequest {
            assessment_id: assessment.assessment_id.clone(),
            kind: CheckKind::AdultAtReferral as i32,
            satisfied: true,
            notes: NOTE.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), SealError::Erased.to_string());
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// The crimes a referral names reach matching: `assessment.decided` carries
/// what the client was a victim of and committed, as submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crimes_a_referral_names_reach_matching_with_the_decision() {
    use cpm_proto::v1::{AssessmentDecided, CrimeType};

    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let tap = crate::bus::Tap::on(&env, &[AssessmentDecided::TYPE]).await;

    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-crimes"));
    let mut request = referral_request("Darlington");
    request.victim_of = vec![CrimeType::PhysicalAssault as i32];
    request.perpetrator_of = vec![CrimeType::Theft as i32, CrimeType::PublicOrder as i32];
    let referral_id = crate::harness::submit(&mut intake, request)
        .await
        .referral_id;
    let mut client = assessments(&env, &channel);
    let assessment = assessment_of(&client, &referral_id).await;
    accept(&mut client, &assessment.assessment_id).await;

    let decided: AssessmentDecided = tap.next(WAIT).await;
    assert_eq!(decided.referral_id, referral_id);
    assert_eq!(decided.victim_of, [CrimeType::PhysicalAssault as i32]);
    assert_eq!(
        decided.perpetrator_of,
        [CrimeType::Theft as i32, CrimeType::PublicOrder as i32]
    );
    tap.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
