//! Walks one referral through all five services over gRPC, as the agency,
//! a coordinator and a mentor would, and checks at every step that the
//! agency sees the status move. `cpm demo` prints the steps; the
//! integration tests run the same journey and assert on its report.

use std::time::Duration;

use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::notifications_service_client::NotificationsServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::risk_assessment_service_client::RiskAssessmentServiceClient;
use cpm_proto::v1::{
    CheckKind, ClientIdentity, ConfirmAllocationRequest, ContactActivity, ContactChannel,
    DecideRequest, Decision, DischargeOutcome, DischargeRequest, Gender, GetAssessmentRequest,
    GetReferralRequest, LivedExperience, LogContactRequest, NotificationKind,
    ProposeMatchesRequest, RecordCheckRequest, Referral, ReferralStatus, Referrer, ReferrerRole,
    RegisterMentorRequest, RegisterWebhookRequest, RiskLevel, SubmitReferralRequest,
    SubscribeRequest, Vulnerability, WillWantCapacityScores,
};
use cpm_runtime::auth::{Authenticator, Role};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::client::{Authed, authed, connect};

/// What the journey saw.
#[derive(Debug)]
pub struct DemoReport {
    pub referral_id: String,
    pub agency_id: String,
    /// Each distinct status the agency saw, in order.
    pub statuses_seen: Vec<ReferralStatus>,
    pub mentor_ids: Vec<String>,
    pub contacts_logged: usize,
    /// The discharge notice received on the gRPC stream.
    pub stream_discharge_notice: bool,
    /// The discharge notice received by the agency's webhook.
    pub webhook_discharge_notice: bool,
    /// The discharge feedback that notice carried (its JSON `feedback`).
    pub webhook_feedback: Option<serde_json::Value>,
}

/// Who takes part, and where the platform is.
pub struct DemoOptions {
    pub endpoint: String,
    pub authenticator: Authenticator,
    /// A fresh agency ID keeps repeated runs apart.
    pub agency_id: String,
    /// One of the programme's areas; the demo coordinator works in it.
    pub area: String,
    /// Print each step.
    pub verbose: bool,
    /// How long to wait for each asynchronous step.
    pub step_timeout: Duration,
}

impl DemoOptions {
    pub fn new(endpoint: &str, authenticator: Authenticator) -> Self {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Self {
            endpoint: endpoint.to_owned(),
            authenticator,
            agency_id: format!("demo-agency-{suffix}"),
            area: "Darlington".into(),
            verbose: false,
            step_timeout: Duration::from_secs(30),
        }
    }
}

struct Journey {
    options: DemoOptions,
    channel: Channel,
    statuses_seen: Vec<ReferralStatus>,
}

fn rank(status: ReferralStatus) -> i32 {
    cpm_proto::status_rank(status)
}

impl Journey {
    fn step(&self, message: impl AsRef<str>) {
        if self.options.verbose {
            println!("  ✓ {}", message.as_ref());
        }
    }

    fn token(
        &self,
        subject: &str,
        role: Role,
        agency: Option<&str>,
        mentor: Option<&str>,
    ) -> anyhow::Result<Authed> {
        let areas = if role == Role::Coordinator {
            vec![self.options.area.clone()]
        } else {
            Vec::new()
        };
        let token = self.options.authenticator.mint_with_areas(
            subject,
            role,
            agency,
            mentor,
            &areas,
            chrono::Duration::hours(1),
        )?;
        authed(&self.channel, &token)
    }

    fn referrer(&self) -> anyhow::Result<Authed> {
        let agency = self.options.agency_id.clone();
        self.token("demo-referrer", Role::Referrer, Some(&agency), None)
    }

    fn coordinator(&self) -> anyhow::Result<Authed> {
        self.token("demo-coordinator", Role::Coordinator, None, None)
    }

