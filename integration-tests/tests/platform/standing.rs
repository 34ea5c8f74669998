//! A token is not enough: a suspended agency's referrers, a referrer nobody
//! registered and a mentor who has left are refused on every RPC of every
//! service, not only where they are registered (`principal.status_changed`
//! carries each standing to every service's guard).

use std::time::Duration;

use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    AgencyKind, EstimateWaitRequest, Gender, GetCaseFileRequest, ListDeliveriesRequest,
    ListReferralsRequest, PrincipalKind, PrincipalStatusChanged, ReferrerRole,
    RegisterAgencyRequest, RegisterMentorRequest, RegisterReferrerRequest,
};
use cpm_runtime::auth::Role;
use cpm_runtime::grpc::values::timestamp;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use prost::Message as _;
use tonic::Code;

use crate::harness::{Authed, TestEnv, connect};

const AGENCY: &str = "agency-standing";

/// The code of each call a referrer can make outside referral-intake, and
/// of one inside it.
async fn referrer_codes(client: &Authed) -> [Code; 3] {
    let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |s| s.code());
    let deliveries = NotificationsServiceClient::new(client.clone())
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .map(drop);
    let wait = MentorMatchingServiceClient::new(client.clone())
        .estimate_wait(EstimateWaitRequest {
            area: "Darlington".into(),
            ..Default::default()
        })
        .await
        .map(drop);
    let referrals = ReferralIntakeServiceClient::new(client.clone())
        .list_referrals(ListReferralsRequest::default())
        .await
        .map(drop);
    [code(deliveries), code(wait), code(referrals)]
}

/// Polls `codes` until it returns `expected` (events and cached standings
/// take a moment to reach every service).
async fn eventually<F, Fut>(what: &str, expected: [Code; 3], mut codes: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = [Code; 3]>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = codes().await;
        if seen == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: expected {expected:?}, still {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_agency_and_an_unregistered_referrer_are_refused_by_every_service() {
    let mut env = TestEnv::new().await;
    env.settings.platform.auth.admit_unregistered = false;
    env.settings.platform.auth.standing_cache_secs = 1;
    env.settings
        .set("referral_intake.auto_register_agencies", false);
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let admin =
        cpm::client::authed(&channel, &env.token("admin", Role::Admin, None, None)).unwrap();
    let referrer = env.referrer(&channel, AGENCY);
    let denied = [Code::PermissionDenied; 3];

    // Nobody registered the agency: refused everywhere.
    assert_eq!(referrer_codes(&referrer).await, denied);

    let mut intake = ReferralIntakeServiceClient::new(admin.clone());
    let agency = |active: bool| RegisterAgencyRequest {
        agency_id: AGENCY.into(),
        name: "Standing Police".into(),
        kind: AgencyKind::Police as i32,
        active,
    };
    intake.register_agency(agency(true)).await.unwrap();
    intake
        .register_referrer(RegisterReferrerRequest {
            agency_id: AGENCY.into(),
            subject: "referrer".into(),
            name: "PC Standing".into(),
            role: ReferrerRole::Frontline as i32,
            contact: "pc@police.example".into(),
        })
        .await
        .unwrap();
    eventually("a registered referrer", [Code::Ok; 3], || {
        referrer_codes(&referrer)
    })
    .await;

    // A colleague with a valid token whom nobody registered.
    let stranger = cpm::client::authed(
        &channel,
        &env.token("stranger", Role::Referrer, Some(AGENCY), None),
    )
    .unwrap();
    assert_eq!(referrer_codes(&stranger).await, denied);

    // Suspended: the same token loses every service.
    intake.register_agency(agency(false)).await.unwrap();
    eventually("a suspended agency's referrer", denied, || {
        referrer_codes(&referrer)
    })
    .await;
    let refusal = NotificationsServiceClient::new(referrer.clone())
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .unwrap_err();
    assert!(refusal.message().contains("suspended"), "{refusal:?}");

    // Reinstated: back everywhere.
    intake.register_agency(agency(true)).await.unwrap();
    eventually("a reinstated agency's referrer", [Code::Ok; 3], || {
        referrer_codes(&referrer)
    })
    .await;

    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mentor_who_has_left_or_was_never_registered_is_refused() {
    let mut env = TestEnv::new().await;
    env.settings.platform.auth.admit_unregistered = false;
    env.settings.platform.auth.standing_cache_secs = 1;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let mentor_id = MentorMatchingServiceClient::new(env.coordinator(&channel))
        .register_mentor(RegisterMentorRequest {
            display_name: "Mentor Standing".into(),
            gender: Gender::Female as i32,
            area: "Darlington".into(),
            lived_experience: vec![],
            capacity: 2,
            safeguarding_trained_on: "2026-01-25".into(),
            agreement_signed_on: "2026-02-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap()
        .mentor_id;

    // A case the mentor has no part in: NOT_FOUND once admitted,
    // PERMISSION_DENIED while refused.
    let case_code = |mentor: &str| {
        let client = env.mentor(&channel, mentor);
        async move {
            let code = ContactLoggingServiceClient::new(client)
                .get_case_file(GetCaseFileRequest {
                    referral_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .unwrap_err()
                .code();
            [code; 3]
        }
    };
    eventually("a registered mentor", [Code::NotFound; 3], || {
        case_code(&mentor_id)
    })
    .await;
    let stranger = uuid::Uuid::now_v7().to_string();
    assert_eq!(case_code(&stranger).await, [Code::PermissionDenied; 3]);

    // The mentor leaves: mentor-matching publishes their standing (as its
    // status RPC will); here the event is published as it would be.
    let left = PrincipalStatusChanged {
        kind: PrincipalKind::Mentor as i32,
        principal_id: mentor_id.clone(),
        agency_id: String::new(),
        active: false,
        changed_at: Some(timestamp(chrono::Utc::now())),
    };
    let envelope = cpm_runtime::bus::outbox::envelope("mentor-matching", &left);
    let (connection, amqp) = env.amqp_channel().await;
    amqp.basic_publish(
        format!("{}.events", env.namespace).as_str().into(),
        "principal.status_changed".into(),
        BasicPublishOptions::default(),
        &envelope.encode_to_vec(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    connection.close(200, "done".into()).await.unwrap();
    eventually("a mentor who has left", [Code::PermissionDenied; 3], || {
        case_code(&mentor_id)
    })
    .await;

    platform.stop().await.unwrap();
    env.cleanup().await;
}
