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
    AssessmentDecided, ChangeMentorStatusRequest, ConfirmAllocationRequest, Decision,
    DischargeRequest, EstimateWaitRequest, Gender, GetCaseFileRequest, ListMentorsRequest,
    LivedExperience, Mentor, MentorStatus, ProposeMatchesRequest, RegisterMentorRequest,
    Vulnerability,
};
use cpm_runtime::auth::Role;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use prost::Message as _;
use tonic::Code;

use crate::harness::{Authed, TestEnv, connect, eventually, violated_fields};

const WAIT: Duration = Duration::from_secs(20);

fn mentor(area: &str) -> RegisterMentorRequest {
    RegisterMentorRequest {
        display_name: "Mentor Sam".into(),
        gender: Gender::Female as i32,
        area: area.into(),
        lived_experience: vec![LivedExperience::MentalHealth as i32],
        safeguarding_trained: true,
        capacity: 2,
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

fn admin(
    env: &TestEnv,
    channel: &tonic::transport::Channel,
) -> MentorMatchingServiceClient<Authed> {
    MentorMatchingServiceClient::new(
        cpm::client::authed(channel, &env.token("admin", Role::Admin, None, None)).unwrap(),
    )
}

async fn register(matching: &mut MentorMatchingServiceClient<Authed>, area: &str) -> Mentor {
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
async fn accept_client(
    env: &TestEnv,
    admin: &MentorMatchingServiceClient<Authed>,
    area: &str,
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

async fn propose(
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

async fn confirm(
    matching: &mut MentorMatchingServiceClient<Authed>,
    referral_id: &str,
    pair: [&Mentor; 2],
) -> Result<(), tonic::Status> {
    matching
        .confirm_allocation(ConfirmAllocationRequest {
            referral_id: referral_id.into(),
            mentor_ids: pair.map(|mentor| mentor.mentor_id.clone()).to_vec(),
        })
        .await
        .map(drop)
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
    assert_eq!(proposals.len(), 6, "every pair of the four mentors");
    assert_eq!(
        proposals[0], east_ids,
        "the pair of the client's area first"
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
                .estimate_wait(EstimateWaitRequest { area: area.into() })
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

    // A sabbatical keeps the mentor out of proposals, and ends.
    assert_eq!(
        change_status(&mut admin, first, MentorStatus::Sabbatical, "a break")
            .await
            .unwrap(),
        MentorStatus::Sabbatical
    );
    let client = accept_client(&env, &admin, "Good").await;
    for proposal in propose(&mut admin, &client).await.unwrap() {
        assert!(!proposal.contains(&first.mentor_id), "{proposal:?}");
    }
    assert_eq!(mentor_code(&env, &channel, first).await, Code::NotFound);
    assert_eq!(
        change_status(&mut admin, first, MentorStatus::Active, "back")
            .await
            .unwrap(),
        MentorStatus::Active
    );

    // A mentor with a client cannot leave until re-matched.
    confirm(&mut admin, &client, [first, second]).await.unwrap();
    let busy = change_status(&mut admin, first, MentorStatus::Left, "moving away")
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::FailedPrecondition);
    assert!(busy.message().contains("1 client"), "{busy:?}");

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
                MentorStatus::Active as i32,
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
