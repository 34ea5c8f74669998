//! Scoring of mentor pairs for a waiting client. Pure functions: the
//! handler loads the client and the candidates, this module ranks every
//! pair, and a coordinator decides. Nothing here allocates.
//!
//! A pair's score is the sum of:
//! - [`AREA_POINTS`] for each mentor working in the client's area (every
//!   candidate the service proposes does; the points keep the score
//!   meaningful for any list of candidates);
//! - [`EXPERIENCE_POINTS`] for each lived experience of each mentor that
//!   answers one of the client's vulnerabilities (see [`experience_for`]);
//! - [`GENDER_POINTS`] once when at least one mentor shares the client's
//!   recorded gender;
//! - [`FREE_PLACE_POINTS`] for each free place of each mentor, counting at
//!   most [`COUNTED_FREE_PLACES`] per mentor so spare capacity breaks ties
//!   rather than outweighing fit.
//!
//! Points are kept in halves (integers) so equal scores compare exactly and
//! ties fall back to the mentor IDs, which keeps proposals deterministic.

use std::cmp::Reverse;

use cpm_proto::v1::{Gender, LivedExperience, Vulnerability};
use uuid::Uuid;

/// The version of the weights below, stored with every proposal they
/// scored: change it whenever a weight or a term changes, so a proposal
/// can always be explained by the weights that made it.
pub const WEIGHTS_VERSION: &str = "2026-12-01";

pub const AREA_POINTS: f64 = 3.0;
pub const EXPERIENCE_POINTS: f64 = 2.0;
pub const GENDER_POINTS: f64 = 1.0;
pub const FREE_PLACE_POINTS: f64 = 0.5;
/// Free places beyond this many per mentor add nothing.
pub const COUNTED_FREE_PLACES: i32 = 2;

const AREA_HALVES: i64 = 6;
const EXPERIENCE_HALVES: i64 = 4;
const GENDER_HALVES: i64 = 2;
const FREE_PLACE_HALVES: i64 = 1;

/// What matching knows of a waiting client: categories, never identity.
#[derive(Clone, Debug)]
pub struct ClientNeeds {
    pub area: String,
    pub vulnerabilities: Vec<Vulnerability>,
    pub gender: Gender,
}

/// A mentor who may be proposed: TRAINED or ACTIVE, safeguarding-trained,
/// agreement signed, with room.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub mentor_id: Uuid,
    pub display_name: String,
    pub gender: Gender,
    /// Every area the mentor works in.
    pub areas: Vec<String>,
    pub lived_experience: Vec<LivedExperience>,
    /// Capacity minus current clients; above zero for a candidate.
    pub free_places: i32,
}

/// One proposed pair; `mentor_ids` in ascending order.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub mentor_ids: [Uuid; 2],
    pub score: f64,
    pub reasons: Vec<String>,
}

/// The lived experience that speaks to a vulnerability, where one does.
pub fn experience_for(vulnerability: Vulnerability) -> Option<LivedExperience> {
    use LivedExperience as L;
    use Vulnerability as V;
    Some(match vulnerability {
        V::AlcoholAddiction => L::AlcoholDependency,
        V::DrugAddiction => L::Drugs,
        V::MentalHealth => L::MentalHealth,
        V::DomesticAbuseVictim | V::CoerciveControl => L::DomesticAbuseVictim,
        V::Bereavement => L::Bereavement,
        V::SelfHarmOrSuicidal => L::SelfHarm,
        V::HarassmentOrStalkingVictim => L::CrimeVictim,
        V::Perpetrator => L::CriminalJusticeSystem,
        V::VulnerableAndIsolated => L::IdentifiedVulnerable,
        V::Elderly => L::DementiaCarer,
        V::Divorce => L::Divorced,
        V::Unspecified
        | V::HighImpactUser
        | V::Ailment
        | V::Illness
        | V::AntiSocialBehaviourVictim
        | V::NeighbourDispute => return None,
    })
}

