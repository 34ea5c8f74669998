//! contact-logging's API: a contact is refused field by field, a case file
//! nobody opened is NOT_FOUND, referrers cannot reach case files, and a
//! coordinator reaches only the case files of the areas they work in.

use cpm::Target;
use cpm_proto::v1::contact_logging_service_client::ContactLoggingServiceClient;
use std::time::Duration;

use cpm_proto::Event as _;
use cpm_proto::v1::{
    AllocationConfirmed, CaseDischarged, CaseState, ConcernCategory, ConcernRaised, ConcernReport,
    ConcernState, ConcernUrgency, ContactActivity, ContactChannel, DischargeOutcome,
    DischargeRequest, FeedbackDelivered, GetCaseFileRequest, ListConcernsRequest,
    ListContactsRequest, LogContactRequest, RelapseSign, ResolveConcernRequest,
};
use cpm_runtime::auth::Role;
use prost::Message as _;

use crate::bus::{Tap, publish_raw};
use crate::harness::{TestEnv, connect, eventually, violated_fields};

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
            concern_raised: true,
            channel: 0,
            attempted: false,
            concern: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&status),
        [
            "referral_id",
            "activity",
            "channel",
            "concern",
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
            channel: ContactChannel::InPerson as i32,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_files_contacts_page_newest_first_without_skipping_or_repeating_one_and_none_predates_it()
 {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut contacts = ContactLoggingServiceClient::new(env.coordinator(&channel));

    // A case file opens when an allocation is confirmed.
    let referral_id = uuid::Uuid::now_v7().to_string();
    open_case_file(&env, &contacts, &referral_id).await;

    // Nothing can have happened on a case before it opened.
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let before_opening = contacts
        .log_contact(LogContactRequest {
            referral_id: referral_id.clone(),
            activity: ContactActivity::Telephone as i32,
            channel: ContactChannel::InPerson as i32,
            minutes: 15,
            occurred_at: Some(prost_types::Timestamp {
                seconds: yesterday.timestamp(),
                nanos: 0,
            }),
            ..LogContactRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&before_opening), ["occurred_at"]);

    let mut logged = Vec::new();
    for minutes in [10, 20, 30, 40, 50] {
        let contact = contacts
            .log_contact(LogContactRequest {
                referral_id: referral_id.clone(),
                activity: ContactActivity::Telephone as i32,
                channel: ContactChannel::InPerson as i32,
                minutes,
                ..LogContactRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .contact
            .unwrap();
        logged.push(contact.contact_id);
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = contacts
            .list_contacts(ListContactsRequest {
                referral_id: referral_id.clone(),
                page_size: 2,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.contacts.into_iter().map(|contact| contact.contact_id));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    logged.reverse();
    assert_eq!(seen, logged, "newest first, each once");
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// The coordinator who confirms the allocations these tests publish.
const CONFIRMED_BY: &str = "coordinator-who-confirmed";

async fn open_case_file(
    env: &TestEnv,
    contacts: &ContactLoggingServiceClient<crate::harness::Authed>,
    referral_id: &str,
) {
    open_case_file_in(env, contacts, referral_id, "Sealed").await;
}

/// Opens a case file in `area` (as a confirmed allocation does) and waits
/// until `contacts` reads it; returns the allocated mentor's ID.
pub(crate) async fn open_case_file_in(
    env: &TestEnv,
    contacts: &ContactLoggingServiceClient<crate::harness::Authed>,
    referral_id: &str,
    area: &str,
) -> String {
    let mentor_id = uuid::Uuid::now_v7().to_string();
    let allocation = AllocationConfirmed {
        allocation_id: uuid::Uuid::now_v7().to_string(),
        referral_id: referral_id.into(),
        agency_id: "agency-sealed".into(),
        area: area.into(),
        mentor_ids: vec![mentor_id.clone()],
        confirmed_by: CONFIRMED_BY.into(),
        ..Default::default()
    };
    let envelope = cpm_runtime::bus::outbox::envelope("mentor-matching", &allocation);
    publish_raw(env, AllocationConfirmed::TYPE, &envelope.encode_to_vec()).await;
    eventually(Duration::from_secs(20), "the case file opens", || {
        let mut contacts = contacts.clone();
        let referral_id = referral_id.to_owned();
        async move {
            contacts
                .get_case_file(GetCaseFileRequest { referral_id })
                .await
                .is_ok()
        }
    })
    .await;
    mentor_id
}

pub(crate) async fn erase(env: &TestEnv, referral_id: &str) {
    let erased = cpm_proto::v1::ClientErased {
        referral_id: referral_id.into(),
        agency_id: "agency-sealed".into(),
        erased_at: None,
    };
    let envelope = cpm_runtime::bus::outbox::envelope("referral-intake", &erased);
    publish_raw(
        env,
        cpm_proto::v1::ClientErased::TYPE,
        &envelope.encode_to_vec(),
    )
    .await;
}

fn contact(referral_id: &str, summary: &str) -> LogContactRequest {
    LogContactRequest {
        referral_id: referral_id.into(),
        activity: ContactActivity::Telephone as i32,
        channel: ContactChannel::InPerson as i32,
        minutes: 20,
        summary: summary.into(),
        ..LogContactRequest::default()
    }
}

/// A contact's summary is stored sealed under the client's key, never in
/// plaintext; erasure shreds the key, and after it nothing new about the
/// client is accepted, whichever of erasure and allocation came first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_are_sealed_shredded_on_erasure_and_refused_after_it() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut contacts = ContactLoggingServiceClient::new(env.coordinator(&channel));
    let referral_id = uuid::Uuid::now_v7().to_string();
    open_case_file(&env, &contacts, &referral_id).await;
    let secret = "spoke about SECRET-SUMMARY-7731 and the court date";
    let logged = contacts
        .log_contact(contact(&referral_id, secret))
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    assert_eq!(logged.summary, secret);

    let pool = env.database().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM contact_logging.contact WHERE summary_sealed IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM contact_logging.contact WHERE summary LIKE '%SECRET-SUMMARY%' \
             OR position(convert_to('SECRET-SUMMARY', 'UTF8') in summary_sealed) > 0"
        )
        .await,
        0,
        "no readable copy of the summary in the table"
    );

    // Reading the summary back is recorded: who, in which role, for what.
    let read = contacts
        .list_contacts(ListContactsRequest {
            referral_id: referral_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(read[0].summary, secret);
    assert_eq!(
        count(
            "SELECT count(*) FROM contact_logging.personal_data_read \
             WHERE reader = 'coordinator' AND role = 'coordinator' AND purpose = 'ListContacts'"
        )
        .await,
        1
    );
    assert!(
        sqlx::query("DELETE FROM contact_logging.personal_data_read")
            .execute(&pool)
            .await
            .is_err(),
        "the read audit is append-only"
    );

    erase(&env, &referral_id).await;
    eventually(Duration::from_secs(20), "the client's key is shredded", || async {
        count("SELECT count(*) FROM contact_logging.client_key WHERE erased_at IS NOT NULL AND wrapped_data_key IS NULL").await == 1
    })
    .await;
    let listed = contacts
        .list_contacts(ListContactsRequest {
            referral_id: referral_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .contacts;
    assert_eq!(listed.len(), 1, "the contact still counts");
    assert_eq!(listed[0].summary, "");
    let refused = contacts
        .log_contact(contact(&referral_id, "anything"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // The erasure arrives before the allocation: still nothing new is kept.
    let erased_first = uuid::Uuid::now_v7().to_string();
    erase(&env, &erased_first).await;
    eventually(Duration::from_secs(20), "the tombstone is laid", || async {
        count("SELECT count(*) FROM contact_logging.client_key WHERE erased_at IS NOT NULL").await
            == 2
    })
    .await;
    open_case_file(&env, &contacts, &erased_first).await;
    let refused = contacts
        .log_contact(contact(&erased_first, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        count("SELECT count(*) FROM contact_logging.contact").await,
        1,
        "a refused contact changes nothing"
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Every RPC a coordinator may make on one case file, each answered by its
/// status code and message (`Ok` and "" when it succeeded).
async fn every_call(
    contacts: &mut ContactLoggingServiceClient<crate::harness::Authed>,
    referral_id: &str,
) -> Vec<(&'static str, tonic::Code, String)> {
    fn outcome<T>(
        rpc: &'static str,
        result: Result<T, tonic::Status>,
    ) -> (&'static str, tonic::Code, String) {
        match result {
            Ok(_) => (rpc, tonic::Code::Ok, String::new()),
            Err(status) => (rpc, status.code(), status.message().to_owned()),
        }
    }
    let referral_id = referral_id.to_owned();
    vec![
        outcome(
            "GetCaseFile",
            contacts
                .get_case_file(GetCaseFileRequest {
                    referral_id: referral_id.clone(),
                })
                .await,
        ),
        outcome(
            "LogContact",
            contacts
                .log_contact(contact(&referral_id, "met at the library"))
                .await,
        ),
        outcome(
            "LogContact without a summary",
            contacts.log_contact(contact(&referral_id, "")).await,
        ),
        outcome(
            "ListContacts",
            contacts
                .list_contacts(ListContactsRequest {
                    referral_id: referral_id.clone(),
                    ..Default::default()
                })
                .await,
        ),
        outcome(
            "Discharge",
            contacts
                .discharge(DischargeRequest {
                    referral_id,
                    reason: "goals met".into(),
                    outcome: DischargeOutcome::GoalsAchieved as i32,
                    ..Default::default()
                })
                .await,
        ),
    ]
}

/// A coordinator reaches the case files of the areas their token names and
/// no other: a case in East Durham answers a Darlington coordinator on every
/// RPC exactly as a case nobody opened does, and nothing is written; a
/// coordinator of East Durham and an admin act on it, and its mentor still
/// reaches it whatever its area.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_in_another_area_is_not_found_for_a_coordinator_and_nothing_changes() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut admin = ContactLoggingServiceClient::new(
        cpm::client::authed(&channel, &env.token("admin", Role::Admin, None, None)).unwrap(),
    );
    let mut darlington =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let mut east_durham =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));

    let theirs = uuid::Uuid::now_v7().to_string();
    let mentor_id = open_case_file_in(&env, &admin, &theirs, "East Durham").await;

    let nobody = uuid::Uuid::now_v7().to_string();
    let missing = every_call(&mut darlington, &nobody).await;
    assert!(
        missing
            .iter()
            .all(|(_, code, _)| *code == tonic::Code::NotFound),
        "{missing:?}"
    );
    assert_eq!(
        every_call(&mut darlington, &theirs).await,
        missing,
        "a case in another area looks exactly like a missing one"
    );

    let pool = env.database().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        let referral_id = uuid::Uuid::parse_str(&theirs).unwrap();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(referral_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count(
            "SELECT count(*) FROM contact_logging.contact JOIN contact_logging.case_file \
             USING (case_file_id) WHERE referral_id = $1"
        )
        .await,
        0,
        "no contact logged"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM contact_logging.case_file \
             WHERE referral_id = $1 AND discharged_at IS NULL AND discharged_by IS NULL"
        )
        .await,
        1,
        "not discharged"
    );
    assert_eq!(
        count("SELECT count(*) FROM contact_logging.client_key WHERE referral_id = $1").await,
        0,
        "no key made for the client"
    );
    assert_eq!(
        count("SELECT count(*) FROM contact_logging.personal_data_read WHERE referral_id = $1")
            .await,
        0,
        "nothing read"
    );
    let untouched = admin
        .get_case_file(GetCaseFileRequest {
            referral_id: theirs.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case_file
        .unwrap();
    assert_eq!(
        (untouched.state, untouched.contacts, untouched.area.as_str()),
        (CaseState::Open as i32, 0, "East Durham")
    );

    // Its mentor reaches it whatever its area.
    let mut mentor = ContactLoggingServiceClient::new(env.mentor(&channel, &mentor_id));
    mentor
        .get_case_file(GetCaseFileRequest {
            referral_id: theirs.clone(),
        })
        .await
        .unwrap();

    // A coordinator of East Durham, and an admin, act on East Durham's cases.
    let for_admin = uuid::Uuid::now_v7().to_string();
    open_case_file_in(&env, &admin, &for_admin, "East Durham").await;
    for (who, contacts, referral_id) in [
        ("East Durham's coordinator", &mut east_durham, &theirs),
        ("an admin", &mut admin, &for_admin),
    ] {
        let outcomes = every_call(contacts, referral_id).await;
        assert!(
            outcomes.iter().all(|(_, code, _)| *code == tonic::Code::Ok),
            "{who}: {outcomes:?}"
        );
        let case_file = contacts
            .get_case_file(GetCaseFileRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .case_file
            .unwrap();
        assert_eq!(
            (case_file.state, case_file.contacts),
            (CaseState::Discharged as i32, 2),
            "{who}"
        );
    }
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// An erased client's case in another area answers NOT_FOUND too, not
/// "erased": the erasure does not show that the case exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_clients_case_in_another_area_is_not_found_rather_than_erased() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let east_durham =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let mut darlington =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let referral_id = uuid::Uuid::now_v7().to_string();
    open_case_file_in(&env, &east_durham, &referral_id, "East Durham").await;
    erase(&env, &referral_id).await;
    let pool = env.database().await;
    eventually(
        Duration::from_secs(20),
        "the client's key is shredded",
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM contact_logging.client_key WHERE erased_at IS NOT NULL",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    == 1
            }
        },
    )
    .await;

    let missing = every_call(&mut darlington, &uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(every_call(&mut darlington, &referral_id).await, missing);

    let mut east_durham = east_durham;
    for summary in ["anything", ""] {
        let refused = east_durham
            .log_contact(contact(&referral_id, summary))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "East Durham's coordinator hears that the client was erased"
        );
    }
    let refused = east_durham
        .discharge(DischargeRequest {
            referral_id: referral_id.clone(),
            reason: "moved away".into(),
            outcome: DischargeOutcome::GoalsAchieved as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

fn mentor_client(
    env: &TestEnv,
    channel: &tonic::transport::Channel,
    mentor_id: &str,
) -> ContactLoggingServiceClient<crate::harness::Authed> {
    ContactLoggingServiceClient::new(env.mentor(channel, mentor_id))
}

/// A concern raised at a contact lands in the area's coordinator queue, is
/// announced without text, and is resolved once, with a note sealed like
/// every note; coordinators of other areas neither see nor resolve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concern_is_queued_for_the_areas_coordinators_announced_and_resolved_with_a_sealed_note()
{
    let env = TestEnv::new().await;
    let platform = env
        .start(&[Target::CONTACT_LOGGING, Target::NOTIFICATIONS])
        .await;
    let tap = Tap::on(&env, &[ConcernRaised::TYPE]).await;
    let channel = connect(&platform).await;
    let mut darlington =
        ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let mut east = ContactLoggingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let referral_id = uuid::Uuid::now_v7().to_string();
    let mentor_id = open_case_file_in(&env, &darlington, &referral_id, "Darlington").await;
    let mut mentor = mentor_client(&env, &channel, &mentor_id);

    let urgent = mentor
        .log_contact(LogContactRequest {
            channel: ContactChannel::Phone as i32,
            concern_raised: true,
            concern: Some(ConcernReport {
                category: ConcernCategory::PoliceOrAgencyInteraction as i32,
                urgency: ConcernUrgency::Urgent as i32,
            }),
            ..contact(&referral_id, "arrested last night, SECRET-CONCERN-5512")
        })
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    assert!(!urgent.concern_id.is_empty());
    assert_eq!(urgent.logged_by_role, "MENTOR");
    assert_eq!(urgent.channel, ContactChannel::Phone as i32);

    let raised: ConcernRaised = tap.next(Duration::from_secs(20)).await;
    assert_eq!(raised.concern_id, urgent.concern_id);
    assert_eq!(raised.area, "Darlington");
    assert_eq!(raised.urgency, ConcernUrgency::Urgent as i32);

    let case_file = darlington
        .get_case_file(GetCaseFileRequest {
            referral_id: referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .case_file
        .unwrap();
    assert_eq!(case_file.open_concerns, 1);
    assert_eq!(case_file.coordinator, CONFIRMED_BY);

    let queue = |state: ConcernState| ListConcernsRequest {
        state: state as i32,
        ..Default::default()
    };
    let open = darlington
        .list_concerns(ListConcernsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .concerns;
    assert_eq!(open.len(), 1);
    assert_eq!(
        open[0].category,
        ConcernCategory::PoliceOrAgencyInteraction as i32
    );
    assert_eq!(open[0].raised_by, urgent.logged_by);
    let others = east
        .list_concerns(queue(ConcernState::All))
        .await
        .unwrap()
        .into_inner()
        .concerns;
    assert!(others.is_empty(), "another area's queue is empty");

    let resolve = |note: &str| ResolveConcernRequest {
        concern_id: urgent.concern_id.clone(),
        note: note.into(),
    };
    let refused = east.resolve_concern(resolve("not mine")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let refused = mentor.resolve_concern(resolve("mine?")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let refused = darlington.resolve_concern(resolve(" ")).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["note"]);

    let note = "called the officer in charge: SECRET-RESOLUTION-9044";
    let resolved = darlington
        .resolve_concern(resolve(note))
        .await
        .unwrap()
        .into_inner()
        .concern
        .unwrap();
    assert_eq!(resolved.resolution_note, note);
    assert!(resolved.resolved_at.is_some());
    let again = darlington.resolve_concern(resolve(note)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    let open = darlington
        .list_concerns(ListConcernsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .concerns;
    assert!(open.is_empty(), "resolved concerns leave the open queue");
    let done = darlington
        .list_concerns(queue(ConcernState::Resolved))
        .await
        .unwrap()
        .into_inner()
        .concerns;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].resolution_note, note);

    let database = env.database().await;
    let plaintext: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM contact_logging.concern \
         WHERE position('SECRET-RESOLUTION' in encode(resolution_sealed, 'escape')) > 0",
    )
    .fetch_one(&database)
    .await
    .unwrap();
    assert_eq!(plaintext, 0, "the note is sealed");

    // Notifications keeps the urgent concern for the area's coordinators,
    // and not a routine one.
    let routine = mentor
        .log_contact(LogContactRequest {
            concern: Some(ConcernReport {
                category: ConcernCategory::Health as i32,
                urgency: ConcernUrgency::Routine as i32,
            }),
            ..contact(&referral_id, "")
        })
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    let kept = |concern_id: String| {
        let database = database.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM notifications.concern_alert \
                 WHERE concern_id = $1::uuid AND area = 'Darlington'",
            )
            .bind(concern_id)
            .fetch_one(&database)
            .await
            .unwrap()
        }
    };
    eventually(
        Duration::from_secs(20),
        "the urgent concern is kept",
        || {
            let kept = &kept;
            let concern_id = urgent.concern_id.clone();
            async move { kept(concern_id).await == 1 }
        },
    )
    .await;
    let routine_raised: ConcernRaised = tap.next(Duration::from_secs(20)).await;
    assert_eq!(routine_raised.concern_id, routine.concern_id);
    eventually(
        Duration::from_secs(20),
        "both concerns are consumed",
        || {
            let database = database.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM notifications.inbox WHERE event_type = 'concern.raised'",
                )
                .fetch_one(&database)
                .await
                .unwrap()
                    == 2
            }
        },
    )
    .await;
    assert_eq!(
        kept(routine.concern_id.clone()).await,
        0,
        "routine: queue only"
    );

    // Darlington's coordinators are told of the urgent one; East Durham's
    // are not.
    let staff_alerts = |areas: &[&str]| {
        cpm_proto::v1::notifications_service_client::NotificationsServiceClient::new(
            env.coordinator_in(&channel, areas),
        )
    };
    let told = staff_alerts(&["Darlington"])
        .list_staff_alerts(cpm_proto::v1::ListStaffAlertsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].alert_id, urgent.concern_id);
    assert_eq!(
        told[0].kind,
        cpm_proto::v1::StaffAlertKind::UrgentConcern as i32
    );
    assert_eq!(told[0].referral_id, referral_id);
    assert_eq!(
        told[0].concern_category,
        ConcernCategory::PoliceOrAgencyInteraction as i32
    );
    let not_told = staff_alerts(&["East Durham"])
        .list_staff_alerts(cpm_proto::v1::ListStaffAlertsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(not_told.is_empty(), "{not_told:?}");

    tap.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Discharge records the outcome and sends the referrer the proforma
/// feedback (dates, contacts made, outcome, relapse signs, how to
/// re-refer; no note), the mentors lose the case at once, and the date the
/// feedback reached the referrer is what the case file shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discharge_sends_the_proforma_the_mentors_lose_the_case_and_delivery_is_dated() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let tap = Tap::on(&env, &[CaseDischarged::TYPE]).await;
    let channel = connect(&platform).await;
    let mut coordinator = ContactLoggingServiceClient::new(env.coordinator(&channel));
    let referral_id = uuid::Uuid::now_v7().to_string();
    let mentor_id = open_case_file_in(&env, &coordinator, &referral_id, "Sealed").await;
    let mut mentor = mentor_client(&env, &channel, &mentor_id);
    for attempted in [false, false, true] {
        mentor
            .log_contact(LogContactRequest {
                attempted,
                ..contact(&referral_id, "")
            })
            .await
            .unwrap();
    }
    // Two goals set, one achieved.
    let target_date = (chrono::Utc::now().date_naive() + chrono::Days::new(60)).to_string();
    let mut goal_ids = Vec::new();
    for goal in ["walk to the shops", "call the GP"] {
        let set = mentor
            .set_goal(cpm_proto::v1::SetGoalRequest {
                referral_id: referral_id.clone(),
                goal: goal.into(),
                way_forward: "one step a week".into(),
                target_date: target_date.clone(),
                commitment: 7,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .goal
            .unwrap();
        goal_ids.push(set.goal_id);
    }
    mentor
        .record_goal_progress(cpm_proto::v1::RecordGoalProgressRequest {
            referral_id: referral_id.clone(),
            goal_id: goal_ids[0].clone(),
            note: "done it".into(),
            state: cpm_proto::v1::GoalState::Achieved as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = coordinator
        .discharge(DischargeRequest {
            referral_id: referral_id.clone(),
            reason: "moved on".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), ["outcome"]);

    let case_file = coordinator
        .discharge(DischargeRequest {
            referral_id: referral_id.clone(),
            reason: "SECRET-DISCHARGE-NOTE-3310".into(),
            outcome: DischargeOutcome::GoalsAchieved as i32,
            relapse_signs: vec![
                RelapseSign::EmergencyCallsRising as i32,
                RelapseSign::Isolation as i32,
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .case_file
        .unwrap();
    let feedback = case_file.feedback.unwrap();
    assert_eq!(feedback.contacts, 2, "attempts are not contacts made");
    assert_eq!((feedback.goals_set, feedback.goals_achieved), (2, 1));
    assert_eq!(feedback.outcome, DischargeOutcome::GoalsAchieved as i32);
    assert_eq!(feedback.relapse_signs.len(), 2);
    assert!(!feedback.how_to_re_refer.is_empty());
    assert_eq!(feedback.referral_id, referral_id);
    assert!(!feedback.started_on.is_empty() && !feedback.discharged_on.is_empty());
    assert_eq!(case_file.feedback_delivered_at, None);

    let discharged: CaseDischarged = tap.next(Duration::from_secs(20)).await;
    assert_eq!(discharged.feedback.as_ref(), Some(&feedback));
    assert!(
        !format!("{discharged:?}").contains("SECRET-DISCHARGE"),
        "the note never leaves the service"
    );

    for status in [
        mentor
            .get_case_file(GetCaseFileRequest {
                referral_id: referral_id.clone(),
            })
            .await
            .unwrap_err(),
        mentor
            .log_contact(contact(&referral_id, "after the end"))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }

    let delivered_at = chrono::Utc::now() - chrono::Duration::minutes(3);
    let delivered = FeedbackDelivered {
        referral_id: referral_id.clone(),
        agency_id: "agency-sealed".into(),
        delivered_at: Some(cpm_runtime::grpc::values::timestamp(delivered_at)),
        channel: "WEBHOOK".into(),
    };
    let envelope = cpm_runtime::bus::outbox::envelope("notifications", &delivered);
    publish_raw(&env, FeedbackDelivered::TYPE, &envelope.encode_to_vec()).await;
    eventually(Duration::from_secs(20), "the delivery is dated", || {
        let mut coordinator = coordinator.clone();
        let referral_id = referral_id.clone();
        async move {
            coordinator
                .get_case_file(GetCaseFileRequest { referral_id })
                .await
                .unwrap()
                .into_inner()
                .case_file
                .unwrap()
                .feedback_delivered_at
                .is_some_and(|at| at.seconds == delivered_at.timestamp())
        }
    })
    .await;

    tap.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Every note this service keeps about a client — contact notes, a
/// concern's resolution, goals and their progress, the discharge note — is
/// sealed, and after the client's erasure a dump of the whole database
/// holds none of it, in any form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_erasure_a_database_dump_holds_none_of_the_clients_notes() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::CONTACT_LOGGING]).await;
    let channel = connect(&platform).await;
    let mut coordinator = ContactLoggingServiceClient::new(env.coordinator(&channel));
    let referral_id = uuid::Uuid::now_v7().to_string();
    let mentor_id = open_case_file_in(&env, &coordinator, &referral_id, "Sealed").await;
    let mut mentor = mentor_client(&env, &channel, &mentor_id);
    let urgent = mentor
        .log_contact(LogContactRequest {
            concern: Some(ConcernReport {
                category: ConcernCategory::Safeguarding as i32,
                urgency: ConcernUrgency::Urgent as i32,
            }),
            ..contact(&referral_id, "DUMPSECRET-contact note")
        })
        .await
        .unwrap()
        .into_inner()
        .contact
        .unwrap();
    coordinator
        .resolve_concern(ResolveConcernRequest {
            concern_id: urgent.concern_id,
            note: "DUMPSECRET-resolution".into(),
        })
        .await
        .unwrap();
    let goal = mentor
        .set_goal(cpm_proto::v1::SetGoalRequest {
            referral_id: referral_id.clone(),
            goal: "DUMPSECRET-goal".into(),
            reality: "DUMPSECRET-reality".into(),
            options: "DUMPSECRET-options".into(),
            way_forward: "DUMPSECRET-way".into(),
            target_date: (chrono::Utc::now().date_naive() + chrono::Days::new(30)).to_string(),
            commitment: 8,
        })
        .await
        .unwrap()
        .into_inner()
        .goal
        .unwrap();
    mentor
        .record_goal_progress(cpm_proto::v1::RecordGoalProgressRequest {
            referral_id: referral_id.clone(),
            goal_id: goal.goal_id,
            note: "DUMPSECRET-progress".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    coordinator
        .discharge(DischargeRequest {
            referral_id: referral_id.clone(),
            reason: "DUMPSECRET-discharge".into(),
            outcome: DischargeOutcome::GoalsAchieved as i32,
            ..Default::default()
        })
        .await
        .unwrap();

    let dump = || {
        let output = std::process::Command::new("pg_dump")
            .args(["--data-only", "--schema=contact_logging", &env.database_url])
            .output()
            .expect("pg_dump runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(
        !dump().contains("DUMPSECRET"),
        "sealed before erasure: no plaintext at rest"
    );
    let pool = env.database().await;
    let sealed_before: Vec<Vec<u8>> = sqlx::query_scalar::<_, Option<Vec<u8>>>(
        "SELECT summary_sealed FROM contact_logging.contact",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(sealed_before.len(), 1);

    erase(&env, &referral_id).await;
    eventually(
        Duration::from_secs(20),
        "the client's notes are dropped",
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM contact_logging.contact WHERE summary_sealed IS NOT NULL",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    == 0
            }
        },
    )
    .await;
    let after = dump();
    assert!(!after.contains("DUMPSECRET"));
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(
        !after.contains(&hex(&sealed_before[0])),
        "not even the sealed note is left"
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}