    /// Polls the agency's view until the status reaches `wanted` (or beyond).
    async fn await_status(
        &mut self,
        referral_id: &str,
        wanted: ReferralStatus,
    ) -> anyhow::Result<Referral> {
        let mut client = ReferralIntakeServiceClient::new(self.referrer()?);
        let deadline = tokio::time::Instant::now() + self.options.step_timeout;
        loop {
            let referral = client
                .get_referral(GetReferralRequest {
                    referral_id: referral_id.to_owned(),
                })
                .await?
                .into_inner()
                .referral
                .ok_or_else(|| anyhow::anyhow!("GetReferral returned no referral"))?;
            let status = referral.status();
            if self.statuses_seen.last() != Some(&status) {
                self.statuses_seen.push(status);
            }
            if rank(status) >= rank(wanted) {
                anyhow::ensure!(
                    status == wanted || rank(status) < 10 || status == ReferralStatus::Discharged,
                    "expected {} but the referral is {}",
                    wanted.as_str_name(),
                    status.as_str_name()
                );
                return Ok(referral);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "referral still {} after {:?}, expected {}",
                status.as_str_name(),
                self.options.step_timeout,
                wanted.as_str_name()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A local HTTP endpoint standing in for the agency's webhook receiver.
async fn webhook_receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<serde_json::Value>)>
{
    let (sender, receiver) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/cpm-webhook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/cpm-webhook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, receiver))
}

/// Runs the whole journey.
pub async fn run(options: DemoOptions) -> anyhow::Result<DemoReport> {
    let channel = connect(&options.endpoint).await?;
    let mut journey = Journey {
        options,
        channel,
        statuses_seen: Vec::new(),
    };
    let agency_id = journey.options.agency_id.clone();
    let area = journey.options.area.clone();

    // The agency listens before it refers: a webhook and a live stream.
    let (webhook_url, mut webhook_bodies) = webhook_receiver().await?;
    let mut notifications = NotificationsServiceClient::new(journey.referrer()?);
    notifications
        .register_webhook(RegisterWebhookRequest {
            url: webhook_url.clone(),
        })
        .await?;
    let mut stream = notifications
        .subscribe(SubscribeRequest { after_sequence: 0 })
        .await?
        .into_inner();
    journey.step(format!(
        "agency {agency_id} registered a webhook and opened a notification stream"
    ));

    // Two trained mentors in the client's area.
    let mut matching = MentorMatchingServiceClient::new(journey.coordinator()?);
    let mut mentor_ids = Vec::new();
    let trained_on = chrono::Utc::now().date_naive().to_string();
    for (name, gender, experience) in [
        (
            "Mentor A",
            Gender::Female,
            LivedExperience::AlcoholDependency,
        ),
        ("Mentor B", Gender::Male, LivedExperience::MentalHealth),
    ] {
        let mentor = matching
            .register_mentor(RegisterMentorRequest {
                display_name: name.into(),
                gender: gender as i32,
                areas: vec![area.clone()],
                lived_experience: vec![experience as i32],
                capacity: 2,
                training_cohort: "demo".into(),
                training_format: cpm_proto::v1::TrainingFormat::TwoDays as i32,
                training_completed_on: trained_on.clone(),
                // Safeguarding training and the signed agreement make the
                // mentor one that can be proposed.
                safeguarding_trained_on: trained_on.clone(),
                agreement_signed_on: trained_on.clone(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .mentor
            .ok_or_else(|| anyhow::anyhow!("RegisterMentor returned no mentor"))?;
        mentor_ids.push(mentor.mentor_id);
    }
    journey.step(format!(
        "coordinator registered two safeguarding-trained mentors with signed agreements in {area}"
    ));

    // The agency refers.
    let mut intake = ReferralIntakeServiceClient::new(journey.referrer()?);
    let submitted = intake
        .submit_referral(SubmitReferralRequest {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            client: Some(ClientIdentity {
                given_name: "Sam".into(),
                family_name: format!("Demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]),
                date_of_birth: "1978-03-14".into(),
                gender: Gender::Female as i32,
                address: "1 Example Street".into(),
                area: area.clone(),
                phone: "01325 000000".into(),
                safe_contact_instructions: "call after 10am".into(),
            }),
            referrer: Some(Referrer {
                name: "PC Example".into(),
                role: ReferrerRole::Frontline as i32,
                contact: "pc.example@police.example".into(),
            }),
            reason: "frequent calls to 999 and 101 while isolated".into(),
            desired_outcomes: "feel less alone; fewer crises".into(),
            client_consented: true,
            vulnerabilities: vec![
                Vulnerability::HighImpactUser as i32,
                Vulnerability::AlcoholAddiction as i32,
            ],
            emergency_calls_last_12_months: 38,
            known_risks: String::new(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let referral_id = submitted
        .referral
        .ok_or_else(|| anyhow::anyhow!("SubmitReferral returned no referral"))?
        .referral_id;
    journey.statuses_seen.push(ReferralStatus::Received);
    journey.step(format!("agency submitted referral {referral_id}: RECEIVED"));

    journey
        .await_status(&referral_id, ReferralStatus::UnderAssessment)
        .await?;
    journey.step("risk assessment opened: UNDER_ASSESSMENT");

    // A named coordinator checks, sees the recommendation, and decides.
    let mut assessments = RiskAssessmentServiceClient::new(journey.coordinator()?);
    let assessment = assessments
        .get_assessment(GetAssessmentRequest {
            referral_id: referral_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .assessment
        .ok_or_else(|| anyhow::anyhow!("GetAssessment returned no assessment"))?;
    for kind in [
        CheckKind::AdultAtReferral,
        CheckKind::RiskToVolunteers,
        CheckKind::WillWantCapacity,
    ] {
        let mut check = RecordCheckRequest {
            assessment_id: assessment.assessment_id.clone(),
            kind: kind as i32,
            satisfied: true,
            notes: "checked on home visit".into(),
            ..Default::default()
        };
        match kind {
            CheckKind::RiskToVolunteers => check.risk_level = RiskLevel::Low as i32,
            CheckKind::WillWantCapacity => {
                check.scores = Some(WillWantCapacityScores {
                    will: 4,
                    want: 5,
                    capacity: 3,
                })
            }
            _ => {}
        }
        assessments.record_check(check).await?;
    }
    let decided = assessments
        .decide(DecideRequest {
            assessment_id: assessment.assessment_id.clone(),
            decision: Decision::Accept as i32,
            rationale: "will and want to change; safe for volunteers".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .assessment
        .ok_or_else(|| anyhow::anyhow!("Decide returned no assessment"))?;
    journey.step(format!(
        "coordinator recorded three checks (recommendation {}) and accepted",
        decided.recommendation().as_str_name()
    ));
    let awaiting = journey
        .await_status(&referral_id, ReferralStatus::AwaitingMentors)
        .await?;
    let estimate = awaiting
        .estimated_start
        .map(|t| {
            chrono::DateTime::from_timestamp(t.seconds, 0)
                .unwrap_or_default()
                .date_naive()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into());
    journey.step(format!(
        "accepted, awaiting mentors: AWAITING_MENTORS (estimated start {estimate})"
    ));

    // The system proposes pairs; the coordinator confirms one.
    let proposals = matching
        .propose_matches(ProposeMatchesRequest {
            referral_id: referral_id.clone(),
            limit: 3,
        })
        .await?
        .into_inner()
        .proposals;
    let best = proposals
        .first()
        .ok_or_else(|| anyhow::anyhow!("no mentor pair was proposed"))?;
    matching
        .confirm_allocation(ConfirmAllocationRequest {
            referral_id: referral_id.clone(),
            mentor_ids: best.mentor_ids.clone(),
            // The proposed pair: no reason needed.
            reason: String::new(),
        })
        .await?;
    journey.step(format!(
        "matching proposed {} pair(s); coordinator confirmed the best (score {:.1})",
        proposals.len(),
        best.score
    ));
    journey
        .await_status(&referral_id, ReferralStatus::InSupport)
        .await?;
    journey.step("case file opened: IN_SUPPORT");

    // A mentor and the coordinator log contacts.
    let mentor_id = best.mentor_ids[0].clone();
    let mentor = journey.token("demo-mentor", Role::Mentor, None, Some(&mentor_id))?;
    let mut mentor_contacts = ContactLoggingServiceClient::new(mentor);
    let mut coordinator_contacts = ContactLoggingServiceClient::new(journey.coordinator()?);
    let deadline = tokio::time::Instant::now() + journey.options.step_timeout;
    loop {
        let logged = mentor_contacts
            .log_contact(LogContactRequest {
                referral_id: referral_id.clone(),
                activity: ContactActivity::HomeVisit as i32,
                channel: ContactChannel::InPerson as i32,
                minutes: 50,
                summary: "first joint visit".into(),
                ..Default::default()
            })
            .await;
        match logged {
            Ok(_) => break,
            // The case file opens from an event; it may be a moment behind.
            Err(status)
                if status.code() == tonic::Code::NotFound
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    coordinator_contacts
        .log_contact(LogContactRequest {
            referral_id: referral_id.clone(),
            activity: ContactActivity::Telephone as i32,
            channel: ContactChannel::InPerson as i32,
            minutes: 15,
            summary: "follow-up call".into(),
            ..Default::default()
        })
        .await?;
    journey.step("mentor logged a 50-minute home visit; coordinator a 15-minute call");

    coordinator_contacts
        .discharge(DischargeRequest {
            referral_id: referral_id.clone(),
            reason: "goals met".into(),
            outcome: DischargeOutcome::GoalsAchieved as i32,
            ..Default::default()
        })
        .await?;
    journey
        .await_status(&referral_id, ReferralStatus::Discharged)
        .await?;
    journey.step("coordinator discharged the client: DISCHARGED");

    // The closed loop: the referrer hears of the discharge on both channels.
    let wait = journey.options.step_timeout;
    let stream_discharge_notice = tokio::time::timeout(wait, async {
        while let Some(message) = stream.next().await {
            let notification = message?.notification.unwrap_or_default();
            if notification.referral_id == referral_id
                && notification.kind() == NotificationKind::Discharged
            {
                return Ok::<bool, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .unwrap_or(Ok(false))?;
    let webhook_feedback = tokio::time::timeout(wait, async {
        while let Some(body) = webhook_bodies.recv().await {
            if body["referral_id"] == referral_id.as_str()
                && body["kind"] == "NOTIFICATION_KIND_DISCHARGED"
            {
                return Some(body["feedback"].clone());
            }
        }
        None
    })
    .await
    .unwrap_or(None);
    let webhook_discharge_notice = webhook_feedback.is_some();
    journey.step(format!(
        "referrer told of the discharge: stream {}, webhook {}",
        if stream_discharge_notice { "yes" } else { "NO" },
        if webhook_discharge_notice {
            "yes"
        } else {
            "NO"
        }
    ));
    anyhow::ensure!(
        stream_discharge_notice && webhook_discharge_notice,
        "the discharge notice did not reach the referrer on both channels"
    );
    Ok(DemoReport {
        referral_id,
        agency_id,
        statuses_seen: journey.statuses_seen,
        mentor_ids: best.mentor_ids.clone(),
        contacts_logged: 2,
        stream_discharge_notice,
        webhook_discharge_notice,
        webhook_feedback,
    })
}
