//! TLS and mutual TLS on the gRPC port, and the plaintext health port that
//! Kubernetes probes use when clients must present certificates.

use std::path::{Path, PathBuf};

use cpm::Target;
use cpm_proto::v1::ListAgenciesRequest;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::harness::{TestEnv, eventually};

/// A test CA, a server certificate for localhost and a client certificate,
/// written as PEM files into a fresh directory.
pub(crate) struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    pub(crate) fn create() -> Self {
        let dir = std::env::temp_dir().join(format!("cpm-pki-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        for (name, names) in [
            ("server", vec!["localhost".to_owned()]),
            ("client", vec!["agency-client".to_owned()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub(crate) fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(Path::new(&self.path(name))).unwrap()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_channel(
    port: u16,
    pki: &TestPki,
    with_client_cert: bool,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    }
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_certificates_and_probes_use_the_plain_health_port() {
    let pki = TestPki::create();
    let mut env = TestEnv::new().await;
    env.settings.platform.grpc.tls_cert_file = pki.path("server.pem");
    env.settings.platform.grpc.tls_key_file = pki.path("server.key");
    env.settings.platform.grpc.tls_client_ca_file = pki.path("ca.pem");
    env.settings.platform.grpc.health_listen = "127.0.0.1:0".into();
    env.settings.validate().unwrap();
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let port = platform.local_addr().port();

    // With a certificate from the programme's CA: calls go through.
    let channel = tls_channel(port, &pki, true).await.unwrap();
    let admin = cpm::client::authed(
        &channel,
        &env.token("admin", cpm_runtime::auth::Role::Admin, None, None),
    )
    .unwrap();
    ReferralIntakeServiceClient::new(admin)
        .list_agencies(ListAgenciesRequest::default())
        .await
        .unwrap();

    // Without one: the handshake or the first call fails.
    let refused = match tls_channel(port, &pki, false).await {
        Err(_) => true,
        Ok(channel) => {
            let admin = cpm::client::authed(
                &channel,
                &env.token("admin", cpm_runtime::auth::Role::Admin, None, None),
            )
            .unwrap();
            ReferralIntakeServiceClient::new(admin)
                .list_agencies(ListAgenciesRequest::default())
                .await
                .is_err()
        }
    };
    assert!(refused, "a client without a certificate was served");

    // Plaintext on the main port is refused too.
    assert!(cpm::client::health(&platform.endpoint(), "").await.is_err());

    // The probe port answers in plaintext.
    let probe = format!("http://{}", platform.health_addr().expect("a health port"));
    eventually(
        std::time::Duration::from_secs(20),
        "the probe port reports SERVING",
        || {
            let probe = probe.clone();
            async move { cpm::client::health(&probe, "").await.ok() == Some(1) }
        },
    )
    .await;

    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test]
async fn mutual_tls_without_a_server_certificate_is_a_configuration_error() {
    let mut settings = cpm::Settings::default();
    settings.platform.grpc.tls_client_ca_file = "ca.pem".into();
    let message = settings.validate().unwrap_err().to_string();
    assert!(message.contains("grpc.tls_client_ca_file"), "{message}");
    settings.platform.grpc.tls_client_ca_file.clear();
    settings.platform.grpc.health_listen = "nowhere".into();
    let message = settings.validate().unwrap_err().to_string();
    assert!(message.contains("CPM__GRPC__HEALTH_LISTEN"), "{message}");
}
