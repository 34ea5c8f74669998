//! The access tables are what the wire enforces: for every RPC of every
//! service, over real gRPC, a role the table does not name is refused
//! (PERMISSION_DENIED, before the request is read), a call without a token
//! is UNAUTHENTICATED, and a role it names reaches the handler.

use cpm::registry::Target;
use cpm_runtime::auth::Role;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::{Code, Request};
use tonic_prost::ProstCodec;

use crate::harness::{Authed, TestEnv, connect};

/// Calls `method` of `service` with an empty message: enough to see
/// whether the guard lets it through, since an empty request changes nothing.
async fn call(client: Authed, service: &str, method: &str) -> Code {
    let mut grpc = Grpc::new(client);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/{service}/{method}")).unwrap();
    match grpc
        .unary::<(), (), _>(Request::new(()), path, ProstCodec::default())
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_admits_exactly_the_roles_its_table_names() {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let mut checked = 0;
    for target in Target::ALL {
        let service = target.service();
        for method in service.access().methods() {
            let allowed = service.access().roles_for(method).unwrap();
            for role in Role::ALL {
                let token = env.token("someone", role, Some("agency-access"), Some("m-access"));
                let client = cpm::client::authed(&channel, &token).unwrap();
                // A permitted Subscribe would stream for ever; its admission
                // is shown by the notifications tests.
                if allowed.contains(&role) && method == "Subscribe" {
                    continue;
                }
                let code = call(client, service.grpc_name(), method).await;
                if allowed.contains(&role) {
                    assert!(
                        !matches!(
                            code,
                            Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented
                        ),
                        "{role} should reach {method}, got {code:?}"
                    );
                } else {
                    assert_eq!(code, Code::PermissionDenied, "{role} calling {method}");
                }
                checked += 1;
            }
            let mut grpc = Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let path =
                PathAndQuery::try_from(format!("/{}/{method}", service.grpc_name())).unwrap();
            let status = grpc
                .unary::<(), (), _>(Request::new(()), path, ProstCodec::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{method}");
        }
    }
    assert!(checked > 100, "only {checked} calls checked");
    platform.stop().await.unwrap();
    env.cleanup().await;
}
