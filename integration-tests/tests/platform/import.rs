//! `cpm import` against a running platform: readable rows are submitted,
//! unreadable and refused ones are reported by row and column without their
//! values, and running the same file again replays every row.

use std::path::{Path, PathBuf};

use cpm::Target;
use cpm::import::{ImportOptions, ImportSummary, RowStatus};
use cpm_proto::v1::ListReferralsRequest;
use cpm_proto::v1::referral_intake_service_client::ReferralIntakeServiceClient;
use tokio::io::AsyncWriteExt as _;

use crate::harness::{TestEnv, connect};

const AGENCY: &str = "agency-import";

/// Rows 2 and 3 are good (row 2 with a derived key, row 3 with its own),
/// row 4 cannot be parsed (gender), row 5 is refused by the server (a minor
/// whose consent is missing).
const FILE: &str = "\
given_name,family_name,date_of_birth,gender,address,area,phone,safe_contact_instructions,\
referrer_name,referrer_role,referrer_contact,reason,desired_outcomes,client_consented,\
vulnerabilities,emergency_calls_last_12_months,known_risks,idempotency_key
Morgan,Fictitious,1961-02-03,female,12 Imaginary Lane,Darlington,07700 900001,text first,\
PC Example,frontline,pc.example@police.example,lonely and calling 999,a routine,yes,\
high_impact_user;Vulnerable_And_Isolated,30,,
Casey,Madeup,1949-11-30,male,3 Nowhere Street,Darlington,07700 900002,,\
A Manager,middle_manager,manager@council.example,\"bereaved,\nstruggling\",,true,\
bereavement,4,dog in the house,crm-1001
Riley,Notreal,1970-07-07,robot,1 Pretend Road,Darlington,,,\
PC Example,frontline,pc.example@police.example,calls,,yes,,0,,
Jamie,Invented,2015-01-01,non-binary,9 Fable Court,Darlington,,,\
PC Example,senior,pc.example@police.example,calls,,no,,2,,
";

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpm-import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(env: &TestEnv, endpoint: &str, file: &Path, report: &Path) -> ImportOptions {
    let mut options = ImportOptions::new(file, endpoint, AGENCY, env.authenticator.clone());
    options.report = Some(report.to_owned());
    options.concurrency = 3;
    options
}

fn counts(summary: &ImportSummary) -> [usize; 5] {
    [
        summary.submitted,
        summary.replayed,
        summary.rejected,
        summary.unparsable,
        summary.failed,
    ]
}

/// `(row, status, referral_id)` of each line of a report file.
fn report_rows(report: &Path) -> Vec<(usize, String, String)> {
    let text = std::fs::read_to_string(report).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,status,referral_id,errors"));
    lines
        .map(|line| {
            let cells: Vec<&str> = line.splitn(4, ',').collect();
            (
                cells[0].parse().unwrap(),
                cells[1].to_owned(),
                cells[2].to_owned(),
            )
        })
        .collect()
}

