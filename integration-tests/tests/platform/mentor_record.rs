//! The mentor's minimal record (GetMentorClientRecord): a mentor allocated
//! to a client reads the measured set — first name, safe-contact
//! instructions, known risks to volunteers, area — and nothing more, from
//! referral-intake, every read audited. Another mentor, a mentor whose pair
//! was ended or whose client was discharged or whose engagement ended, gets
//! NOT_FOUND exactly as for a missing referral; staff and referrers are
//! refused; after erasure nothing personal comes back.

use cpm::Target;
use cpm_proto::Event as _;
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    Allocation, AssessmentDecided, Decision, DischargeRequest, EngagementAction, EngagementChanged,
    EraseClientRequest, Gender, GetCaseFileRequest, GetMentorClientRecordRequest, KnownRisk,
    Mentor, MentorClientRecord, NonEngagementReason, NonEngagementStage, ReportPoorFitRequest,
    Vulnerability,
};
use cpm_runtime::auth::Role;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::bus::publish_raw;
use crate::harness::{Authed, TestEnv, connect, eventually, referral_request, submit};
use crate::mentor_follow_up::allocate;
use crate::mentor_matching::{WAIT, admin, propose, register};

const AREA: &str = "Darlington";
const AGENCY: &str = "agency-mentor-view";

/// A client submitted by an agency, accepted and allocated to the first two
/// of four registered mentors of the area.
struct AllocatedClient {
    referral_id: String,
    mentors: Vec<Mentor>,
    allocation: Allocation,
}

fn platform_targets() -> [Target; 3] {
    [
        Target::REFERRAL_INTAKE,
        Target::MENTOR_MATCHING,
        Target::CONTACT_LOGGING,
    ]
}

/// A mentor's client, with a subject of their own so the audit names them.
fn mentor_records(
    env: &TestEnv,
    channel: &Channel,
    mentor: &Mentor,
) -> ReferralIntakeServiceClient<Authed> {
    let token = env.token(
        &format!("mentor-{}", mentor.mentor_id),
        Role::Mentor,
        None,
        Some(&mentor.mentor_id),
    );
    ReferralIntakeServiceClient::new(cpm::client::authed(channel, &token).unwrap())
}

async fn read(
    records: &ReferralIntakeServiceClient<Authed>,
    referral_id: &str,
) -> Result<MentorClientRecord, tonic::Status> {
    Ok(records
        .clone()
        .get_mentor_client_record(GetMentorClientRecordRequest {
            referral_id: referral_id.into(),
        })
        .await?
        .into_inner()
        .record
        .expect("a record"))
}

