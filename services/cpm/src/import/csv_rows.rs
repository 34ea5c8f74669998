//! Reading the CSV file: the header row is matched against the known columns
//! (in any order, case-insensitive), and then each data row, read only when
//! the importer asks for it, becomes either a `SubmitReferralRequest` or the
//! list of problems found in it, one per column. Rows without an
//! `idempotency_key` get one derived from the agency and the row's content
//! here, so re-running a file replays instead of referring anyone twice.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;

use anyhow::Context as _;
use cpm_proto::v1::{ClientIdentity, Referrer, SubmitReferralRequest};
use sha2::{Digest as _, Sha256};

use super::cell_values::{
    parse_consent, parse_count, parse_gender, parse_referrer_role, parse_vulnerabilities,
};

/// Every column the importer knows, in the order the derived key hashes them.
pub const COLUMNS: &[&str] = &[
    "idempotency_key",
    "given_name",
    "family_name",
    "date_of_birth",
    "gender",
    "address",
    "area",
    "phone",
    "safe_contact_instructions",
    "referrer_name",
    "referrer_role",
    "referrer_contact",
    "reason",
    "desired_outcomes",
    "client_consented",
    "vulnerabilities",
    "emergency_calls_last_12_months",
    "known_risks",
];

/// Columns a file must have; the server requires a value in each.
pub const REQUIRED_COLUMNS: &[&str] = &[
    "given_name",
    "family_name",
    "date_of_birth",
    "gender",
    "area",
    "referrer_name",
    "referrer_role",
    "referrer_contact",
    "reason",
    "client_consented",
];

/// A problem with one cell (or, for `row`, with the row as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellError {
    pub column: String,
    pub problem: String,
}

impl CellError {
    fn new(column: &str, problem: impl Into<String>) -> Self {
        Self {
            column: column.to_owned(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for CellError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.column, self.problem)
    }
}

/// One data row, ready to send or refused with every problem found.
#[derive(Clone, Debug)]
pub struct ParsedRow {
    /// As a spreadsheet numbers it: the header is row 1.
    pub row: usize,
    pub request: Result<SubmitReferralRequest, Vec<CellError>>,
}

/// Where each known column is in the file.
struct Columns {
    index: HashMap<&'static str, usize>,
    width: usize,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> anyhow::Result<Self> {
        let mut index = HashMap::new();
        let mut problems = Vec::new();
        for (position, name) in header.iter().enumerate() {
            let name = name
                .trim_start_matches('\u{feff}')
                .trim()
                .to_lowercase()
                .replace([' ', '-'], "_");
            match COLUMNS.iter().find(|known| **known == name) {
                Some(known) => {
                    if index.insert(*known, position).is_some() {
                        problems.push(format!("column {known} appears more than once"));
                    }
                }
                // The name itself is not echoed: a file without a header
                // row would have a client's details here.
                None => problems.push(format!(
                    "header cell {} is not a known column name",
                    position + 1
                )),
            }
        }
        for required in REQUIRED_COLUMNS {
            if !index.contains_key(required) {
                problems.push(format!("required column {required} is missing"));
            }
        }
        if !problems.is_empty() {
            anyhow::bail!(
                "the header row is not usable: {}; the known columns are {}",
                problems.join("; "),
                COLUMNS.join(", ")
            );
        }
        Ok(Self {
            index,
            width: header.len(),
        })
    }

    /// The trimmed cell of `column`, empty when the file lacks the column.
    fn cell<'r>(&self, record: &'r csv::StringRecord, column: &str) -> &'r str {
        self.index
            .get(column)
            .and_then(|position| record.get(*position))
            .map(str::trim)
            .unwrap_or_default()
    }

    fn name_at(&self, position: usize) -> &'static str {
        self.index
            .iter()
            .find(|(_, at)| **at == position)
            .map(|(name, _)| *name)
            .unwrap_or("row")
    }
}

