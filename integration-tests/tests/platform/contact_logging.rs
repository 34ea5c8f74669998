//! contact-logging's API: a contact is refused field by field, a case file
//! nobody opened is NOT_FOUND, and referrers cannot reach case files.

use cpm::Target;
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::{ContactActivity, GetCaseFileRequest, LogContactRequest};

use crate::harness::{TestEnv, connect, violated_fields};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_contact_names_every_field_and_an_unopened_case_file_is_not_found() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut contacts = ContactLoggingServiceClient::new(env.coordinator(&channel));

    let in_a_day = chrono::Utc::now() + chrono::Duration::days(1);
    let status = contacts
        .log_contact(LogContactRequest {
            referral_id: "not-a-uuid".into(),
            activity: 0,
            minutes: 601,
            occurred_at: Some(prost_types::Timestamp {
                seconds: in_a_day.timestamp(),
                nanos: 0,
            }),
            summary: "x".repeat(10_000),
            concern_raised: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        [
            "referral_id",
            "activity",
            "minutes",
            "occurred_at",
            "summary"
        ]
    );

    let nobody = uuid::Uuid::now_v7().to_string();
    let missing = contacts
        .get_case_file(GetCaseFileRequest {
            referral_id: nobody.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let missing = contacts
        .log_contact(LogContactRequest {
            referral_id: nobody,
            activity: ContactActivity::Telephone as i32,
            minutes: 20,
            ..LogContactRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let mut as_referrer = ContactLoggingServiceClient::new(env.referrer(&channel, "agency-c"));
    let refused = as_referrer
        .get_case_file(GetCaseFileRequest {
            referral_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    platform.stop().await.unwrap();
    env.cleanup().await;
}
