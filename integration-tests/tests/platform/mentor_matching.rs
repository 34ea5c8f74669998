//! mentor-matching's API: the register refuses bad input field by field
//! and stores nothing, only staff may change it, and the wait estimate
//! answers referrers and coordinators alike.

use cpm::Target;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::{
    EstimateWaitRequest, Gender, ListMentorsRequest, LivedExperience, RegisterMentorRequest,
};

use crate::harness::{TestEnv, connect, violated_fields};

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
