//! Referral intake over gRPC: validation, idempotency, agency isolation,
//! registered areas and coordinators' area scoping, encryption at rest,
//! audit, re-referral and withdrawal.

use std::time::Duration;

use cpm::Target;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use cpm_proto::v1::{
    GetReferralRequest, ListReferralsRequest, ReferralStatus, WithdrawReferralRequest,
};
use tonic_types::StatusExt as _;

use crate::harness::{
    TestEnv, await_status, connect, decide_link, eventually, fetch_referral, referral_request,
    submit, violated_fields,
};

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_every_field_violation_and_stores_nothing() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-v"));
    let mut request = referral_request("Darlington");
    request.client.as_mut().unwrap().date_of_birth = "2015-01-01".into();
    request.client_consented = false;
    request.reason.clear();
    request.emergency_calls_last_12_months = -3;
    let status = intake.submit_referral(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields = violated_fields(&status);
    assert_eq!(
        fields,
        [
            "client.date_of_birth",
            "reason",
            "client_consented",
            "emergency_calls_last_12_months"
        ]
    );
    let pool = env.database().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.referral").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.outbox").await,
        0
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A referral's area is one of the programme's (`programme.areas`): an
/// unknown one, or a look-alike of a registered one, is a violation of
/// `client.area` reported with the others, and nothing is stored; a
/// registered one is stored and answered in its registered spelling,
/// whatever its case and surrounding spaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_registered_area_is_accepted_and_it_is_kept_as_registered() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-areas"));
    for area in ["Nowhere", "Darlington\u{200b}", "Darl ington"] {
        let status = intake
            .submit_referral(referral_request(area))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["client.area"], "{area:?}");
    }
    let mut two_faults = referral_request("Nowhere");
    two_faults.reason.clear();
    let status = intake.submit_referral(two_faults).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["client.area", "reason"]);
    let pool = env.database().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.referral").await,
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.outbox").await,
        0
    );

    let submitted = submit(&mut intake, referral_request("darlington ")).await;
    assert_eq!(submitted.area, "Darlington");
    let read = fetch_referral(&mut intake, &submitted.referral_id).await;
    assert_eq!(read.area, "Darlington");
    assert_eq!(read.client.unwrap().area, "Darlington");
    let stored: Vec<String> = sqlx::query_scalar("SELECT area FROM referral_intake.referral")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored, ["Darlington"]);
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A coordinator works in the areas their token names: a referral in
/// another area is not found to them, exactly as a missing one, whether
/// they read it, look for its possible link or decide that link, and
/// nothing is opened, audited or changed; an admin sees every area.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_reads_and_decides_only_referrals_in_their_areas() {
    use cpm_proto::v1::{DecideLinkRequest, ListPossibleLinksRequest, ReferralLinkState};
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-scope"));
    // One client referred twice in East Durham, another twice in Darlington:
    // each second referral has a possible link to the first.
    let referred_twice = |area: &str| {
        let request = referral_request(area);
        let mut again = request.clone();
        again.idempotency_key = uuid::Uuid::new_v4().to_string();
        (request, again)
    };
    let (east, east_again) = referred_twice("East Durham");
    let (darlington, darlington_again) = referred_twice("Darlington");
    let east_first = submit(&mut intake, east).await;
    let east_second = submit(&mut intake, east_again).await;
    let darlington_first = submit(&mut intake, darlington).await;
    let darlington_second = submit(&mut intake, darlington_again).await;

    let mut darlington_only =
        ReferralIntakeServiceClient::new(env.coordinator_in(&channel, &["Darlington"]));
    let get = |client: &ReferralIntakeServiceClient<crate::harness::Authed>, id: &str| {
        let mut client = client.clone();
        let request = GetReferralRequest {
            referral_id: id.to_owned(),
        };
        async move { client.get_referral(request).await }
    };
    let missing = get(&darlington_only, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    for id in [&east_first.referral_id, &east_second.referral_id] {
        let status = get(&darlington_only, id).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (missing.code(), missing.message()),
            "another area's referral answers as a missing one"
        );
    }
    // Their own area's referral they read, personal details and all.
    let own = fetch_referral(&mut darlington_only, &darlington_second.referral_id).await;
    assert!(own.client.is_some());
    assert_eq!(
        own.possible_earlier_referral_id,
        darlington_first.referral_id
    );

    let pending = |client: &ReferralIntakeServiceClient<crate::harness::Authed>| {
        let mut client = client.clone();
        async move {
            client
                .list_possible_links(ListPossibleLinksRequest::default())
                .await
                .unwrap()
                .into_inner()
                .referrals
                .into_iter()
                .map(|referral| referral.referral_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        pending(&darlington_only).await,
        std::slice::from_ref(&darlington_second.referral_id)
    );

    let decide = |referral_id: &str, earlier: &str| DecideLinkRequest {
        referral_id: referral_id.to_owned(),
        earlier_referral_id: earlier.to_owned(),
        confirm: true,
    };
    let status = darlington_only
        .decide_link(decide(&east_second.referral_id, &east_first.referral_id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = darlington_only
        .decide_link(decide(
            &uuid::Uuid::now_v7().to_string(),
            &east_first.referral_id,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::NotFound,
        "a missing referral alike"
    );

    // Nothing was opened for them outside their area, and nothing changed.
    let pool = env.database().await;
    let opened_elsewhere: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM referral_intake.personal_data_access \
         WHERE accessed_by = 'coordinator' AND referral_id::text = ANY($1)",
    )
    .bind(vec![
        east_first.referral_id.clone(),
        east_second.referral_id.clone(),
    ])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(opened_elsewhere, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM referral_intake.referral WHERE link_state <> 1 \
             AND earlier_referral_id IS NOT NULL"
        )
        .await,
        0,
        "both links still undecided"
    );
    pool.close().await;

    // A coordinator with no area named sees none; one whose token spells an
    // area in another case sees it.
    let nowhere = ReferralIntakeServiceClient::new(env.coordinator_in(&channel, &[]));
    assert!(pending(&nowhere).await.is_empty());
    assert_eq!(
        get(&nowhere, &darlington_second.referral_id)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    let east_durham =
        ReferralIntakeServiceClient::new(env.coordinator_in(&channel, &["east durham"]));
    assert_eq!(
        pending(&east_durham).await,
        std::slice::from_ref(&east_second.referral_id)
    );

    // An admin sees every area, and decides there.
    let mut admin = ReferralIntakeServiceClient::new(admin(&env, &channel));
    let mut everywhere = pending(&admin).await;
    everywhere.sort();
    let mut expected = vec![
        east_second.referral_id.clone(),
        darlington_second.referral_id.clone(),
    ];
    expected.sort();
    assert_eq!(everywhere, expected);
    let read = fetch_referral(&mut admin, &east_second.referral_id).await;
    assert!(read.client.is_some());
    assert_eq!(read.link_state(), ReferralLinkState::Possible);
    let decided = admin
        .decide_link(decide(&east_second.referral_id, &east_first.referral_id))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(decided.link_state(), ReferralLinkState::Confirmed);
    let decided = darlington_only
        .decide_link(decide(
            &darlington_second.referral_id,
            &darlington_first.referral_id,
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(decided.earlier_referral_id, darlington_first.referral_id);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// SubmitReferral raises no NOTIFY (its commits would take PostgreSQL's
/// cluster-wide notify lock one at a time); it wakes the relay of its own
/// process instead. With polling an hour apart, each event still leaves
/// at once, whether the relay was idle or busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_wakes_the_relay_of_its_process() {
    let mut env = TestEnv::new().await;
    env.settings.platform.outbox.poll_interval_ms = 3_600_000;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-w"));
    let queue = env.queue("risk-assessment", "referrals");
    let mut listener = sqlx::postgres::PgListener::connect(&env.database_url)
        .await
        .unwrap();
    // The channel outbox writes once notified on.
    listener.listen("cpm_outbox_referral_intake").await.unwrap();
    for (n, area) in ["Hartlepool", "Redcar", "Stockton"].into_iter().enumerate() {
        submit(&mut intake, referral_request(area)).await;
        eventually(
            Duration::from_secs(20),
            "the referral.submitted event is published",
            || async { env.queue_depth(&queue).await == n as u32 + 1 },
        )
        .await;
        // Let the relay go idle again before the next one.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let woken_by_notify = tokio::time::timeout(Duration::from_millis(200), listener.recv()).await;
    assert!(
        woken_by_notify.is_err(),
        "SubmitReferral raised a NOTIFY: {woken_by_notify:?}"
    );
    listener.unlisten_all().await.unwrap();
    drop(listener);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_or_with_the_wrong_role_are_refused() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut anonymous = ReferralIntakeServiceClient::new(channel.clone());
    let status = anonymous
        .submit_referral(referral_request("X"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut forged =
        ReferralIntakeServiceClient::new(cpm::client::authed(&channel, "abc.def.ghi").unwrap());
    assert_eq!(
        forged
            .submit_referral(referral_request("X"))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    let mut mentor = ReferralIntakeServiceClient::new(env.mentor(&channel, "m-1"));
    assert_eq!(
        mentor
            .submit_referral(referral_request("X"))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_returns_the_first_referral_and_a_reused_key_is_refused() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-i"));
    let request = referral_request("Darlington");

    // Eight concurrent retries of one submission create one referral.
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut client = intake.clone();
        let request = request.clone();
        calls.push(tokio::spawn(async move {
            client.submit_referral(request).await.unwrap().into_inner()
        }));
    }
    let mut ids = Vec::new();
    let mut replays = 0;
    for call in calls {
        let response = call.await.unwrap();
        replays += usize::from(response.replayed);
        ids.push(response.referral.unwrap().referral_id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one referral for one key");
    assert_eq!(replays, 7);

    let mut different = request.clone();
    different.reason = "something else".into();
    let status = intake.clone().submit_referral(different).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "idempotency_key"
    );

    let pool = env.database().await;
    // The key (often an agency's case reference) is kept only as a keyed hash.
    let holding_the_key: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM referral_intake.referral r WHERE r::text LIKE '%' || $1 || '%'",
    )
    .bind(&request.idempotency_key)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(holding_the_key, 0, "no row holds the idempotency key");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.referral").await,
        1
    );
    // No consumer runs in this test: the one submitted event waits in risk-assessment's queue.
    let queue = env.queue("risk-assessment", "referrals");
    crate::harness::eventually(
        Duration::from_secs(10),
        "the event reaches the queue",
        || async { env.queue_depth(&queue).await >= 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.queue_depth(&queue).await,
        1,
        "one submitted event for one referral"
    );
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_see_only_their_own_referrals() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut mine = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-mine"));
    let mut theirs = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-theirs"));
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&mut mine, referral_request("A")).await.referral_id);
    }
    theirs.submit_referral(referral_request("B")).await.unwrap();

    // Paging through my list finds exactly mine, newest first.
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = mine
            .list_referrals(ListReferralsRequest {
                page_size: 2,
                page_token: page_token.clone(),
                status: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.referrals.into_iter().map(|r| r.referral_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(listed, ids);

    let status = theirs
        .get_referral(GetReferralRequest {
            referral_id: ids[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = theirs
        .withdraw_referral(WithdrawReferralRequest {
            referral_id: ids[0].clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // The same rule holds at the SQL level, whoever calls the query.
    let pool =
        cpm_runtime::db::pool(&env.settings.platform.database, referral_intake::SCHEMA).unwrap();
    let mut connection = pool.acquire().await.unwrap();
    let other = referral_intake::db::list_referrals(
        &mut connection,
        "agency-theirs",
        &Default::default(),
        None,
        100,
    )
    .await
    .unwrap();
    assert_eq!(other.len(), 1);
    assert!(other.iter().all(|row| row.agency_id == "agency-theirs"));
    let id = uuid::Uuid::parse_str(&ids[0]).unwrap();
    assert!(
        referral_intake::db::fetch_referral(&mut connection, id, Some("agency-theirs"), None)
            .await
            .unwrap()
            .is_none()
    );
    drop(connection);
    pool.close().await;

    let bad = mine
        .list_referrals(ListReferralsRequest {
            page_size: 9999,
            page_token: "garbage".into(),
            status: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let fields = violated_fields(&bad);
    assert_eq!(fields, ["page_size", "page_token", "status"]);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_encrypted_at_rest_and_every_read_is_audited() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-enc"));
    let request = referral_request("Darlington");
    let family_name = request.client.as_ref().unwrap().family_name.clone();
    let referral = submit(&mut intake, request).await;
    assert!(
        referral.client.is_none(),
        "a submission's answer does not echo personal data"
    );

    // A dump of every table in the schema shows none of the identity.
    let pool = env.database().await;
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(t)::text FROM (SELECT * FROM referral_intake.referral) t \
         UNION ALL SELECT row_to_json(c)::text FROM (SELECT * FROM referral_intake.client_record) c \
         UNION ALL SELECT encode(envelope, 'escape') FROM referral_intake.outbox",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let dump = dump.join("\n");
    for secret in [
        family_name.as_str(),
        "Robin",
        "1975-06-30",
        "Confidential Road",
        "07700 900123",
        "nightly",
    ] {
        assert!(
            !dump.contains(secret),
            "`{secret}` found in the database dump"
        );
    }

    let read = fetch_referral(&mut intake, &referral.referral_id).await;
    let client = read.client.unwrap();
    assert_eq!(client.family_name, family_name);
    assert_eq!(client.date_of_birth, "1975-06-30");
    let audited = count(
        &pool,
        "SELECT count(*) FROM referral_intake.personal_data_access",
    )
    .await;
    assert_eq!(audited, 1);
    let tampering = sqlx::query("DELETE FROM referral_intake.personal_data_access")
        .execute(&pool)
        .await;
    assert!(tampering.is_err(), "the audit trail is append-only");
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_referral_is_only_possible_until_a_coordinator_confirms_it_and_withdrawal_works_until_support_starts()
 {
    let env = TestEnv::new().await;
    let platform = env.start_all().await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-re"));
    let first_request = referral_request("Darlington");
    let first = submit(&mut intake, first_request.clone()).await;
    assert!(first.earlier_referral_id.is_empty());
    let mut again = first_request.clone();
    again.idempotency_key = uuid::Uuid::new_v4().to_string();
    again.client.as_mut().unwrap().given_name = "  ROBIN ".into();
    let second = submit(&mut intake, again).await;
    assert!(
        second.earlier_referral_id.is_empty() && second.possible_earlier_referral_id.is_empty(),
        "a fingerprint match is nobody's to see until a coordinator decides"
    );
    let mut staff = ReferralIntakeServiceClient::new(env.coordinator(&channel));
    let pending = staff
        .list_possible_links(cpm_proto::v1::ListPossibleLinksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].referral_id, second.referral_id);
    assert_eq!(pending[0].possible_earlier_referral_id, first.referral_id);
    // Deciding a link that was never proposed changes nothing.
    let wrong = staff
        .decide_link(cpm_proto::v1::DecideLinkRequest {
            referral_id: second.referral_id.clone(),
            earlier_referral_id: second.referral_id.clone(),
            confirm: true,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);
    let confirmed = decide_link(
        &env,
        &channel,
        &second.referral_id,
        &first.referral_id,
        true,
    )
    .await;
    assert_eq!(confirmed.earlier_referral_id, first.referral_id);
    assert_eq!(
        fetch_referral(&mut intake, &second.referral_id)
            .await
            .earlier_referral_id,
        first.referral_id,
        "once confirmed, the referrer is told of their agency's earlier referral"
    );
    let again = staff
        .decide_link(cpm_proto::v1::DecideLinkRequest {
            referral_id: second.referral_id.clone(),
            earlier_referral_id: first.referral_id.clone(),
            confirm: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        tonic::Code::FailedPrecondition,
        "decided once"
    );

    await_status(
        &mut intake,
        &second.referral_id,
        ReferralStatus::UnderAssessment,
        Duration::from_secs(20),
    )
    .await;
    let withdrawn = intake
        .withdraw_referral(WithdrawReferralRequest {
            referral_id: second.referral_id.clone(),
            reason: "moved away".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(withdrawn.status(), ReferralStatus::Withdrawn);
    assert_eq!(
        withdrawn.withdrawn_at_status(),
        ReferralStatus::UnderAssessment,
        "the stage it came at"
    );
    let read = fetch_referral(&mut intake, &second.referral_id).await;
    assert_eq!(read.withdrawal_reason, "moved away");
    let pool = env.database().await;
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM referral_intake.referral r WHERE r::text LIKE '%moved away%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plain, 0, "the reason is sealed under the client's key");
    pool.close().await;
    let status = intake
        .withdraw_referral(WithdrawReferralRequest {
            referral_id: second.referral_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    // A late event does not move a final status back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = fetch_referral(&mut intake, &second.referral_id).await;
    assert_eq!(still.status(), ReferralStatus::Withdrawn);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

fn admin(env: &TestEnv, channel: &tonic::transport::Channel) -> crate::harness::Authed {
    cpm::client::authed(
        channel,
        &env.token("admin", cpm_runtime::auth::Role::Admin, None, None),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_registered_active_agencies_may_refer() {
    use cpm_proto::v1::{
        AgencyKind, ListAgenciesRequest, ReferrerRole, RegisterAgencyRequest,
        RegisterReferrerRequest,
    };
    let mut env = TestEnv::new().await;
    env.settings
        .set("referral_intake.auto_register_agencies", false);
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut referrer = ReferralIntakeServiceClient::new(env.referrer(&channel, "durham-police"));
    let mut admin = ReferralIntakeServiceClient::new(admin(&env, &channel));

    let status = referrer
        .submit_referral(referral_request("Durham"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let bad = admin
        .register_agency(RegisterAgencyRequest {
            agency_id: "Durham Police".into(),
            name: " ".into(),
            kind: 0,
            active: true,
        })
        .await
        .unwrap_err();
    let fields = violated_fields(&bad);
    assert_eq!(fields, ["agency_id", "name", "kind"]);
    let denied = referrer
        .register_agency(RegisterAgencyRequest {
            agency_id: "x".into(),
            name: "x".into(),
            kind: 1,
            active: true,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let register = |active| RegisterAgencyRequest {
        agency_id: "durham-police".into(),
        name: "Durham Constabulary neighbourhood team".into(),
        kind: AgencyKind::Police as i32,
        active,
    };
    admin.register_agency(register(true)).await.unwrap();
    let accepted = referrer
        .submit_referral(referral_request("Durham"))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let referrer_id = admin
        .register_referrer(RegisterReferrerRequest {
            agency_id: "durham-police".into(),
            subject: "referrer".into(),
            name: "PC Example".into(),
            role: ReferrerRole::Frontline as i32,
            contact: "pc@police.example".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .referrer_id;
    assert!(!referrer_id.is_empty());
    let unknown = admin
        .register_referrer(RegisterReferrerRequest {
            agency_id: "nobody".into(),
            subject: "s".into(),
            name: "n".into(),
            role: ReferrerRole::Senior as i32,
            contact: "c".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::FailedPrecondition);

    admin.register_agency(register(false)).await.unwrap();
    let suspended = referrer
        .submit_referral(referral_request("Durham"))
        .await
        .unwrap_err();
    assert_eq!(suspended.code(), tonic::Code::PermissionDenied);
    // A suspended agency's referrers lose every call, not only submission.
    let listing = referrer
        .list_referrals(ListReferralsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(listing.code(), tonic::Code::PermissionDenied);
    let reading = referrer
        .get_referral(cpm_proto::v1::GetReferralRequest {
            referral_id: accepted.referral_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reading.code(), tonic::Code::PermissionDenied);
    let withdrawing = referrer
        .withdraw_referral(WithdrawReferralRequest {
            referral_id: accepted.referral_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(withdrawing.code(), tonic::Code::PermissionDenied);
    let agencies = admin
        .list_agencies(ListAgenciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agencies;
    assert_eq!(agencies.len(), 1);
    assert!(!agencies[0].active);

    // The register pages by agency ID, without skipping or repeating one.
    for id in ["a-one", "b-two", "c-three"] {
        admin
            .register_agency(RegisterAgencyRequest {
                agency_id: id.into(),
                ..register(true)
            })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_agencies(ListAgenciesRequest {
                page_size: 3,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.agencies.into_iter().map(|agency| agency.agency_id));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["a-one", "b-two", "c-three", "durham-police"]);
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_referral_form_round_trips_to_its_agency() {
    use cpm_proto::v1::{CrimeType, Demand, KnownRisk, OtherProfessional};
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-form"));
    let mut request = referral_request("Darlington");
    request.victim_of = vec![
        CrimeType::HarassmentOrStalking as i32,
        CrimeType::Burglary as i32,
    ];
    request.perpetrator_of = vec![CrimeType::PublicOrder as i32];
    request.known_risk_types = vec![KnownRisk::DogsOrAnimals as i32];
    request.referrer_will_co_visit = true;
    request.demand = Some(Demand {
        police_calls: 9,
        ambulance_calls: 2,
        nhs_111_calls: 1,
        other_calls: 0,
        police_staff_hours: 31.5,
        safeguarding_reports: 3,
    });
    request.other_professionals = vec![OtherProfessional {
        role: "GP".into(),
        organisation: "High Street Surgery".into(),
        contact: "reception".into(),
    }];
    let submitted = submit(&mut intake, request.clone()).await;
    let referral = intake
        .get_referral(GetReferralRequest {
            referral_id: submitted.referral_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    // SubmitReferral answers with the row as stored, without reading it back.
    assert_eq!(
        submitted,
        cpm_proto::v1::Referral {
            client: None,
            details: None,
            ..referral.clone()
        }
    );
    let details = referral.details.unwrap();
    assert_eq!(details.victim_of, request.victim_of);
    assert_eq!(details.perpetrator_of, request.perpetrator_of);
    assert_eq!(details.known_risk_types, request.known_risk_types);
    assert!(details.referrer_will_co_visit);
    assert_eq!(details.demand, request.demand);
    assert_eq!(details.other_professionals, request.other_professionals);
    assert_eq!(details.reason, request.reason);
    assert_eq!(details.referrer.unwrap().name, "PCSO Tester");

    // A message over the size limit is refused before it is read.
    let mut huge = referral_request("Darlington");
    huge.desired_outcomes = "x".repeat(400 * 1024);
    let status = intake.submit_referral(huge).await.unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);
    let pool = env.database().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.referral").await,
        1
    );
    pool.close().await;

    // Date filters.
    let future = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    };
    let listed = intake
        .list_referrals(ListReferralsRequest {
            submitted_from: Some(future),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert!(listed.is_empty());
    let bad = intake
        .list_referrals(ListReferralsRequest {
            submitted_from: Some(future),
            submitted_to: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        bad.get_details_bad_request().unwrap().field_violations[0].field,
        "submitted_to"
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_destroys_the_clients_keys_everywhere_and_tells_other_services() {
    use cpm_proto::v1::{EraseClientRequest, ExportClientDataRequest};
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-erase"));
    let mut admin = ReferralIntakeServiceClient::new(admin(&env, &channel));
    let request = referral_request("Darlington");
    let family_name = request.client.as_ref().unwrap().family_name.clone();
    let first = submit(&mut intake, request.clone()).await;
    let mut again = request.clone();
    again.idempotency_key = uuid::Uuid::new_v4().to_string();
    let second = submit(&mut intake, again).await;
    decide_link(
        &env,
        &channel,
        &second.referral_id,
        &first.referral_id,
        true,
    )
    .await;

    // A subject access export holds everything, and is itself audited.
    let denied = intake
        .export_client_data(ExportClientDataRequest {
            referral_id: first.referral_id.clone(),
            reason: "sar".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let no_reason = admin
        .export_client_data(ExportClientDataRequest {
            referral_id: first.referral_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), tonic::Code::InvalidArgument);
    let document = export(&mut admin, &second.referral_id, "SAR 2026-11").await;
    assert_eq!(document["referrals"].as_array().unwrap().len(), 2);
    assert_eq!(
        document["referrals"][0]["personal_details"]["family_name"],
        family_name.as_str()
    );
    assert!(
        document["access_log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| {
                entry["purpose"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("subject access request")
            })
    );

    let erased = admin
        .erase_client(EraseClientRequest {
            referral_id: second.referral_id.clone(),
            reason: "client request".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .erased_referral_ids;
    assert_eq!(erased.len(), 2);
    let read = fetch_referral(&mut intake, &first.referral_id).await;
    assert!(read.erased);
    assert!(read.client.is_none() && read.details.is_none());

    let pool = env.database().await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.client_record WHERE wrapped_data_key IS NOT NULL OR sealed_details IS NOT NULL").await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM referral_intake.referral WHERE client_fingerprint IS NOT NULL"
        )
        .await,
        0
    );
    // No other service runs here, so both `client.erased` events wait in their queues.
    let contact_logging = env.queue("contact-logging", "allocations");
    crate::harness::eventually(
        Duration::from_secs(10),
        "both erasure events are published",
        || async { env.queue_depth(&contact_logging).await == 2 },
    )
    .await;

    // Erasing again changes nothing and tells nobody twice.
    admin
        .erase_client(EraseClientRequest {
            referral_id: first.referral_id.clone(),
            reason: "repeat".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.queue_depth(&contact_logging).await, 2);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM referral_intake.erasure").await,
        2
    );

    // The same person referred afresh is not linked to the erased past.
    let mut fresh = request.clone();
    fresh.idempotency_key = uuid::Uuid::new_v4().to_string();
    let third = submit(&mut intake, fresh).await;
    assert!(third.earlier_referral_id.is_empty());
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_rotates_without_losing_records_or_re_referral_links() {
    use cpm_runtime::config::Secret;
    let mut env = TestEnv::new().await;
    let old_key = env.settings.platform.crypto.master_key.clone();
    let request = referral_request("Darlington");

    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let first = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-keys"))
        .submit_referral(request.clone())
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    platform.stop().await.unwrap();

    // A new master key, the old one kept to read what it wrapped.
    let new_key = Secret::new(base64_key(9));
    env.settings.platform.crypto.master_key = new_key.clone();
    env.settings.platform.crypto.previous_master_keys = vec![old_key];
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-keys"));
    let read = fetch_referral(&mut intake, &first.referral_id).await;
    assert!(
        read.client.is_some(),
        "old records stay readable during the rotation"
    );
    let mut again = request.clone();
    again.idempotency_key = uuid::Uuid::new_v4().to_string();
    let second = submit(&mut intake, again).await;
    // Found across keys (decide_link checks the possible link staff see).
    decide_link(
        &env,
        &channel,
        &second.referral_id,
        &first.referral_id,
        true,
    )
    .await;

    let pool =
        cpm_runtime::db::pool(&env.settings.platform.database, referral_intake::SCHEMA).unwrap();
    let keys = cpm_runtime::crypto::KeyRing::from_config(
        env.settings.platform.crypto.master_key.expose(),
        &[env.settings.platform.crypto.previous_master_keys[0].expose()],
    )
    .unwrap();
    let mut reports = Vec::new();
    let summary = referral_intake::privacy::rewrap_all(&pool, &keys, |done, total| {
        reports.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(summary.rewrapped, 1);
    assert_eq!(summary.already_current, 1);
    assert_eq!(reports.last(), Some(&(2, 2)));
    pool.close().await;
    platform.stop().await.unwrap();

    // The old key retired: everything still opens and still links.
    env.settings.platform.crypto.previous_master_keys.clear();
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-keys"));
    for referral_id in [&first.referral_id, &second.referral_id] {
        let read = fetch_referral(&mut intake, referral_id).await;
        assert_eq!(
            read.client.unwrap().family_name,
            request.client.as_ref().unwrap().family_name
        );
    }
    let mut third = request.clone();
    third.idempotency_key = uuid::Uuid::new_v4().to_string();
    let third = submit(&mut intake, third).await;
    decide_link(
        &env,
        &channel,
        &third.referral_id,
        &second.referral_id,
        true,
    )
    .await;

    // Erasure follows the confirmed links, whichever key fingerprinted each
    // referral, and says what it covered.
    let erased = ReferralIntakeServiceClient::new(admin(&env, &channel))
        .erase_client(cpm_proto::v1::EraseClientRequest {
            referral_id: first.referral_id.clone(),
            reason: "client request".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .erased_referral_ids;
    assert_eq!(
        erased,
        [
            first.referral_id.as_str(),
            &second.referral_id,
            &third.referral_id
        ]
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Two people who share a name and a date of birth: the fingerprint makes
/// them a possible link only. Until a coordinator confirms it, and after
/// they reject it, erasure and subject access touch the named referral
/// alone; and a confirmed link to another agency's referral stays hidden
/// from the referrer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_person_is_never_erased_exported_or_shown() {
    use cpm_proto::v1::EraseClientRequest;
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    let mut agency_a = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-twin-a"));
    let mut agency_b = ReferralIntakeServiceClient::new(env.referrer(&channel, "agency-twin-b"));
    let mut admin = ReferralIntakeServiceClient::new(admin(&env, &channel));
    let request = referral_request("Darlington");
    let one = submit(&mut agency_a, request.clone()).await;
    let mut namesake = request.clone();
    namesake.idempotency_key = uuid::Uuid::new_v4().to_string();
    let other_person = submit(&mut agency_a, namesake.clone()).await;

    // Undecided: the export and the erasure cover the named referral only.
    let document = export(&mut admin, &one.referral_id, "SAR").await;
    assert_eq!(document["referrals"].as_array().unwrap().len(), 1);

    // A coordinator finds a different person: the link never counts.
    decide_link(
        &env,
        &channel,
        &other_person.referral_id,
        &one.referral_id,
        false,
    )
    .await;
    let erased = admin
        .erase_client(EraseClientRequest {
            referral_id: one.referral_id.clone(),
            reason: "client request".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .erased_referral_ids;
    assert_eq!(
        erased,
        [one.referral_id.as_str()],
        "only the named referral"
    );
    let untouched = fetch_referral(&mut agency_a, &other_person.referral_id).await;
    assert!(!untouched.erased && untouched.client.is_some());
    assert!(untouched.earlier_referral_id.is_empty());

    // The same person referred by another agency: confirmed, yet agency B's
    // referrer is not told of agency A's referral.
    namesake.idempotency_key = uuid::Uuid::new_v4().to_string();
    let elsewhere = submit(&mut agency_b, namesake).await;
    decide_link(
        &env,
        &channel,
        &elsewhere.referral_id,
        &other_person.referral_id,
        true,
    )
    .await;
    let seen_by_b = fetch_referral(&mut agency_b, &elsewhere.referral_id).await;
    assert!(seen_by_b.earlier_referral_id.is_empty());
    assert_eq!(
        seen_by_b.link_state(),
        cpm_proto::v1::ReferralLinkState::Unspecified
    );
    platform.stop().await.unwrap();
    env.cleanup().await;
}

fn base64_key(byte: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// Agency scoping is enforced by PostgreSQL too: under the service's role,
/// a transaction narrowed to an agency sees only its referrals (and their
/// sealed records) even without a filter, and one with no scope sees none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_keeps_an_agency_to_its_own_referrals() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let channel = connect(&platform).await;
    for (agency, count) in [("agency-rls-a", 2), ("agency-rls-b", 3)] {
        let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, agency));
        for _ in 0..count {
            submit(&mut intake, referral_request("Darlington")).await;
        }
    }
    let pool =
        cpm_runtime::db::service_pool(&env.settings.platform.database, "referral_intake").unwrap();
    let visible = |scope: Option<&'static str>, table: &'static str| {
        let pool = pool.clone();
        async move {
            let mut transaction = pool.begin().await.unwrap();
            if let Some(scope) = scope {
                sqlx::query("SELECT set_config('cpm.scope', $1, true)")
                    .bind(scope)
                    .execute(&mut *transaction)
                    .await
                    .unwrap();
            }
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM referral_intake.{table}"
            )))
            .fetch_one(&mut *transaction)
            .await
            .unwrap();
            transaction.rollback().await.unwrap();
            count
        }
    };
    assert_eq!(
        visible(None, "referral").await,
        5,
        "staff and consumers see all"
    );
    assert_eq!(visible(Some("agency-rls-a"), "referral").await, 2);
    assert_eq!(visible(Some("agency-rls-b"), "client_record").await, 3);
    assert_eq!(visible(Some(""), "referral").await, 0, "no scope, no rows");
    pool.close().await;
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// A subject access export of the client of `referral_id`, as JSON.
async fn export(
    admin: &mut ReferralIntakeServiceClient<crate::harness::Authed>,
    referral_id: &str,
    reason: &str,
) -> serde_json::Value {
    let document = admin
        .export_client_data(cpm_proto::v1::ExportClientDataRequest {
            referral_id: referral_id.into(),
            reason: reason.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .document_json;
    serde_json::from_str(&document).unwrap()
}
