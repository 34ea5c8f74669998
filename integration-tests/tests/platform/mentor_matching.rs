//! mentor-matching's API: the register refuses bad input field by field
//! and stores nothing, only staff may change it, and the wait estimate
//! answers referrers and coordinators alike. Every area a request names is
//! one of the programme's; a coordinator keeps the register, proposes and
//! allocates only in the areas they work in, and an admin in every area.

use std::time::Duration;

use cpm::Target;
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::{
    AgeBand, AssessmentDecided, Availability, ChangeMentorStatusRequest, ConfirmAllocationRequest,
    CrimeType, Decision, DischargeOutcome, DischargeRequest, EstimateWaitRequest, Gender,
    GetCaseFileRequest, ListMentorsRequest, LivedExperience, Mentor, MentorStatus,
    ProposeMatchesRequest, RecordTrainingRequest, RegisterMentorRequest, TrainingFormat,
    UpdateMentorDetailsRequest, Vulnerability,
};
use cpm_runtime::auth::Role;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use prost::Message as _;
use tonic::Code;

use crate::harness::{Authed, TestEnv, connect, eventually, violated_fields};

mod first_client;
mod retention;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A mentor of `area` who can be proposed: trained, safeguarding-trained
/// and with the agreement signed.
pub(crate) fn mentor(area: &str) -> RegisterMentorRequest {
    RegisterMentorRequest {
        display_name: "Mentor Sam".into(),
        gender: Gender::Female as i32,
        areas: vec![area.into()],
        lived_experience: vec![LivedExperience::MentalHealth as i32],
        capacity: 2,
        training_cohort: "2026-01".into(),
        training_format: TrainingFormat::TwoDays as i32,
        training_completed_on: "2026-01-18".into(),
        safeguarding_trained_on: "2026-01-25".into(),
        agreement_signed_on: "2026-02-01".into(),
        vetted_on: "2026-01-10".into(),
        age_band: AgeBand::Aged35To44 as i32,
        availability: vec![Availability::WeekdayEvenings as i32],
        ex_service_user: false,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_registration_names_every_field_and_stores_nothing() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut matching = MentorMatchingServiceClient::new(env.coordinator(&channel));

    let status = matching
        .register_mentor(RegisterMentorRequest {
            display_name: "  ".into(),
            gender: 99,
            lived_experience: vec![LivedExperience::MentalHealth as i32, 77],
            capacity: 0,
            ..mentor("Bad")
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        ["display_name", "gender", "lived_experience[1]", "capacity"]
    );
    let listed = matching
        .list_mentors(ListMentorsRequest {
            area: "Bad".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentors;
    assert!(listed.is_empty(), "nothing stored: {listed:?}");

    let registered = matching
        .register_mentor(mentor("Good"))
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    let listed = matching
        .list_mentors(ListMentorsRequest {
            area: "Good".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentors;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mentor_id, registered.mentor_id);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_staff_change_the_register_and_anyone_signed_in_may_ask_the_wait() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut as_referrer = MentorMatchingServiceClient::new(env.referrer(&channel, "agency-m"));
    let refused = as_referrer
        .register_mentor(mentor("Roles"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let mut as_mentor = MentorMatchingServiceClient::new(env.mentor(&channel, "m-1"));
    let refused = as_mentor
        .list_mentors(ListMentorsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let wait = as_referrer
        .estimate_wait(EstimateWaitRequest {
            area: "Roles".into(),
            ..Default::default()
        })
        .await;
    assert!(wait.is_ok(), "{wait:?}");
    let unnamed = as_referrer
        .estimate_wait(EstimateWaitRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unnamed), ["area"]);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_register_pages_without_skipping_or_repeating_anyone() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut matching = MentorMatchingServiceClient::new(env.coordinator(&channel));
    let mut registered = Vec::new();
    for n in 0..5 {
        // Two share a name: the ID breaks the tie.
        let name = if n < 2 {
            "Same Name".to_owned()
        } else {
            format!("Mentor {n}")
        };
        let mentor = matching
            .register_mentor(RegisterMentorRequest {
                display_name: name,
                ..mentor("Paging")
            })
            .await
            .unwrap()
            .into_inner()
            .mentor
            .unwrap();
        registered.push(mentor.mentor_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = matching
            .list_mentors(ListMentorsRequest {
                area: "Paging".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.mentors.len() <= 2);
        seen.extend(page.mentors.into_iter().map(|mentor| mentor.mentor_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    registered.sort();
    assert_eq!(seen, registered, "every mentor once");

    let bad = matching
        .list_mentors(ListMentorsRequest {
            page_size: 501,
            page_token: "not-ours".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["page_size", "page_token"]);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

pub(crate) fn admin(
    env: &TestEnv,
    channel: &tonic::transport::Channel,
) -> MentorMatchingServiceClient<Authed> {
    MentorMatchingServiceClient::new(
        cpm::client::authed(channel, &env.token("admin", Role::Admin, None, None)).unwrap(),
    )
}

pub(crate) async fn register(
    matching: &mut MentorMatchingServiceClient<Authed>,
    area: &str,
) -> Mentor {
    matching
        .register_mentor(RegisterMentorRequest {
            display_name: format!("Mentor {}", uuid::Uuid::new_v4().simple()),
            ..mentor(area)
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap()
}

/// The areas of the mentors `matching` lists with the area filter `area`,
/// sorted, or the code it is refused with.
async fn listed_areas(
    matching: &mut MentorMatchingServiceClient<Authed>,
    area: &str,
) -> Result<Vec<String>, Code> {
    let mut areas: Vec<String> = matching
        .list_mentors(ListMentorsRequest {
            area: area.into(),
            ..Default::default()
        })
        .await
        .map_err(|status| status.code())?
        .into_inner()
        .mentors
        .into_iter()
        .map(|mentor| mentor.area)
        .collect();
    areas.sort();
    Ok(areas)
}

/// Risk assessment accepts a client in `area`, as its `assessment.decided`
/// would say; returns the referral once `admin` sees the client waiting.
pub(crate) async fn accept_client(
    env: &TestEnv,
    admin: &MentorMatchingServiceClient<Authed>,
    area: &str,
) -> String {
    accept_client_who_committed(env, admin, area, &[]).await
}

/// [`accept_client`] for a client who committed `crimes`.
async fn accept_client_who_committed(
    env: &TestEnv,
    admin: &MentorMatchingServiceClient<Authed>,
    area: &str,
    crimes: &[CrimeType],
) -> String {
    let referral_id = uuid::Uuid::now_v7().to_string();
    let decided = AssessmentDecided {
        assessment_id: uuid::Uuid::now_v7().to_string(),
        referral_id: referral_id.clone(),
        agency_id: "agency-areas".into(),
        area: area.into(),
        decision: Decision::Accept as i32,
        decided_by: "coordinator".into(),
        vulnerabilities: vec![Vulnerability::MentalHealth as i32],
        client_gender: Gender::Female as i32,
        perpetrator_of: crimes.iter().map(|crime| *crime as i32).collect(),
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("risk-assessment", &decided);
    let (connection, amqp) = env.amqp_channel().await;
    amqp.basic_publish(
        format!("{}.events", env.namespace).as_str().into(),
        "assessment.decided".into(),
        BasicPublishOptions::default(),
        &envelope.encode_to_vec(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    crate::harness::close_quietly(connection).await;
    eventually(WAIT, "the accepted client waits for mentors", || {
        let mut admin = admin.clone();
        let referral_id = referral_id.clone();
        async move {
            admin
                .propose_matches(ProposeMatchesRequest {
                    referral_id,
                    limit: 1,
                })
                .await
                .is_ok()
        }
    })
    .await;
    referral_id
}

pub(crate) async fn propose(
    matching: &mut MentorMatchingServiceClient<Authed>,
    referral_id: &str,
) -> Result<Vec<Vec<String>>, tonic::Status> {
    Ok(matching
        .propose_matches(ProposeMatchesRequest {
            referral_id: referral_id.into(),
            limit: 20,
        })
        .await?
        .into_inner()
        .proposals
        .into_iter()
        .map(|proposal| proposal.mentor_ids)
        .collect())
}

/// Confirms `pair` as a coordinator does: after looking at the proposals
/// (which stores them; a refusal of the proposal is the confirmation's to
/// report), without a reason. Returns the allocation.
pub(crate) async fn confirm(
    matching: &mut MentorMatchingServiceClient<Authed>,
    referral_id: &str,
    pair: [&Mentor; 2],
) -> Result<cpm_proto::v1::Allocation, tonic::Status> {
    let _ = matching
        .propose_matches(ProposeMatchesRequest {
            referral_id: referral_id.into(),
            limit: 20,
        })
        .await;
    matching
        .confirm_allocation(ConfirmAllocationRequest {
            referral_id: referral_id.into(),
            mentor_ids: pair.map(|mentor| mentor.mentor_id.clone()).to_vec(),
            reason: String::new(),
        })
        .await
        .map(|response| response.into_inner().allocation.expect("an allocation"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_keeps_the_register_of_their_own_areas_and_an_admin_of_every_area() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let mut admin = admin(&env, &channel);

    let refused = darlington
        .register_mentor(mentor("East Durham"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("East Durham"), "{refused:?}");
    let own = register(&mut darlington, " darlington ").await;
    assert_eq!(own.area, "Darlington", "kept in its registered spelling");
    register(&mut admin, "East Durham").await;
    register(&mut admin, "east durham").await;

    assert_eq!(
        listed_areas(&mut darlington, "").await,
        Ok(vec!["Darlington".to_owned()]),
        "no filter: every area the coordinator works in, and only those"
    );
    assert_eq!(
        listed_areas(&mut darlington, "Darlington").await,
        Ok(vec!["Darlington".to_owned()])
    );
    assert_eq!(
        listed_areas(&mut darlington, "East Durham").await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        listed_areas(&mut admin, "").await,
        Ok(vec![
            "Darlington".to_owned(),
            "East Durham".to_owned(),
            "East Durham".to_owned()
        ])
    );
    assert_eq!(
        listed_areas(&mut admin, "EAST DURHAM").await,
        Ok(vec!["East Durham".to_owned(), "East Durham".to_owned()])
    );
    let mut east = MentorMatchingServiceClient::new(
        env.coordinator_in(&channel, &["East Durham", "Hartlepool"]),
    );
    assert_eq!(
        listed_areas(&mut east, "").await,
        Ok(vec!["East Durham".to_owned(), "East Durham".to_owned()])
    );
    let mut nowhere = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &[]));
    assert_eq!(listed_areas(&mut nowhere, "").await, Ok(vec![]));
    let refused = nowhere.register_mentor(mentor("Darlington")).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_cannot_propose_or_allocate_for_a_client_outside_their_areas() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let mut admin = admin(&env, &channel);
    let east_pair = [
        register(&mut admin, "East Durham").await,
        register(&mut admin, "East Durham").await,
    ];
    let darlington_pair = [
        register(&mut darlington, "Darlington").await,
        register(&mut darlington, "Darlington").await,
    ];
    let east_client = accept_client(&env, &admin, "East Durham").await;

    // For the Darlington coordinator the East Durham client does not exist.
    let unknown = propose(&mut darlington, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let hidden = propose(&mut darlington, &east_client).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    assert_eq!(
        hidden.message(),
        unknown.message(),
        "nothing tells them apart"
    );
    for pair in [
        [&east_pair[0], &east_pair[1]],
        [&darlington_pair[0], &darlington_pair[1]],
    ] {
        let refused = confirm(&mut darlington, &east_client, pair)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        assert_eq!(refused.message(), unknown.message());
    }
    // Nothing changed: the client still waits and every mentor is free.
    let wait = admin
        .estimate_wait(EstimateWaitRequest {
            area: "East Durham".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((wait.clients_waiting, wait.free_mentor_places), (1, 4));
    let pool = env.database().await;
    let allocations: i64 = sqlx::query_scalar("SELECT count(*) FROM mentor_matching.allocation")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(allocations, 0);
    let busy: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mentor_matching.waiting_client WHERE allocated")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(busy, 0);
    pool.close().await;

    // The admin sees the client and every mentor, and allocates.
    let mut east_ids = [
        east_pair[0].mentor_id.clone(),
        east_pair[1].mentor_id.clone(),
    ];
    east_ids.sort();
    let proposals = propose(&mut admin, &east_client).await.unwrap();
    assert_eq!(
        proposals,
        [east_ids.to_vec()],
        "only mentors of the client's area are proposed"
    );
    let elsewhere = confirm(
        &mut admin,
        &east_client,
        [&east_pair[0], &darlington_pair[0]],
    )
    .await
    .unwrap_err();
    assert_eq!(elsewhere.code(), Code::FailedPrecondition, "{elsewhere:?}");
    assert!(
        elsewhere
            .message()
            .contains("does not work in the client's area"),
        "{elsewhere:?}"
    );
    confirm(&mut admin, &east_client, [&east_pair[0], &east_pair[1]])
        .await
        .unwrap();
    // Allocated or not, the client stays unknown to the Darlington coordinator.
    let hidden = propose(&mut darlington, &east_client).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // A Darlington client: its coordinator is offered, and may allocate,
    // only the mentors of their own areas.
    let darlington_client = accept_client(&env, &admin, "Darlington").await;
    let mut darlington_ids = [
        darlington_pair[0].mentor_id.clone(),
        darlington_pair[1].mentor_id.clone(),
    ];
    darlington_ids.sort();
    assert_eq!(
        propose(&mut darlington, &darlington_client).await.unwrap(),
        [darlington_ids.to_vec()],
        "no East Durham mentor is proposed"
    );
    let refused = confirm(
        &mut darlington,
        &darlington_client,
        [&darlington_pair[0], &east_pair[0]],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    assert!(
        refused.message().contains(&east_pair[0].mentor_id),
        "{refused:?}"
    );
    confirm(
        &mut darlington,
        &darlington_client,
        [&darlington_pair[0], &darlington_pair[1]],
    )
    .await
    .unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_area_the_programme_does_not_register_is_refused_wherever_a_request_names_one() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut referrer = MentorMatchingServiceClient::new(env.referrer(&channel, "agency-m"));
    for area in ["Nowhere", "Darlington\u{200b}", "\u{200b}Darlington"] {
        let refused = admin.register_mentor(mentor(area)).await.unwrap_err();
        assert_eq!(violated_fields(&refused), ["areas[0]"], "{area:?}");
        let single = RegisterMentorRequest {
            area: area.into(),
            areas: vec![],
            ..mentor("Darlington")
        };
        let refused = admin.register_mentor(single).await.unwrap_err();
        assert_eq!(violated_fields(&refused), ["area"], "{area:?}");
        let refused = admin
            .list_mentors(ListMentorsRequest {
                area: area.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&refused), ["area"], "{area:?}");
        for matching in [&mut admin, &mut referrer] {
            let refused = matching
                .estimate_wait(EstimateWaitRequest {
                    area: area.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(violated_fields(&refused), ["area"], "{area:?}");
        }
    }
    assert_eq!(
        listed_areas(&mut admin, "").await,
        Ok(vec![]),
        "nothing stored"
    );

    // The wait is not personal: any registered area, in any letter case,
    // for a referrer and for a coordinator of other areas.
    register(&mut admin, "East Durham").await;
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    for matching in [&mut referrer, &mut darlington] {
        let wait = matching
            .estimate_wait(EstimateWaitRequest {
                area: " east durham ".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(wait.free_mentor_places, 2);
    }
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A discharge frees both mentors: the pair that was full is proposed to
/// the next client once contact-logging has discharged the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharge_frees_the_mentors_for_the_next_client() {
    let env = TestEnv::new().await;
    let platform = env.start(&Target::ALL).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut pair = Vec::new();
    for _ in 0..2 {
        pair.push(
            admin
                .register_mentor(RegisterMentorRequest {
                    display_name: format!("Mentor {}", uuid::Uuid::new_v4().simple()),
                    capacity: 1,
                    ..mentor("Early")
                })
                .await
                .unwrap()
                .into_inner()
                .mentor
                .unwrap(),
        );
    }
    let first = accept_client(&env, &admin, "Early").await;
    confirm(&mut admin, &first, [&pair[0], &pair[1]])
        .await
        .unwrap();
    let second = accept_client(&env, &admin, "Early").await;
    assert_eq!(
        propose(&mut admin, &second).await.unwrap(),
        Vec::<Vec<String>>::new(),
        "both mentors are full"
    );

    // Contact-logging opens the case from the allocation, then discharges it.
    let cases = ContactLoggingServiceClient::new(env.coordinator(&channel));
    eventually(WAIT, "the first client is discharged", || {
        let mut cases = cases.clone();
        let first = first.clone();
        async move {
            cases
                .discharge(DischargeRequest {
                    referral_id: first,
                    reason: "goals met".into(),
                    outcome: DischargeOutcome::GoalsAchieved as i32,
                    ..Default::default()
                })
                .await
                .is_ok()
        }
    })
    .await;
    let mut ids: Vec<String> = pair.iter().map(|m| m.mentor_id.clone()).collect();
    ids.sort();
    eventually(WAIT, "the freed pair is proposed again", || {
        let mut admin = admin.clone();
        let (second, ids) = (second.clone(), ids.clone());
        async move {
            propose(&mut admin, &second).await.is_ok_and(|proposals| {
                proposals.into_iter().any(|mut proposed| {
                    proposed.sort();
                    proposed == ids
                })
            })
        }
    })
    .await;
    confirm(&mut admin, &second, [&pair[0], &pair[1]])
        .await
        .unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}

async fn change_status(
    matching: &mut MentorMatchingServiceClient<Authed>,
    mentor: &Mentor,
    status: MentorStatus,
    reason: &str,
) -> Result<MentorStatus, tonic::Status> {
    let changed = matching
        .change_mentor_status(ChangeMentorStatusRequest {
            mentor_id: mentor.mentor_id.clone(),
            status: status as i32,
            reason: reason.into(),
        })
        .await?
        .into_inner()
        .mentor
        .unwrap();
    Ok(MentorStatus::try_from(changed.status).unwrap())
}

/// What contact-logging answers a mentor asking for a case that is not
/// theirs: NOT_FOUND while they are in good standing, PERMISSION_DENIED
/// once they are not.
async fn mentor_code(env: &TestEnv, channel: &tonic::transport::Channel, mentor: &Mentor) -> Code {
    ContactLoggingServiceClient::new(env.mentor(channel, &mentor.mentor_id))
        .get_case_file(GetCaseFileRequest {
            referral_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err()
        .code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mentor_moves_along_their_volunteering_and_one_who_left_is_refused_everywhere() {
    let mut env = TestEnv::new().await;
    env.settings.platform.auth.admit_unregistered = false;
    env.settings.platform.auth.standing_cache_secs = 1;
    let platform = env.start(&Target::ALL).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut mentors = Vec::new();
    for _ in 0..3 {
        mentors.push(
            admin
                .register_mentor(RegisterMentorRequest {
                    display_name: format!("Mentor {}", uuid::Uuid::new_v4().simple()),
                    capacity: 1,
                    ..mentor("Good")
                })
                .await
                .unwrap()
                .into_inner()
                .mentor
                .unwrap(),
        );
    }
    let [first, second, third] = [&mentors[0], &mentors[1], &mentors[2]];
    eventually(
        WAIT,
        "registered mentors are admitted by contact-logging",
        || async { mentor_code(&env, &channel, third).await == Code::NotFound },
    )
    .await;

    // Bad requests name every field and change nothing.
    let bad = admin
        .change_mentor_status(ChangeMentorStatusRequest {
            mentor_id: "someone".into(),
            status: MentorStatus::Trained as i32,
            reason: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["mentor_id", "status", "reason"]);
    // Another area's coordinator does not find the mentor.
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let hidden = change_status(&mut darlington, first, MentorStatus::Left, "moved")
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // A mentor waiting for a first client cannot take a sabbatical.
    let waiting = change_status(&mut admin, first, MentorStatus::Sabbatical, "a break")
        .await
        .unwrap_err();
    assert_eq!(waiting.code(), Code::FailedPrecondition, "{waiting:?}");

    // A first client makes the pair ACTIVE; a mentor with a client cannot
    // leave until re-matched.
    let client = accept_client(&env, &admin, "Good").await;
    confirm(&mut admin, &client, [first, second]).await.unwrap();
    let busy = change_status(&mut admin, first, MentorStatus::Left, "moving away")
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition);
    assert!(busy.message().contains("1 client"), "{busy:?}");

    // Once the client is discharged, a sabbatical keeps the mentor out of
    // proposals, and ends.
    let cases = ContactLoggingServiceClient::new(env.coordinator(&channel));
    eventually(WAIT, "the first client is discharged", || {
        let mut cases = cases.clone();
        let client = client.clone();
        async move {
            cases
                .discharge(DischargeRequest {
                    referral_id: client,
                    reason: "goals met".into(),
                    outcome: DischargeOutcome::GoalsAchieved as i32,
                    ..Default::default()
                })
                .await
                .is_ok()
        }
    })
    .await;
    eventually(WAIT, "the freed mentor takes a sabbatical", || {
        let mut admin = admin.clone();
        async move {
            change_status(&mut admin, first, MentorStatus::Sabbatical, "a break")
                .await
                .is_ok()
        }
    })
    .await;
    let next = accept_client(&env, &admin, "Good").await;
    for proposal in propose(&mut admin, &next).await.unwrap() {
        assert!(!proposal.contains(&first.mentor_id), "{proposal:?}");
    }
    assert_eq!(mentor_code(&env, &channel, first).await, Code::NotFound);
    assert_eq!(
        change_status(&mut admin, first, MentorStatus::Active, "back")
            .await
            .unwrap(),
        MentorStatus::Active
    );

    // One who leaves is final and refused by every service.
    assert_eq!(
        change_status(&mut admin, third, MentorStatus::Left, "moved away")
            .await
            .unwrap(),
        MentorStatus::Left
    );
    eventually(
        WAIT,
        "a mentor who left is refused by contact-logging",
        || async { mentor_code(&env, &channel, third).await == Code::PermissionDenied },
    )
    .await;
    let final_ = change_status(&mut admin, third, MentorStatus::Active, "came back")
        .await
        .unwrap_err();
    assert_eq!(final_.code(), Code::FailedPrecondition);
    assert!(final_.message().contains("final"), "{final_:?}");

    let database = env.database().await;
    let history: Vec<(i32, i32, String)> = sqlx::query_as(
        "SELECT from_status, to_status, reason FROM mentor_matching.mentor_status_change \
         ORDER BY change_id",
    )
    .fetch_all(&database)
    .await
    .unwrap();
    assert_eq!(
        history,
        [
            (
                MentorStatus::Active as i32,
                MentorStatus::Sabbatical as i32,
                "a break".to_owned()
            ),
            (
                MentorStatus::Sabbatical as i32,
                MentorStatus::Active as i32,
                "back".to_owned()
            ),
            (
                MentorStatus::Trained as i32,
                MentorStatus::Left as i32,
                "moved away".to_owned()
            ),
        ],
        "every change and only the changes made, with their reasons"
    );
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// The mentors `matching` lists with `request`, by ID.
async fn listed(
    matching: &mut MentorMatchingServiceClient<Authed>,
    request: ListMentorsRequest,
) -> Result<Vec<Mentor>, tonic::Status> {
    let mut mentors = matching.list_mentors(request).await?.into_inner().mentors;
    mentors.sort_by(|a, b| a.mentor_id.cmp(&b.mentor_id));
    Ok(mentors)
}

fn ids(mentors: &[&Mentor]) -> Vec<String> {
    let mut ids: Vec<String> = mentors.iter().map(|m| m.mentor_id.clone()).collect();
    ids.sort();
    ids
}

/// The mentor as `admin` lists them now.
async fn reread(admin: &mut MentorMatchingServiceClient<Authed>, mentor: &Mentor) -> Mentor {
    listed(admin, ListMentorsRequest::default())
        .await
        .unwrap()
        .into_iter()
        .find(|listed| listed.mentor_id == mentor.mentor_id)
        .unwrap()
}

async fn allocations(env: &TestEnv) -> i64 {
    let pool = env.database().await;
    let count = sqlx::query_scalar("SELECT count(*) FROM mentor_matching.allocation")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mentor_without_a_signed_agreement_is_never_proposed_until_it_is_recorded() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let a = register(&mut darlington, "Darlington").await;
    let b = register(&mut darlington, "Darlington").await;
    let unsigned = darlington
        .register_mentor(RegisterMentorRequest {
            display_name: "Mentor Unsigned".into(),
            agreement_signed_on: String::new(),
            ..mentor("Darlington")
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    // Everything registered is kept, and every new mentor waits for a first client.
    assert_eq!(a.status, MentorStatus::Trained as i32);
    assert_eq!(a.areas, ["Darlington"]);
    assert_eq!(a.training_cohort, "2026-01");
    assert_eq!(a.training_format, TrainingFormat::TwoDays as i32);
    assert_eq!(
        (
            a.training_completed_on.as_str(),
            a.safeguarding_trained_on.as_str(),
            a.agreement_signed_on.as_str(),
            a.vetted_on.as_str()
        ),
        ("2026-01-18", "2026-01-25", "2026-02-01", "2026-01-10")
    );
    assert_eq!(a.age_band, AgeBand::Aged35To44 as i32);
    assert_eq!(a.availability, [Availability::WeekdayEvenings as i32]);
    assert!(a.safeguarding_trained && a.available_for_proposal);
    assert_eq!(unsigned.status, MentorStatus::Trained as i32);
    assert!(unsigned.safeguarding_trained, "trained, but no agreement");
    assert!(!unsigned.available_for_proposal);
    assert_eq!(unsigned.agreement_signed_on, "");

    // Never proposed, never allocated, not listed as available.
    let client = accept_client(&env, &admin, "Darlington").await;
    assert_eq!(
        propose(&mut darlington, &client).await.unwrap(),
        [ids(&[&a, &b])]
    );
    let refused = confirm(&mut darlington, &client, [&a, &unsigned])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("agreement"), "{refused:?}");
    assert_eq!(allocations(&env).await, 0, "nothing allocated");
    let available = listed(
        &mut darlington,
        ListMentorsRequest {
            available_for_proposal: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&available.iter().collect::<Vec<_>>()), ids(&[&a, &b]));

    // Bad records name their fields and change nothing; another area's
    // coordinator does not find the mentor.
    let bad = darlington
        .record_training(RecordTrainingRequest {
            mentor_id: unsigned.mentor_id.clone(),
            agreement_signed_on: "2999-01-01".into(),
            training_format: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        ["training_format", "agreement_signed_on"]
    );
    let empty = darlington
        .record_training(RecordTrainingRequest {
            mentor_id: unsigned.mentor_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&empty), ["request"]);
    let mut east = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let hidden = east
        .record_training(RecordTrainingRequest {
            mentor_id: unsigned.mentor_id.clone(),
            agreement_signed_on: "2026-02-02".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    assert_eq!(reread(&mut admin, &unsigned).await, unsigned, "unchanged");

    // Once the agreement is recorded the mentor is proposed and allocated.
    let signed = darlington
        .record_training(RecordTrainingRequest {
            mentor_id: unsigned.mentor_id.clone(),
            agreement_signed_on: "2026-02-02".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    assert_eq!(signed.agreement_signed_on, "2026-02-02");
    assert_eq!(
        signed.safeguarding_trained_on, unsigned.safeguarding_trained_on,
        "what the record leaves out is kept"
    );
    assert_eq!(signed.training_cohort, unsigned.training_cohort);
    assert!(signed.available_for_proposal);
    assert_eq!(propose(&mut darlington, &client).await.unwrap().len(), 3);
    confirm(&mut darlington, &client, [&a, &signed])
        .await
        .unwrap();
    let active = listed(
        &mut darlington,
        ListMentorsRequest {
            status: MentorStatus::Active as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&active.iter().collect::<Vec<_>>()),
        ids(&[&a, &signed]),
        "the first client makes the pair ACTIVE"
    );
    let trained = listed(
        &mut darlington,
        ListMentorsRequest {
            status: MentorStatus::Trained as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&trained.iter().collect::<Vec<_>>()), ids(&[&b]));
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mentor_of_several_areas_is_seen_and_proposed_in_each() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let both = admin
        .register_mentor(RegisterMentorRequest {
            display_name: "Mentor Both".into(),
            areas: vec![
                "darlington".into(),
                "EAST DURHAM".into(),
                "Darlington".into(),
            ],
            ..mentor("Darlington")
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    assert_eq!(both.areas, ["Darlington", "East Durham"]);
    assert_eq!(both.area, "Darlington", "the primary area");
    let darlington_only = register(&mut admin, "Darlington").await;
    let east_only = register(&mut admin, "East Durham").await;

    // A coordinator sees the mentors who share an area with them.
    let mut east = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let seen = listed(&mut east, ListMentorsRequest::default())
        .await
        .unwrap();
    assert_eq!(
        ids(&seen.iter().collect::<Vec<_>>()),
        ids(&[&both, &east_only])
    );
    let mut north =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["North Durham"]));
    assert!(
        listed(&mut north, ListMentorsRequest::default())
            .await
            .unwrap()
            .is_empty()
    );
    let in_darlington = listed(
        &mut admin,
        ListMentorsRequest {
            area: "Darlington".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&in_darlington.iter().collect::<Vec<_>>()),
        ids(&[&both, &darlington_only])
    );
    // A coordinator may register only in their own areas, all of them.
    let refused = east
        .register_mentor(RegisterMentorRequest {
            areas: vec!["East Durham".into(), "Darlington".into()],
            ..mentor("East Durham")
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Proposed for clients of each of their areas, with that area's mentors.
    let darlington_client = accept_client(&env, &admin, "Darlington").await;
    let east_client = accept_client(&env, &admin, "East Durham").await;
    assert_eq!(
        propose(&mut admin, &darlington_client).await.unwrap(),
        [ids(&[&both, &darlington_only])]
    );
    assert_eq!(
        propose(&mut east, &east_client).await.unwrap(),
        [ids(&[&both, &east_only])]
    );
    confirm(&mut east, &east_client, [&both, &east_only])
        .await
        .unwrap();
    // The East Durham coordinator keeps the mentor's record too.
    let recorded = east
        .record_training(RecordTrainingRequest {
            mentor_id: both.mentor_id.clone(),
            vetted_on: "2026-02-14".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    assert_eq!(recorded.vetted_on, "2026-02-14");
    assert_eq!(recorded.current_clients, 1);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_details_sets_what_the_mask_names_and_keeps_capacity_above_current_clients() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let a = register(&mut darlington, "Darlington").await;
    let b = register(&mut darlington, "Darlington").await;
    for _ in 0..2 {
        let client = accept_client(&env, &admin, "Darlington").await;
        confirm(&mut darlington, &client, [&a, &b]).await.unwrap();
    }

    // Below the two clients the mentor supports: refused, nothing changed.
    let below = darlington
        .update_mentor_details(UpdateMentorDetailsRequest {
            mentor_id: a.mentor_id.clone(),
            capacity: 1,
            display_name: "Renamed".into(),
            update_mask: mask(&["capacity", "display_name"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(below.code(), Code::FailedPrecondition, "{below:?}");
    assert!(below.message().contains("2 client(s)"), "{below:?}");
    let before = reread(&mut admin, &a).await;
    assert_eq!(
        (before.capacity, before.display_name.as_str()),
        (2, a.display_name.as_str())
    );

    // Bad requests name their fields and change nothing.
    for (request, fields) in [
        (
            UpdateMentorDetailsRequest {
                mentor_id: a.mentor_id.clone(),
                capacity: 3,
                ..Default::default()
            },
            vec!["update_mask"],
        ),
        (
            UpdateMentorDetailsRequest {
                mentor_id: a.mentor_id.clone(),
                update_mask: mask(&["status"]),
                ..Default::default()
            },
            vec!["update_mask"],
        ),
        (
            UpdateMentorDetailsRequest {
                mentor_id: a.mentor_id.clone(),
                capacity: 6,
                areas: vec!["Nowhere".into()],
                gender: 0,
                update_mask: mask(&["capacity", "areas", "gender"]),
                ..Default::default()
            },
            vec!["gender", "areas[0]", "capacity"],
        ),
    ] {
        let refused = darlington.update_mentor_details(request).await.unwrap_err();
        assert_eq!(violated_fields(&refused), fields);
    }
    // Adding an area the caller does not work in is theirs to refuse.
    let outside = darlington
        .update_mentor_details(UpdateMentorDetailsRequest {
            mentor_id: a.mentor_id.clone(),
            areas: vec!["Darlington".into(), "East Durham".into()],
            update_mask: mask(&["areas"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied, "{outside:?}");
    let mut east = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let hidden = east
        .update_mentor_details(UpdateMentorDetailsRequest {
            mentor_id: a.mentor_id.clone(),
            capacity: 5,
            update_mask: mask(&["capacity"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    assert_eq!(reread(&mut admin, &a).await, before, "nothing changed");

    // What the mask names is set; the rest is kept.
    let updated = darlington
        .update_mentor_details(UpdateMentorDetailsRequest {
            mentor_id: a.mentor_id.clone(),
            display_name: " Mentor Renamed ".into(),
            capacity: 4,
            lived_experience: vec![],
            ex_service_user: true,
            age_band: AgeBand::Aged55To64 as i32,
            areas: vec!["north durham".into()],
            gender: Gender::Male as i32,
            update_mask: mask(&[
                "display_name",
                "capacity",
                "lived_experience",
                "ex_service_user",
                "age_band",
            ]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    assert_eq!(updated.display_name, "Mentor Renamed");
    assert_eq!(updated.capacity, 4);
    assert!(updated.lived_experience.is_empty());
    assert!(updated.ex_service_user);
    assert_eq!(updated.age_band, AgeBand::Aged55To64 as i32);
    assert_eq!(updated.areas, ["Darlington"], "not in the mask: kept");
    assert_eq!(updated.gender, a.gender, "not in the mask: kept");
    assert_eq!(updated.current_clients, 2);
    assert!(updated.available_for_proposal, "room again");

    // The admin adds an area and makes it the primary one; the Darlington
    // coordinator may take Darlington away (theirs), after which the
    // mentor is no longer theirs to find.
    let moved = admin
        .update_mentor_details(UpdateMentorDetailsRequest {
            mentor_id: a.mentor_id.clone(),
            areas: vec!["North Durham".into(), "Darlington".into()],
            update_mask: mask(&["areas"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    assert_eq!(moved.area, "North Durham");
    assert_eq!(moved.areas, ["North Durham", "Darlington"]);
    let removed = darlington
        .update_mentor_details(UpdateMentorDetailsRequest {
            mentor_id: a.mentor_id.clone(),
            areas: vec!["North Durham".into()],
            update_mask: mask(&["areas"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .mentor
        .unwrap();
    assert_eq!(removed.areas, ["North Durham"]);
    let gone = darlington
        .update_mentor_details(UpdateMentorDetailsRequest {
            mentor_id: a.mentor_id.clone(),
            ex_service_user: false,
            update_mask: mask(&["ex_service_user"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A mentor who was a victim of sexual offending is never proposed to, nor
/// allocated with, a client who committed a sexual offence; the proposal
/// shows who was left out and why. Another client may have them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safety_exclusion_keeps_a_mentor_from_a_client_and_says_why() {
    let env = TestEnv::new().await;
    let platform = env.start(&Target::ALL).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let register = |experience: LivedExperience| {
        let mut admin = admin.clone();
        async move {
            admin
                .register_mentor(RegisterMentorRequest {
                    display_name: format!("Mentor {}", uuid::Uuid::new_v4().simple()),
                    lived_experience: vec![experience as i32],
                    ..mentor("Good")
                })
                .await
                .unwrap()
                .into_inner()
                .mentor
                .unwrap()
        }
    };
    let survivor = register(LivedExperience::SexualOffenceVictim).await;
    let others = [
        register(LivedExperience::MentalHealth).await,
        register(LivedExperience::Carer).await,
    ];

    let client =
        accept_client_who_committed(&env, &admin, "Good", &[CrimeType::SexualAssault]).await;
    let proposed = admin
        .propose_matches(ProposeMatchesRequest {
            referral_id: client.clone(),
            limit: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        proposed.proposals.len(),
        1,
        "only the pair of the other two"
    );
    assert!(
        !proposed.proposals[0]
            .mentor_ids
            .contains(&survivor.mentor_id)
    );
    assert_eq!(proposed.exclusions.len(), 1);
    assert_eq!(proposed.exclusions[0].mentor_id, survivor.mentor_id);
    assert!(
        proposed.exclusions[0].rule.contains("sexual offence"),
        "{:?}",
        proposed.exclusions[0]
    );
    let refused = confirm(&mut admin, &client, [&survivor, &others[0]])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("never be paired"), "{refused:?}");

    // A client who committed theft may have the same mentor.
    let other_client = accept_client_who_committed(&env, &admin, "Good", &[CrimeType::Theft]).await;
    let proposed = propose(&mut admin, &other_client).await.unwrap();
    assert!(
        proposed
            .iter()
            .any(|pair| pair.contains(&survivor.mentor_id)),
        "{proposed:?}"
    );
    confirm(&mut admin, &other_client, [&survivor, &others[0]])
        .await
        .unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Proposals are stored with the weights that made them; a confirmation
/// is kept beside the proposal it takes up, and a pair nobody proposed
/// needs the coordinator's reason, which is kept too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_nobody_proposed_needs_a_reason_and_every_decision_is_kept_beside_its_proposal() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    for _ in 0..3 {
        register(&mut admin, "Roles").await;
    }
    let allocator = admin.clone();
    let allocate = |referral_id: &str, mentor_ids: Vec<String>, reason: &str| {
        let mut admin = allocator.clone();
        let request = ConfirmAllocationRequest {
            referral_id: referral_id.into(),
            mentor_ids,
            reason: reason.into(),
        };
        async move {
            admin
                .confirm_allocation(request)
                .await
                .map(|response| response.into_inner().allocation.unwrap())
        }
    };

    let client = accept_client(&env, &admin, "Roles").await;
    let proposed = admin
        .propose_matches(ProposeMatchesRequest {
            referral_id: client.clone(),
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .proposals;
    assert_eq!(proposed.len(), 2);
    for proposal in &proposed {
        assert!(
            uuid::Uuid::parse_str(&proposal.proposal_id).is_ok(),
            "{proposal:?}"
        );
        assert!(!proposal.weights_version.is_empty());
    }
    // The third pair was not among the two proposed.
    let mut everyone: Vec<String> = proposed
        .iter()
        .flat_map(|proposal| proposal.mentor_ids.clone())
        .collect();
    everyone.sort();
    everyone.dedup();
    assert_eq!(everyone.len(), 3);
    // Every pair of the three, each in ascending order as proposals are.
    let pairs =
        [(0, 1), (0, 2), (1, 2)].map(|(a, b)| vec![everyone[a].clone(), everyone[b].clone()]);
    let proposed_pairs: Vec<Vec<String>> = proposed
        .iter()
        .map(|proposal| {
            let mut pair = proposal.mentor_ids.clone();
            pair.sort();
            pair
        })
        .collect();
    let other = pairs
        .iter()
        .find(|pair| !proposed_pairs.contains(pair))
        .unwrap()
        .clone();
    let refused = allocate(&client, other.clone(), "").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("not proposed"), "{refused:?}");

    // The proposed pair needs no reason and takes up its proposal.
    let allocation = allocate(&client, proposed[1].mentor_ids.clone(), "")
        .await
        .unwrap();
    assert_eq!(allocation.proposal_id, proposed[1].proposal_id);
    assert_eq!(allocation.reason, "");

    // Another client, a pair nobody proposed, with a reason.
    let second = accept_client(&env, &admin, "Roles").await;
    let allocation = allocate(&second, other, "the client knows Sam from the group")
        .await
        .unwrap();
    assert_eq!(allocation.proposal_id, "");
    assert_eq!(allocation.reason, "the client knows Sam from the group");

    let database = env.database().await;
    // Every proposal made is stored (`accept_client` also asked once).
    let stored: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT proposal_id, weights_version FROM mentor_matching.proposal \
         WHERE referral_id = $1::uuid",
    )
    .bind(&client)
    .fetch_all(&database)
    .await
    .unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");
    for proposal in &proposed {
        let id = uuid::Uuid::parse_str(&proposal.proposal_id).unwrap();
        assert!(
            stored.contains(&(id, proposal.weights_version.clone())),
            "{stored:?}"
        );
    }
    let kept: Vec<(Option<uuid::Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT proposal_id, reason FROM mentor_matching.allocation ORDER BY confirmed_at",
    )
    .fetch_all(&database)
    .await
    .unwrap();
    assert_eq!(
        kept,
        [
            (
                Some(uuid::Uuid::parse_str(&proposed[1].proposal_id).unwrap()),
                None
            ),
            (None, Some("the client knows Sam from the group".to_owned())),
        ]
    );
    database.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A wait asked for a client's needs counts only the mentors who may take
/// them: a client who committed a sexual offence is never given a mentor
/// who was a victim of one, so that mentor's places neither count as free
/// nor free pairs for the client, and the quote says how much of the
/// area's capacity is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_clients_needs_counts_only_the_mentors_who_may_take_them() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    register(&mut admin, "Northshire").await;
    admin
        .register_mentor(RegisterMentorRequest {
            lived_experience: vec![LivedExperience::SexualOffenceVictim as i32],
            ..mentor("Northshire")
        })
        .await
        .unwrap();
    let wait = |perpetrator_of: Vec<i32>| {
        let mut matching = admin.clone();
        async move {
            matching
                .estimate_wait(EstimateWaitRequest {
                    area: "Northshire".into(),
                    perpetrator_of,
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let anyone = wait(vec![CrimeType::Theft as i32]).await.unwrap();
    assert_eq!(anyone.free_mentor_places, 4);
    assert!((anyone.eligible_share - 1.0).abs() < 1e-9);
    let offender = wait(vec![CrimeType::Rape as i32]).await.unwrap();
    assert_eq!(offender.free_mentor_places, 2);
    assert!((offender.eligible_share - 0.5).abs() < 1e-9);
    assert!(
        (offender.pairs_freed_per_week - anyone.pairs_freed_per_week / 2.0).abs() < 1e-9,
        "{offender:?} vs {anyone:?}"
    );
    let refused = wait(vec![CrimeType::Rape as i32, 0]).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["perpetrator_of[1]"]);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A referral is acknowledged with its area's current wait: mentor
/// matching publishes every area's quote, referral intake keeps it, and the
/// RECEIVED notice carries the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_is_acknowledged_with_its_areas_current_wait() {
    let mut env = TestEnv::new().await;
    env.settings.set("mentor_matching.area_wait_secs", 1);
    let platform = env
        .start(&[
            Target::REFERRAL_INTAKE,
            Target::MENTOR_MATCHING,
            Target::NOTIFICATIONS,
        ])
        .await;
    let channel = connect(&platform).await;
    let pool = env.database().await;
    eventually(WAIT, "Darlington's wait reaches referral intake", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM referral_intake.area_wait WHERE area = 'darlington'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        }
    })
    .await;
    let (p50, p90): (i32, i32) = sqlx::query_as(
        "SELECT p50_days, p90_days FROM referral_intake.area_wait WHERE area = 'darlington'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut intake =
        cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient::new(
            env.referrer(&channel, "agency-waits"),
        );
    let referral =
        crate::harness::submit(&mut intake, crate::harness::referral_request("Darlington")).await;
    let submitted = chrono::Utc::now().date_naive();
    eventually(WAIT, "the RECEIVED notice carries the range", || {
        let pool = pool.clone();
        let referral_id = referral.referral_id.clone();
        async move {
            let row: Option<(Option<chrono::NaiveDate>, Option<chrono::NaiveDate>)> =
                sqlx::query_as(
                    "SELECT estimated_start, estimated_start_latest \
                     FROM notifications.notification \
                     WHERE referral_id = $1::uuid AND status = $2",
                )
                .bind(&referral_id)
                .bind(cpm_proto::v1::ReferralStatus::Received as i32)
                .fetch_optional(&pool)
                .await
                .unwrap();
            row.is_some_and(|(start, latest)| {
                let near = |day: Option<chrono::NaiveDate>, days: i32| {
                    day.is_some_and(|day| {
                        (day - (submitted + chrono::Days::new(days as u64)))
                            .num_days()
                            .abs()
                            <= 1
                    })
                };
                near(start, p50) && near(latest, p90)
            })
        }
    })
    .await;
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
