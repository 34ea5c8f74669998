//! One referral's whole journey through all five services.

use cpm::demo::{DemoOptions, run};
use cpm_proto::v1::GetReferralRequest;
use cpm_proto::v1::ReferralStatus;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;

use crate::harness::{TestEnv, connect, fetch_referral};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_travels_from_agency_to_discharge_notice() {
    let mut env = TestEnv::new().await;
    // Polling an hour apart: every event of the journey must wake its relay,
    // by NOTIFY or in-process, or the journey stalls.
    env.settings.platform.outbox.poll_interval_ms = 3_600_000;
    let platform = env.start_all().await;
    let report = run(DemoOptions::new(
        &platform.endpoint(),
        env.authenticator.clone(),
    ))
    .await
    .expect("the journey completes");

    // The agency saw every status in order (fast steps may be skipped between polls).
    let seen = &report.statuses_seen;
    assert_eq!(seen.first(), Some(&ReferralStatus::Received));
    assert_eq!(seen.last(), Some(&ReferralStatus::Discharged));
    let ranks: Vec<i32> = seen.iter().map(|s| cpm_proto::status_rank(*s)).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]),
        "statuses moved backwards: {seen:?}"
    );
    for required in [
        ReferralStatus::UnderAssessment,
        ReferralStatus::AwaitingMentors,
        ReferralStatus::InSupport,
    ] {
        assert!(
            seen.contains(&required),
            "{required:?} not seen in {seen:?}"
        );
    }
    assert!(report.stream_discharge_notice);
    assert!(report.webhook_discharge_notice);
    assert_eq!(report.mentor_ids.len(), 2);

    // The webhook carried the discharge feedback, following the proforma:
    // the two contacts made, the outcome, how to re-refer; no note.
    let feedback = report
        .webhook_feedback
        .clone()
        .expect("a discharge webhook");
    assert_eq!(feedback["contacts"], 2, "{feedback}");
    assert_eq!(feedback["goals_set"], 0, "{feedback}");
    assert_eq!(feedback["outcome"], "DISCHARGE_OUTCOME_GOALS_ACHIEVED");
    assert!(
        feedback["how_to_re_refer"]
            .as_str()
            .is_some_and(|text| !text.is_empty())
    );
    assert!(
        !feedback.to_string().contains("goals met"),
        "the note stays inside"
    );

    // The discharge date is recorded for the referrer, with the feedback
    // and the date it reached them (the webhook's confirmed delivery).
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, &report.agency_id));
    let referral = fetch_referral(&mut intake, &report.referral_id).await;
    assert!(referral.discharged_at.is_some());
    assert_eq!(
        referral
            .discharge_feedback
            .map(|feedback| feedback.contacts),
        Some(2)
    );
    crate::harness::eventually(
        std::time::Duration::from_secs(20),
        "the feedback's delivery is dated for the referrer and in the case file",
        || {
            let mut intake = intake.clone();
            let mut contacts =
                cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient::new(
                    cpm::client::authed(
                        &channel,
                        &env.token("admin", cpm_runtime::auth::Role::Admin, None, None),
                    )
                    .unwrap(),
                );
            let referral_id = report.referral_id.clone();
            async move {
                let referral = fetch_referral(&mut intake, &referral_id).await;
                let case_file = contacts
                    .get_case_file(cpm_proto::v1::GetCaseFileRequest { referral_id })
                    .await
                    .unwrap()
                    .into_inner()
                    .case_file
                    .unwrap();
                referral.feedback_received_at.is_some() && case_file.feedback_delivered_at.is_some()
            }
        },
    )
    .await;

    // The mentor's home visit asked a coordinator to review suitability.
    let assessments =
        cpm_proto::v1::risk_assessment_service_client::RiskAssessmentServiceClient::new(
            env.coordinator(&channel),
        );
    crate::harness::eventually(
        std::time::Duration::from_secs(20),
        "the home visit asks for a review",
        || {
            let mut assessments = assessments.clone();
            let referral_id = report.referral_id.clone();
            async move {
                let assessment = assessments
                    .get_assessment(cpm_proto::v1::GetAssessmentRequest {
                        referral_id,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .assessment
                    .unwrap();
                assessment.open_reviews == 1
            }
        },
    )
    .await;

    // The assessment starts from what the referrer reported, as codes and counts.
    let assessment = assessments
        .clone()
        .get_assessment(cpm_proto::v1::GetAssessmentRequest {
            referral_id: report.referral_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .assessment
        .unwrap();
    assert_eq!(assessment.emergency_calls_last_12_months, 38);

    // Another agency cannot see it.
    let mut other = ReferralIntakeServiceClient::new(env.referrer(&channel, "another-agency"));
    let error = other
        .get_referral(GetReferralRequest {
            referral_id: report.referral_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);

    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_on_every_service() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let endpoint = platform.endpoint();
    crate::harness::eventually(
        std::time::Duration::from_secs(20),
        "the server is SERVING",
        || {
            let endpoint = endpoint.clone();
            async move { cpm::client::health(&endpoint, "").await.ok() == Some(1) }
        },
    )
    .await;
    for service in [
        "cpm.v1.ReferralIntakeService",
        "cpm.v1.RiskAssessmentService",
        "cpm.v1.MentorMatchingService",
        "cpm.v1.ContactLoggingService",
        "cpm.v1.NotificationsService",
    ] {
        assert_eq!(
            cpm::client::health(&endpoint, service).await.unwrap(),
            1,
            "{service}"
        );
    }

    // Reflection (v1alpha, as grpcurl speaks it) lists every service.
    use tonic_reflection_client::*;
    let names = list_services(&endpoint).await;
    for expected in [
        "cpm.v1.ReferralIntakeService",
        "cpm.v1.NotificationsService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // After shutdown nothing answers.
    platform.stop().await.unwrap();
    assert!(cpm::client::health(&endpoint, "").await.is_err());
    env.cleanup().await;
}

/// A minimal reflection client over the v1alpha protocol.
mod tonic_reflection_client {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    pub async fn list_services(endpoint: &str) -> Vec<String> {
        try_list_services(endpoint, None).await.unwrap()
    }

    /// The services reflection lists, asked with `token` if any.
    pub async fn try_list_services(
        endpoint: &str,
        token: Option<&str>,
    ) -> Result<Vec<String>, tonic::Status> {
        let channel = cpm::client::connect(endpoint).await.unwrap();
        let channel = cpm::client::authed(&channel, token.unwrap_or("none")).unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await?
            .into_inner();
        let response = responses.message().await?.unwrap();
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                Ok(list.service.into_iter().map(|s| s.name).collect())
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }
}

/// Reflection can be put behind a token (production's default) or turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_require_a_token_or_be_off() {
    use cpm_runtime::config::ReflectionAccess;
    use tonic_reflection_client::try_list_services;
    let mut env = TestEnv::new().await;
    env.settings.platform.grpc.reflection = Some(ReflectionAccess::Authenticated);
    let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
    let endpoint = platform.endpoint();
    let anonymous = try_list_services(&endpoint, None).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let token = env.token("dev", cpm_runtime::auth::Role::Referrer, Some("a"), None);
    let names = try_list_services(&endpoint, Some(&token)).await.unwrap();
    assert!(
        names
            .iter()
            .any(|name| name == "cpm.v1.NotificationsService")
    );
    platform.stop().await.unwrap();

    env.settings.platform.grpc.reflection = Some(ReflectionAccess::Off);
    let platform = env.start(&[cpm::Target::NOTIFICATIONS]).await;
    let off = try_list_services(&platform.endpoint(), Some(&token))
        .await
        .unwrap_err();
    assert_eq!(off.code(), tonic::Code::Unimplemented);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_client_leaves_no_free_text_in_any_service() {
    use cpm_proto::v1::EraseClientRequest;
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let report = run(DemoOptions::new(
        &platform.endpoint(),
        env.authenticator.clone(),
    ))
    .await
    .expect("the journey completes");
    let channel = connect(&platform).await;
    let admin = cpm::client::authed(
        &channel,
        &env.token("dpo", cpm_runtime::auth::Role::Admin, None, None),
    )
    .unwrap();
    ReferralIntakeServiceClient::new(admin)
        .erase_client(EraseClientRequest {
            referral_id: report.referral_id.clone(),
            reason: "client request".into(),
        })
        .await
        .unwrap();

    let pool = env.database().await;
    let referral_id = uuid::Uuid::parse_str(&report.referral_id).unwrap();
    let remaining = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(referral_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    crate::harness::eventually(std::time::Duration::from_secs(20), "every service drops its free text", || async {
        remaining(
            "SELECT count(*) FROM contact_logging.contact c JOIN contact_logging.case_file f USING (case_file_id) \
             WHERE f.referral_id = $1 AND c.summary <> ''",
        )
        .await
            + remaining(
                "SELECT count(*) FROM contact_logging.case_file WHERE referral_id = $1 AND discharge_reason <> ''",
            )
            .await
            + remaining(
                "SELECT count(*) FROM risk_assessment.assessment_check c JOIN risk_assessment.assessment a \
                 USING (assessment_id) WHERE a.referral_id = $1 AND c.notes <> ''",
            )
            .await
            + remaining(
                "SELECT count(*) FROM risk_assessment.assessment WHERE referral_id = $1 AND rationale IS NOT NULL",
            )
            .await
            + remaining(
                "SELECT count(*) FROM mentor_matching.waiting_client WHERE referral_id = $1 \
                 AND (client_gender <> 0 OR cardinality(vulnerabilities) > 0)",
            )
            .await
            == 0
    })
    .await;
    // Counts and codes remain for the programme's statistics.
    assert_eq!(
        remaining(
            "SELECT count(*) FROM contact_logging.contact c JOIN contact_logging.case_file f USING (case_file_id) \
             WHERE f.referral_id = $1",
        )
        .await,
        2
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
