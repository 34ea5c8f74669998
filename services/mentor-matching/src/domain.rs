//! Requests parsed at the edge into domain values, collecting every
//! violation at once, and the rules of the mentor register: which status a
//! new mentor starts in, who can take a client, and how long a client waits.
//! An area a request names must be one of the programme's
//! ([`ProgrammeConfig`]) and is kept in its registered spelling, so a
//! look-alike (a zero-width space, another letter case) can neither put a
//! mentor where nobody looks nor slip past a filter.

use chrono::NaiveDate;
use cpm_proto::v1::{
    AgeBand, Availability, ConfirmAllocationRequest, CrimeType, EstimateWaitRequest, Gender,
    ListMentorsRequest, LivedExperience, MentorStatus, ProposeMatchesRequest,
    RecordTrainingRequest, RegisterMentorRequest, TrainingFormat, UpdateMentorDetailsRequest,
};
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_entries, check_text, parse_enum, parse_id};
use uuid::Uuid;

/// Longest display name.
pub const MAX_SHORT_TEXT: usize = 200;
/// Longest training cohort label (`2026-03`, `Cohort 17 (evenings)`).
pub const MAX_COHORT: usize = 50;
/// Most clients one mentor supports at once.
pub const MAX_CAPACITY: i32 = 5;
/// Most areas one mentor works in.
pub const MAX_AREAS: usize = 5;
/// Proposals returned when the request names no limit.
pub const DEFAULT_PROPOSALS: usize = 5;
/// Most proposals one request may ask for.
pub const MAX_PROPOSALS: i32 = 20;
/// The status of every new mentor: trained, waiting for a first client.
pub const INITIAL_STATUS: MentorStatus = MentorStatus::Trained;

/// The earliest date the register accepts: anything before is a typing
/// slip (the programme began in 2015).
pub fn earliest_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

/// A mentor's training, safeguarding, agreement and vetting as recorded:
/// an empty cohort, an UNSPECIFIED format or a `None` date is not recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Training {
    pub cohort: String,
    pub format: TrainingFormat,
    pub completed_on: Option<NaiveDate>,
    pub safeguarding_trained_on: Option<NaiveDate>,
    pub agreement_signed_on: Option<NaiveDate>,
    pub vetted_on: Option<NaiveDate>,
}

/// The text fields of a request that carry training, in their order.
struct TrainingFields<'a> {
    cohort: &'a str,
    format: i32,
    completed_on: &'a str,
    safeguarding_trained_on: &'a str,
    agreement_signed_on: &'a str,
    vetted_on: &'a str,
}

impl TrainingFields<'_> {
    fn is_empty(&self) -> bool {
        self.cohort.trim().is_empty()
            && self.format == 0
            && [
                self.completed_on,
                self.safeguarding_trained_on,
                self.agreement_signed_on,
                self.vetted_on,
            ]
            .iter()
            .all(|date| date.trim().is_empty())
    }

    fn parse(&self, today: NaiveDate, violations: &mut FieldViolations) -> Training {
        check_text(
            "training_cohort",
            self.cohort,
            false,
            MAX_COHORT,
            violations,
        );
        Training {
            cohort: self.cohort.trim().to_owned(),
            format: parse_optional_enum("training_format", self.format, violations)
                .unwrap_or_default(),
            completed_on: parse_date(
                "training_completed_on",
                self.completed_on,
                today,
                violations,
            ),
            safeguarding_trained_on: parse_date(
                "safeguarding_trained_on",
                self.safeguarding_trained_on,
                today,
                violations,
            ),
            agreement_signed_on: parse_date(
                "agreement_signed_on",
                self.agreement_signed_on,
                today,
                violations,
            ),
            vetted_on: parse_date("vetted_on", self.vetted_on, today, violations),
        }
    }
}

/// An optional calendar date (`2026-03-14`): `None` when empty; otherwise
/// a real date between [`earliest_date`] and `today`.
pub fn parse_date(
    field: &str,
    value: &str,
    today: NaiveDate,
    violations: &mut FieldViolations,
) -> Option<NaiveDate> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(date) if date > today => {
            violations.add(field, "must not be in the future");
            None
        }
        Ok(date) if date < earliest_date() => {
            violations.add(field, format!("must not be before {}", earliest_date()));
            None
        }
        Ok(date) => Some(date),
        Err(_) => {
            violations.add(field, "must be a date like 2026-03-14");
            None
        }
    }
}

/// An optional closed-list enum: `None` when UNSPECIFIED (not recorded);
/// an unknown value is a violation.
fn parse_optional_enum<E>(field: &str, value: i32, violations: &mut FieldViolations) -> Option<E>
where
    E: TryFrom<i32>,
{
    if value == 0 {
        None
    } else {
        parse_enum(field, value, violations)
    }
}

/// [`cpm_runtime::grpc::values::parse_enum_list`] of at most [`MAX_LISTED`]
/// entries: known values, without repeats, in first-seen order.
fn parse_enum_list<E>(field: &str, values: &[i32], violations: &mut FieldViolations) -> Vec<E>
where
    E: TryFrom<i32> + PartialEq,
{
    cpm_runtime::grpc::values::parse_enum_list(field, values, MAX_LISTED, violations)
}

/// The areas a mentor works in: 1 to [`MAX_AREAS`] of `programme`'s, in
/// their registered spelling, without repeats, in the order given.
pub fn parse_areas(
    field: &str,
    areas: &[String],
    programme: &ProgrammeConfig,
    violations: &mut FieldViolations,
) -> Vec<String> {
    let mut parsed: Vec<String> = Vec::new();
    if areas.is_empty() {
        violations.add(
            field,
            format!("must name 1 to {MAX_AREAS} of the programme's areas"),
        );
        return parsed;
    }
    if !check_entries(field, areas, MAX_AREAS, violations) {
        return parsed;
    }
    for (index, area) in areas.iter().enumerate() {
        if let Some(area) = programme.check_area(&format!("{field}[{index}]"), area, violations)
            && !parsed.contains(&area)
        {
            parsed.push(area);
        }
    }
    parsed
}