/// A key derived from the agency and the row's content (not its position),
/// so re-running a file, or the same rows in another order, replays.
/// Fields are length-prefixed so no two different rows hash alike.
fn derived_idempotency_key(
    agency_id: &str,
    columns: &Columns,
    record: &csv::StringRecord,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"cpm-import-v1\0");
    hasher.update((agency_id.len() as u64).to_be_bytes());
    hasher.update(agency_id.as_bytes());
    for column in COLUMNS.iter().filter(|c| **c != "idempotency_key") {
        let value = columns.cell(record, column);
        hasher.update((column.len() as u64).to_be_bytes());
        hasher.update(column.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    format!("import-{}", &hex::encode(hasher.finalize())[..40])
}

fn parse_record(
    agency_id: &str,
    columns: &Columns,
    record: &csv::StringRecord,
) -> Result<SubmitReferralRequest, Vec<CellError>> {
    let mut errors = Vec::new();
    if record.len() != columns.width {
        errors.push(CellError::new(
            "row",
            format!(
                "has {} cells but the header has {}",
                record.len(),
                columns.width
            ),
        ));
        return Err(errors);
    }
    let cell = |column: &str| columns.cell(record, column).to_owned();
    fn check<T>(errors: &mut Vec<CellError>, column: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|problem| errors.push(CellError::new(column, problem)))
            .ok()
    }
    let gender = check(&mut errors, "gender", parse_gender(&cell("gender")));
    let referrer_role = check(
        &mut errors,
        "referrer_role",
        parse_referrer_role(&cell("referrer_role")),
    );
    let client_consented = check(
        &mut errors,
        "client_consented",
        parse_consent(&cell("client_consented")),
    );
    let vulnerabilities = check(
        &mut errors,
        "vulnerabilities",
        parse_vulnerabilities(&cell("vulnerabilities")),
    );
    let emergency_calls = check(
        &mut errors,
        "emergency_calls_last_12_months",
        parse_count(&cell("emergency_calls_last_12_months")),
    );
    let (
        Some(gender),
        Some(referrer_role),
        Some(client_consented),
        Some(vulnerabilities),
        Some(emergency_calls),
    ) = (
        gender,
        referrer_role,
        client_consented,
        vulnerabilities,
        emergency_calls,
    )
    else {
        return Err(errors);
    };
    let idempotency_key = match cell("idempotency_key") {
        key if key.is_empty() => derived_idempotency_key(agency_id, columns, record),
        key => key,
    };
    // The contract may grow optional fields; the importer leaves them at
    // their defaults.
    #[allow(clippy::needless_update)]
    let request = SubmitReferralRequest {
        idempotency_key,
        client: Some(ClientIdentity {
            given_name: cell("given_name"),
            family_name: cell("family_name"),
            date_of_birth: cell("date_of_birth"),
            gender,
            address: cell("address"),
            area: cell("area"),
            phone: cell("phone"),
            safe_contact_instructions: cell("safe_contact_instructions"),
            ..Default::default()
        }),
        referrer: Some(Referrer {
            name: cell("referrer_name"),
            role: referrer_role,
            contact: cell("referrer_contact"),
            ..Default::default()
        }),
        reason: cell("reason"),
        desired_outcomes: cell("desired_outcomes"),
        client_consented,
        vulnerabilities,
        emergency_calls_last_12_months: emergency_calls,
        known_risks: cell("known_risks"),
        ..Default::default()
    };
    Ok(request)
}

/// The data rows of a CSV file, parsed one at a time as they are asked for,
/// so reading a file of any length holds one row, never the whole file.
/// An item is an error only when the file cannot be read on (a failing
/// disk, say); the iterator ends after it.
pub struct Rows<R> {
    reader: csv::Reader<R>,
    columns: Columns,
    agency_id: String,
    /// Reused for every row: no allocation per row once it has grown.
    record: csv::StringRecord,
    /// Records read so far, blank ones included, so rows keep their
    /// spreadsheet numbers.
    records: usize,
    ended: bool,
}

/// Reads and checks the header row; the data rows follow as the returned
/// iterator is consumed. A file whose header is unusable is an error.
pub fn read_rows<R: Read>(reader: R, agency_id: &str) -> anyhow::Result<Rows<R>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let header = reader.headers().context("the header row cannot be read")?;
    if header.is_empty() || header.iter().all(|name| name.trim().is_empty()) {
        anyhow::bail!("the file is empty: expected a header row naming the columns");
    }
    let columns = Columns::from_header(header)?;
    Ok(Rows {
        reader,
        columns,
        agency_id: agency_id.to_owned(),
        record: csv::StringRecord::new(),
        records: 0,
        ended: false,
    })
}

