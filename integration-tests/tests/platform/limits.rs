//! Work in proportion to the request, over real gRPC: an oversized message
//! is refused by every service before it is decoded, a flood of list
//! entries costs one violation, and text with hidden characters (NUL
//! included) is a field violation rather than an internal error.

use cpm::registry::Target;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::{Code, Request};
use tonic_prost::ProstCodec;

use crate::harness::{TestEnv, connect, referral_request, violated_fields};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_flooded_and_hidden_inputs_are_refused_cheaply_and_clearly() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;

    // Every service: a message over grpc.max_request_bytes is not decoded.
    let limit = env.settings.platform.grpc.max_request_bytes;
    for target in Target::ALL {
        let service = target.service();
        let method = service
            .access()
            .methods()
            .find(|method| *method != "Subscribe")
            .unwrap();
        let role = service.access().roles_for(method).unwrap()[0];
        let token = env.token("someone", role, Some("agency-limits"), Some("m-1"));
        let mut grpc = Grpc::new(cpm::client::authed(&channel, &token).unwrap());
        grpc.ready().await.unwrap();
        let path = PathAndQuery::try_from(format!("/{}/{method}", service.grpc_name())).unwrap();
        // A string in field 1: any message decodes it, were it small enough.
        let status = grpc
            .unary::<String, (), _>(
                Request::new("x".repeat(limit + 1)),
                path,
                ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{method}: {status:?}"
        );
    }

    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-limits"));
    let mut flooded = referral_request("Limits");
    flooded.vulnerabilities = vec![999; 50_000];
    let status = intake.submit_referral(flooded).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["vulnerabilities"]);
    assert!(status.message().len() < 200, "{}", status.message());

    let mut hidden = referral_request("Limits");
    hidden.reason = "calls 999\0nightly".into();
    hidden.desired_outcomes = "a \u{202E}enituor".into();
    let status = intake.submit_referral(hidden).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["reason", "desired_outcomes"]);

    platform.stop().await.unwrap();
    env.cleanup().await;
}