/// The lived experiences that answer the client's vulnerabilities, without duplicates.
fn wanted_experience(client: &ClientNeeds) -> Vec<LivedExperience> {
    let mut wanted = Vec::new();
    for experience in client
        .vulnerabilities
        .iter()
        .copied()
        .filter_map(experience_for)
    {
        if !wanted.contains(&experience) {
            wanted.push(experience);
        }
    }
    wanted
}

/// A readable name for a lived experience: `LIVED_EXPERIENCE_SELF_HARM` → `self harm`.
pub fn describe_experience(experience: LivedExperience) -> String {
    experience
        .as_str_name()
        .trim_start_matches("LIVED_EXPERIENCE_")
        .replace('_', " ")
        .to_lowercase()
}

/// Whether a gender is one a client and a mentor can share meaningfully.
fn is_recorded(gender: Gender) -> bool {
    !matches!(gender, Gender::Unspecified | Gender::Undisclosed)
}

fn counted_free_places(candidate: &Candidate) -> i64 {
    i64::from(candidate.free_places.clamp(0, COUNTED_FREE_PLACES))
}

/// What one mentor brings to any pair, in half points.
fn individual_halves(
    client: &ClientNeeds,
    wanted: &[LivedExperience],
    candidate: &Candidate,
) -> i64 {
    let area = if works_in_client_area(client, candidate) {
        AREA_HALVES
    } else {
        0
    };
    let matches = candidate
        .lived_experience
        .iter()
        .filter(|experience| wanted.contains(experience))
        .count() as i64;
    area + matches * EXPERIENCE_HALVES + counted_free_places(candidate) * FREE_PLACE_HALVES
}

fn works_in_client_area(client: &ClientNeeds, candidate: &Candidate) -> bool {
    candidate.areas.contains(&client.area)
}

fn shares_gender(client: &ClientNeeds, candidate: &Candidate) -> bool {
    is_recorded(client.gender) && candidate.gender == client.gender
}

fn ordered_ids(a: &Candidate, b: &Candidate) -> [Uuid; 2] {
    if a.mentor_id <= b.mentor_id {
        [a.mentor_id, b.mentor_id]
    } else {
        [b.mentor_id, a.mentor_id]
    }
}

/// The score of one pair with the reasons behind it. Reasons name the
/// mentors and the categories that matched, never the client.
pub fn score_pair(client: &ClientNeeds, a: &Candidate, b: &Candidate) -> Proposal {
    let wanted = wanted_experience(client);
    let mut halves = 0;
    let mut reasons = Vec::new();
    for mentor in [a, b] {
        if works_in_client_area(client, mentor) {
            halves += AREA_HALVES;
            reasons.push(format!(
                "{} works in the client's area (+{AREA_POINTS})",
                mentor.display_name
            ));
        }
    }
    for mentor in [a, b] {
        for experience in mentor
            .lived_experience
            .iter()
            .filter(|e| wanted.contains(e))
        {
            halves += EXPERIENCE_HALVES;
            reasons.push(format!(
                "{} has lived experience of {} (+{EXPERIENCE_POINTS})",
                mentor.display_name,
                describe_experience(*experience)
            ));
        }
    }
    if shares_gender(client, a) || shares_gender(client, b) {
        halves += GENDER_HALVES;
        reasons.push(format!(
            "a mentor of the client's gender (+{GENDER_POINTS})"
        ));
    }
    let free = counted_free_places(a) + counted_free_places(b);
    if free > 0 {
        halves += free * FREE_PLACE_HALVES;
        reasons.push(format!(
            "{free} free place(s) counted between the pair (+{})",
            free as f64 * FREE_PLACE_POINTS
        ));
    }
    Proposal {
        mentor_ids: ordered_ids(a, b),
        score: halves as f64 / 2.0,
        reasons,
    }
}

