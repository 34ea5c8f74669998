//! The retention of mentors' data: erasure on request leaves a tombstone
//! and nothing personal (and is refused while the mentor supports clients),
//! the sweep erases every mentor whose period is over once, however many
//! replicas run it, a mentor reads and exports only their own record, and
//! every read of a mentor's data is in their export.

use cpm::Target;
use cpm_proto::v1::mentor_matching_service_client::MentorMatchingServiceClient;
use cpm_proto::v1::{
    EraseMentorRequest, ExportMentorDataRequest, GetMentorRequest, ListMentorsRequest, Mentor,
    MentorStatus,
};
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::bus::relay::RelayWaker;
use mentor_matching::retention::{self, Periods};
use tonic::Code;
use uuid::Uuid;

use super::{accept_client, admin, change_status, confirm, propose, register};
use crate::harness::{Authed, TestEnv, connect, violated_fields};

async fn erase(
    matching: &mut MentorMatchingServiceClient<Authed>,
    mentor: &Mentor,
) -> Result<cpm_proto::v1::EraseMentorResponse, tonic::Status> {
    matching
        .erase_mentor(EraseMentorRequest {
            mentor_id: mentor.mentor_id.clone(),
            reason: "the mentor's request of 2026-11-27".into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get(
    matching: &mut MentorMatchingServiceClient<Authed>,
    mentor_id: &str,
) -> Result<Mentor, tonic::Status> {
    Ok(matching
        .get_mentor(GetMentorRequest {
            mentor_id: mentor_id.into(),
        })
        .await?
        .into_inner()
        .mentor
        .unwrap())
}

async fn export(
    matching: &mut MentorMatchingServiceClient<Authed>,
    mentor_id: &str,
) -> Result<serde_json::Value, tonic::Status> {
    let document = matching
        .export_mentor_data(ExportMentorDataRequest {
            mentor_id: mentor_id.into(),
        })
        .await?
        .into_inner()
        .document_json;
    Ok(serde_json::from_str(&document).expect("the export is JSON"))
}

async fn listed_ids(matching: &mut MentorMatchingServiceClient<Authed>) -> Vec<String> {
    matching
        .list_mentors(ListMentorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .mentors
        .into_iter()
        .map(|mentor| mentor.mentor_id)
        .collect()
}

/// What the register holds of a mentor, as text a test can compare.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Stored {
    display_name: String,
    gender: i32,
    lived_experience: Vec<i32>,
    areas: Vec<String>,
    training_cohort: String,
    training_format: i32,
    training_completed_on: Option<chrono::NaiveDate>,
    safeguarding_trained_on: Option<chrono::NaiveDate>,
    agreement_signed_on: Option<chrono::NaiveDate>,
    vetted_on: Option<chrono::NaiveDate>,
    age_band: i32,
    availability: Vec<i32>,
    ex_service_user: bool,
    status: i32,
    erased: bool,
}

async fn stored(pool: &sqlx::PgPool, mentor_id: &str) -> Stored {
    sqlx::query_as(
        "SELECT display_name, gender, lived_experience, areas, training_cohort, \
         training_format, training_completed_on, safeguarding_trained_on, agreement_signed_on, \
         vetted_on, age_band, availability, ex_service_user, status, erased_at IS NOT NULL AS erased \
         FROM mentor_matching.mentor WHERE mentor_id = $1",
    )
    .bind(Uuid::parse_str(mentor_id).unwrap())
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A tombstone: nothing personal, only the primary area, a final status.
fn tombstone(area: &str, status: MentorStatus) -> Stored {
    Stored {
        display_name: String::new(),
        gender: 0,
        lived_experience: vec![],
        areas: vec![area.to_owned()],
        training_cohort: String::new(),
        training_format: 0,
        training_completed_on: None,
        safeguarding_trained_on: None,
        agreement_signed_on: None,
        vetted_on: None,
        age_band: 0,
        availability: vec![],
        ex_service_user: false,
        status: status as i32,
        erased: true,
    }
}

/// The reasons of every stored proposal naming `mentor_id`.
async fn proposal_reasons(pool: &sqlx::PgPool, mentor_id: &str) -> Vec<Vec<String>> {
    sqlx::query_scalar(
        "SELECT reasons FROM mentor_matching.proposal WHERE $1 = ANY(mentor_ids) \
         ORDER BY proposal_id",
    )
    .bind(Uuid::parse_str(mentor_id).unwrap())
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn status_change_reasons(pool: &sqlx::PgPool, mentor_id: &str) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT to_status, reason FROM mentor_matching.mentor_status_change \
         WHERE mentor_id = $1 ORDER BY change_id",
    )
    .bind(Uuid::parse_str(mentor_id).unwrap())
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn standing(pool: &sqlx::PgPool, mentor_id: &str) -> Option<bool> {
    sqlx::query_scalar(
        "SELECT active FROM mentor_matching.principal WHERE kind = 'mentor' AND id = $1",
    )
    .bind(mentor_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_mentor_leaves_a_tombstone_and_one_with_clients_is_not_erased() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let mut east = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let mut admin = admin(&env, &channel);
    let pool = env.database().await;

    let busy = [
        register(&mut darlington, "Darlington").await,
        register(&mut darlington, "Darlington").await,
    ];
    let erased = register(&mut darlington, "Darlington").await;
    let client = accept_client(&env, &admin, "Darlington").await;
    // Stored proposals name every pair of the three by name.
    assert_eq!(propose(&mut darlington, &client).await.unwrap().len(), 3);
    confirm(&mut darlington, &client, [&busy[0], &busy[1]])
        .await
        .unwrap();

    // A mentor supporting a client is not erased, and nothing changes.
    let before = stored(&pool, &busy[0].mentor_id).await;
    let refused = erase(&mut darlington, &busy[0]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("1 client"), "{refused:?}");
    assert_eq!(stored(&pool, &busy[0].mentor_id).await, before);
    assert!(
        proposal_reasons(&pool, &busy[0].mentor_id)
            .await
            .iter()
            .all(|reasons| !reasons.is_empty())
    );

    // Bad requests name their fields; another area's coordinator does not
    // find the mentor; a mentor may not erase.
    let bad = darlington
        .erase_mentor(EraseMentorRequest {
            mentor_id: "someone".into(),
            reason: "  ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["mentor_id", "reason"]);
    assert_eq!(
        erase(&mut east, &erased).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut as_mentor = MentorMatchingServiceClient::new(env.mentor(&channel, &busy[0].mentor_id));
    assert_eq!(
        erase(&mut as_mentor, &erased).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        stored(&pool, &erased.mentor_id).await.display_name,
        erased.display_name
    );

    let done = erase(&mut darlington, &erased).await.unwrap();
    assert_eq!(done.status, MentorStatus::Left as i32);
    assert!(done.erased_at.is_some());
    let again = erase(&mut admin, &erased).await.unwrap();
    assert_eq!(again, done, "erasing again answers as the first time");

    // Nothing personal is left, and nothing shows the mentor any more.
    assert_eq!(
        stored(&pool, &erased.mentor_id).await,
        tombstone("Darlington", MentorStatus::Left)
    );
    let reasons = proposal_reasons(&pool, &erased.mentor_id).await;
    assert!(reasons.len() >= 2, "{reasons:?}");
    assert!(reasons.iter().all(Vec::is_empty), "{reasons:?}");
    let kept = sqlx::query_scalar::<_, Vec<String>>(
        "SELECT reasons FROM mentor_matching.proposal WHERE NOT ($1 = ANY(mentor_ids))",
    )
    .bind(Uuid::parse_str(&erased.mentor_id).unwrap())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        kept.iter().all(|reasons| !reasons.is_empty()),
        "other pairs keep theirs"
    );
    assert_eq!(
        status_change_reasons(&pool, &erased.mentor_id).await,
        [(MentorStatus::Left as i32, retention::ERASED.to_owned())]
    );
    assert_eq!(standing(&pool, &erased.mentor_id).await, Some(false));
    for reader in [&mut darlington, &mut admin] {
        assert_eq!(
            get(reader, &erased.mentor_id).await.unwrap_err().code(),
            Code::NotFound
        );
        assert!(!listed_ids(reader).await.contains(&erased.mentor_id));
    }
    let second = accept_client(&env, &admin, "Darlington").await;
    register(&mut darlington, "Darlington").await;
    let pairs = propose(&mut darlington, &second).await.unwrap();
    assert!(!pairs.is_empty());
    assert!(
        pairs.iter().flatten().all(|id| *id != erased.mentor_id),
        "{pairs:?}"
    );
    let confirmed = darlington
        .confirm_allocation(cpm_proto::v1::ConfirmAllocationRequest {
            referral_id: second.clone(),
            mentor_ids: vec![busy[0].mentor_id.clone(), erased.mentor_id.clone()],
            reason: "asked for by name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(confirmed.code(), Code::NotFound, "{confirmed:?}");
    // The erased mentor's own token is refused: they left.
    let mut own = MentorMatchingServiceClient::new(env.mentor(&channel, &erased.mentor_id));
    assert_eq!(
        get(&mut own, &erased.mentor_id).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Their export is the tombstone.
    let document = export(&mut darlington, &erased.mentor_id).await.unwrap();
    assert_eq!(document["mentor"]["display_name"], "");
    assert_eq!(document["mentor"]["status"], "MENTOR_STATUS_LEFT");
    assert!(document["mentor"]["erased_at"].is_string(), "{document}");
    assert_eq!(document["training"]["cohort"], "");

    // A mentor who left with a reason, and one who declined: the reasons go,
    // the final status stays.
    let left = register(&mut darlington, "Darlington").await;
    let declined = register(&mut darlington, "Darlington").await;
    change_status(&mut darlington, &left, MentorStatus::Left, "moved to Leeds")
        .await
        .unwrap();
    change_status(
        &mut darlington,
        &declined,
        MentorStatus::Declined,
        "a new baby",
    )
    .await
    .unwrap();
    assert_eq!(
        erase(&mut darlington, &declined).await.unwrap().status,
        MentorStatus::Declined as i32
    );
    erase(&mut darlington, &left).await.unwrap();
    assert_eq!(
        stored(&pool, &declined.mentor_id).await,
        tombstone("Darlington", MentorStatus::Declined)
    );
    assert_eq!(
        status_change_reasons(&pool, &left.mentor_id).await,
        [(MentorStatus::Left as i32, String::new())]
    );
    assert_eq!(
        status_change_reasons(&pool, &declined.mentor_id).await,
        [(MentorStatus::Declined as i32, String::new())]
    );

    // Why a coordinator confirmed a pair is staff's text about its mentors:
    // it goes with either of them once their allocation is over.
    sqlx::query(
        "UPDATE mentor_matching.allocation SET reason = 'asked for SECRET-NAME by name', \
         active = false, ended_at = now() WHERE referral_id = $1::uuid",
    )
    .bind(&client)
    .execute(&pool)
    .await
    .unwrap();
    erase(&mut darlington, &busy[0]).await.unwrap();
    let reasons: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT reason FROM mentor_matching.allocation WHERE referral_id = $1::uuid",
    )
    .bind(&client)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(reasons, [Some(String::new())]);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mentor_reads_and_exports_only_their_own_record_and_every_read_is_in_it() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut darlington =
        MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let mut east = MentorMatchingServiceClient::new(env.coordinator_in(&channel, &["East Durham"]));
    let admin = admin(&env, &channel);
    let me = register(&mut darlington, "Darlington").await;
    let other = register(&mut darlington, "Darlington").await;
    let client = accept_client(&env, &admin, "Darlington").await;
    confirm(&mut darlington, &client, [&me, &other])
        .await
        .unwrap();

    // Staff read the mentors of their areas; the read is recorded.
    assert_eq!(
        get(&mut darlington, &me.mentor_id)
            .await
            .unwrap()
            .display_name,
        me.display_name
    );
    assert!(listed_ids(&mut darlington).await.contains(&me.mentor_id));
    for refused in [
        get(&mut east, &me.mentor_id).await.map(drop),
        export(&mut east, &me.mentor_id).await.map(drop),
    ] {
        assert_eq!(refused.unwrap_err().code(), Code::NotFound);
    }

    // A mentor reads and exports their own record, and no one else's.
    let mut own = MentorMatchingServiceClient::new(env.mentor(&channel, &me.mentor_id));
    let mine = get(&mut own, &me.mentor_id).await.unwrap();
    assert_eq!(mine.display_name, me.display_name);
    let hidden = get(&mut own, &other.mentor_id).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let unknown = get(&mut own, &Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(
        (hidden.code(), unknown.code()),
        (Code::NotFound, Code::NotFound)
    );
    assert_eq!(
        export(&mut own, &other.mentor_id).await.unwrap_err().code(),
        Code::NotFound
    );
    let bad = own
        .get_mentor(GetMentorRequest {
            mentor_id: "me".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["mentor_id"]);
    let bad = own
        .export_mentor_data(ExportMentorDataRequest::default())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["mentor_id"]);

    let document = export(&mut own, &me.mentor_id).await.unwrap();
    assert_eq!(document["held_by"], "mentor-matching");
    assert_eq!(document["mentor"]["mentor_id"], me.mentor_id);
    assert_eq!(document["mentor"]["display_name"], me.display_name);
    assert_eq!(document["mentor"]["status"], "MENTOR_STATUS_ACTIVE");
    assert_eq!(document["mentor"]["areas"][0], "Darlington");
    assert_eq!(
        document["mentor"]["lived_experience"][0],
        "LIVED_EXPERIENCE_MENTAL_HEALTH"
    );
    assert_eq!(document["training"]["cohort"], me.training_cohort);
    assert_eq!(
        document["training"]["agreement_signed_on"],
        me.agreement_signed_on
    );
    let allocations = document["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 1, "{document}");
    assert_eq!(allocations[0]["referral_id"], client);
    assert_eq!(allocations[0]["area"], "Darlington");
    assert!(allocations[0]["allocation_id"].is_string());
    let proposals = document["proposals"].as_array().unwrap();
    assert!(!proposals.is_empty(), "{document}");
    assert!(proposals.iter().all(|proposal| {
        proposal["score"].is_number()
            && proposal["reasons"].is_null()
            && proposal["referral_id"] == client
    }));
    assert_eq!(document["status_history"], serde_json::json!([]));
    let reads: Vec<(String, String, String)> = document["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|read| {
            (
                read["reader"].as_str().unwrap().to_owned(),
                read["role"].as_str().unwrap().to_owned(),
                read["purpose"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let read = |reader: &str, role: &str, purpose: &str| {
        (reader.to_owned(), role.to_owned(), purpose.to_owned())
    };
    for expected in [
        read("coordinator", "coordinator", "ProposeMatches"),
        read("coordinator", "coordinator", "GetMentor"),
        read("coordinator", "coordinator", "ListMentors"),
        read("mentor", "mentor", "GetMentor"),
        read("mentor", "mentor", "ExportMentorData"),
    ] {
        assert!(reads.contains(&expected), "{expected:?} in {reads:?}");
    }
    // One row per mentor per call: the Darlington coordinator read them
    // once by GetMentor and once by ListMentors; the East Durham
    // coordinator's refused GetMentor read nothing.
    let count = |purpose: &str| {
        reads
            .iter()
            .filter(|(reader, _, p)| reader == "coordinator" && p == purpose)
            .count()
    };
    assert_eq!((count("GetMentor"), count("ListMentors")), (1, 1));

    // A mentor who left: the history keeps the reason, until an erasure.
    let leaver = register(&mut darlington, "Darlington").await;
    change_status(
        &mut darlington,
        &leaver,
        MentorStatus::Left,
        "moved to Leeds",
    )
    .await
    .unwrap();
    let history =
        export(&mut darlington, &leaver.mentor_id).await.unwrap()["status_history"].clone();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["from"], "MENTOR_STATUS_TRAINED");
    assert_eq!(history[0]["to"], "MENTOR_STATUS_LEFT");
    assert_eq!(history[0]["reason"], "moved to Leeds");
    assert_eq!(history[0]["changed_by"], "coordinator");

    // The other mentor's export does not show this mentor's reads, and the
    // log cannot be rewritten.
    let theirs = export(&mut darlington, &other.mentor_id).await.unwrap();
    assert!(
        !theirs["reads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|read| read["reader"] == "mentor"),
        "{theirs}"
    );
    let pool = env.database().await;
    let rewritten = sqlx::query("DELETE FROM mentor_matching.mentor_data_read")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(rewritten.to_string().contains("append-only"), "{rewritten}");
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A mentor's status and how long ago they entered it, set in the database.
async fn backdate(pool: &sqlx::PgPool, mentor: &Mentor, status: MentorStatus, days: i32) {
    sqlx::query(
        "UPDATE mentor_matching.mentor SET status = $2, \
         status_since = now() - make_interval(days => $3) WHERE mentor_id = $1",
    )
    .bind(Uuid::parse_str(&mentor.mentor_id).unwrap())
    .bind(status as i32)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

/// A handle on the test database like a replica's: its own pool, in the
/// service's schema, with a relay nobody runs (the outbox keeps its events).
fn replica(env: &TestEnv) -> ServiceHandle {
    let pool = cpm_runtime::db::pool(&env.settings.platform.database, "mentor_matching").unwrap();
    ServiceHandle::new(pool, RelayWaker::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweeps_at_once_erase_each_mentor_past_their_period_once_and_no_one_else() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::MENTOR_MATCHING]).await;
    let channel = connect(&platform).await;
    let mut admin = admin(&env, &channel);
    let mut mentors = Vec::new();
    for _ in 0..14 {
        mentors.push(register(&mut admin, "Northshire").await);
    }
    // The platform's own sweep stays out of the way: only the two below run.
    platform.stop().await.unwrap();

    let pool = env.database().await;
    let plan = [
        // Due: left or declined over 183 days ago, on sabbatical over 366 days.
        (MentorStatus::Left, 200, true),
        (MentorStatus::Left, 184, true),
        (MentorStatus::Declined, 190, true),
        (MentorStatus::Sabbatical, 400, true),
        (MentorStatus::Left, 1000, true),
        (MentorStatus::Left, 300, true),
        (MentorStatus::Declined, 250, true),
        (MentorStatus::Left, 500, true),
        (MentorStatus::Sabbatical, 367, true),
        // Not yet: within their periods, or neither left nor on sabbatical.
        (MentorStatus::Left, 100, false),
        (MentorStatus::Declined, 182, false),
        (MentorStatus::Sabbatical, 300, false),
        (MentorStatus::Active, 1000, false),
        (MentorStatus::Trained, 1000, false),
    ];
    let mut due = Vec::new();
    for (mentor, (status, days, is_due)) in mentors.iter().zip(plan) {
        backdate(&pool, mentor, status, days).await;
        if is_due {
            due.push(Uuid::parse_str(&mentor.mentor_id).unwrap());
        }
    }
    // A proposal naming a due mentor and one who stays, stored earlier.
    let referral_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO mentor_matching.waiting_client (referral_id, agency_id, area, \
         client_gender, accepted_at, estimated_start) VALUES ($1, 'agency', 'Northshire', 0, now(), now())",
    )
    .bind(referral_id)
    .execute(&pool)
    .await
    .unwrap();
    let mut pair = [
        Uuid::parse_str(&mentors[0].mentor_id).unwrap(),
        Uuid::parse_str(&mentors[9].mentor_id).unwrap(),
    ];
    pair.sort();
    sqlx::query(
        "INSERT INTO mentor_matching.proposal (proposal_id, referral_id, mentor_ids, score, \
         reasons, weights_version, proposed_by) \
         VALUES ($1, $2, $3, 1.5, ARRAY['Mentor A works in the client''s area (+1)'], 'v1', 'c')",
    )
    .bind(Uuid::now_v7())
    .bind(referral_id)
    .bind(&pair[..])
    .execute(&pool)
    .await
    .unwrap();

    let periods = Periods {
        retention_days: 183,
        sabbatical_days: 183,
    };
    let (first, second) = (replica(&env), replica(&env));
    let (one, two) = tokio::join!(
        retention::sweep(&first, periods),
        retention::sweep(&second, periods)
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    let mut erased: Vec<Uuid> = one.erased.iter().chain(&two.erased).copied().collect();
    erased.sort();
    let unique = {
        let mut unique = erased.clone();
        unique.dedup();
        unique
    };
    assert_eq!(erased, unique, "each mentor erased once: {one:?} {two:?}");
    due.sort();
    assert_eq!(erased, due, "every due mentor, and only they");

    for (mentor, (status, _, is_due)) in mentors.iter().zip(plan) {
        let row = stored(&pool, &mentor.mentor_id).await;
        if is_due {
            let final_status = match status {
                MentorStatus::Declined => MentorStatus::Declined,
                _ => MentorStatus::Left,
            };
            assert_eq!(row, tombstone("Northshire", final_status), "{status:?}");
        } else {
            assert!(!row.erased, "{status:?}");
            assert_eq!(row.display_name, mentor.display_name);
            assert_eq!(row.status, status as i32);
        }
    }
    // A sabbatical over its limit ends in LEFT, recorded, and the mentor's
    // standing goes with it.
    let sabbatical = &mentors[3].mentor_id;
    assert_eq!(
        status_change_reasons(&pool, sabbatical).await,
        [(MentorStatus::Left as i32, retention::ERASED.to_owned())]
    );
    assert_eq!(standing(&pool, sabbatical).await, Some(false));
    let erasure: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT erased_by, erasure_reason FROM mentor_matching.mentor WHERE mentor_id = $1",
    )
    .bind(Uuid::parse_str(sabbatical).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(erasure.0.as_deref(), Some(retention::SWEEP));
    assert!(
        erasure.1.unwrap().contains("sabbatical"),
        "the reason says why"
    );
    assert_eq!(
        proposal_reasons(&pool, &mentors[0].mentor_id).await,
        [Vec::<String>::new()]
    );

    // A proposal stored with an erased mentor's name while they were being
    // erased (a ProposeMatches that read them just before) is blanked by
    // the next sweep.
    let mut late = [
        Uuid::parse_str(&mentors[1].mentor_id).unwrap(),
        Uuid::parse_str(&mentors[9].mentor_id).unwrap(),
    ];
    late.sort();
    sqlx::query(
        "INSERT INTO mentor_matching.proposal (proposal_id, referral_id, mentor_ids, score, \
         reasons, weights_version, proposed_by) \
         VALUES ($1, $2, $3, 1.5, ARRAY['Mentor B works in the client''s area (+1)'], 'v1', 'c')",
    )
    .bind(Uuid::now_v7())
    .bind(referral_id)
    .bind(&late[..])
    .execute(&pool)
    .await
    .unwrap();
    let again = retention::sweep(&second, periods).await.unwrap();
    assert_eq!(
        again,
        retention::Swept {
            erased: vec![],
            late_proposals: 1
        }
    );
    assert_eq!(
        proposal_reasons(&pool, &mentors[1].mentor_id).await,
        [Vec::<String>::new()]
    );

    // Nothing is left to do.
    let again = retention::sweep(&first, periods).await.unwrap();
    assert_eq!(again, retention::Swept::default());
    pool.close().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_cannot_reach_the_database_tries_again_until_shutdown() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(100))
        .connect_lazy("postgres://postgres@127.0.0.1:1/nowhere")
        .unwrap();
    let handle = ServiceHandle::new(pool, RelayWaker::default());
    let periods = Periods {
        retention_days: 183,
        sabbatical_days: 183,
    };
    assert!(retention::sweep(&handle, periods).await.is_err());
    let shutdown = cpm_runtime::Shutdown::new();
    let sweeper = tokio::spawn(retention::run_sweeper(
        handle,
        periods,
        std::time::Duration::from_millis(50),
        shutdown.clone(),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        !sweeper.is_finished(),
        "a failed sweep does not end the task"
    );
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), sweeper)
        .await
        .expect("the sweeper stops at shutdown")
        .unwrap();
}