fn check_capacity(capacity: i32, violations: &mut FieldViolations) {
    if !(1..=MAX_CAPACITY).contains(&capacity) {
        violations.add("capacity", format!("must be between 1 and {MAX_CAPACITY}"));
    }
}

/// A valid mentor registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMentor {
    pub display_name: String,
    pub gender: Gender,
    /// 1 to [`MAX_AREAS`] of the programme's areas, in their registered
    /// spelling; the first is the primary area.
    pub areas: Vec<String>,
    pub lived_experience: Vec<LivedExperience>,
    pub capacity: i32,
    /// UNSPECIFIED when not recorded.
    pub age_band: AgeBand,
    pub availability: Vec<Availability>,
    pub ex_service_user: bool,
    pub training: Training,
}

/// The most entries a list field may have: more than the vocabulary holds,
/// so repeats pass, yet a flood is refused without reading it.
pub const MAX_LISTED: usize = 32;

impl NewMentor {
    /// Parses a registration; its areas must be `programme`'s and its
    /// dates no later than `today`.
    pub fn parse(
        request: &RegisterMentorRequest,
        programme: &ProgrammeConfig,
        today: NaiveDate,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        check_text(
            "display_name",
            &request.display_name,
            true,
            MAX_SHORT_TEXT,
            &mut violations,
        );
        let gender = parse_enum::<Gender>("gender", request.gender, &mut violations);
        let areas = match (request.area.trim().is_empty(), request.areas.is_empty()) {
            (false, true) => programme
                .check_area("area", &request.area, &mut violations)
                .into_iter()
                .collect(),
            (false, false) => {
                violations.add("area", "give either area or areas, not both");
                Vec::new()
            }
            (true, _) => parse_areas("areas", &request.areas, programme, &mut violations),
        };
        let lived_experience = parse_enum_list(
            "lived_experience",
            &request.lived_experience,
            &mut violations,
        );
        check_capacity(request.capacity, &mut violations);
        let age_band = parse_optional_enum("age_band", request.age_band, &mut violations);
        let availability = parse_enum_list("availability", &request.availability, &mut violations);
        let training = TrainingFields {
            cohort: &request.training_cohort,
            format: request.training_format,
            completed_on: &request.training_completed_on,
            safeguarding_trained_on: &request.safeguarding_trained_on,
            agreement_signed_on: &request.agreement_signed_on,
            vetted_on: &request.vetted_on,
        }
        .parse(today, &mut violations);
        finish(violations)?;
        Ok(Self {
            display_name: request.display_name.trim().to_owned(),
            gender: gender.expect("validated"),
            areas,
            lived_experience,
            capacity: request.capacity,
            age_band: age_band.unwrap_or_default(),
            availability,
            ex_service_user: request.ex_service_user,
            training,
        })
    }

    /// The primary area: the first named.
    pub fn area(&self) -> &str {
        &self.areas[0]
    }
}

/// A valid RecordTraining request: what to record for one mentor; what is
/// not recorded in `training` is kept as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainingRecord {
    pub mentor_id: Uuid,
    pub training: Training,
}

impl TrainingRecord {
    pub fn parse(
        request: &RecordTrainingRequest,
        today: NaiveDate,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mentor_id = parse_id("mentor_id", &request.mentor_id, &mut violations);
        let fields = TrainingFields {
            cohort: &request.training_cohort,
            format: request.training_format,
            completed_on: &request.training_completed_on,
            safeguarding_trained_on: &request.safeguarding_trained_on,
            agreement_signed_on: &request.agreement_signed_on,
            vetted_on: &request.vetted_on,
        };
        if fields.is_empty() {
            violations.add(
                "request",
                "give at least one of training_cohort, training_format, training_completed_on, \
                 safeguarding_trained_on, agreement_signed_on or vetted_on",
            );
        }
        let training = fields.parse(today, &mut violations);
        finish(violations)?;
        Ok(Self {
            mentor_id: mentor_id.expect("validated"),
            training,
        })
    }

    /// `on_record` with what this request records laid over it.
    pub fn applied_to(&self, on_record: &Training) -> Training {
        let given = &self.training;
        Training {
            cohort: if given.cohort.is_empty() {
                on_record.cohort.clone()
            } else {
                given.cohort.clone()
            },
            format: if given.format == TrainingFormat::Unspecified {
                on_record.format
            } else {
                given.format
            },
            completed_on: given.completed_on.or(on_record.completed_on),
            safeguarding_trained_on: given
                .safeguarding_trained_on
                .or(on_record.safeguarding_trained_on),
            agreement_signed_on: given.agreement_signed_on.or(on_record.agreement_signed_on),
            vetted_on: given.vetted_on.or(on_record.vetted_on),
        }
    }
}

/// The details UpdateMentorDetails may change: the names its
/// `update_mask` takes.
pub const UPDATABLE: [&str; 8] = [
    "display_name",
    "gender",
    "age_band",
    "areas",
    "availability",
    "capacity",
    "lived_experience",
    "ex_service_user",
];

/// A valid UpdateMentorDetails request: `Some` for each detail its mask
/// names, with the value to set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MentorUpdate {
    pub mentor_id: Uuid,
    pub display_name: Option<String>,
    pub gender: Option<Gender>,
    pub age_band: Option<AgeBand>,
    pub areas: Option<Vec<String>>,
    pub availability: Option<Vec<Availability>>,
    pub capacity: Option<i32>,
    pub lived_experience: Option<Vec<LivedExperience>>,
    pub ex_service_user: Option<bool>,
}

