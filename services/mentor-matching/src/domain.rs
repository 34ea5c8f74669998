//! Requests parsed at the edge into domain values, collecting every
//! violation at once, and the rules of the mentor register: which status a
//! new mentor starts in, who can take a client, and how long a client waits.
//! An area a request names must be one of the programme's
//! ([`ProgrammeConfig`]) and is kept in its registered spelling, so a
//! look-alike (a zero-width space, another letter case) can neither put a
//! mentor where nobody looks nor slip past a filter.

use cpm_proto::v1::{
    ConfirmAllocationRequest, EstimateWaitRequest, Gender, ListMentorsRequest, LivedExperience,
    MentorStatus, ProposeMatchesRequest, RegisterMentorRequest,
};
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::values::{check_entries, check_text, parse_enum, parse_id};
use uuid::Uuid;

/// Longest display name.
pub const MAX_SHORT_TEXT: usize = 200;
/// Most clients one mentor supports at once.
pub const MAX_CAPACITY: i32 = 5;
/// Proposals returned when the request names no limit.
pub const DEFAULT_PROPOSALS: usize = 5;
/// Most proposals one request may ask for.
pub const MAX_PROPOSALS: i32 = 20;
/// Days one round of allocation is expected to take in an area.
pub const DAYS_PER_ROUND: i64 = 14;
/// Every client is supported by a pair of mentors.
pub const MENTORS_PER_CLIENT: i64 = 2;

/// A valid mentor registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMentor {
    pub display_name: String,
    pub gender: Gender,
    /// One of the programme's areas, in its registered spelling.
    pub area: String,
    pub lived_experience: Vec<LivedExperience>,
    pub safeguarding_trained: bool,
    pub capacity: i32,
}

/// The most entries a list field may have: more than the vocabulary holds,
/// so repeats pass, yet a flood is refused without reading it.
pub const MAX_LISTED: usize = 32;

impl NewMentor {
    /// Parses a registration; its area must be one of `programme`'s.
    pub fn parse(
        request: &RegisterMentorRequest,
        programme: &ProgrammeConfig,
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
        let area = programme.check_area("area", &request.area, &mut violations);
        let mut lived_experience = Vec::new();
        let listed = check_entries(
            "lived_experience",
            &request.lived_experience,
            MAX_LISTED,
            &mut violations,
        );
        for (index, value) in request
            .lived_experience
            .iter()
            .enumerate()
            .filter(|_| listed)
        {
            let field = format!("lived_experience[{index}]");
            if let Some(experience) = parse_enum::<LivedExperience>(&field, *value, &mut violations)
                && !lived_experience.contains(&experience)
            {
                lived_experience.push(experience);
            }
        }
        if !(1..=MAX_CAPACITY).contains(&request.capacity) {
            violations.add("capacity", format!("must be between 1 and {MAX_CAPACITY}"));
        }
        finish(violations)?;
        Ok(Self {
            display_name: request.display_name.trim().to_owned(),
            gender: gender.expect("validated"),
            area: area.expect("validated"),
            lived_experience,
            safeguarding_trained: request.safeguarding_trained,
            capacity: request.capacity,
        })
    }

    /// A mentor without safeguarding training stays TRAINED and is never
    /// proposed; with it, the mentor is ACTIVE and can be paired at once.
    pub fn initial_status(&self) -> MentorStatus {
        if self.safeguarding_trained {
            MentorStatus::Active
        } else {
            MentorStatus::Trained
        }
    }
}

fn finish(violations: FieldViolations) -> Result<(), FieldViolations> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// The area filter of ListMentors: `None` (empty) lists every area the
/// caller works in; otherwise one of `programme`'s areas, in its
/// registered spelling.
pub fn parse_area_filter(
    request: &ListMentorsRequest,
    programme: &ProgrammeConfig,
) -> Result<Option<String>, FieldViolations> {
    if request.area.trim().is_empty() {
        return Ok(None);
    }
    let mut violations = FieldViolations::new();
    let area = programme.check_area("area", &request.area, &mut violations);
    finish(violations)?;
    Ok(area)
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
}

