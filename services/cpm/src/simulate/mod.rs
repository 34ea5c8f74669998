//! `cpm simulate`: generates a synthetic programme calibrated to the
//! evaluation ([`plan`]) and replays it through the platform's public gRPC
//! APIs, as agencies, coordinators, mentors and an admin would, with
//! bounded concurrency and a progress bar.
//!
//! Time is compressed with the platform's development clock: every call
//! of a referral's replay names the time the plan gives its step
//! ([`timeline`]) in the `cpm-simulated-time` header, so a programme of
//! four years lands in its years, engagements last months and follow-up
//! demand is recorded once its window has passed. A platform without
//! `dev.simulated_clock` refuses the header; the replay then stops at the
//! first referral and says so.
//!
//! DEVELOPMENT ONLY: every token is minted with the configured shared key.

pub mod comparison;
pub mod mentoring;
pub mod plan;
pub mod timeline;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::risk_assessment_service_client::RiskAssessmentServiceClient;
use cpm_proto::v1::{
    ChangeMentorStatusRequest, CheckKind, ClientIdentity, ConfirmAllocationRequest,
    ContactActivity, ContactChannel, DecideRequest, Decision, Demand, DemandWindow,
    DischargeRequest, EngagementAction, GetAssessmentRequest, GoalState, HomeVisit,
    LogContactRequest, MentorStatus, NonEngagementReason, NonEngagementStage,
    ProposeMatchesRequest, ReassessRequest, RecordCheckRequest, RecordDemandRequest,
    RecordGoalProgressRequest, RecordProgrammeCostRequest, Referrer, ReferrerRole,
    RegisterAgencyRequest, RegisterMentorRequest, RegisterReferrerRequest, RiskLevel,
    SetGoalRequest, SubmitReferralRequest, TrainingFormat, WillWantCapacityScores,
};
use cpm_runtime::auth::{Authenticator, Role};
use cpm_runtime::clock::SIMULATED_TIME_HEADER;
use futures::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::client::{Authed, authed, connect};
use plan::{AGENCIES, MentorRole, Outcome, PlannedMentor, PlannedReferral};
pub use plan::{PlanOptions, Programme};

/// Where to replay, and how.
pub struct SimulateOptions {
    pub endpoint: String,
    pub authenticator: Authenticator,
    pub plan: PlanOptions,
    /// Referrals in flight at once.
    pub concurrency: usize,
    pub show_progress: bool,
    /// How long one asynchronous step (an event reaching a service, a pair
    /// of mentors coming free) may take.
    pub step_timeout: Duration,
    /// Keeps this run's agencies and keys apart from earlier runs'.
    pub run_id: String,
}

impl SimulateOptions {
    pub fn new(endpoint: &str, authenticator: Authenticator, plan: PlanOptions) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            authenticator,
            plan,
            concurrency: 8,
            show_progress: false,
            step_timeout: Duration::from_secs(120),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        }
    }
}

/// What the replay did.
#[derive(Debug)]
pub struct SimulateSummary {
    pub programme: Programme,
    pub referrals: usize,
    pub supported: usize,
    pub contacts_logged: u64,
    /// Supported clients whose follow-up demand was recorded.
    pub follow_ups: u64,
    /// Referrals not taken on whose follow-up demand was recorded.
    pub comparison_follow_ups: u64,
    pub mentors: usize,
    pub elapsed: Duration,
    /// The calendar years of programme years 1 and 4.
    pub years: (i32, i32),
}

impl SimulateSummary {
    pub fn render(&self) -> String {
        let intended = self.programme.intended();
        let mut out = format!(
            "simulated programme (seed {}, size {}): {} referrals, {} supported, {} contacts \
             logged, {} mentors, in {:.1} s\n",
            self.programme.seed,
            self.programme.size,
            self.referrals,
            self.supported,
            self.contacts_logged,
            self.mentors,
            self.elapsed.as_secs_f64()
        );
        out.push_str(&format!(
            "programme years 1-4 replayed as {}-{} on the platform's development clock; \
             follow-up demand recorded for {} clients a year after discharge and for {} \
             referrals not taken on (the comparison cohort)\n",
            self.years.0, self.years.1, self.follow_ups, self.comparison_follow_ups
        ));
        if let Some(median) = crate::report::median_days(&intended.first_client_days) {
            out.push_str(&format!(
                "mentors: {} had a first client, a median {median} days after training; {} \
                 still waiting\n",
                intended.first_client_days.len(),
                intended.waiting
            ));
        }
        out.push_str(&format!(
            "intended: contacts mean {:.1}, max {}; demand before support £{:.2}; \
             saving £{:.2}; cost £{:.2}\n",
            intended.contacts.mean(),
            intended.contacts.max,
            intended.before_pence as f64 / 100.0,
            intended.saving_pence as f64 / 100.0,
            intended.cost_pence as f64 / 100.0
        ));
        out
    }
}