impl MentorUpdate {
    /// Parses the fields the mask names, under the rules of a
    /// registration; the mask must name at least one of [`UPDATABLE`] and
    /// nothing else.
    pub fn parse(
        request: &UpdateMentorDetailsRequest,
        programme: &ProgrammeConfig,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mentor_id = parse_id("mentor_id", &request.mentor_id, &mut violations);
        let paths = request
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.as_slice())
            .unwrap_or_default();
        if paths.is_empty() {
            violations.add(
                "update_mask",
                format!("must name at least one of {}", UPDATABLE.join(", ")),
            );
        } else if paths.len() > MAX_LISTED {
            violations.add(
                "update_mask",
                format!("must have at most {MAX_LISTED} entries"),
            );
        } else if let Some(unknown) = paths
            .iter()
            .find(|path| !UPDATABLE.contains(&path.as_str()))
        {
            violations.add(
                "update_mask",
                format!(
                    "{:?} cannot be updated: name {}",
                    unknown.chars().take(MAX_SHORT_TEXT).collect::<String>(),
                    UPDATABLE.join(", ")
                ),
            );
        }
        let named = |field: &str| paths.iter().any(|path| path == field);
        let mut update = Self::default();
        if named("display_name") {
            check_text(
                "display_name",
                &request.display_name,
                true,
                MAX_SHORT_TEXT,
                &mut violations,
            );
            update.display_name = Some(request.display_name.trim().to_owned());
        }
        if named("gender") {
            update.gender = parse_enum("gender", request.gender, &mut violations);
        }
        if named("age_band") {
            update.age_band = Some(
                parse_optional_enum("age_band", request.age_band, &mut violations)
                    .unwrap_or_default(),
            );
        }
        if named("areas") {
            update.areas = Some(parse_areas(
                "areas",
                &request.areas,
                programme,
                &mut violations,
            ));
        }
        if named("availability") {
            update.availability = Some(parse_enum_list(
                "availability",
                &request.availability,
                &mut violations,
            ));
        }
        if named("capacity") {
            check_capacity(request.capacity, &mut violations);
            update.capacity = Some(request.capacity);
        }
        if named("lived_experience") {
            update.lived_experience = Some(parse_enum_list(
                "lived_experience",
                &request.lived_experience,
                &mut violations,
            ));
        }
        if named("ex_service_user") {
            update.ex_service_user = Some(request.ex_service_user);
        }
        finish(violations)?;
        update.mentor_id = mentor_id.expect("validated");
        Ok(update)
    }
}

pub(crate) fn finish(violations: FieldViolations) -> Result<(), FieldViolations> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// The filters of ListMentors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MentorFilter {
    /// `None` lists every area the caller works in; otherwise one of the
    /// programme's areas, in its registered spelling.
    pub area: Option<String>,
    /// `None` for every status.
    pub status: Option<MentorStatus>,
    /// Only the mentors who can be proposed now.
    pub available_for_proposal: bool,
}

impl MentorFilter {
    pub fn parse(
        request: &ListMentorsRequest,
        programme: &ProgrammeConfig,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let area = programme.optional_area("area", &request.area, &mut violations);
        let status = parse_optional_enum("status", request.status, &mut violations);
        finish(violations)?;
        Ok(Self {
            area,
            status,
            available_for_proposal: request.available_for_proposal,
        })
    }
}

/// A valid ProposeMatches request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposalQuery {
    pub referral_id: Uuid,
    pub limit: usize,
}

impl ProposalQuery {
    pub fn parse(request: &ProposeMatchesRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let limit = match request.limit {
            0 => DEFAULT_PROPOSALS,
            limit if (1..=MAX_PROPOSALS).contains(&limit) => limit as usize,
            _ => {
                violations.add("limit", format!("must be between 1 and {MAX_PROPOSALS}"));
                0
            }
        };
        finish(violations)?;
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            limit,
        })
    }
}

/// A valid ConfirmAllocation request: a referral and two different mentors,
/// in the order the coordinator named them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAllocation {
    pub referral_id: Uuid,
    pub mentor_ids: [Uuid; 2],
    /// Why, for a pair nobody proposed or a mentor from outside the
    /// client's area; `None` when not given.
    pub reason: Option<String>,
}

/// Exactly two different mentor IDs, in the order given.
pub fn parse_pair(
    field: &str,
    values: &[String],
    violations: &mut FieldViolations,
) -> Option<[Uuid; 2]> {
    if values.len() != 2 {
        violations.add(field, "must name exactly two mentors");
        return None;
    }
    let mut ids = Vec::new();
    for (index, value) in values.iter().enumerate() {
        if let Some(id) = parse_id(&format!("{field}[{index}]"), value, violations) {
            ids.push(id);
        }
    }
    match ids[..] {
        [a, b] if a == b => {
            violations.add(field, "must name two different mentors");
            None
        }
        [a, b] => Some([a, b]),
        _ => None,
    }
}

/// Longest reason for an allocation off the proposals.
pub const MAX_ALLOCATION_REASON: usize = 500;

impl NewAllocation {
    pub fn parse(request: &ConfirmAllocationRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let mentor_ids = parse_pair("mentor_ids", &request.mentor_ids, &mut violations);
        check_text(
            "reason",
            &request.reason,
            false,
            MAX_ALLOCATION_REASON,
            &mut violations,
        );
        finish(violations)?;
        let reason = request.reason.trim();
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            mentor_ids: mentor_ids.expect("validated"),
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
        })
    }
}

/// What EstimateWait is asked: an area, and the crimes the client
/// committed, which the safety exclusions weigh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitQuestion {
    pub area: String,
    pub perpetrator_of: Vec<CrimeType>,
}

impl WaitQuestion {
    pub fn parse(
        request: &EstimateWaitRequest,
        programme: &ProgrammeConfig,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let area = programme.check_area("area", &request.area, &mut violations);
        let perpetrator_of =
            parse_enum_list("perpetrator_of", &request.perpetrator_of, &mut violations);
        finish(violations)?;
        Ok(Self {
            area: area.expect("validated"),
            perpetrator_of,
        })
    }
}

/// What a mentor's row says about taking one more client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MentorLoad {
    pub status: i32,
    pub safeguarding_trained: bool,
    pub agreement_signed: bool,
    pub capacity: i32,
    pub current_clients: i32,
}

