//! When a mentor's first allocation was confirmed: staff of the mentor's
//! areas (and admins) read it on the register, so the wait from training
//! to a first client can be reported; it stays the first whatever comes
//! after (a second client, the first pair ended as a poor fit). A mentor
//! reading their own record does not get it, a coordinator of other areas
//! does not reach the mentor, and a referrer may not list mentors.

use cpm::Target;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::{GetMentorRequest, ListMentorsRequest, Mentor, ReportPoorFitRequest};
use tonic::Code;

use crate::harness::{Authed, TestEnv, connect};

use super::{accept_client, admin, confirm, register};

const AREA: &str = "Darlington";

/// Each mentor's `first_allocated_at` as `matching` lists them, in `mentors` order.
async fn listed_firsts(
    matching: &mut MentorMatchingServiceClient<Authed>,
    mentors: &[&Mentor],
) -> Vec<Option<prost_types::Timestamp>> {
    let listed = matching
        .list_mentors(ListMentorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .mentors;
    mentors
        .iter()
        .map(|mentor| {
            listed
                .iter()
                .find(|m| m.mentor_id == mentor.mentor_id)
                .expect("listed")
                .first_allocated_at
        })
        .collect()
}

async fn get(
    matching: &mut MentorMatchingServiceClient<Authed>,
    mentor: &Mentor,
) -> Result<Mentor, tonic::Status> {
    Ok(matching
        .get_mentor(GetMentorRequest {
            mentor_id: mentor.mentor_id.clone(),
        })
        .await?
        .into_inner()
        .mentor
        .unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_see_when_a_mentors_first_client_was_allocated_and_nobody_else_does() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut coordinator = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &[AREA]));
    let mut elsewhere =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Hartlepool"]));
    let (a, b, c) = (
        register(&mut admin, AREA).await,
        register(&mut admin, AREA).await,
        register(&mut admin, AREA).await,
    );
    let mentors = [&a, &b, &c];
    assert_eq!(a.first_allocated_at, None, "registered, not yet allocated");
    assert_eq!(
        listed_firsts(&mut coordinator, &mentors).await,
        [None, None, None]
    );

    let first_client = accept_client(&env, &admin, AREA).await;
    let first = confirm(&mut coordinator, &first_client, [&a, &b])
        .await
        .unwrap();
    let second_client = accept_client(&env, &admin, AREA).await;
    let second = confirm(&mut coordinator, &second_client, [&a, &c])
        .await
        .unwrap();
    assert!(first.confirmed_at.unwrap().seconds <= second.confirmed_at.unwrap().seconds);
    // The first pair did not get on: that allocation ends, and was still
    // b's first client.
    coordinator
        .report_poor_fit(ReportPoorFitRequest {
            allocation_id: first.allocation_id.clone(),
            reason: "the pair and the client are not getting on".into(),
            mentors_incompatible: false,
        })
        .await
        .unwrap();

    let expected = [first.confirmed_at, first.confirmed_at, second.confirmed_at];
    assert_eq!(listed_firsts(&mut coordinator, &mentors).await, expected);
    assert_eq!(listed_firsts(&mut admin, &mentors).await, expected);
    for (mentor, when) in mentors.iter().zip(expected) {
        assert_eq!(
            get(&mut coordinator, mentor)
                .await
                .unwrap()
                .first_allocated_at,
            when
        );
    }

    // The mentor reads their own record without it.
    let mut own = MentorMatchingServiceClient::new(env.mentor(&channel, &a.mentor_id));
    let read = get(&mut own, &a).await.unwrap();
    assert_eq!(read.mentor_id, a.mentor_id);
    assert_eq!(read.current_clients, 1, "the record is theirs, allocated");
    assert_eq!(read.first_allocated_at, None);
    // Another mentor does not reach the record at all.
    let mut other = MentorMatchingServiceClient::new(env.mentor(&channel, &b.mentor_id));
    assert_eq!(
        get(&mut other, &a).await.unwrap_err().code(),
        Code::NotFound
    );
    // Nor does a coordinator of another area, listing or asking.
    let listed = elsewhere
        .list_mentors(ListMentorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .mentors;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(
        get(&mut elsewhere, &a).await.unwrap_err().code(),
        Code::NotFound
    );
    // A referrer may not list mentors.
    let refused = MentorMatchingServiceClient::new(env.referrer(&channel, "agency-first"))
        .list_mentors(ListMentorsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    platform.stop().await.unwrap();
    env.cleanup().await;
}