struct Replay {
    options: SimulateOptions,
    channel: Channel,
    admin: Authed,
    coordinator: Authed,
    contacts: AtomicU64,
    follow_ups: AtomicU64,
    comparison_follow_ups: AtomicU64,
}

fn agency_id(run: &str, index: usize) -> String {
    format!("sim-{run}-{}", AGENCIES[index].0)
}

impl Replay {
    fn token(
        &self,
        subject: &str,
        role: Role,
        agency: Option<&str>,
        mentor: Option<&str>,
    ) -> anyhow::Result<Authed> {
        let areas = if role == Role::Coordinator {
            self.options.plan.areas.clone()
        } else {
            Vec::new()
        };
        let token = self.options.authenticator.mint_with_areas(
            subject,
            role,
            agency,
            mentor,
            &areas,
            chrono::Duration::hours(12),
        )?;
        authed(&self.channel, &token)
    }

    async fn register_agencies(&self) -> anyhow::Result<()> {
        let mut intake = ReferralIntakeServiceClient::new(self.admin.clone());
        for (index, (slug, name, kind, _)) in AGENCIES.iter().enumerate() {
            let agency_id = agency_id(&self.options.run_id, index);
            intake
                .register_agency(RegisterAgencyRequest {
                    agency_id: agency_id.clone(),
                    name: format!("{name} (simulated)"),
                    kind: *kind as i32,
                    active: true,
                })
                .await
                .context("RegisterAgency")?;
            intake
                .register_referrer(RegisterReferrerRequest {
                    agency_id: agency_id.clone(),
                    subject: format!("sim-referrer-{slug}"),
                    name: format!("Referrer at {name}"),
                    role: ReferrerRole::Frontline as i32,
                    contact: format!("referrer@{slug}.example"),
                })
                .await
                .context("RegisterReferrer")?;
        }
        Ok(())
    }

    async fn register_mentor(&self, mentor: &PlannedMentor) -> anyhow::Result<String> {
        let mut matching = MentorMatchingServiceClient::new(self.coordinator.clone());
        let trained_on = mentor.trained_on.to_string();
        let registered = matching
            .register_mentor(RegisterMentorRequest {
                display_name: mentor.display_name.clone(),
                gender: mentor.gender as i32,
                areas: vec![mentor.area.clone()],
                lived_experience: mentor.lived_experience.iter().map(|l| *l as i32).collect(),
                capacity: mentor.capacity,
                training_cohort: mentor.cohort.clone(),
                training_format: if mentor.two_days {
                    TrainingFormat::TwoDays
                } else {
                    TrainingFormat::FiveEvenings
                } as i32,
                training_completed_on: trained_on.clone(),
                safeguarding_trained_on: trained_on.clone(),
                agreement_signed_on: trained_on,
                age_band: mentor.age_band as i32,
                ..Default::default()
            })
            .await
            .context("RegisterMentor")?
            .into_inner()
            .mentor
            .context("RegisterMentor returned no mentor")?;
        if mentor.role == MentorRole::Declined {
            matching
                .change_mentor_status(ChangeMentorStatusRequest {
                    mentor_id: registered.mentor_id.clone(),
                    status: MentorStatus::Declined as i32,
                    reason: "trained for another organisation".into(),
                })
                .await
                .context("ChangeMentorStatus")?;
        }
        Ok(registered.mentor_id)
    }