impl MentorLoad {
    /// Why this mentor cannot take another client, or `None` when they
    /// can: TRAINED (waiting for a first client) or ACTIVE, safeguarding
    /// training and a signed agreement on record, and a place free. The
    /// queries that list candidates (`db`) say the same in SQL.
    pub fn unavailable_because(&self) -> Option<&'static str> {
        match MentorStatus::try_from(self.status) {
            Ok(MentorStatus::Trained | MentorStatus::Active) => {}
            Ok(MentorStatus::Sabbatical) => return Some("is on sabbatical"),
            Ok(MentorStatus::Left) => return Some("has left"),
            Ok(MentorStatus::Declined) => return Some("declined to volunteer"),
            _ => return Some("is not active"),
        }
        if !self.safeguarding_trained {
            Some("has no safeguarding training")
        } else if !self.agreement_signed {
            Some("has not signed the mentor agreement")
        } else if self.current_clients >= self.capacity {
            Some("is at capacity")
        } else {
            None
        }
    }

    pub fn free_places(&self) -> i32 {
        (self.capacity - self.current_clients).max(0)
    }
}

/// Why a mentor working in `areas` cannot be allocated to a client of
/// `client_area`, or `None` when they can.
pub fn outside_client_area(areas: &[String], client_area: &str) -> Option<&'static str> {
    if areas.iter().any(|area| area == client_area) {
        None
    } else {
        Some("does not work in the client's area")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: FieldViolations) -> Vec<String> {
        violations.fields().map(str::to_owned).collect()
    }

    /// Darlington, South Durham, East Durham and North Durham.
    fn programme() -> ProgrammeConfig {
        ProgrammeConfig::default()
    }

    /// Look-alikes of registered areas, and an area nobody registered.
    const UNREGISTERED: [&str; 5] = [
        "Nowhere",
        "Darlington\u{200b}",
        "\u{200b}Darlington",
        "Darling ton",
        "Darlingtön",
    ];

    /// The day the tests run on: no recorded date may be later.
    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 20).unwrap()
    }

    fn parse(request: &RegisterMentorRequest) -> Result<NewMentor, FieldViolations> {
        NewMentor::parse(request, &programme(), today())
    }

    fn valid_mentor() -> RegisterMentorRequest {
        RegisterMentorRequest {
            display_name: " Mentor A ".into(),
            gender: Gender::Female as i32,
            areas: vec![" darlington ".into(), "East Durham".into()],
            lived_experience: vec![
                LivedExperience::AlcoholDependency as i32,
                LivedExperience::AlcoholDependency as i32,
                LivedExperience::MentalHealth as i32,
            ],
            capacity: 2,
            training_cohort: " 2026-03 ".into(),
            training_format: TrainingFormat::FiveEvenings as i32,
            training_completed_on: "2026-03-12".into(),
            safeguarding_trained_on: "2026-03-05".into(),
            agreement_signed_on: " 2026-03-20 ".into(),
            vetted_on: "2025-11-30".into(),
            age_band: AgeBand::Aged45To54 as i32,
            availability: vec![
                Availability::WeekdayEvenings as i32,
                Availability::Weekends as i32,
                Availability::WeekdayEvenings as i32,
            ],
            ex_service_user: true,
            ..Default::default()
        }
    }

    fn date(text: &str) -> Option<NaiveDate> {
        Some(NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn a_valid_mentor_parses_trimmed_and_deduplicated() {
        let mentor = parse(&valid_mentor()).unwrap();
        assert_eq!(mentor.display_name, "Mentor A");
        assert_eq!(mentor.areas, ["Darlington", "East Durham"]);
        assert_eq!(mentor.area(), "Darlington", "the first is the primary area");
        assert_eq!(
            mentor.lived_experience,
            [
                LivedExperience::AlcoholDependency,
                LivedExperience::MentalHealth
            ]
        );
        assert_eq!(
            mentor.availability,
            [Availability::WeekdayEvenings, Availability::Weekends]
        );
        assert_eq!(mentor.age_band, AgeBand::Aged45To54);
        assert!(mentor.ex_service_user);
        assert_eq!(
            mentor.training,
            Training {
                cohort: "2026-03".into(),
                format: TrainingFormat::FiveEvenings,
                completed_on: date("2026-03-12"),
                safeguarding_trained_on: date("2026-03-05"),
                agreement_signed_on: date("2026-03-20"),
                vetted_on: date("2025-11-30"),
            }
        );
        assert_eq!(INITIAL_STATUS, MentorStatus::Trained);
    }

    #[test]
    fn training_age_band_and_availability_may_be_left_unrecorded() {
        let request = RegisterMentorRequest {
            display_name: "Mentor B".into(),
            gender: Gender::Male as i32,
            areas: vec!["Darlington".into()],
            capacity: 1,
            ..Default::default()
        };
        let mentor = parse(&request).unwrap();
        assert_eq!(mentor.training, Training::default());
        assert_eq!(mentor.age_band, AgeBand::Unspecified);
        assert!(mentor.availability.is_empty());
        assert!(!mentor.ex_service_user);
    }

    #[test]
    fn a_single_area_is_taken_from_area_when_areas_is_empty() {
        let mut request = valid_mentor();
        request.areas.clear();
        request.area = "EAST DURHAM".into();
        assert_eq!(parse(&request).unwrap().areas, ["East Durham"]);
        request.areas = vec!["Darlington".into()];
        assert_eq!(fields(parse(&request).unwrap_err()), ["area"], "not both");
        request.area = String::new();
        request.areas.clear();
        assert_eq!(fields(parse(&request).unwrap_err()), ["areas"], "neither");
    }

    #[test]
    fn a_mentor_s_areas_are_registered_ones_in_their_registered_spelling() {
        let mut request = valid_mentor();
        request.areas = vec!["EAST DURHAM".into(), "east durham".into()];
        assert_eq!(parse(&request).unwrap().areas, ["East Durham"], "once");
        for area in UNREGISTERED {
            request.areas = vec!["Darlington".into(), area.into()];
            assert_eq!(
                fields(parse(&request).unwrap_err()),
                ["areas[1]"],
                "{area:?}"
            );
            request.areas.clear();
            request.area = area.into();
            assert_eq!(fields(parse(&request).unwrap_err()), ["area"], "{area:?}");
            request.area = String::new();
        }
    }

    #[test]
    fn a_mentor_works_in_at_most_five_areas() {
        let mut request = valid_mentor();
        request.areas = vec!["Darlington".into(); MAX_AREAS];
        assert!(parse(&request).is_ok());
        request.areas = vec!["Darlington".into(); MAX_AREAS + 1];
        assert_eq!(fields(parse(&request).unwrap_err()), ["areas"]);
        request.areas = vec!["\u{202e}".repeat(10); 100_000];
        assert_eq!(
            fields(parse(&request).unwrap_err()),
            ["areas"],
            "a flood is one violation"
        );
    }

    #[test]
    fn dates_are_real_past_days_since_2000() {
        let with = |value: &str| RegisterMentorRequest {
            training_completed_on: value.into(),
            safeguarding_trained_on: value.into(),
            agreement_signed_on: value.into(),
            vetted_on: value.into(),
            ..valid_mentor()
        };
        let all_dates = [
            "training_completed_on",
            "safeguarding_trained_on",
            "agreement_signed_on",
            "vetted_on",
        ];
        for bad in [
            "2026-03-21", // tomorrow
            "2999-01-01",
            "1999-12-31", // before 2000
            "2026-02-30",
            "20/03/2026",
            "2026-3-5x",
            "yesterday",
            "2026-03-20\u{200b}",
        ] {
            assert_eq!(fields(parse(&with(bad)).unwrap_err()), all_dates, "{bad:?}");
        }
        for good in ["2026-03-20", "2000-01-01", " 2024-02-29 ", ""] {
            assert!(parse(&with(good)).is_ok(), "{good:?}");
        }
        let future = parse(&with("2026-03-21")).unwrap_err();
        assert!(format!("{future:?}").contains("future"), "{future:?}");
    }

    #[test]
    fn the_cohort_is_short_visible_text_and_enums_are_known_values() {
        let mut request = valid_mentor();
        request.training_cohort = "x".repeat(MAX_COHORT + 1);
        request.training_format = 9;
        request.age_band = 42;
        assert_eq!(
            fields(parse(&request).unwrap_err()),
            ["age_band", "training_cohort", "training_format"]
        );
        request = valid_mentor();
        request.training_cohort = "2026\u{202e}03".into();
        assert_eq!(fields(parse(&request).unwrap_err()), ["training_cohort"]);
        request.training_cohort = "x".repeat(MAX_COHORT);
        assert!(parse(&request).is_ok());
    }

    #[test]
    fn availability_is_known_values_and_a_flood_is_one_violation() {
        let mut request = valid_mentor();
        request.availability = vec![Availability::Weekends as i32, 0, 17];
        assert_eq!(
            fields(parse(&request).unwrap_err()),
            ["availability[1]", "availability[2]"]
        );
        request.availability = vec![1; MAX_LISTED + 1];
        assert_eq!(fields(parse(&request).unwrap_err()), ["availability"]);
    }

    #[test]
    fn a_flood_of_lived_experience_is_one_violation() {
        let mut request = valid_mentor();
        request.lived_experience = vec![999; 250_000];
        assert_eq!(fields(parse(&request).unwrap_err()), ["lived_experience"]);
        request.lived_experience = vec![LivedExperience::Debt as i32; MAX_LISTED];
        assert!(parse(&request).is_ok());
    }

    #[test]
    fn every_mentor_violation_is_reported_at_once() {
        let request = RegisterMentorRequest {
            display_name: "  ".into(),
            gender: 0,
            lived_experience: vec![0, 999, LivedExperience::Debt as i32],
            capacity: 0,
            age_band: -1,
            availability: vec![99],
            training_cohort: "\0".into(),
            training_format: -3,
            training_completed_on: "soon".into(),
            safeguarding_trained_on: "2027-01-01".into(),
            agreement_signed_on: "1990-01-01".into(),
            vetted_on: "2026-13-01".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(parse(&request).unwrap_err()),
            [
                "display_name",
                "gender",
                "areas",
                "lived_experience[0]",
                "lived_experience[1]",
                "capacity",
                "age_band",
                "availability[0]",
                "training_cohort",
                "training_format",
                "training_completed_on",
                "safeguarding_trained_on",
                "agreement_signed_on",
                "vetted_on",
            ]
        );
    }

    #[test]
    fn mentor_text_length_gender_and_capacity_bounds_are_enforced() {
        let mut request = valid_mentor();
        request.display_name = "x".repeat(MAX_SHORT_TEXT + 1);
        request.areas = vec!["y".repeat(MAX_SHORT_TEXT + 1)];
        request.gender = 42;
        request.capacity = MAX_CAPACITY + 1;
        assert_eq!(
            fields(parse(&request).unwrap_err()),
            ["display_name", "gender", "areas[0]", "capacity"]
        );
        request = valid_mentor();
        request.capacity = -1;
        assert_eq!(fields(parse(&request).unwrap_err()), ["capacity"]);
        for capacity in 1..=MAX_CAPACITY {
            request.capacity = capacity;
            assert!(parse(&request).is_ok());
        }
    }

    fn record(request: RecordTrainingRequest) -> Result<TrainingRecord, FieldViolations> {
        TrainingRecord::parse(&request, today())
    }

    #[test]
    fn recording_training_needs_a_mentor_and_at_least_one_thing_to_record() {
        let mentor_id = Uuid::now_v7();
        let agreement = record(RecordTrainingRequest {
            mentor_id: mentor_id.to_string(),
            agreement_signed_on: "2026-03-19".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(agreement.mentor_id, mentor_id);
        assert_eq!(
            agreement.training,
            Training {
                agreement_signed_on: date("2026-03-19"),
                ..Training::default()
            }
        );
        assert_eq!(
            fields(record(RecordTrainingRequest::default()).unwrap_err()),
            ["mentor_id", "request"]
        );
        assert_eq!(
            fields(
                record(RecordTrainingRequest {
                    mentor_id: "nobody".into(),
                    training_cohort: "  ".into(),
                    vetted_on: " ".into(),
                    ..Default::default()
                })
                .unwrap_err()
            ),
            ["mentor_id", "request"],
            "blanks record nothing"
        );
        assert_eq!(
            fields(
                record(RecordTrainingRequest {
                    mentor_id: mentor_id.to_string(),
                    training_format: 7,
                    safeguarding_trained_on: "2026-03-21".into(),
                    agreement_signed_on: "1999-12-31".into(),
                    ..Default::default()
                })
                .unwrap_err()
            ),
            [
                "training_format",
                "safeguarding_trained_on",
                "agreement_signed_on"
            ]
        );
    }

    #[test]
    fn a_training_record_keeps_what_it_leaves_out() {
        let on_record = Training {
            cohort: "2025-09".into(),
            format: TrainingFormat::TwoDays,
            completed_on: date("2025-09-14"),
            safeguarding_trained_on: date("2025-09-20"),
            agreement_signed_on: None,
            vetted_on: date("2025-08-01"),
        };
        let record = record(RecordTrainingRequest {
            mentor_id: Uuid::now_v7().to_string(),
            agreement_signed_on: "2026-01-10".into(),
            vetted_on: "2026-01-02".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            record.applied_to(&on_record),
            Training {
                agreement_signed_on: date("2026-01-10"),
                vetted_on: date("2026-01-02"),
                ..on_record.clone()
            }
        );
        let cohort = TrainingRecord {
            mentor_id: Uuid::now_v7(),
            training: Training {
                cohort: "2026-03".into(),
                format: TrainingFormat::FiveEvenings,
                ..Training::default()
            },
        };
        let applied = cohort.applied_to(&on_record);
        assert_eq!(
            (applied.cohort.as_str(), applied.format),
            ("2026-03", TrainingFormat::FiveEvenings)
        );
        assert_eq!(applied.completed_on, on_record.completed_on);
    }

    fn update(
        paths: &[&str],
        mut request: UpdateMentorDetailsRequest,
    ) -> Result<MentorUpdate, FieldViolations> {
        request
            .update_mask
            .get_or_insert_with(Default::default)
            .paths = paths.iter().map(|path| (*path).to_owned()).collect();
        MentorUpdate::parse(&request, &programme())
    }

    fn full_update(mentor_id: Uuid) -> UpdateMentorDetailsRequest {
        UpdateMentorDetailsRequest {
            mentor_id: mentor_id.to_string(),
            display_name: " Mentor C ".into(),
            gender: Gender::NonBinary as i32,
            age_band: AgeBand::Aged25To34 as i32,
            areas: vec!["north durham".into(), "Darlington".into()],
            availability: vec![Availability::WeekdayMornings as i32],
            capacity: 3,
            lived_experience: vec![LivedExperience::Carer as i32],
            ex_service_user: true,
            update_mask: None,
        }
    }

    #[test]
    fn an_update_sets_only_what_its_mask_names() {
        let id = Uuid::now_v7();
        let parsed = update(&["capacity", "areas"], full_update(id)).unwrap();
        assert_eq!(
            parsed,
            MentorUpdate {
                mentor_id: id,
                areas: Some(vec!["North Durham".into(), "Darlington".into()]),
                capacity: Some(3),
                ..MentorUpdate::default()
            }
        );
        let everything = update(&UPDATABLE, full_update(id)).unwrap();
        assert_eq!(everything.display_name.as_deref(), Some("Mentor C"));
        assert_eq!(everything.gender, Some(Gender::NonBinary));
        assert_eq!(everything.age_band, Some(AgeBand::Aged25To34));
        assert_eq!(
            everything.availability,
            Some(vec![Availability::WeekdayMornings])
        );
        assert_eq!(
            everything.lived_experience,
            Some(vec![LivedExperience::Carer])
        );
        assert_eq!(everything.ex_service_user, Some(true));
        // Named and empty clears: no lived experience, no age band, not an ex-service user.
        let cleared = update(
            &[
                "lived_experience",
                "age_band",
                "ex_service_user",
                "availability",
            ],
            UpdateMentorDetailsRequest {
                mentor_id: id.to_string(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cleared.lived_experience, Some(vec![]));
        assert_eq!(cleared.availability, Some(vec![]));
        assert_eq!(cleared.age_band, Some(AgeBand::Unspecified));
        assert_eq!(cleared.ex_service_user, Some(false));
    }

    #[test]
    fn an_update_refuses_a_missing_or_unknown_mask_and_bad_values_it_names() {
        let id = Uuid::now_v7();
        let no_mask = MentorUpdate::parse(&full_update(id), &programme()).unwrap_err();
        assert_eq!(fields(no_mask), ["update_mask"]);
        assert_eq!(
            fields(update(&[], full_update(id)).unwrap_err()),
            ["update_mask"]
        );
        for unknown in [
            "status",
            "safeguarding_trained_on",
            "displayName",
            "area",
            "",
        ] {
            assert_eq!(
                fields(update(&["capacity", unknown], full_update(id)).unwrap_err()),
                ["update_mask"],
                "{unknown:?}"
            );
        }
        let flood = vec!["capacity"; MAX_LISTED + 1];
        assert_eq!(
            fields(update(&flood, full_update(id)).unwrap_err()),
            ["update_mask"]
        );
        let bad = UpdateMentorDetailsRequest {
            mentor_id: "x".into(),
            display_name: "\u{200b}".into(),
            gender: 0,
            age_band: 12,
            areas: vec![],
            availability: vec![0],
            capacity: 6,
            lived_experience: vec![100],
            ex_service_user: false,
            update_mask: None,
        };
        assert_eq!(
            fields(update(&UPDATABLE, bad.clone()).unwrap_err()),
            [
                "mentor_id",
                "display_name",
                "gender",
                "age_band",
                "areas",
                "availability[0]",
                "capacity",
                "lived_experience[0]"
            ]
        );
        // What the mask leaves out is not looked at.
        assert!(
            update(
                &["ex_service_user"],
                UpdateMentorDetailsRequest {
                    mentor_id: id.to_string(),
                    ..bad
                }
            )
            .is_ok()
        );
        let mut unregistered = full_update(id);
        unregistered.areas = vec!["Darlington".into(), "Nowhere".into()];
        assert_eq!(
            fields(update(&["areas"], unregistered).unwrap_err()),
            ["areas[1]"]
        );
    }

    #[test]
    fn the_list_filters_are_optional_but_a_registered_area_and_a_known_status() {
        let filter = |area: &str, status: i32| {
            MentorFilter::parse(
                &ListMentorsRequest {
                    area: area.into(),
                    status,
                    available_for_proposal: true,
                    ..Default::default()
                },
                &programme(),
            )
        };
        assert_eq!(
            filter("", 0).unwrap(),
            MentorFilter {
                area: None,
                status: None,
                available_for_proposal: true
            }
        );
        assert_eq!(filter("  ", 0).unwrap().area, None);
        let south = filter(" south durham ", MentorStatus::Sabbatical as i32).unwrap();
        assert_eq!(south.area.as_deref(), Some("South Durham"));
        assert_eq!(south.status, Some(MentorStatus::Sabbatical));
        assert_eq!(
            fields(filter(&"z".repeat(MAX_SHORT_TEXT + 1), 0).unwrap_err()),
            ["area"]
        );
        assert_eq!(
            fields(filter("Nowhere", 9).unwrap_err()),
            ["area", "status"]
        );
        for area in UNREGISTERED {
            assert_eq!(fields(filter(area, 0).unwrap_err()), ["area"], "{area:?}");
        }
    }
    #[test]
    fn proposal_limits_default_and_are_bounded() {
        let referral_id = Uuid::now_v7().to_string();
        let query = |limit| ProposeMatchesRequest {
            referral_id: referral_id.clone(),
            limit,
        };
        assert_eq!(
            ProposalQuery::parse(&query(0)).unwrap().limit,
            DEFAULT_PROPOSALS
        );
        assert_eq!(ProposalQuery::parse(&query(20)).unwrap().limit, 20);
        assert_eq!(
            fields(ProposalQuery::parse(&query(21)).unwrap_err()),
            ["limit"]
        );
        assert_eq!(
            fields(ProposalQuery::parse(&query(-1)).unwrap_err()),
            ["limit"]
        );
        let bad = ProposeMatchesRequest {
            referral_id: "nope".into(),
            limit: 99,
        };
        assert_eq!(
            fields(ProposalQuery::parse(&bad).unwrap_err()),
            ["referral_id", "limit"]
        );
        let missing = ProposeMatchesRequest::default();
        assert_eq!(
            fields(ProposalQuery::parse(&missing).unwrap_err()),
            ["referral_id"]
        );
    }

    #[test]
    fn an_allocation_names_a_referral_and_two_different_mentors() {
        let referral_id = Uuid::now_v7();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let request = ConfirmAllocationRequest {
            referral_id: referral_id.to_string(),
            mentor_ids: vec![b.to_string(), a.to_string()],
            reason: String::new(),
        };
        let parsed = NewAllocation::parse(&request).unwrap();
        assert_eq!(parsed.referral_id, referral_id);
        assert_eq!(parsed.mentor_ids, [b, a], "the coordinator's order is kept");
        assert_eq!(parsed.reason, None, "no reason given");
        let with_reason = NewAllocation::parse(&ConfirmAllocationRequest {
            reason: "  they asked for Sam  ".into(),
            ..request.clone()
        })
        .unwrap();
        assert_eq!(with_reason.reason.as_deref(), Some("they asked for Sam"));
        for bad in ["x".repeat(MAX_ALLOCATION_REASON + 1), "a\u{0}b".into()] {
            let refused = NewAllocation::parse(&ConfirmAllocationRequest {
                reason: bad,
                ..request.clone()
            })
            .unwrap_err();
            assert_eq!(fields(refused), ["reason"]);
        }
    }

    #[test]
    fn allocation_rejections_name_their_fields() {
        let a = Uuid::now_v7().to_string();
        let parse = |referral_id: &str, mentor_ids: Vec<String>| {
            fields(
                NewAllocation::parse(&ConfirmAllocationRequest {
                    referral_id: referral_id.into(),
                    mentor_ids,
                    reason: String::new(),
                })
                .unwrap_err(),
            )
        };
        let referral_id = Uuid::now_v7().to_string();
        assert_eq!(parse(&referral_id, vec![]), ["mentor_ids"]);
        assert_eq!(parse(&referral_id, vec![a.clone()]), ["mentor_ids"]);
        assert_eq!(
            parse(&referral_id, vec![a.clone(), a.clone(), a.clone()]),
            ["mentor_ids"]
        );
        assert_eq!(
            parse(&referral_id, vec![a.clone(), a.clone()]),
            ["mentor_ids"]
        );
        assert_eq!(
            parse(&referral_id, vec!["x".into(), String::new()]),
            ["mentor_ids[0]", "mentor_ids[1]"]
        );
        assert_eq!(
            parse("", vec![a.clone(), "bad".into()]),
            ["referral_id", "mentor_ids[1]"]
        );
    }

    #[test]
    fn the_wait_area_is_required_and_a_registered_area() {
        let wait = |area: &str| {
            WaitQuestion::parse(
                &EstimateWaitRequest {
                    area: area.into(),
                    ..Default::default()
                },
                &programme(),
            )
            .map(|question| question.area)
        };
        assert_eq!(wait(" north DURHAM ").unwrap(), "North Durham");
        assert_eq!(fields(wait(" ").unwrap_err()), ["area"]);
        assert_eq!(fields(wait(&"a".repeat(201)).unwrap_err()), ["area"]);
        for area in UNREGISTERED {
            assert_eq!(fields(wait(area).unwrap_err()), ["area"], "{area:?}");
        }
    }

    #[test]
    fn the_crimes_a_wait_is_asked_for_are_known_values_and_few() {
        let ask = |perpetrator_of: Vec<i32>| {
            WaitQuestion::parse(
                &EstimateWaitRequest {
                    area: "North Durham".into(),
                    perpetrator_of,
                },
                &programme(),
            )
        };
        let rape = CrimeType::Rape as i32;
        assert_eq!(
            ask(vec![rape, rape]).unwrap().perpetrator_of,
            [CrimeType::Rape]
        );
        assert_eq!(
            fields(ask(vec![rape, 0]).unwrap_err()),
            ["perpetrator_of[1]"]
        );
        assert_eq!(
            fields(ask(vec![rape, 999]).unwrap_err()),
            ["perpetrator_of[1]"]
        );
        assert_eq!(
            fields(ask(vec![rape; MAX_LISTED + 1]).unwrap_err()),
            ["perpetrator_of"]
        );
    }

    #[test]
    fn only_trained_or_active_mentors_with_safeguarding_an_agreement_and_room_are_available() {
        let load = MentorLoad {
            status: MentorStatus::Trained as i32,
            safeguarding_trained: true,
            agreement_signed: true,
            capacity: 2,
            current_clients: 1,
        };
        assert_eq!(
            load.unavailable_because(),
            None,
            "waiting for a first client"
        );
        let active = MentorLoad {
            status: MentorStatus::Active as i32,
            ..load
        };
        assert_eq!(active.unavailable_because(), None);
        assert_eq!(load.free_places(), 1);
        let full = MentorLoad {
            current_clients: 2,
            ..load
        };
        assert_eq!(full.unavailable_because(), Some("is at capacity"));
        assert_eq!(full.free_places(), 0);
        let untrained = MentorLoad {
            safeguarding_trained: false,
            ..load
        };
        assert_eq!(
            untrained.unavailable_because(),
            Some("has no safeguarding training")
        );
        let unsigned = MentorLoad {
            agreement_signed: false,
            ..active
        };
        assert_eq!(
            unsigned.unavailable_because(),
            Some("has not signed the mentor agreement")
        );
        for (status, reason) in [
            (MentorStatus::Sabbatical, "is on sabbatical"),
            (MentorStatus::Left, "has left"),
            (MentorStatus::Declined, "declined to volunteer"),
            (MentorStatus::Unspecified, "is not active"),
        ] {
            let unavailable = MentorLoad {
                status: status as i32,
                ..load
            };
            assert_eq!(unavailable.unavailable_because(), Some(reason));
        }
    }

    #[test]
    fn a_mentor_is_allocated_only_in_an_area_they_work_in() {
        let areas = ["Darlington".to_owned(), "East Durham".to_owned()];
        assert_eq!(outside_client_area(&areas, "East Durham"), None);
        assert_eq!(outside_client_area(&areas, "Darlington"), None);
        assert_eq!(
            outside_client_area(&areas, "North Durham"),
            Some("does not work in the client's area")
        );
    }

    mod properties {
        use super::*;
        use cpm_runtime::grpc::values::is_hidden;
        use proptest::prelude::*;

        proptest! {
            /// Any registration: parsing never panics; an accepted mentor has
            /// a capacity in bounds, known experience without repeats, no
            /// hidden character in their name, 1 to 5 registered areas in
            /// their registered spelling, and no date after today.
            #[test]
            fn any_mentor_parses_or_is_refused_cleanly(
                display_name in any::<String>(),
                areas in proptest::collection::vec(prop_oneof![
                    any::<String>(),
                    "[A-Za-z]{1,12}",
                    "[ ]{0,2}(darlington|East Durham|SOUTH durham)[ ]{0,2}",
                ], 0..8),
                gender in any::<i32>(),
                lived_experience in proptest::collection::vec(any::<i32>(), 0..64),
                capacity in any::<i32>(),
                dates in proptest::collection::vec(prop_oneof![
                    any::<String>(),
                    "(19|20|21)[0-9]{2}-[01][0-9]-[0-3][0-9]",
                ], 4),
            ) {
                let request = RegisterMentorRequest {
                    display_name,
                    areas,
                    gender,
                    lived_experience,
                    capacity,
                    training_completed_on: dates[0].clone(),
                    safeguarding_trained_on: dates[1].clone(),
                    agreement_signed_on: dates[2].clone(),
                    vetted_on: dates[3].clone(),
                    ..valid_mentor()
                };
                match parse(&request) {
                    Ok(mentor) => {
                        prop_assert!((1..=MAX_CAPACITY).contains(&mentor.capacity));
                        prop_assert!(mentor.lived_experience.len() <= MAX_LISTED);
                        let mut unique = mentor.lived_experience.clone();
                        unique.sort_by_key(|experience| *experience as i32);
                        unique.dedup();
                        prop_assert_eq!(unique.len(), mentor.lived_experience.len());
                        prop_assert!(!mentor.display_name.chars().any(is_hidden));
                        prop_assert!((1..=MAX_AREAS).contains(&mentor.areas.len()));
                        for area in &mentor.areas {
                            prop_assert!(programme().areas.contains(area));
                        }
                        let training = &mentor.training;
                        for date in [
                            training.completed_on,
                            training.safeguarding_trained_on,
                            training.agreement_signed_on,
                            training.vetted_on,
                        ].into_iter().flatten() {
                            prop_assert!(date <= today() && date >= earliest_date());
                        }
                    }
                    Err(violations) => prop_assert!(!violations.is_empty()),
                }
            }
        }
    }
}