impl NewAllocation {
    pub fn parse(request: &ConfirmAllocationRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let mut mentor_ids = Vec::new();
        if request.mentor_ids.len() != 2 {
            violations.add("mentor_ids", "must name exactly two mentors");
        } else {
            for (index, value) in request.mentor_ids.iter().enumerate() {
                if let Some(id) = parse_id(&format!("mentor_ids[{index}]"), value, &mut violations)
                {
                    mentor_ids.push(id);
                }
            }
            if mentor_ids.len() == 2 && mentor_ids[0] == mentor_ids[1] {
                violations.add("mentor_ids", "must name two different mentors");
            }
        }
        finish(violations)?;
        Ok(Self {
            referral_id: referral_id.expect("validated"),
            mentor_ids: [mentor_ids[0], mentor_ids[1]],
        })
    }
}

/// The area of an EstimateWait request: one of `programme`'s areas, in
/// its registered spelling.
pub fn parse_wait_area(
    request: &EstimateWaitRequest,
    programme: &ProgrammeConfig,
) -> Result<String, FieldViolations> {
    let mut violations = FieldViolations::new();
    let area = programme.check_area("area", &request.area, &mut violations);
    finish(violations)?;
    Ok(area.expect("validated"))
}

/// What a mentor's row says about taking one more client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MentorLoad {
    pub status: i32,
    pub safeguarding_trained: bool,
    pub capacity: i32,
    pub current_clients: i32,
}