fn errors_of(summary: &ImportSummary, row: usize) -> Vec<String> {
    summary
        .problems
        .iter()
        .find(|outcome| outcome.row == row)
        .unwrap()
        .errors
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_submits_good_rows_reports_bad_ones_and_a_rerun_replays_them() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let dir = scratch_dir();
    let file = dir.join("referrals.csv");
    let report = dir.join("report.csv");
    std::fs::write(&file, FILE).unwrap();

    let first = cpm::import::run(options(&env, &platform.endpoint(), &file, &report))
        .await
        .unwrap();
    assert_eq!(counts(&first), [2, 0, 1, 1, 0], "{}", first.render());
    assert!(!first.all_succeeded());
    let first_rows = report_rows(&report);
    let statuses: Vec<(usize, &str)> = first_rows
        .iter()
        .map(|(row, status, _)| (*row, status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            (2, "submitted"),
            (3, "submitted"),
            (4, "unparsable"),
            (5, "rejected")
        ],
        "one line per row, in row order"
    );
    assert!(!first_rows[0].2.is_empty() && !first_rows[1].2.is_empty());
    let unparsable = errors_of(&first, 4);
    assert_eq!(unparsable.len(), 1);
    assert!(unparsable[0].starts_with("gender: must be one of"));
    let rejected = errors_of(&first, 5);
    assert!(
        rejected
            .iter()
            .any(|e| e.starts_with("date_of_birth: ") && e.contains("18")),
        "{rejected:?}"
    );
    assert!(
        rejected.iter().any(|e| e.starts_with("client_consented: ")),
        "{rejected:?}"
    );

    let report_text = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<&str> = report_text.lines().collect();
    assert_eq!(lines[0], "row,status,referral_id,errors");
    assert_eq!(lines.len(), 5);
    assert!(lines[3].starts_with("4,unparsable,,"));
    assert!(lines[4].starts_with("5,rejected,,"));
    let rendered = first.render();
    for personal in [
        "Morgan",
        "Fictitious",
        "Riley",
        "Jamie",
        "1961-02-03",
        "2015-01-01",
        "07700",
        "Lane",
    ] {
        assert!(!report_text.contains(personal), "report shows {personal}");
        assert!(!rendered.contains(personal), "summary shows {personal}");
    }

    let second = cpm::import::run(options(&env, &platform.endpoint(), &file, &report))
        .await
        .unwrap();
    assert_eq!(counts(&second), [0, 2, 1, 1, 0], "{}", second.render());
    let second_rows = report_rows(&report);
    for row in 0..2 {
        assert_eq!(second_rows[row].1, RowStatus::Replayed.as_str());
        assert_eq!(
            second_rows[row].2, first_rows[row].2,
            "a rerun answers with the first referral"
        );
    }

    let channel = connect(&platform).await;
    let mut intake = ReferralIntakeServiceClient::new(env.referrer(&channel, AGENCY));
    let listed = intake
        .list_referrals(ListReferralsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert_eq!(listed.len(), 2, "two runs created exactly two referrals");

    std::fs::remove_dir_all(&dir).unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_header_fails_the_import_before_anything_is_sent() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let dir = scratch_dir();
    let file = dir.join("referrals.csv");
    let report = dir.join("report.csv");
    std::fs::write(&file, "given_name,family_name\nMorgan,Fictitious\n").unwrap();
    let error = cpm::import::run(options(&env, &platform.endpoint(), &file, &report))
        .await
        .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("required column reason is missing"),
        "{message}"
    );
    assert!(
        !report.exists(),
        "no report for an import that never started"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_file_in_deploy_examples_imports_cleanly() {
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let dir = scratch_dir();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/referrals.csv");
    let summary = cpm::import::run(options(
        &env,
        &platform.endpoint(),
        &sample,
        &dir.join("r.csv"),
    ))
    .await
    .unwrap();
    assert!(summary.all_succeeded(), "{}", summary.render());
    assert!(summary.submitted >= 3);
    std::fs::remove_dir_all(&dir).unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}

/// Rows of the streaming test: each ~12 KB (three long free-text cells), so
/// the kernel's pipe (64 KiB) holds only five of them.
fn long_row(row: usize) -> String {
    let long = "x".repeat(4000);
    format!(
        "Morgan,Fictitious,1961-02-03,female,,Darlington,,,PC Example,frontline,\
         pc.example@police.example,{long},{long},yes,,0,{long},stream-{row}\n"
    )
}

/// The import reads its file as it submits, never far ahead: the file is a
/// FIFO this test writes row by row, and after each row it counts the
/// referrals the server has committed. Rows written but not yet committed
/// sit in the pipe (≤ 5), the reader's buffer and channel, and the rows in
/// flight or waiting their turn: a fixed number, ≈ 6 × concurrency. An
/// import that reads the whole file before submitting has read every row
/// while the server has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reads_its_file_as_it_submits_never_far_ahead() {
    const CONCURRENCY: usize = 4;
    const ROWS: usize = 300;
    const AHEAD_AT_MOST: usize = 10 * CONCURRENCY;
    let env = TestEnv::new().await;
    let platform = env.start(&[Target::REFERRAL_INTAKE]).await;
    let pool = env.database().await;
    let dir = scratch_dir();
    let fifo = dir.join("referrals.csv");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut options = options(&env, &platform.endpoint(), &fifo, &dir.join("report.csv"));
    options.concurrency = CONCURRENCY;
    let import = tokio::spawn(cpm::import::run(options));

    // A FIFO opens for writing once its reader has opened it.
    let mut pipe = loop {
        match tokio::net::unix::pipe::OpenOptions::new().open_sender(&fifo) {
            Ok(pipe) => break pipe,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let header = FILE.lines().next().unwrap();
    pipe.write_all(format!("{header}\n").as_bytes())
        .await
        .unwrap();
    let mut furthest_ahead = 0;
    for row in 0..ROWS {
        pipe.write_all(long_row(row).as_bytes()).await.unwrap();
        let (committed,): (i64,) = sqlx::query_as("SELECT count(*) FROM referral_intake.referral")
            .fetch_one(&pool)
            .await
            .unwrap();
        let ahead = row + 1 - committed as usize;
        furthest_ahead = furthest_ahead.max(ahead);
        assert!(
            ahead <= AHEAD_AT_MOST,
            "{} rows written and read, {committed} referrals on the server: \
             the import reads ahead of its submissions",
            row + 1
        );
    }
    drop(pipe);
    let summary = import.await.unwrap().unwrap();
    assert_eq!(summary.submitted, ROWS, "{}", summary.render());
    eprintln!("furthest ahead: {furthest_ahead} rows (limit {AHEAD_AT_MOST})");
    pool.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
    platform.stop().await.unwrap();
    env.cleanup().await;
}