async fn code_of(records: &ReferralIntakeServiceClient<Authed>, referral_id: &str) -> Code {
    match read(records, referral_id).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Risk assessment's acceptance of `referral_id`, as its
/// `assessment.decided` says; returns once mentor-matching has the client
/// waiting.
async fn accept(env: &TestEnv, admin: &MentorMatchingServiceClient<Authed>, referral_id: &str) {
    let decided = AssessmentDecided {
        assessment_id: uuid::Uuid::now_v7().to_string(),
        referral_id: referral_id.into(),
        agency_id: AGENCY.into(),
        area: AREA.into(),
        decision: Decision::Accept as i32,
        decided_by: "coordinator".into(),
        vulnerabilities: vec![Vulnerability::VulnerableAndIsolated as i32],
        client_gender: Gender::Male as i32,
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("risk-assessment", &decided);
    publish_raw(env, AssessmentDecided::TYPE, &envelope.encode_to_vec()).await;
    eventually(WAIT, "the accepted client waits for mentors", || {
        let mut admin = admin.clone();
        async move { propose(&mut admin, referral_id).await.is_ok() }
    })
    .await;
}

/// Submits a referral with safe-contact instructions and known risks,
/// accepts it and allocates it to the first pair of four mentors; returns
/// once the first mentor can read the minimal record.
async fn allocated_client(env: &TestEnv, channel: &Channel) -> AllocatedClient {
    let mut agency = ReferralIntakeServiceClient::new(env.referrer(channel, AGENCY));
    let mut request = referral_request(AREA);
    request.known_risks = "a large dog; has threatened a housing officer".into();
    request.known_risk_types = vec![
        KnownRisk::DogsOrAnimals as i32,
        KnownRisk::ThreatsToStaff as i32,
    ];
    let referral_id = submit(&mut agency, request).await.referral_id;

    let mut admin = admin(env, channel);
    let mut mentors = Vec::new();
    for _ in 0..4 {
        mentors.push(register(&mut admin, AREA).await);
    }
    accept(env, &admin, &referral_id).await;
    let allocation = allocate(&mut admin, &referral_id, [&mentors[0], &mentors[1]]).await;
    let first = mentor_records(env, channel, &mentors[0]);
    eventually(WAIT, "the allocated mentor reads the record", || {
        let first = first.clone();
        let referral_id = referral_id.clone();
        async move { code_of(&first, &referral_id).await == Code::Ok }
    })
    .await;
    AllocatedClient {
        referral_id,
        mentors,
        allocation,
    }
}

/// Waits until `mentor` can no longer read `referral_id`, and checks that
/// the refusal is the very one a missing referral gets.
async fn loses_access(
    records: &ReferralIntakeServiceClient<Authed>,
    referral_id: &str,
    what: &str,
) {
    eventually(WAIT, what, || {
        let records = records.clone();
        let referral_id = referral_id.to_owned();
        async move { code_of(&records, &referral_id).await == Code::NotFound }
    })
    .await;
    let refused = read(records, referral_id).await.unwrap_err();
    let missing = read(records, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (missing.code(), missing.message())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocated_mentor_reads_the_measured_set_and_nothing_more_and_every_read_is_audited() {
    let env = TestEnv::new().await;
    let platform = env.start(&platform_targets()).await;
    let channel = connect(&platform).await;
    let client = allocated_client(&env, &channel).await;
    let first = mentor_records(&env, &channel, &client.mentors[0]);

    let record = read(&first, &client.referral_id).await.unwrap();
    assert_eq!(
        record,
        MentorClientRecord {
            referral_id: client.referral_id.clone(),
            first_name: "Robin".into(),
            safe_contact_instructions: "do not leave voicemail".into(),
            known_risk_types: vec![
                KnownRisk::DogsOrAnimals as i32,
                KnownRisk::ThreatsToStaff as i32
            ],
            known_risks: "a large dog; has threatened a housing officer".into(),
            area: AREA.into(),
            erased: false,
        }
    );
    // Nothing else of the referral is in the answer, whatever the field.
    let bytes = String::from_utf8_lossy(&record.encode_to_vec()).into_owned();
    for hidden in [
        "Testperson",
        "1975",
        "Confidential",
        "07700",
        "PCSO",
        "999",
        "routine",
        AGENCY,
    ] {
        assert!(!bytes.contains(hidden), "{hidden} reached the mentor");
    }

    // The pair's other mentor reads it too; a mentor of no allocation of
    // this client is answered as for a referral that does not exist.
    let second = mentor_records(&env, &channel, &client.mentors[1]);
    assert_eq!(code_of(&second, &client.referral_id).await, Code::Ok);
    let outsider = mentor_records(&env, &channel, &client.mentors[2]);
    loses_access(&outsider, &client.referral_id, "an outsider is refused").await;

    // Referrers, coordinators and admins may not call it at all.
    for (who, authed) in [
        ("referrer", env.referrer(&channel, AGENCY)),
        ("coordinator", env.coordinator_in(&channel, &[AREA])),
        (
            "admin",
            cpm::client::authed(&channel, &env.token("admin", Role::Admin, None, None)).unwrap(),
        ),
    ] {
        let refused = read(
            &ReferralIntakeServiceClient::new(authed),
            &client.referral_id,
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}");
    }

    // Every read is audited with the mentor's subject and its purpose; the
    // refusals read nothing and record nothing.
    let database = env.database().await;
    let audit: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT accessed_by, role, purpose FROM referral_intake.personal_data_access \
         WHERE referral_id = $1::uuid ORDER BY access_id",
    )
    .bind(&client.referral_id)
    .fetch_all(&database)
    .await
    .unwrap();
    let reads_of = |mentor: &Mentor| {
        audit
            .iter()
            .filter(|(subject, role, purpose)| {
                *subject == format!("mentor-{}", mentor.mentor_id)
                    && role == "mentor"
                    && purpose == "GetMentorClientRecord"
            })
            .count()
    };
    // The first mentor read it while waiting for access, then once more.
    assert!(reads_of(&client.mentors[0]) >= 2, "{audit:?}");
    assert_eq!(reads_of(&client.mentors[1]), 1, "{audit:?}");
    assert_eq!(reads_of(&client.mentors[2]), 0, "{audit:?}");
    assert!(
        audit.iter().all(|(_, role, _)| role == "mentor"),
        "only the mentors' reads: {audit:?}"
    );
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_ended_as_a_poor_fit_loses_the_client_at_once_and_the_next_pair_reads_it() {
    let env = TestEnv::new().await;
    let platform = env.start(&platform_targets()).await;
    let channel = connect(&platform).await;
    let client = allocated_client(&env, &channel).await;
    let first = mentor_records(&env, &channel, &client.mentors[0]);
    let second = mentor_records(&env, &channel, &client.mentors[1]);
    let third = mentor_records(&env, &channel, &client.mentors[2]);
    assert_eq!(code_of(&third, &client.referral_id).await, Code::NotFound);

    let mut as_mentor =
        MentorMatchingServiceClient::new(env.mentor(&channel, &client.mentors[0].mentor_id));
    as_mentor
        .report_poor_fit(ReportPoorFitRequest {
            allocation_id: client.allocation.allocation_id.clone(),
            reason: "the client and the pair are not getting on".into(),
            mentors_incompatible: false,
        })
        .await
        .unwrap();
    loses_access(&first, &client.referral_id, "the first mentor loses access").await;
    loses_access(
        &second,
        &client.referral_id,
        "the second mentor loses access",
    )
    .await;

    let mut admin = admin(&env, &channel);
    allocate(
        &mut admin,
        &client.referral_id,
        [&client.mentors[2], &client.mentors[3]],
    )
    .await;
    eventually(WAIT, "the new pair reads the record", || {
        let third = third.clone();
        let referral_id = client.referral_id.clone();
        async move { code_of(&third, &referral_id).await == Code::Ok }
    })
    .await;
    assert_eq!(
        code_of(&first, &client.referral_id).await,
        Code::NotFound,
        "the former pair stays out"
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharged_clients_mentors_lose_the_record_at_once() {
    let env = TestEnv::new().await;
    let platform = env.start(&platform_targets()).await;
    let channel = connect(&platform).await;
    let client = allocated_client(&env, &channel).await;
    let first = mentor_records(&env, &channel, &client.mentors[0]);

    let mut cases = ContactLoggingServiceClient::new(env.coordinator_in(&channel, &[AREA]));
    eventually(WAIT, "the case file opens", || {
        let mut cases = cases.clone();
        let referral_id = client.referral_id.clone();
        async move {
            cases
                .get_case_file(GetCaseFileRequest { referral_id })
                .await
                .is_ok()
        }
    })
    .await;
    cases
        .discharge(DischargeRequest {
            referral_id: client.referral_id.clone(),
            reason: "goals met".into(),
            outcome: cpm_proto::v1::DischargeOutcome::GoalsAchieved as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    loses_access(&first, &client.referral_id, "the mentor loses access").await;
    let second = mentor_records(&env, &channel, &client.mentors[1]);
    assert_eq!(code_of(&second, &client.referral_id).await, Code::NotFound);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_engagement_ends_the_mentors_access_and_a_late_allocation_does_not_restore_it() {
    let env = TestEnv::new().await;
    let platform = env.start(&platform_targets()).await;
    let channel = connect(&platform).await;
    let client = allocated_client(&env, &channel).await;
    let first = mentor_records(&env, &channel, &client.mentors[0]);

    // A pause keeps the mentors; an ending, as risk assessment's Reassess
    // announces it, does not.
    for action in [EngagementAction::Pause, EngagementAction::End] {
        let changed = EngagementChanged {
            referral_id: client.referral_id.clone(),
            agency_id: AGENCY.into(),
            action: action as i32,
            stage: NonEngagementStage::DuringEngagement as i32,
            reason: NonEngagementReason::ClientDeclined as i32,
            decided_by: "coordinator".into(),
            ..Default::default()
        };
        let envelope = cpm_runtime::bus::outbox::envelope("risk-assessment", &changed);
        publish_raw(&env, EngagementChanged::TYPE, &envelope.encode_to_vec()).await;
        if action == EngagementAction::Pause {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            assert_eq!(code_of(&first, &client.referral_id).await, Code::Ok);
        }
    }
    loses_access(&first, &client.referral_id, "the mentor loses access").await;

    // An allocation of the same referral arriving after the ending (a
    // redelivery, or an event overtaken) gives nobody access again.
    let late = cpm_proto::v1::AllocationConfirmed {
        allocation_id: uuid::Uuid::now_v7().to_string(),
        referral_id: client.referral_id.clone(),
        agency_id: AGENCY.into(),
        area: AREA.into(),
        mentor_ids: vec![client.mentors[3].mentor_id.clone()],
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("mentor-matching", &late);
    publish_raw(
        &env,
        cpm_proto::v1::AllocationConfirmed::TYPE,
        &envelope.encode_to_vec(),
    )
    .await;
    let fourth = mentor_records(&env, &channel, &client.mentors[3]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(code_of(&fourth, &client.referral_id).await, Code::NotFound);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_erasure_the_mentor_gets_nothing_personal() {
    let env = TestEnv::new().await;
    let platform = env.start(&platform_targets()).await;
    let channel = connect(&platform).await;
    let client = allocated_client(&env, &channel).await;
    let first = mentor_records(&env, &channel, &client.mentors[0]);

    let mut admin = ReferralIntakeServiceClient::new(
        cpm::client::authed(&channel, &env.token("admin", Role::Admin, None, None)).unwrap(),
    );
    admin
        .erase_client(EraseClientRequest {
            referral_id: client.referral_id.clone(),
            reason: "the client asked".into(),
        })
        .await
        .unwrap();
    let record = read(&first, &client.referral_id).await.unwrap();
    assert_eq!(
        record,
        MentorClientRecord {
            referral_id: client.referral_id.clone(),
            erased: true,
            ..Default::default()
        }
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}