    /// Calls `attempt` until it succeeds or fails otherwise than with
    /// `retry` codes, within the step timeout.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        retry: &[Code],
        mut attempt: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.options.step_timeout;
        let mut last = String::new();
        loop {
            match attempt().await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(status) if retry.contains(&status.code()) => {
                    last = format!(" (last answer: {status})");
                }
                Err(status) => return Err(anyhow::anyhow!("{what}: {status}")),
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{what}: not done within {:?}{last}",
                self.options.step_timeout
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replays one referral; `mentor_ids` are the registered mentoring
    /// mentors' IDs by their index in the plan.
    async fn replay_referral(
        &self,
        index: usize,
        referral: &PlannedReferral,
        mentor_ids: &[String],
    ) -> anyhow::Result<()> {
        let run = &self.options.run_id;
        let agency = agency_id(run, referral.agency);
        let slug = AGENCIES[referral.agency].0;
        let referrer = self.token(
            &format!("sim-referrer-{slug}"),
            Role::Referrer,
            Some(&agency),
            None,
        )?;
        let times = &referral.timeline;
        let submitted = ReferralIntakeServiceClient::new(referrer)
            .submit_referral(at(
                times.referred_at,
                SubmitReferralRequest {
                    idempotency_key: format!("sim-{run}-{index}"),
                    client: Some(ClientIdentity {
                        given_name: format!("Client{index}"),
                        family_name: format!("Simulated-{run}"),
                        date_of_birth: referral.date_of_birth.to_string(),
                        gender: referral.gender as i32,
                        address: format!("{index} Example Street"),
                        area: referral.area.clone(),
                        phone: "01325 000000".into(),
                        safe_contact_instructions: "call after 10am".into(),
                    }),
                    referrer: Some(Referrer {
                        name: format!("Referrer at {slug}"),
                        role: ReferrerRole::Frontline as i32,
                        contact: format!("referrer@{slug}.example"),
                    }),
                    reason: "repeated calls to emergency services while isolated".into(),
                    desired_outcomes: "fewer crises; someone to talk to".into(),
                    client_consented: true,
                    vulnerabilities: referral.vulnerabilities.iter().map(|v| *v as i32).collect(),
                    victim_of: referral.victim_of.iter().map(|c| *c as i32).collect(),
                    perpetrator_of: referral.perpetrator_of.iter().map(|c| *c as i32).collect(),
                    emergency_calls_last_12_months: referral.calls_before,
                    demand: Some(Demand {
                        police_calls: referral.calls_before,
                        police_staff_hours: f64::from(referral.hours_before),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await
            .map_err(refused_clock)
            .context("SubmitReferral")?
            .into_inner();
        let referral_id = submitted.referral.context("no referral")?.referral_id;

        let mut assessments = RiskAssessmentServiceClient::new(self.coordinator.clone());
        let assessment_id = self
            .retrying("the assessment to open", &[Code::NotFound], || {
                let mut assessments = assessments.clone();
                let referral_id = referral_id.clone();
                async move {
                    let response = assessments
                        .get_assessment(GetAssessmentRequest {
                            referral_id,
                            ..Default::default()
                        })
                        .await?;
                    Ok(response.into_inner().assessment.map(|a| a.assessment_id))
                }
            })
            .await?;

        let check = |kind: CheckKind, satisfied: bool| RecordCheckRequest {
            assessment_id: assessment_id.clone(),
            kind: kind as i32,
            satisfied,
            notes: "recorded by the simulation".into(),
            ..Default::default()
        };
        if let Outcome::NotTakenOn(_) = referral.outcome {
            let kind = referral.non_engagement().expect("not taken on");
            let mut request = if kind.reason == NonEngagementReason::RiskToVolunteers {
                RecordCheckRequest {
                    risk_level: RiskLevel::High as i32,
                    ..check(CheckKind::RiskToVolunteers, false)
                }
            } else {
                let none = kind.reason == NonEngagementReason::NoWillWantOrCapacity;
                RecordCheckRequest {
                    scores: Some(WillWantCapacityScores {
                        will: if none { 0 } else { 3 },
                        want: if none { 1 } else { 3 },
                        capacity: 3,
                    }),
                    ..check(CheckKind::WillWantCapacity, !none)
                }
            };
            if kind.stage == NonEngagementStage::HomeVisit {
                assessments
                    .record_check(at(
                        times.first_check_at,
                        RecordCheckRequest {
                            home_visit: Some(HomeVisit {
                                attended_by: vec!["sim-coordinator".into()],
                                referrer_co_visited: true,
                                phone_contact_first: false,
                            }),
                            ..check(CheckKind::HomeVisit, false)
                        },
                    ))
                    .await
                    .context("RecordCheck")?;
            }
            request.assessment_id = assessment_id.clone();
            assessments
                .record_check(at(times.first_check_at + HOUR, request))
                .await
                .context("RecordCheck")?;
            assessments
                .decide(at(
                    times.decided_at,
                    DecideRequest {
                        assessment_id,
                        decision: Decision::NotTakenOn as i32,
                        stage: kind.stage as i32,
                        reason: kind.reason as i32,
                        referred_to: kind.referred_to.map_or(0, |r| r as i32),
                        rationale: kind.label.into(),
                    },
                ))
                .await
                .context("Decide")?;
            return self.record_follow_up(&referral_id, referral).await;
        }

        for (n, kind) in [
            CheckKind::AdultAtReferral,
            CheckKind::RiskToVolunteers,
            CheckKind::WillWantCapacity,
        ]
        .into_iter()
        .enumerate()
        {
            let mut request = check(kind, true);
            match kind {
                CheckKind::RiskToVolunteers => request.risk_level = RiskLevel::Low as i32,
                CheckKind::WillWantCapacity => {
                    request.scores = Some(WillWantCapacityScores {
                        will: 4,
                        want: 4,
                        capacity: 3,
                    })
                }
                _ => {}
            }
            assessments
                .record_check(at(times.first_check_at + HOUR * n as i32, request))
                .await
                .context("RecordCheck")?;
        }
        assessments
            .decide(at(
                times.decided_at,
                DecideRequest {
                    assessment_id,
                    decision: Decision::Accept as i32,
                    rationale: "will and want to change; safe for volunteers".into(),
                    ..Default::default()
                },
            ))
            .await
            .context("Decide")?;
        let allocated_at = times
            .allocated_at
            .context("an accepted referral is allocated")?;

        // Matching: the plan's pair, confirmed at its planned time once the
        // client waits for mentors and both have a place free now (a pair
        // may still hold a client the replay has not discharged yet). The
        // coordinator looks at the best proposal first and gives a reason
        // when the plan's pair is another.
        let [first, second] = referral
            .pair
            .context("a referral allocated has a planned pair")?;
        let pair = vec![mentor_ids[first].clone(), mentor_ids[second].clone()];
        let matching = MentorMatchingServiceClient::new(self.coordinator.clone());
        let best = self
            .retrying("the client to wait for mentors", &[Code::NotFound], || {
                let mut matching = matching.clone();
                let referral_id = referral_id.clone();
                async move {
                    let proposals = matching
                        .propose_matches(ProposeMatchesRequest {
                            referral_id,
                            limit: 1,
                        })
                        .await?
                        .into_inner()
                        .proposals;
                    Ok(Some(proposals.into_iter().next().map(|p| p.mentor_ids)))
                }
            })
            .await?;
        let sorted = |mut ids: Vec<String>| {
            ids.sort();
            ids
        };
        let reason = if best.map(sorted) == Some(sorted(pair.clone())) {
            String::new()
        } else {
            "the pair the programme planned for this client".to_owned()
        };
        self.retrying(
            "the planned pair to have places free",
            &[Code::FailedPrecondition, Code::Aborted],
            || {
                let mut matching = matching.clone();
                let request = ConfirmAllocationRequest {
                    referral_id: referral_id.clone(),
                    mentor_ids: pair.clone(),
                    reason: reason.clone(),
                };
                async move {
                    matching
                        .confirm_allocation(at(allocated_at, request))
                        .await
                        .map(|_| Some(()))
                }
            },
        )
        .await?;
        let mentor_id = pair[0].clone();

        let mentor = self.token(
            &format!("sim-mentor-{mentor_id}"),
            Role::Mentor,
            None,
            Some(&mentor_id),
        )?;
        let mut mentor_contacts = ContactLoggingServiceClient::new(mentor);
        let mut coordinator_contacts = ContactLoggingServiceClient::new(self.coordinator.clone());
        let contacts = referral.contacts();
        let mut goal_id = None;
        for (n, (contact, contact_at)) in contacts.iter().zip(&times.contacts_at).enumerate() {
            let contact_at = *contact_at;
            let request = LogContactRequest {
                referral_id: referral_id.clone(),
                activity: contact.activity as i32,
                channel: channel_of(contact.activity) as i32,
                minutes: contact.minutes,
                ..Default::default()
            };
            if n == 0 {
                // The case file opens from an event; it may be a moment behind.
                self.retrying("the case file to open", &[Code::NotFound], || {
                    let mut client = mentor_contacts.clone();
                    let request = request.clone();
                    async move {
                        client
                            .log_contact(at(contact_at, request))
                            .await
                            .map(|_| Some(()))
                    }
                })
                .await?;
            } else {
                mentor_contacts
                    .log_contact(at(contact_at, request))
                    .await
                    .context("LogContact")?;
            }
            self.contacts.fetch_add(1, Ordering::Relaxed);
            if n == 1 && referral.supported() {
                let target = contact_at.date_naive() + chrono::Days::new(90);
                let goal = coordinator_contacts
                    .set_goal(at(
                        contact_at,
                        SetGoalRequest {
                            referral_id: referral_id.clone(),
                            goal: "fewer crises and a weekly activity outside the house".into(),
                            reality: "calls for help most weeks".into(),
                            options: "a local group; a routine for bad days".into(),
                            way_forward: "try the group with a mentor".into(),
                            target_date: target.to_string(),
                            commitment: 7,
                        },
                    ))
                    .await
                    .context("SetGoal")?
                    .into_inner()
                    .goal
                    .context("SetGoal returned no goal")?;
                goal_id = Some(goal.goal_id);
            }
        }

        let ended_at = times.ended_at.context("an engagement ends")?;
        match &referral.outcome {
            Outcome::Supported {
                discharge,
                goal_achieved,
                ..
            } => {
                if let Some(goal_id) = goal_id {
                    coordinator_contacts
                        .record_goal_progress(at(
                            ended_at,
                            RecordGoalProgressRequest {
                                referral_id: referral_id.clone(),
                                goal_id,
                                note: "reviewed at discharge".into(),
                                commitment: 0,
                                state: if *goal_achieved {
                                    GoalState::Achieved
                                } else {
                                    GoalState::Dropped
                                } as i32,
                            },
                        ))
                        .await
                        .context("RecordGoalProgress")?;
                }
                coordinator_contacts
                    .discharge(at(
                        ended_at,
                        DischargeRequest {
                            referral_id: referral_id.clone(),
                            reason: "support ended".into(),
                            outcome: *discharge as i32,
                            ..Default::default()
                        },
                    ))
                    .await
                    .context("Discharge")?;
            }
            Outcome::EndedDuringEngagement { .. } => {
                let kind = referral.non_engagement().expect("ended");
                assessments
                    .reassess(at(
                        ended_at,
                        ReassessRequest {
                            referral_id: referral_id.clone(),
                            action: EngagementAction::End as i32,
                            stage: kind.stage as i32,
                            reason: kind.reason as i32,
                            referred_to: kind.referred_to.map_or(0, |r| r as i32),
                            rationale: kind.label.into(),
                        },
                    ))
                    .await
                    .context("Reassess")?;
            }
            Outcome::NotTakenOn(_) => unreachable!("handled above"),
        }
        self.record_follow_up(&referral_id, referral).await
    }

    /// Records the demand the plan intends for the year after support
    /// ended (a discharge; for the comparison cohort the decision not to
    /// take the referral on, or the engagement ended), supplied once that
    /// window has passed; nothing when the plan has no follow-up figures.
    /// Contact logging learns that a referral was not taken on from an
    /// event, which may be a moment behind.
    async fn record_follow_up(
        &self,
        referral_id: &str,
        referral: &PlannedReferral,
    ) -> anyhow::Result<()> {
        let Some(supplied_on) = referral.timeline.follow_up_on else {
            return Ok(());
        };
        let supplied_at = supplied_on.and_hms_opt(12, 0, 0).expect("noon").and_utc();
        let request = RecordDemandRequest {
            referral_id: referral_id.to_owned(),
            window: DemandWindow::SecondFollowUp as i32,
            police_calls: referral.calls_after,
            police_staff_hours: f64::from(referral.hours_after),
            supplied_by: "simulated police data team".into(),
            supplied_on: supplied_on.to_string(),
            ..Default::default()
        };
        let client = ContactLoggingServiceClient::new(self.coordinator.clone());
        self.retrying(
            "contact logging to know that support ended",
            &[Code::NotFound, Code::FailedPrecondition],
            || {
                let mut client = client.clone();
                let request = request.clone();
                async move {
                    client
                        .record_demand(at(supplied_at, request))
                        .await
                        .map(|_| Some(()))
                }
            },
        )
        .await
        .context("RecordDemand")?;
        let counter = if referral.supported() {
            &self.follow_ups
        } else {
            &self.comparison_follow_ups
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One hour, between checks recorded on the same visit.
const HOUR: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// `message` as a request acting at `time` on the platform's development clock.
fn at<T>(time: DateTime<Utc>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = time
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .parse()
        .expect("an RFC 3339 time is a valid header value");
    request.metadata_mut().insert(SIMULATED_TIME_HEADER, value);
    request
}

/// Says what to do when the platform refuses simulated time.
fn refused_clock(status: tonic::Status) -> anyhow::Error {
    if status.code() == Code::FailedPrecondition && status.message().contains(SIMULATED_TIME_HEADER)
    {
        anyhow::anyhow!(
            "{}: run the platform in development with dev.simulated_clock = true \
             (CPM__DEV__SIMULATED_CLOCK=true) to replay a programme",
            status.message()
        )
    } else {
        anyhow::anyhow!("{status}")
    }
}

fn channel_of(activity: ContactActivity) -> ContactChannel {
    match activity {
        ContactActivity::Telephone => ContactChannel::Phone,
        ContactActivity::TextOrEmail => ContactChannel::Text,
        _ => ContactChannel::InPerson,
    }
}

/// Generates the programme and replays it.
pub async fn run(options: SimulateOptions) -> anyhow::Result<SimulateSummary> {
    let started = Instant::now();
    let programme = Programme::generate(&options.plan);
    let channel = connect(&options.endpoint)
        .await
        .with_context(|| format!("cannot connect to {}", options.endpoint))?;
    let admin_token = options.authenticator.mint(
        "sim-admin",
        Role::Admin,
        None,
        None,
        chrono::Duration::hours(12),
    )?;
    let coordinator_token = options.authenticator.mint_with_areas(
        "sim-coordinator",
        Role::Coordinator,
        None,
        None,
        &options.plan.areas,
        chrono::Duration::hours(12),
    )?;
    let replay = Arc::new(Replay {
        admin: authed(&channel, &admin_token)?,
        coordinator: authed(&channel, &coordinator_token)?,
        channel,
        options,
        contacts: AtomicU64::new(0),
        follow_ups: AtomicU64::new(0),
        comparison_follow_ups: AtomicU64::new(0),
    });

    replay.register_agencies().await?;
    ContactLoggingServiceClient::new(replay.admin.clone())
        .record_programme_cost(RecordProgrammeCostRequest {
            // The four programme years, as the evaluation's cost covered its years.
            period_start: format!(
                "{}-01-01",
                timeline::calendar_year(replay.options.plan.today, 1)
            ),
            period_end: format!(
                "{}-12-31",
                timeline::calendar_year(replay.options.plan.today, 4)
            ),
            cost_pence: programme.cost_pence.max(1),
            note: format!("simulated programme, seed {}", programme.seed),
        })
        .await
        .context("RecordProgrammeCost")?;
    // The mentoring mentors' IDs by their index in the plan (empty for the
    // others, registered last).
    let mut mentor_ids = vec![String::new(); programme.mentors.len()];
    for (index, mentor) in programme.mentors.iter().enumerate() {
        if mentor.role == MentorRole::Mentoring {
            mentor_ids[index] = replay.register_mentor(mentor).await?;
        }
    }
    let mentor_ids = &mentor_ids;

    let bar = if replay.options.show_progress {
        indicatif::ProgressBar::new(programme.referrals.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} referrals replayed, {msg} ({elapsed})",
        )
        .expect("a valid template"),
    );
    let concurrency = replay.options.concurrency.max(1);
    let results: Vec<anyhow::Result<()>> =
        futures::stream::iter(programme.referrals.iter().enumerate())
            .map(|(index, referral)| {
                let replay = Arc::clone(&replay);
                let bar = bar.clone();
                async move {
                    let result = replay
                        .replay_referral(index, referral, mentor_ids)
                        .await
                        .with_context(|| format!("referral {index}"));
                    bar.inc(1);
                    bar.set_message(format!(
                        "{} contacts logged",
                        replay.contacts.load(Ordering::Relaxed)
                    ));
                    result
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    bar.finish();
    for result in results {
        result?;
    }

    // Mentors still waiting for a first client, and those who never mentor here.
    for mentor in programme
        .mentors
        .iter()
        .filter(|m| m.role != MentorRole::Mentoring)
    {
        replay.register_mentor(mentor).await?;
    }

    let contacts_logged = replay.contacts.load(Ordering::Relaxed);
    Ok(SimulateSummary {
        referrals: programme.referrals.len(),
        supported: programme.referrals.iter().filter(|r| r.supported()).count(),
        mentors: programme.mentors.len(),
        contacts_logged,
        follow_ups: replay.follow_ups.load(Ordering::Relaxed),
        comparison_follow_ups: replay.comparison_follow_ups.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        years: (
            timeline::calendar_year(replay.options.plan.today, 1),
            timeline::calendar_year(replay.options.plan.today, 4),
        ),
        programme,
    })
}