impl<R: Read> Iterator for Rows<R> {
    type Item = anyhow::Result<ParsedRow>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.ended {
            let read = self.reader.read_record(&mut self.record);
            // As a spreadsheet numbers it: the header is row 1.
            let row = self.records + 2;
            match read {
                Ok(false) => self.ended = true,
                Ok(true) => {
                    self.records += 1;
                    if self.record.iter().all(|cell| cell.trim().is_empty()) {
                        continue;
                    }
                    let request = parse_record(&self.agency_id, &self.columns, &self.record);
                    return Some(Ok(ParsedRow { row, request }));
                }
                Err(error) => {
                    self.records += 1;
                    if let csv::ErrorKind::Utf8 { err, .. } = error.kind() {
                        let error = CellError::new(
                            self.columns.name_at(err.field()),
                            "is not valid UTF-8 text (save the file as CSV UTF-8)",
                        );
                        return Some(Ok(ParsedRow {
                            row,
                            request: Err(vec![error]),
                        }));
                    }
                    self.ended = true;
                    return Some(Err(anyhow::anyhow!("row {row} cannot be read: {error}")));
                }
            }
        }
        None
    }
}

/// How many rows [`read_rows`] will yield (blank rows left out), counted
/// without parsing or keeping any: the length of the progress bar.
pub fn count_rows(reader: impl Read) -> anyhow::Result<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();
    let mut rows = 0;
    while reader.read_byte_record(&mut record)? {
        if record.iter().any(|cell| !cell.trim_ascii().is_empty()) {
            rows += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use cpm_proto::v1::{Gender, ReferrerRole, Vulnerability};

    use super::*;

    const HEADER: &str = "idempotency_key,given_name,family_name,date_of_birth,gender,address,area,phone,\
safe_contact_instructions,referrer_name,referrer_role,referrer_contact,reason,desired_outcomes,\
client_consented,vulnerabilities,emergency_calls_last_12_months,known_risks";

    const GOOD: &str = ",Alex,Example,1980-05-17,female,1 High Street,Darlington,01325 000000,\
text first,PC Smith,frontline,pc.smith@police.example,repeated calls,a routine,yes,\
high_impact_user;alcohol_addiction,42,";

    /// Every row of a file at once, as the tests want them.
    fn parse_file(reader: impl Read, agency_id: &str) -> anyhow::Result<Vec<ParsedRow>> {
        read_rows(reader, agency_id)?.collect()
    }

    fn parse(text: &str) -> Vec<ParsedRow> {
        parse_file(text.as_bytes(), "agency-a").unwrap()
    }

    fn only_request(text: &str) -> SubmitReferralRequest {
        let rows = parse(text);
        assert_eq!(rows.len(), 1);
        rows.into_iter().next().unwrap().request.unwrap()
    }

    /// The columns a single bad row's problems are about.
    fn refused_columns(row: &str) -> Vec<String> {
        let rows = parse(&format!("{HEADER}\n{row}\n"));
        assert_eq!(rows.len(), 1);
        rows[0]
            .request
            .as_ref()
            .unwrap_err()
            .iter()
            .map(|error| error.column.clone())
            .collect()
    }

    fn with_cell(column: &str, value: &str) -> String {
        let position = HEADER.split(',').position(|c| c == column).unwrap();
        let mut cells: Vec<String> = GOOD.split(',').map(str::to_owned).collect();
        cells[position] = value.to_owned();
        cells.join(",")
    }

    #[test]
    fn a_good_row_becomes_a_complete_request() {
        let request = only_request(&format!("{HEADER}\n{GOOD}\n"));
        let client = request.client.as_ref().unwrap();
        assert_eq!(client.given_name, "Alex");
        assert_eq!(client.date_of_birth, "1980-05-17");
        assert_eq!(client.gender, Gender::Female as i32);
        assert_eq!(client.area, "Darlington");
        let referrer = request.referrer.as_ref().unwrap();
        assert_eq!(referrer.role, ReferrerRole::Frontline as i32);
        assert!(request.client_consented);
        assert_eq!(
            request.vulnerabilities,
            [
                Vulnerability::HighImpactUser as i32,
                Vulnerability::AlcoholAddiction as i32
            ]
        );
        assert_eq!(request.emergency_calls_last_12_months, 42);
        assert!(request.idempotency_key.starts_with("import-"));
    }

    #[test]
    fn names_are_case_insensitive_and_accept_spaces_and_hyphens() {
        let row = with_cell("gender", "Non-Binary");
        let row = row.replacen("frontline", "Middle Manager", 1);
        let row = row.replacen("high_impact_user;alcohol_addiction", " MENTAL_HEALTH ; ", 1);
        let row = row.replacen(",yes,", ",TRUE,", 1);
        let request = only_request(&format!("{HEADER}\n{row}\n"));
        assert_eq!(request.client.unwrap().gender, Gender::NonBinary as i32);
        assert_eq!(
            request.referrer.unwrap().role,
            ReferrerRole::MiddleManager as i32
        );
        assert_eq!(
            request.vulnerabilities,
            [Vulnerability::MentalHealth as i32]
        );
        assert!(request.client_consented);
    }

    #[test]
    fn the_derived_key_is_stable_and_depends_on_agency_and_content_only() {
        let file = format!("{HEADER}\n{GOOD}\n");
        let first = only_request(&file).idempotency_key;
        assert_eq!(first, only_request(&file).idempotency_key);
        let with_blank_row_before = format!("{HEADER}\n,,,,,,,,,,,,,,,,,\n{GOOD}\n");
        assert_eq!(first, only_request(&with_blank_row_before).idempotency_key);
        let other_agency = parse_file(file.as_bytes(), "agency-b").unwrap();
        assert_ne!(
            first,
            other_agency[0].request.as_ref().unwrap().idempotency_key
        );
        let edited = format!("{HEADER}\n{}\n", with_cell("area", "Stockton"));
        assert_ne!(first, only_request(&edited).idempotency_key);
        assert!(first.len() <= 128);
    }

    #[test]
    fn a_supplied_key_is_used_as_it_is() {
        let row = with_cell("idempotency_key", "crm-4711");
        assert_eq!(
            only_request(&format!("{HEADER}\n{row}\n")).idempotency_key,
            "crm-4711"
        );
    }

    #[test]
    fn column_order_does_not_matter_and_optional_columns_may_be_left_out() {
        let file = "Reason,client_consented,given_name,family_name,date_of_birth,gender,area,\
referrer_name,referrer_role,referrer_contact\n\
calls,no,Sam,Sample,1970-01-01,male,Hartlepool,A Worker,senior,a@b.example\n";
        let request = only_request(file);
        assert_eq!(request.reason, "calls");
        assert!(!request.client_consented, "consent is sent as given");
        assert_eq!(request.referrer.unwrap().role, ReferrerRole::Senior as i32);
        assert!(request.vulnerabilities.is_empty());
        assert_eq!(request.emergency_calls_last_12_months, 0);
    }

    #[test]
    fn a_byte_order_mark_before_the_header_is_ignored() {
        let request = only_request(&format!("\u{feff}{HEADER}\n{GOOD}\n"));
        assert!(request.idempotency_key.starts_with("import-"));
    }

    #[test]
    fn an_unknown_or_empty_gender_is_refused() {
        assert_eq!(refused_columns(&with_cell("gender", "robot")), ["gender"]);
        assert_eq!(refused_columns(&with_cell("gender", "")), ["gender"]);
        assert_eq!(
            refused_columns(&with_cell("gender", "unspecified")),
            ["gender"]
        );
    }

    #[test]
    fn an_unknown_or_empty_referrer_role_is_refused() {
        assert_eq!(
            refused_columns(&with_cell("referrer_role", "chief")),
            ["referrer_role"]
        );
        assert_eq!(
            refused_columns(&with_cell("referrer_role", "")),
            ["referrer_role"]
        );
    }

    #[test]
    fn consent_must_be_yes_no_true_or_false() {
        assert_eq!(
            refused_columns(&with_cell("client_consented", "maybe")),
            ["client_consented"]
        );
        assert_eq!(
            refused_columns(&with_cell("client_consented", "")),
            ["client_consented"]
        );
    }

    #[test]
    fn an_unknown_vulnerability_is_refused_by_position() {
        let rows = parse(&format!(
            "{HEADER}\n{}\n",
            with_cell("vulnerabilities", "mental_health;SecretName;unspecified")
        ));
        let errors = rows[0].request.as_ref().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].column, "vulnerabilities");
        assert!(errors[0].problem.starts_with("item 2, 3 is not"));
        assert!(!errors[0].problem.contains("SecretName"));
    }

    #[test]
    fn a_count_that_is_not_a_whole_number_is_refused() {
        for bad in ["many", "1.5", "99999999999"] {
            assert_eq!(
                refused_columns(&with_cell("emergency_calls_last_12_months", bad)),
                ["emergency_calls_last_12_months"]
            );
        }
    }

    #[test]
    fn every_problem_of_a_row_is_reported_at_once() {
        let row = with_cell("gender", "x")
            .replacen("frontline", "x", 1)
            .replacen(",yes,", ",x,", 1);
        assert_eq!(
            refused_columns(&row),
            ["gender", "referrer_role", "client_consented"]
        );
    }

    #[test]
    fn a_row_with_the_wrong_number_of_cells_is_refused() {
        assert_eq!(refused_columns("just,three,cells"), ["row"]);
        assert_eq!(refused_columns(&format!("{GOOD},extra")), ["row"]);
    }

    #[test]
    fn invalid_utf8_is_refused_naming_the_column() {
        let mut bytes = format!("{HEADER}\n").into_bytes();
        bytes.extend(with_cell("area", "Xx").replacen("Xx", "\u{1}", 1).bytes());
        let position = bytes.iter().position(|b| *b == 1).unwrap();
        bytes[position] = 0xff;
        bytes.push(b'\n');
        bytes.extend(format!("{GOOD}\n").bytes());
        let rows = parse_file(&bytes[..], "agency-a").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, 2);
        assert_eq!(rows[0].request.as_ref().unwrap_err()[0].column, "area");
        assert!(rows[1].request.is_ok(), "later rows are still read");
    }

    #[test]
    fn problems_never_echo_cell_values() {
        let row = with_cell("gender", "Alex Example")
            .replacen("frontline", "07700 900123", 1)
            .replacen(",yes,", ",1 High Street,", 1);
        let rows = parse(&format!("{HEADER}\n{row}\n"));
        let text: String = rows[0]
            .request
            .as_ref()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        for value in ["Alex Example", "07700", "High Street"] {
            assert!(!text.contains(value), "{text}");
        }
    }

    #[test]
    fn rows_are_numbered_as_a_spreadsheet_shows_them_and_blank_rows_skipped() {
        let file = format!(
            "{HEADER}\n{GOOD}\n,,,,,,,,,,,,,,,,,\n{}\n\"\",,,,,,,,,,,,,,,,,\n{}\n",
            with_cell("gender", "x"),
            with_cell("reason", "\"two\nlines\"")
        );
        let rows = parse(&file);
        let numbers: Vec<usize> = rows.iter().map(|r| r.row).collect();
        assert_eq!(numbers, [2, 4, 6]);
        assert!(rows[1].request.is_err());
        assert_eq!(rows[2].request.as_ref().unwrap().reason, "two\nlines");
    }

    #[test]
    fn a_header_with_unknown_duplicate_or_missing_columns_is_refused() {
        let unknown = parse_file(format!("{HEADER},secret\n").as_bytes(), "a").unwrap_err();
        let message = format!("{unknown:#}");
        assert!(message.contains("header cell 19 is not a known column name"));
        assert!(!message.contains("secret"));
        let duplicate = parse_file(format!("{HEADER},gender\n").as_bytes(), "a").unwrap_err();
        assert!(format!("{duplicate:#}").contains("column gender appears more than once"));
        let missing = parse_file("given_name,family_name\n".as_bytes(), "a").unwrap_err();
        let message = format!("{missing:#}");
        assert!(message.contains("required column reason is missing"));
        assert!(message.contains("required column client_consented is missing"));
    }

    #[test]
    fn a_header_that_is_a_row_of_personal_data_is_refused_without_echoing_it() {
        let error = parse_file(format!("{GOOD}\n").as_bytes(), "a").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("not a known column name"));
        assert!(!message.contains("Alex"));
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert!(parse_file("".as_bytes(), "a").is_err());
        assert!(parse_file("\n\n".as_bytes(), "a").is_err());
    }

    /// A file that never ends: the header, then the good row forever.
    struct Endless {
        pending: Vec<u8>,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.pending.is_empty() {
                self.pending = format!("{GOOD}\n").into_bytes();
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn rows_are_read_as_they_are_asked_for() {
        let file = Endless {
            pending: format!("{HEADER}\n").into_bytes(),
        };
        let rows: Vec<usize> = read_rows(file, "agency-a")
            .unwrap()
            .take(3)
            .map(|row| row.unwrap().row)
            .collect();
        assert_eq!(rows, [2, 3, 4]);
    }

    #[test]
    fn the_count_is_of_the_rows_that_will_be_read() {
        let file = format!(
            "{HEADER}\n{GOOD}\n,,,,,,,,,,,,,,,,,\n{}\n\"\",,,,,,,,,,,,,,,,,\n{}\n",
            with_cell("gender", "x"),
            with_cell("reason", "\"two\nlines\"")
        );
        assert_eq!(count_rows(file.as_bytes()).unwrap(), 3);
        assert_eq!(parse(&file).len(), 3);
    }
}