/// The best `limit` pairs of distinct candidates, best first; equal scores
/// are ordered by the pair's mentor IDs, ascending.
pub fn propose(client: &ClientNeeds, candidates: &[Candidate], limit: usize) -> Vec<Proposal> {
    let wanted = wanted_experience(client);
    let individual: Vec<i64> = candidates
        .iter()
        .map(|candidate| individual_halves(client, &wanted, candidate))
        .collect();
    let mut pairs: Vec<(i64, [Uuid; 2], usize, usize)> = Vec::new();
    for first in 0..candidates.len() {
        for second in first + 1..candidates.len() {
            let (a, b) = (&candidates[first], &candidates[second]);
            if a.mentor_id == b.mentor_id {
                continue;
            }
            let gender = if shares_gender(client, a) || shares_gender(client, b) {
                GENDER_HALVES
            } else {
                0
            };
            let halves = individual[first] + individual[second] + gender;
            pairs.push((halves, ordered_ids(a, b), first, second));
        }
    }
    pairs.sort_by_key(|(halves, ids, _, _)| (Reverse(*halves), *ids));
    pairs.truncate(limit);
    pairs
        .into_iter()
        .map(|(_, _, first, second)| score_pair(client, &candidates[first], &candidates[second]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn client() -> ClientNeeds {
        ClientNeeds {
            area: "Darlington".into(),
            vulnerabilities: vec![Vulnerability::AlcoholAddiction, Vulnerability::MentalHealth],
            gender: Gender::Female,
        }
    }

    fn mentor(
        n: u128,
        area: &str,
        gender: Gender,
        experience: &[LivedExperience],
        free: i32,
    ) -> Candidate {
        Candidate {
            mentor_id: id(n),
            display_name: format!("Mentor {n}"),
            gender,
            areas: area.split('+').map(str::to_owned).collect(),
            lived_experience: experience.to_vec(),
            free_places: free,
        }
    }

    #[test]
    fn every_rule_adds_its_points() {
        let a = mentor(
            1,
            "Darlington",
            Gender::Female,
            &[LivedExperience::AlcoholDependency],
            1,
        );
        let b = mentor(
            2,
            "Durham",
            Gender::Male,
            &[LivedExperience::MentalHealth, LivedExperience::Debt],
            1,
        );
        let proposal = score_pair(&client(), &a, &b);
        // area 3 + experience 2 + 2 + gender 1 + two free places 1.
        assert_eq!(proposal.score, 9.0);
        assert_eq!(proposal.mentor_ids, [id(1), id(2)]);
        assert_eq!(proposal.reasons.len(), 5);
        assert!(proposal.reasons[0].contains("Mentor 1 works in the client's area"));
        assert!(proposal.reasons[1].contains("alcohol dependency"));
        assert!(proposal.reasons[2].contains("mental health"));
    }

    #[test]
    fn a_mentor_of_several_areas_works_in_each() {
        let a = mentor(1, "East Durham+Darlington", Gender::Male, &[], 0);
        let b = mentor(2, "East Durham", Gender::Male, &[], 0);
        let proposal = score_pair(&client(), &a, &b);
        assert_eq!(
            proposal.score, 3.0,
            "only the mentor who works in Darlington"
        );
        assert!(proposal.reasons[0].contains("Mentor 1 works in the client's area"));
    }

    #[test]
    fn spare_capacity_is_capped_per_mentor() {
        let a = mentor(1, "Elsewhere", Gender::Male, &[], 5);
        let b = mentor(2, "Elsewhere", Gender::Male, &[], 1);
        assert_eq!(score_pair(&client(), &a, &b).score, 1.5);
    }

    #[test]
    fn gender_counts_once_and_not_when_undisclosed() {
        let a = mentor(1, "Elsewhere", Gender::Female, &[], 0);
        let b = mentor(2, "Elsewhere", Gender::Female, &[], 0);
        assert_eq!(score_pair(&client(), &a, &b).score, 1.0);
        let undisclosed = ClientNeeds {
            gender: Gender::Undisclosed,
            ..client()
        };
        let a = mentor(1, "Elsewhere", Gender::Undisclosed, &[], 0);
        assert_eq!(score_pair(&undisclosed, &a, &b).score, 0.0);
        assert!(score_pair(&undisclosed, &a, &b).reasons.is_empty());
    }

    #[test]
    fn vulnerabilities_sharing_an_experience_count_it_once() {
        let needs = ClientNeeds {
            vulnerabilities: vec![
                Vulnerability::DomesticAbuseVictim,
                Vulnerability::CoerciveControl,
            ],
            ..client()
        };
        let a = mentor(
            1,
            "Elsewhere",
            Gender::Male,
            &[LivedExperience::DomesticAbuseVictim],
            0,
        );
        let b = mentor(2, "Elsewhere", Gender::Male, &[], 0);
        assert_eq!(score_pair(&needs, &a, &b).score, 2.0);
    }

    #[test]
    fn the_mapping_covers_the_named_vulnerabilities() {
        use LivedExperience as L;
        use Vulnerability as V;
        let expected = [
            (V::AlcoholAddiction, L::AlcoholDependency),
            (V::DrugAddiction, L::Drugs),
            (V::MentalHealth, L::MentalHealth),
            (V::DomesticAbuseVictim, L::DomesticAbuseVictim),
            (V::Bereavement, L::Bereavement),
            (V::SelfHarmOrSuicidal, L::SelfHarm),
            (V::HarassmentOrStalkingVictim, L::CrimeVictim),
            (V::Perpetrator, L::CriminalJusticeSystem),
            (V::VulnerableAndIsolated, L::IdentifiedVulnerable),
            (V::Elderly, L::DementiaCarer),
            (V::CoerciveControl, L::DomesticAbuseVictim),
            (V::Divorce, L::Divorced),
        ];
        for (vulnerability, experience) in expected {
            assert_eq!(
                experience_for(vulnerability),
                Some(experience),
                "{vulnerability:?}"
            );
        }
        assert_eq!(experience_for(V::HighImpactUser), None);
        assert_eq!(describe_experience(L::SelfHarm), "self harm");
    }

    #[test]
    fn proposals_come_best_first_and_ties_fall_back_to_ids() {
        let candidates = vec![
            mentor(4, "Elsewhere", Gender::Male, &[], 1),
            mentor(
                3,
                "Darlington",
                Gender::Female,
                &[LivedExperience::AlcoholDependency],
                1,
            ),
            mentor(2, "Elsewhere", Gender::Male, &[], 1),
            mentor(1, "Elsewhere", Gender::Male, &[], 1),
        ];
        let proposals = propose(&client(), &candidates, 10);
        assert_eq!(proposals.len(), 6, "every pair of four mentors");
        let ids: Vec<[Uuid; 2]> = proposals.iter().map(|p| p.mentor_ids).collect();
        assert_eq!(
            ids,
            [
                [id(1), id(3)],
                [id(2), id(3)],
                [id(3), id(4)],
                [id(1), id(2)],
                [id(1), id(4)],
                [id(2), id(4)],
            ]
        );
        assert_eq!(proposals[0].score, 7.0);
        assert_eq!(proposals[3].score, 1.0);
        assert_eq!(propose(&client(), &candidates, 2).len(), 2);
    }

    #[test]
    fn proposal_scores_agree_with_pair_scores() {
        let candidates = vec![
            mentor(
                1,
                "Darlington",
                Gender::Female,
                &[LivedExperience::MentalHealth],
                3,
            ),
            mentor(
                2,
                "Durham",
                Gender::Male,
                &[LivedExperience::AlcoholDependency],
                1,
            ),
            mentor(3, "Darlington", Gender::NonBinary, &[], 2),
        ];
        for proposal in propose(&client(), &candidates, 10) {
            let a = candidates
                .iter()
                .find(|c| c.mentor_id == proposal.mentor_ids[0])
                .unwrap();
            let b = candidates
                .iter()
                .find(|c| c.mentor_id == proposal.mentor_ids[1])
                .unwrap();
            assert_eq!(proposal, score_pair(&client(), a, b));
        }
    }

    #[test]
    fn fewer_than_two_candidates_give_no_pair() {
        assert!(propose(&client(), &[], 5).is_empty());
        let one = [mentor(1, "Darlington", Gender::Female, &[], 1)];
        assert!(propose(&client(), &one, 5).is_empty());
    }
}