impl MentorLoad {
    /// Why this mentor cannot take another client, or `None` when they can.
    pub fn unavailable_because(&self) -> Option<&'static str> {
        if self.status != MentorStatus::Active as i32 {
            Some("is not active")
        } else if !self.safeguarding_trained {
            Some("has no safeguarding training")
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

/// The wait for a newly accepted client in an area.
///
/// Each client needs a pair, so the free mentor places in the area give
/// `free_places / 2` free pairs. When there are more free pairs than
/// clients already waiting, one is left for the new client and the wait is
/// 0 days. Otherwise the new client waits one round of [`DAYS_PER_ROUND`]
/// days, plus one round for each waiting client the free pairs cannot
/// cover: `14 × (1 + clients_waiting − free_pairs)`.
pub fn estimated_wait_days(clients_waiting: i64, free_mentor_places: i64) -> i32 {
    let clients_waiting = clients_waiting.max(0);
    let free_pairs = free_mentor_places.max(0) / MENTORS_PER_CLIENT;
    if free_pairs > clients_waiting {
        return 0;
    }
    let days = DAYS_PER_ROUND.saturating_mul((clients_waiting - free_pairs).saturating_add(1));
    i32::try_from(days).unwrap_or(i32::MAX)
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

    fn valid_mentor() -> RegisterMentorRequest {
        RegisterMentorRequest {
            display_name: " Mentor A ".into(),
            gender: Gender::Female as i32,
            area: " darlington ".into(),
            lived_experience: vec![
                LivedExperience::AlcoholDependency as i32,
                LivedExperience::AlcoholDependency as i32,
                LivedExperience::MentalHealth as i32,
            ],
            safeguarding_trained: true,
            capacity: 2,
        }
    }

    #[test]
    fn a_valid_mentor_parses_trimmed_and_deduplicated() {
        let mentor = NewMentor::parse(&valid_mentor(), &programme()).unwrap();
        assert_eq!(mentor.display_name, "Mentor A");
        assert_eq!(mentor.area, "Darlington");
        assert_eq!(
            mentor.lived_experience,
            [
                LivedExperience::AlcoholDependency,
                LivedExperience::MentalHealth
            ]
        );
        assert_eq!(mentor.initial_status(), MentorStatus::Active);
    }

    #[test]
    fn a_mentor_s_area_is_a_registered_one_in_its_registered_spelling() {
        let mut request = valid_mentor();
        request.area = "EAST DURHAM".into();
        assert_eq!(
            NewMentor::parse(&request, &programme()).unwrap().area,
            "East Durham"
        );
        for area in UNREGISTERED {
            request.area = area.into();
            assert_eq!(
                fields(NewMentor::parse(&request, &programme()).unwrap_err()),
                ["area"],
                "{area:?}"
            );
        }
    }

    #[test]
    fn a_mentor_without_safeguarding_training_stays_trained() {
        let mut request = valid_mentor();
        request.safeguarding_trained = false;
        assert_eq!(
            NewMentor::parse(&request, &programme())
                .unwrap()
                .initial_status(),
            MentorStatus::Trained
        );
    }

    #[test]
    fn a_flood_of_lived_experience_is_one_violation() {
        let mut request = valid_mentor();
        request.lived_experience = vec![999; 250_000];
        assert_eq!(
            fields(NewMentor::parse(&request, &programme()).unwrap_err()),
            ["lived_experience"]
        );
        request.lived_experience = vec![LivedExperience::Debt as i32; MAX_LISTED];
        assert!(NewMentor::parse(&request, &programme()).is_ok());
    }

    #[test]
    fn every_mentor_violation_is_reported_at_once() {
        let request = RegisterMentorRequest {
            display_name: "  ".into(),
            gender: 0,
            area: String::new(),
            lived_experience: vec![0, 999, LivedExperience::Debt as i32],
            safeguarding_trained: true,
            capacity: 0,
        };
        assert_eq!(
            fields(NewMentor::parse(&request, &programme()).unwrap_err()),
            [
                "display_name",
                "gender",
                "area",
                "lived_experience[0]",
                "lived_experience[1]",
                "capacity"
            ]
        );
    }

    #[test]
    fn mentor_text_length_gender_and_capacity_bounds_are_enforced() {
        let mut request = valid_mentor();
        request.display_name = "x".repeat(MAX_SHORT_TEXT + 1);
        request.area = "y".repeat(MAX_SHORT_TEXT + 1);
        request.gender = 42;
        request.capacity = MAX_CAPACITY + 1;
        assert_eq!(
            fields(NewMentor::parse(&request, &programme()).unwrap_err()),
            ["display_name", "gender", "area", "capacity"]
        );
        request = valid_mentor();
        request.capacity = -1;
        assert_eq!(
            fields(NewMentor::parse(&request, &programme()).unwrap_err()),
            ["capacity"]
        );
        for capacity in 1..=MAX_CAPACITY {
            request.capacity = capacity;
            assert!(NewMentor::parse(&request, &programme()).is_ok());
        }
    }

    #[test]
    fn the_area_filter_is_optional_but_a_registered_area() {
        let filter = |area: &str| {
            parse_area_filter(
                &ListMentorsRequest {
                    area: area.into(),
                    ..Default::default()
                },
                &programme(),
            )
        };
        assert_eq!(filter("").unwrap(), None);
        assert_eq!(filter("  ").unwrap(), None);
        assert_eq!(
            filter(" south durham ").unwrap().as_deref(),
            Some("South Durham")
        );
        assert_eq!(
            fields(filter(&"z".repeat(MAX_SHORT_TEXT + 1)).unwrap_err()),
            ["area"]
        );
        for area in UNREGISTERED {
            assert_eq!(fields(filter(area).unwrap_err()), ["area"], "{area:?}");
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
        };
        let parsed = NewAllocation::parse(&request).unwrap();
        assert_eq!(parsed.referral_id, referral_id);
        assert_eq!(parsed.mentor_ids, [b, a], "the coordinator's order is kept");
    }

    #[test]
    fn allocation_rejections_name_their_fields() {
        let a = Uuid::now_v7().to_string();
        let parse = |referral_id: &str, mentor_ids: Vec<String>| {
            fields(
                NewAllocation::parse(&ConfirmAllocationRequest {
                    referral_id: referral_id.into(),
                    mentor_ids,
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
        let wait =
            |area: &str| parse_wait_area(&EstimateWaitRequest { area: area.into() }, &programme());
        assert_eq!(wait(" north DURHAM ").unwrap(), "North Durham");
        assert_eq!(fields(wait(" ").unwrap_err()), ["area"]);
        assert_eq!(fields(wait(&"a".repeat(201)).unwrap_err()), ["area"]);
        for area in UNREGISTERED {
            assert_eq!(fields(wait(area).unwrap_err()), ["area"], "{area:?}");
        }
    }

    #[test]
    fn only_active_trained_mentors_with_room_are_available() {
        let load = MentorLoad {
            status: MentorStatus::Active as i32,
            safeguarding_trained: true,
            capacity: 2,
            current_clients: 1,
        };
        assert_eq!(load.unavailable_because(), None);
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
        for status in [
            MentorStatus::Trained,
            MentorStatus::Sabbatical,
            MentorStatus::Left,
        ] {
            let inactive = MentorLoad {
                status: status as i32,
                ..load
            };
            assert_eq!(inactive.unavailable_because(), Some("is not active"));
        }
    }

    #[test]
    fn the_wait_is_nothing_while_a_pair_is_free_and_grows_by_rounds() {
        // Two free places make one pair; with nobody waiting the client starts now.
        assert_eq!(estimated_wait_days(0, 2), 0);
        assert_eq!(estimated_wait_days(1, 4), 0);
        // One place is not a pair.
        assert_eq!(estimated_wait_days(0, 1), 14);
        // As many pairs as waiting clients: the new one waits a round.
        assert_eq!(estimated_wait_days(1, 2), 14);
        assert_eq!(estimated_wait_days(0, 0), 14);
        // Each uncovered waiting client adds a round.
        assert_eq!(estimated_wait_days(3, 2), 14 * 3);
        assert_eq!(estimated_wait_days(5, 0), 14 * 6);
        // Nonsense counts do not panic or overflow.
        assert_eq!(estimated_wait_days(-3, -1), 14);
        assert_eq!(estimated_wait_days(i64::MAX, 0), i32::MAX);
    }

    mod properties {
        use super::*;
        use cpm_runtime::grpc::values::is_hidden;
        use proptest::prelude::*;

        proptest! {
            /// Any registration: parsing never panics; an accepted mentor has
            /// a capacity in bounds, known experience without repeats, no
            /// hidden character in their name, and a registered area in its
            /// registered spelling.
            #[test]
            fn any_mentor_parses_or_is_refused_cleanly(
                display_name in any::<String>(),
                area in prop_oneof![
                    any::<String>(),
                    "[A-Za-z]{1,12}",
                    "[ ]{0,2}(darlington|East Durham|SOUTH durham)[ ]{0,2}",
                ],
                gender in any::<i32>(),
                lived_experience in proptest::collection::vec(any::<i32>(), 0..64),
                capacity in any::<i32>(),
            ) {
                let request = RegisterMentorRequest {
                    display_name,
                    area,
                    gender,
                    lived_experience,
                    capacity,
                    ..valid_mentor()
                };
                match NewMentor::parse(&request, &programme()) {
                    Ok(mentor) => {
                        prop_assert!((1..=MAX_CAPACITY).contains(&mentor.capacity));
                        prop_assert!(mentor.lived_experience.len() <= MAX_LISTED);
                        let mut unique = mentor.lived_experience.clone();
                        unique.dedup();
                        prop_assert_eq!(unique.len(), mentor.lived_experience.len());
                        prop_assert!(!mentor.display_name.chars().any(is_hidden));
                        prop_assert!(programme().areas.contains(&mentor.area));
                    }
                    Err(violations) => prop_assert!(!violations.is_empty()),
                }
            }
        }
    }
}
