//! Scoring of mentor pairs for a waiting client. Pure functions: the
//! handler loads the client and the candidates, this module ranks the
//! pairs, and a coordinator decides. Nothing here allocates.
//!
//! # Terms
//!
//! A pair's score is the sum of these terms, each weighted by a field of
//! [`Weights`] (the default in brackets):
//! - `area` (3) for each mentor working in the client's area (every
//!   candidate the service proposes does; the points keep the score
//!   meaningful for any list of candidates);
//! - `experience` (2) for each lived experience of each mentor that answers
//!   one of the client's vulnerabilities (see [`experience_for`]);
//! - `crime_history` (2) for each lived experience of each mentor that
//!   answers the client's crime history (see [`experience_for_crimes`]) and
//!   was not already counted for a vulnerability;
//! - `waiting_per_week` (0.25) for each full week a TRAINED mentor has
//!   waited for a first client since training ([`Candidate::waiting_days`]),
//!   counting at most `waiting_cap_weeks` (12) weeks, so long waits are
//!   shortened first;
//! - `free_place` (0.5) for each free place of each mentor (the current
//!   load), counting at most `counted_free_places` (2) per mentor so spare
//!   capacity breaks ties rather than outweighing fit;
//! - `gender` (1) once when at least one mentor shares the client's
//!   recorded gender;
//! - `worked_together` (1.5) once for a pair that has supported a client
//!   through to discharge together before ([`PairHistory::worked`]).
//!
//! The first five are *individual*: what one mentor brings to any pair. The
//! last two are *pair* terms. A pair in [`PairHistory::incompatible`] is
//! never proposed, whatever its score. A lived experience listed twice for
//! a mentor counts once.
//!
//! # Weights and their version
//!
//! [`Weights`] is configuration. Its `version` is stored with every
//! proposal the weights scored: **change `version` whenever a weight
//! changes** (or a term does), so a proposal can always be explained by the
//! weights that made it. Scores are kept as integer hundredths of a point,
//! so weights are whole hundredths ([`Weights::validate`]) and equal scores
//! compare exactly.
//!
//! # Ranking
//!
//! [`propose`] returns exactly what scoring every pair and sorting them by
//! score (descending), then by the pair's mentor IDs (ascending) would
//! return, without enumerating the n(n−1)/2 pairs. See its documentation.
//! [`crate::batch`] proposes one pair for each client of a whole pool.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use cpm_proto::v1::{CrimeType, Gender, LivedExperience, Vulnerability};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of [`Weights::default`].
pub const DEFAULT_WEIGHTS_VERSION: &str = "2026-12-03";

/// The largest weight [`Weights::validate`] accepts.
pub const MAX_WEIGHT: f64 = 100.0;
/// The longest `version` [`Weights::validate`] accepts, in characters.
pub const MAX_VERSION_CHARS: usize = 40;
/// The largest `waiting_cap_weeks` [`Weights::validate`] accepts (five years).
pub const MAX_WAITING_CAP_WEEKS: u32 = 260;
/// The largest `counted_free_places` [`Weights::validate`] accepts.
pub const MAX_COUNTED_FREE_PLACES: u32 = 10;

/// The weights of the terms, as configuration: every field has a default,
/// and an unknown field is refused. Change `version` whenever a weight
/// changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Stored with every proposal: change it whenever a weight changes.
    pub version: String,
    /// Per mentor working in the client's area.
    pub area: f64,
    /// Per lived experience of a mentor answering one of the client's
    /// vulnerabilities.
    pub experience: f64,
    /// Per lived experience of a mentor answering the client's crime
    /// history, when not already counted for a vulnerability.
    pub crime_history: f64,
    /// Once per pair when at least one mentor shares the client's recorded
    /// gender.
    pub gender: f64,
    /// Per full week a TRAINED mentor has waited for a first client.
    pub waiting_per_week: f64,
    /// Weeks of waiting beyond this many add nothing.
    pub waiting_cap_weeks: u32,
    /// Per free place of a mentor.
    pub free_place: f64,
    /// Free places beyond this many per mentor add nothing.
    pub counted_free_places: u32,
    /// Once for a pair that has supported a client through to discharge
    /// together before.
    pub worked_together: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            version: DEFAULT_WEIGHTS_VERSION.to_owned(),
            area: 3.0,
            experience: 2.0,
            crime_history: 2.0,
            gender: 1.0,
            waiting_per_week: 0.25,
            waiting_cap_weeks: 12,
            free_place: 0.5,
            counted_free_places: 2,
            worked_together: 1.5,
        }
    }
}

impl Weights {
    /// The weights by their configuration names.
    fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("area", self.area),
            ("experience", self.experience),
            ("crime_history", self.crime_history),
            ("gender", self.gender),
            ("waiting_per_week", self.waiting_per_week),
            ("free_place", self.free_place),
            ("worked_together", self.worked_together),
        ]
    }

    /// `version` is non-empty, at most 40 printable ASCII characters; every
    /// weight is finite, at least 0, at most 100 and a whole number of
    /// hundredths; `waiting_cap_weeks` is at most 260 and
    /// `counted_free_places` at most 10. The problem names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.version.trim().is_empty() {
            return Err("weights.version must not be empty".to_owned());
        }
        if self.version.chars().count() > MAX_VERSION_CHARS {
            return Err(format!(
                "weights.version must be at most {MAX_VERSION_CHARS} characters"
            ));
        }
        if !self
            .version
            .bytes()
            .all(|byte| (b' '..=b'~').contains(&byte))
        {
            return Err("weights.version must be printable ASCII".to_owned());
        }
        for (name, value) in self.named() {
            if !value.is_finite() {
                return Err(format!("weights.{name} must be a finite number"));
            }
            if value < 0.0 {
                return Err(format!("weights.{name} must not be negative"));
            }
            if value > MAX_WEIGHT {
                return Err(format!("weights.{name} must be at most {MAX_WEIGHT}"));
            }
            let scaled = value * 100.0;
            if (scaled - scaled.round()).abs() > 1e-6 {
                return Err(format!(
                    "weights.{name} must be a whole number of hundredths (0.01)"
                ));
            }
        }
        if self.waiting_cap_weeks > MAX_WAITING_CAP_WEEKS {
            return Err(format!(
                "weights.waiting_cap_weeks must be at most {MAX_WAITING_CAP_WEEKS}"
            ));
        }
        if self.counted_free_places > MAX_COUNTED_FREE_PLACES {
            return Err(format!(
                "weights.counted_free_places must be at most {MAX_COUNTED_FREE_PLACES}"
            ));
        }
        Ok(())
    }
}

/// The weights in integer hundredths of a point. Weights are expected to be
/// valid; an invalid one is clamped into range (NaN counts as 0) so scoring
/// never fails.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Points {
    pub(crate) area: i64,
    pub(crate) experience: i64,
    pub(crate) crime_history: i64,
    pub(crate) gender: i64,
    pub(crate) waiting_per_week: i64,
    pub(crate) waiting_cap_weeks: i64,
    pub(crate) free_place: i64,
    pub(crate) counted_free_places: i64,
    pub(crate) worked_together: i64,
}

fn hundredths(value: f64) -> i64 {
    if value.is_finite() {
        (value.clamp(0.0, MAX_WEIGHT) * 100.0).round() as i64
    } else {
        0
    }
}

impl Points {
    pub(crate) fn of(weights: &Weights) -> Self {
        Self {
            area: hundredths(weights.area),
            experience: hundredths(weights.experience),
            crime_history: hundredths(weights.crime_history),
            gender: hundredths(weights.gender),
            waiting_per_week: hundredths(weights.waiting_per_week),
            waiting_cap_weeks: i64::from(weights.waiting_cap_weeks.min(MAX_WAITING_CAP_WEEKS)),
            free_place: hundredths(weights.free_place),
            counted_free_places: i64::from(
                weights.counted_free_places.min(MAX_COUNTED_FREE_PLACES),
            ),
            worked_together: hundredths(weights.worked_together),
        }
    }
}

/// Hundredths of a point as points, for scores and reasons: `150` → `1.5`.
pub(crate) fn as_points(hundredths: i64) -> f64 {
    hundredths as f64 / 100.0
}

/// What matching knows of a waiting client: categories, never identity.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientNeeds {
    pub area: String,
    pub vulnerabilities: Vec<Vulnerability>,
    pub gender: Gender,
    /// Crimes the client was a victim of.
    pub victim_of: Vec<CrimeType>,
    /// Crimes the client committed.
    pub perpetrator_of: Vec<CrimeType>,
}

/// A mentor who may be proposed: TRAINED or ACTIVE, safeguarding-trained,
/// agreement signed, with room.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub mentor_id: Uuid,
    pub display_name: String,
    pub gender: Gender,
    /// Every area the mentor works in.
    pub areas: Vec<String>,
    pub lived_experience: Vec<LivedExperience>,
    /// Capacity minus current clients; above zero for a candidate.
    pub free_places: i32,
    /// For a TRAINED mentor never allocated a client: days since their
    /// training was completed. `None` for everyone else.
    pub waiting_days: Option<i64>,
}

/// What is known about pairs of mentors: the key of a pair is its two
/// mentor IDs in ascending order ([`PairHistory::key`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairHistory {
    /// Pairs who supported a client through to discharge together.
    pub worked: HashSet<[Uuid; 2]>,
    /// Pairs who must not be proposed together again (they did not get
    /// on); never proposed, whatever their score.
    pub incompatible: HashSet<[Uuid; 2]>,
}

impl PairHistory {
    /// The key of the pair of `a` and `b`: their IDs in ascending order.
    pub fn key(a: Uuid, b: Uuid) -> [Uuid; 2] {
        if a <= b { [a, b] } else { [b, a] }
    }

    /// Records that `a` and `b` supported a client through to discharge.
    pub fn record_worked(&mut self, a: Uuid, b: Uuid) {
        self.worked.insert(Self::key(a, b));
    }

    /// Records that `a` and `b` must not be proposed together.
    pub fn record_incompatible(&mut self, a: Uuid, b: Uuid) {
        self.incompatible.insert(Self::key(a, b));
    }

    /// Whether `a` and `b` supported a client through to discharge together.
    pub fn worked_together(&self, a: Uuid, b: Uuid) -> bool {
        contains_pair(&self.worked, a, b)
    }

    /// Whether `a` and `b` must not be proposed together.
    pub fn is_incompatible(&self, a: Uuid, b: Uuid) -> bool {
        contains_pair(&self.incompatible, a, b)
    }
}

/// A key written in either order is honoured.
fn contains_pair(pairs: &HashSet<[Uuid; 2]>, a: Uuid, b: Uuid) -> bool {
    !pairs.is_empty() && (pairs.contains(&[a, b]) || pairs.contains(&[b, a]))
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

/// The lived experiences that speak to a client's crime history, without
/// duplicates:
/// - a victim of any crime: CRIME_VICTIM;
/// - a victim of rape or sexual assault: also SEXUAL_OFFENCE_VICTIM;
/// - a perpetrator of any crime: CRIMINAL_JUSTICE_SYSTEM, CRIME_PERPETRATOR
///   and PRISON.
///
/// `CRIME_TYPE_UNSPECIFIED` counts for nothing. A victim of harassment,
/// assault or threats to kill who also has a domestic-abuse vulnerability
/// would call for DOMESTIC_ABUSE_VICTIM, but that vulnerability already
/// counts it (under `experience`), and an experience counts once, so there
/// is no such rule here.
pub fn experience_for_crimes(
    victim_of: &[CrimeType],
    perpetrator_of: &[CrimeType],
) -> Vec<LivedExperience> {
    use LivedExperience as L;
    let real = |crime: &&CrimeType| **crime != CrimeType::Unspecified;
    let mut wanted = Vec::new();
    if victim_of.iter().any(|crime| real(&crime)) {
        wanted.push(L::CrimeVictim);
    }
    if victim_of
        .iter()
        .any(|crime| matches!(crime, CrimeType::Rape | CrimeType::SexualAssault))
    {
        wanted.push(L::SexualOffenceVictim);
    }
    if perpetrator_of.iter().any(|crime| real(&crime)) {
        wanted.extend([L::CriminalJusticeSystem, L::CrimePerpetrator, L::Prison]);
    }
    wanted
}

/// A lived experience as one bit of a mask (none for values beyond 63).
fn bit(experience: LivedExperience) -> u64 {
    let value = experience as i32;
    if experience != LivedExperience::Unspecified && (0..64).contains(&value) {
        1 << value
    } else {
        0
    }
}

/// A mentor's lived experience as a mask; a repeated experience counts once.
pub(crate) fn experience_mask(experiences: &[LivedExperience]) -> u64 {
    experiences.iter().fold(0, |mask, e| mask | bit(*e))
}

/// The lived experiences that score for a client, as masks: those answering
/// a vulnerability, and those answering the crime history and not already
/// answering a vulnerability.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Wanted {
    pub(crate) vulnerability: u64,
    pub(crate) crime: u64,
}

impl Wanted {
    pub(crate) fn of(client: &ClientNeeds) -> Self {
        let vulnerability = client
            .vulnerabilities
            .iter()
            .copied()
            .filter_map(experience_for)
            .fold(0, |mask, e| mask | bit(e));
        let crime = experience_for_crimes(&client.victim_of, &client.perpetrator_of)
            .into_iter()
            .fold(0, |mask, e| mask | bit(e));
        Self {
            vulnerability,
            crime: crime & !vulnerability,
        }
    }
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

pub(crate) fn shares_gender(client: &ClientNeeds, candidate: &Candidate) -> bool {
    is_recorded(client.gender) && candidate.gender == client.gender
}

pub(crate) fn works_in_area(area: &str, candidate: &Candidate) -> bool {
    candidate.areas.iter().any(|own| own == area)
}

/// Full weeks of waiting, before the cap.
fn waited_weeks(candidate: &Candidate) -> i64 {
    candidate.waiting_days.map_or(0, |days| days.max(0) / 7)
}

fn counted_weeks(points: &Points, candidate: &Candidate) -> i64 {
    waited_weeks(candidate).min(points.waiting_cap_weeks)
}

fn counted_free_places(points: &Points, candidate: &Candidate) -> i64 {
    i64::from(candidate.free_places).clamp(0, points.counted_free_places)
}

/// The individual terms that do not depend on the client: waiting and
/// free places.
pub(crate) fn fixed_points(points: &Points, candidate: &Candidate) -> i64 {
    counted_weeks(points, candidate) * points.waiting_per_week
        + counted_free_places(points, candidate) * points.free_place
}

/// What one mentor brings to any pair for a client, in hundredths:
/// `mask` is [`experience_mask`] of the mentor and `fixed` their
/// [`fixed_points`].
pub(crate) fn individual_points(
    points: &Points,
    wanted: Wanted,
    in_area: bool,
    mask: u64,
    fixed: i64,
) -> i64 {
    let area = if in_area { points.area } else { 0 };
    area + i64::from((mask & wanted.vulnerability).count_ones()) * points.experience
        + i64::from((mask & wanted.crime).count_ones()) * points.crime_history
        + fixed
}

fn individual(points: &Points, wanted: Wanted, client: &ClientNeeds, candidate: &Candidate) -> i64 {
    individual_points(
        points,
        wanted,
        works_in_area(&client.area, candidate),
        experience_mask(&candidate.lived_experience),
        fixed_points(points, candidate),
    )
}

/// What one mentor brings to any pair for this client: the individual
/// terms (area, lived experience, crime history, waiting, free places). A
/// pair's score is the two individual scores plus the pair terms.
pub fn individual_score(client: &ClientNeeds, candidate: &Candidate, weights: &Weights) -> f64 {
    as_points(individual(
        &Points::of(weights),
        Wanted::of(client),
        client,
        candidate,
    ))
}

/// The sum of the terms and their reasons.
struct Tally {
    hundredths: i64,
    reasons: Vec<String>,
}

impl Tally {
    /// Adds `points` with its reason; a term worth nothing gives no reason.
    fn add(&mut self, points: i64, reason: impl FnOnce() -> String) {
        if points > 0 {
            self.hundredths += points;
            self.reasons
                .push(format!("{} (+{})", reason(), as_points(points)));
        }
    }
}

/// The score of one pair with the reasons behind it, term by term (see the
/// module documentation), the mentor with the lower ID first. Reasons name
/// the mentors and the categories that matched, never the client. This
/// scores any pair, an incompatible one too; [`propose`] never proposes one.
pub fn score_pair(
    client: &ClientNeeds,
    a: &Candidate,
    b: &Candidate,
    history: &PairHistory,
    weights: &Weights,
) -> Proposal {
    let (a, b) = if a.mentor_id <= b.mentor_id {
        (a, b)
    } else {
        (b, a)
    };
    let points = Points::of(weights);
    let wanted = Wanted::of(client);
    let mut tally = Tally {
        hundredths: 0,
        reasons: Vec::new(),
    };
    for mentor in [a, b] {
        if works_in_area(&client.area, mentor) {
            tally.add(points.area, || {
                format!("{} works in the client's area", mentor.display_name)
            });
        }
    }
    let matching = |mentor: &Candidate, wanted: u64| -> Vec<LivedExperience> {
        let mut seen = 0;
        let mut found = Vec::new();
        for experience in &mentor.lived_experience {
            let bit = bit(*experience);
            if bit & wanted != 0 && bit & seen == 0 {
                seen |= bit;
                found.push(*experience);
            }
        }
        found
    };
    for mentor in [a, b] {
        for experience in matching(mentor, wanted.vulnerability) {
            tally.add(points.experience, || {
                format!(
                    "{} has lived experience of {}",
                    mentor.display_name,
                    describe_experience(experience)
                )
            });
        }
    }
    for mentor in [a, b] {
        for experience in matching(mentor, wanted.crime) {
            tally.add(points.crime_history, || {
                format!(
                    "{} has lived experience of {}, which speaks to the client's crime history",
                    mentor.display_name,
                    describe_experience(experience)
                )
            });
        }
    }
    for mentor in [a, b] {
        let counted = counted_weeks(&points, mentor);
        tally.add(counted * points.waiting_per_week, || {
            let waited = waited_weeks(mentor);
            if waited > counted {
                format!(
                    "{} has waited {waited} full weeks for a first client since training, {counted} counted",
                    mentor.display_name
                )
            } else {
                format!(
                    "{} has waited {waited} full week(s) for a first client since training",
                    mentor.display_name
                )
            }
        });
    }
    if shares_gender(client, a) || shares_gender(client, b) {
        tally.add(points.gender, || {
            "a mentor of the client's gender".to_owned()
        });
    }
    let free = counted_free_places(&points, a) + counted_free_places(&points, b);
    tally.add(free * points.free_place, || {
        format!("{free} free place(s) counted between the pair")
    });
    if history.worked_together(a.mentor_id, b.mentor_id) {
        tally.add(points.worked_together, || {
            format!(
                "{} and {} have supported a client through to discharge together",
                a.display_name, b.display_name
            )
        });
    }
    Proposal {
        mentor_ids: [a.mentor_id, b.mentor_id],
        score: as_points(tally.hundredths),
        reasons: tally.reasons,
    }
}

/// A distinct candidate as ranking sees it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: Uuid,
    /// Its position in the caller's slice.
    index: usize,
    same_gender: bool,
    individual: i64,
}

/// Entries of one class with the same individual score: a range of the
/// sorted entries, in ascending ID order.
#[derive(Clone, Copy, Debug)]
struct Group {
    value: i64,
    start: usize,
    end: usize,
}

fn groups_of(entries: &[Entry], offset: usize) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        match groups.last_mut() {
            Some(group) if group.value == entry.individual => group.end = offset + position + 1,
            _ => groups.push(Group {
                value: entry.individual,
                start: offset + position,
                end: offset + position + 1,
            }),
        }
    }
    groups
}

/// The combinations of two groups, in non-increasing order of their sum:
/// rows × columns, or the pairs p ≤ q of one list of groups (`within`).
/// A heap frontier: every combination is pushed only after one whose sum
/// is at least as large was popped, so pops never increase.
struct Frontier<'g> {
    rows: &'g [Group],
    columns: &'g [Group],
    within: bool,
    bonus: i64,
    heap: BinaryHeap<(i64, Reverse<usize>, Reverse<usize>)>,
}

impl<'g> Frontier<'g> {
    fn new(rows: &'g [Group], columns: &'g [Group], within: bool, bonus: i64) -> Self {
        let mut frontier = Self {
            rows,
            columns,
            within,
            bonus,
            heap: BinaryHeap::new(),
        };
        if !rows.is_empty() && !columns.is_empty() {
            frontier.push(0, 0);
        }
        frontier
    }

    fn push(&mut self, row: usize, column: usize) {
        let sum = self.rows[row].value + self.columns[column].value + self.bonus;
        self.heap.push((sum, Reverse(row), Reverse(column)));
    }

    fn peek(&self) -> Option<i64> {
        self.heap.peek().map(|(sum, _, _)| *sum)
    }

    fn pop(&mut self) -> Option<(Group, Group)> {
        let (_, Reverse(row), Reverse(column)) = self.heap.pop()?;
        if column + 1 < self.columns.len() {
            self.push(row, column + 1);
        }
        let next_row = if self.within {
            row == column
        } else {
            column == 0
        };
        if next_row && row + 1 < self.rows.len() {
            let first = if self.within { row + 1 } else { 0 };
            self.push(row + 1, first);
        }
        Some((self.rows[row], self.columns[column]))
    }
}

/// The pairs of one combination of groups in ascending order of their IDs
/// (lowest first, then highest), lazily. Entries are positions in the
/// sorted entries; the first of each pair has the lower ID.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// Pairs within one group: positions x < y.
    Within {
        end: usize,
        x: usize,
        y: usize,
    },
    /// Pairs across two groups: the lower-ID member walks both groups in
    /// merged order; its partners are the other group's members with higher
    /// IDs, which start at that group's own pointer.
    Across {
        a_end: usize,
        b_end: usize,
        a: usize,
        b: usize,
        first_in_a: bool,
        partner: usize,
    },
    /// One pair scored on its own (worked together before).
    Single {
        first: usize,
        second: usize,
    },
    Done,
}

impl Cursor {
    /// The pairs of a combination of groups; call [`Cursor::settle`] next.
    fn of(first: Group, second: Group) -> Self {
        if first.start == second.start {
            Cursor::Within {
                end: first.end,
                x: first.start,
                y: first.start + 1,
            }
        } else {
            Cursor::Across {
                a_end: first.end,
                b_end: second.end,
                a: first.start,
                b: second.start,
                first_in_a: true,
                partner: 0,
            }
        }
    }

    /// Makes the state point at a pair, or `Done`.
    fn settle(&mut self, entries: &[Entry]) {
        match *self {
            Cursor::Within { end, x, y } => {
                if y >= end {
                    *self = if x + 2 < end {
                        Cursor::Within {
                            end,
                            x: x + 1,
                            y: x + 2,
                        }
                    } else {
                        Cursor::Done
                    };
                }
            }
            Cursor::Across {
                a_end, b_end, a, b, ..
            } => {
                if a >= a_end || b >= b_end {
                    *self = Cursor::Done;
                } else {
                    let first_in_a = entries[a].id < entries[b].id;
                    *self = Cursor::Across {
                        a_end,
                        b_end,
                        a,
                        b,
                        first_in_a,
                        partner: if first_in_a { b } else { a },
                    };
                }
            }
            Cursor::Single { .. } | Cursor::Done => {}
        }
    }

    fn current(&self) -> Option<(usize, usize)> {
        match *self {
            Cursor::Within { x, y, .. } => Some((x, y)),
            Cursor::Across {
                a,
                b,
                first_in_a,
                partner,
                ..
            } => Some(if first_in_a {
                (a, partner)
            } else {
                (b, partner)
            }),
            Cursor::Single { first, second } => Some((first, second)),
            Cursor::Done => None,
        }
    }

    fn advance(&mut self, entries: &[Entry]) {
        match *self {
            Cursor::Within { end, x, y } => {
                *self = Cursor::Within { end, x, y: y + 1 };
                self.settle(entries);
            }
            Cursor::Across {
                a_end,
                b_end,
                a,
                b,
                first_in_a,
                partner,
            } => {
                let partner_end = if first_in_a { b_end } else { a_end };
                if partner + 1 < partner_end {
                    *self = Cursor::Across {
                        a_end,
                        b_end,
                        a,
                        b,
                        first_in_a,
                        partner: partner + 1,
                    };
                } else {
                    let (a, b) = if first_in_a { (a + 1, b) } else { (a, b + 1) };
                    *self = Cursor::Across {
                        a_end,
                        b_end,
                        a,
                        b,
                        first_in_a,
                        partner,
                    };
                    self.settle(entries);
                }
            }
            Cursor::Single { .. } => *self = Cursor::Done,
            Cursor::Done => {}
        }
    }
}

/// The best `limit` pairs of distinct candidates that are not incompatible,
/// best first, each scored by [`score_pair`]. The order is exactly that of
/// scoring every pair and sorting by score (descending), then by the pair's
/// mentor IDs (ascending, lower ID first). A mentor ID given twice keeps
/// its first entry.
///
/// It does not enumerate all pairs. A pair's score is individual(a) +
/// individual(b) + the gender bonus + the worked-together bonus. Candidates
/// are split into those sharing the client's gender and the rest, and each
/// class into groups of equal individual score (IDs ascending). Three heap
/// frontiers yield the combinations of groups (same × same, same × other,
/// other × other, the first two with the gender bonus) in non-increasing
/// order of their sum, and the pairs that worked together before are scored
/// on their own. Score level by level, the pairs of every combination at
/// that level (and the worked-together pairs at it) are merged in ID order;
/// the generic streams skip incompatible pairs and the pairs that worked
/// together (scored on their own). Cost: sorting the candidates, then
/// about (limit + groups + history pairs met) heap steps.
pub fn propose(
    client: &ClientNeeds,
    candidates: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    limit: usize,
) -> Vec<Proposal> {
    let points = Points::of(weights);
    let wanted = Wanted::of(client);
    let mut by_id: Vec<(Uuid, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| (candidate.mentor_id, index))
        .collect();
    by_id.sort_unstable();
    by_id.dedup_by_key(|(id, _)| *id);
    if limit == 0 || by_id.len() < 2 {
        return Vec::new();
    }
    let mut entries: Vec<Entry> = by_id
        .iter()
        .map(|&(id, index)| {
            let candidate = &candidates[index];
            Entry {
                id,
                index,
                same_gender: shares_gender(client, candidate),
                individual: individual(&points, wanted, client, candidate),
            }
        })
        .collect();
    // Same gender first, then by individual score (descending) and ID.
    entries.sort_unstable_by_key(|entry| (!entry.same_gender, Reverse(entry.individual), entry.id));
    let split = entries.partition_point(|entry| entry.same_gender);
    let same = groups_of(&entries[..split], 0);
    let other = groups_of(&entries[split..], split);
    let mut frontiers = [
        Frontier::new(&same, &same, true, points.gender),
        Frontier::new(&same, &other, false, points.gender),
        Frontier::new(&other, &other, true, 0),
    ];
    let worked = worked_pairs(&entries, history, &points);
    let mut next_worked = 0;
    let mut chosen: Vec<(usize, usize)> = Vec::with_capacity(limit.min(1024));
    'levels: loop {
        let level = frontiers
            .iter()
            .filter_map(Frontier::peek)
            .chain(worked.get(next_worked).map(|(score, _, _)| *score))
            .max();
        let Some(level) = level else {
            break;
        };
        let mut cursors = Vec::new();
        for frontier in &mut frontiers {
            while frontier.peek() == Some(level) {
                if let Some((first, second)) = frontier.pop() {
                    let mut cursor = Cursor::of(first, second);
                    cursor.settle(&entries);
                    cursors.push((cursor, true));
                }
            }
        }
        while let Some(&(score, first, second)) = worked.get(next_worked) {
            if score != level {
                break;
            }
            cursors.push((Cursor::Single { first, second }, false));
            next_worked += 1;
        }
        let key = |(first, second): (usize, usize)| (entries[first].id, entries[second].id);
        let mut merge: BinaryHeap<Reverse<((Uuid, Uuid), usize)>> = cursors
            .iter()
            .enumerate()
            .filter_map(|(number, (cursor, _))| {
                cursor.current().map(|pair| Reverse((key(pair), number)))
            })
            .collect();
        while let Some(Reverse((_, number))) = merge.pop() {
            let (cursor, generic) = &mut cursors[number];
            let Some(pair) = cursor.current() else {
                continue;
            };
            cursor.advance(&entries);
            if let Some(next) = cursor.current() {
                merge.push(Reverse((key(next), number)));
            }
            let (a, b) = (entries[pair.0].id, entries[pair.1].id);
            if *generic && (history.is_incompatible(a, b) || history.worked_together(a, b)) {
                continue;
            }
            chosen.push(pair);
            if chosen.len() == limit {
                break 'levels;
            }
        }
    }
    chosen
        .into_iter()
        .map(|(first, second)| {
            score_pair(
                client,
                &candidates[entries[first].index],
                &candidates[entries[second].index],
                history,
                weights,
            )
        })
        .collect()
}

/// The pairs of candidates that worked together before and are not
/// incompatible, with their full score, best first then by IDs: positions
/// in `entries`, the lower ID first.
fn worked_pairs(
    entries: &[Entry],
    history: &PairHistory,
    points: &Points,
) -> Vec<(i64, usize, usize)> {
    if history.worked.is_empty() {
        return Vec::new();
    }
    let mut position: Vec<(Uuid, usize)> = entries
        .iter()
        .enumerate()
        .map(|(position, entry)| (entry.id, position))
        .collect();
    position.sort_unstable();
    let find = |id: Uuid| {
        position
            .binary_search_by_key(&id, |(id, _)| *id)
            .ok()
            .map(|found| position[found].1)
    };
    let mut pairs: Vec<(i64, usize, usize)> = history
        .worked
        .iter()
        .filter_map(|pair| {
            let [low, high] = PairHistory::key(pair[0], pair[1]);
            if low == high || history.is_incompatible(low, high) {
                return None;
            }
            let (first, second) = (find(low)?, find(high)?);
            let (a, b) = (&entries[first], &entries[second]);
            let gender = if a.same_gender || b.same_gender {
                points.gender
            } else {
                0
            };
            Some((
                a.individual + b.individual + gender + points.worked_together,
                first,
                second,
            ))
        })
        .collect();
    pairs.sort_unstable_by_key(|&(score, first, second)| {
        (Reverse(score), entries[first].id, entries[second].id)
    });
    pairs.dedup();
    pairs
}

/// Random instances for the tests of this module and of [`crate::batch`].
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// SplitMix64: small, seeded, good enough for test instances.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `0..n` (n > 0).
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        pub(crate) fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        pub(crate) fn pick<T: Copy>(&mut self, values: &[T]) -> T {
            values[self.below(values.len())]
        }
    }

    pub(crate) const AREAS: [&str; 3] = ["Darlington", "East Durham", "North Durham"];
    pub(crate) const GENDERS: [Gender; 5] = [
        Gender::Female,
        Gender::Male,
        Gender::NonBinary,
        Gender::Undisclosed,
        Gender::Unspecified,
    ];
    /// Few experiences, so that scores tie often.
    pub(crate) const EXPERIENCES: [LivedExperience; 8] = [
        LivedExperience::AlcoholDependency,
        LivedExperience::MentalHealth,
        LivedExperience::CrimeVictim,
        LivedExperience::CrimePerpetrator,
        LivedExperience::Prison,
        LivedExperience::SexualOffenceVictim,
        LivedExperience::DomesticAbuseVictim,
        LivedExperience::Debt,
    ];
    pub(crate) const VULNERABILITIES: [Vulnerability; 6] = [
        Vulnerability::AlcoholAddiction,
        Vulnerability::MentalHealth,
        Vulnerability::HarassmentOrStalkingVictim,
        Vulnerability::Perpetrator,
        Vulnerability::DomesticAbuseVictim,
        Vulnerability::HighImpactUser,
    ];
    pub(crate) const CRIMES: [CrimeType; 5] = [
        CrimeType::Theft,
        CrimeType::Rape,
        CrimeType::PhysicalAssault,
        CrimeType::HarassmentOrStalking,
        CrimeType::Unspecified,
    ];

    fn some<T: Copy>(rng: &mut Rng, values: &[T], most: usize) -> Vec<T> {
        (0..rng.below(most + 1)).map(|_| rng.pick(values)).collect()
    }

    pub(crate) fn client(rng: &mut Rng) -> ClientNeeds {
        ClientNeeds {
            area: rng.pick(&AREAS).to_owned(),
            vulnerabilities: some(rng, &VULNERABILITIES, 3),
            gender: rng.pick(&GENDERS),
            victim_of: some(rng, &CRIMES, 2),
            perpetrator_of: if rng.chance(30) {
                some(rng, &CRIMES, 2)
            } else {
                Vec::new()
            },
        }
    }

    pub(crate) fn mentor(rng: &mut Rng, n: u128) -> Candidate {
        let mut areas = vec![rng.pick(&AREAS).to_owned()];
        if rng.chance(20) {
            areas.push(rng.pick(&AREAS).to_owned());
        }
        Candidate {
            // IDs out of step with their position, so ID order matters.
            // Distinct for n below 1,000,003.
            mentor_id: Uuid::from_u128((n * 7_919 + 13) % 1_000_003),
            display_name: format!("Mentor {n}"),
            gender: rng.pick(&GENDERS),
            areas,
            lived_experience: some(rng, &EXPERIENCES, 3),
            free_places: rng.below(4) as i32,
            waiting_days: rng.chance(30).then(|| rng.below(120) as i64 - 5),
        }
    }

    /// Valid weights, often with zeros and equal values, so scores tie.
    pub(crate) fn weights(rng: &mut Rng) -> Weights {
        if rng.chance(40) {
            return Weights::default();
        }
        let mut weight = || rng.pick(&[0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]);
        Weights {
            version: "test".to_owned(),
            area: weight(),
            experience: weight(),
            crime_history: weight(),
            gender: weight(),
            waiting_per_week: weight(),
            waiting_cap_weeks: 6,
            free_place: weight(),
            counted_free_places: 2,
            worked_together: weight(),
        }
    }

    /// Random worked and incompatible pairs among `mentors`.
    pub(crate) fn history(rng: &mut Rng, mentors: &[Candidate], pairs: usize) -> PairHistory {
        let mut history = PairHistory::default();
        if mentors.len() < 2 {
            return history;
        }
        for _ in 0..pairs {
            let a = mentors[rng.below(mentors.len())].mentor_id;
            let b = mentors[rng.below(mentors.len())].mentor_id;
            if a == b {
                continue;
            }
            if rng.chance(50) {
                history.record_worked(a, b);
            } else {
                history.record_incompatible(a, b);
            }
        }
        history
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{self, Rng};
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn client() -> ClientNeeds {
        ClientNeeds {
            area: "Darlington".into(),
            vulnerabilities: vec![Vulnerability::AlcoholAddiction, Vulnerability::MentalHealth],
            gender: Gender::Female,
            victim_of: Vec::new(),
            perpetrator_of: Vec::new(),
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
            waiting_days: None,
        }
    }

    fn score(client: &ClientNeeds, a: &Candidate, b: &Candidate) -> f64 {
        score_pair(client, a, b, &PairHistory::default(), &Weights::default()).score
    }

    fn propose_default(
        client: &ClientNeeds,
        candidates: &[Candidate],
        history: &PairHistory,
        limit: usize,
    ) -> Vec<Proposal> {
        propose(client, candidates, history, &Weights::default(), limit)
    }

    /// The old approach: score every pair and sort.
    fn brute_force(
        client: &ClientNeeds,
        candidates: &[Candidate],
        history: &PairHistory,
        weights: &Weights,
        limit: usize,
    ) -> Vec<Proposal> {
        let mut all = Vec::new();
        for (first, a) in candidates.iter().enumerate() {
            for b in &candidates[first + 1..] {
                if !history.is_incompatible(a.mentor_id, b.mentor_id) {
                    all.push(score_pair(client, a, b, history, weights));
                }
            }
        }
        all.sort_by(|x, y| {
            y.score
                .partial_cmp(&x.score)
                .unwrap()
                .then(x.mentor_ids.cmp(&y.mentor_ids))
        });
        all.truncate(limit);
        all
    }

    // Weights.

    #[test]
    fn the_default_weights_are_valid_and_versioned() {
        let weights = Weights::default();
        assert_eq!(weights.validate(), Ok(()));
        assert_eq!(weights.version, "2026-12-03");
        assert_eq!(
            (weights.area, weights.experience, weights.crime_history),
            (3.0, 2.0, 2.0)
        );
        assert_eq!((weights.gender, weights.waiting_per_week), (1.0, 0.25));
        assert_eq!(
            (weights.waiting_cap_weeks, weights.counted_free_places),
            (12, 2)
        );
        assert_eq!((weights.free_place, weights.worked_together), (0.5, 1.5));
    }

    #[test]
    fn weights_default_missing_fields_and_refuse_unknown_ones() {
        let weights: Weights =
            serde_json::from_str(r#"{"version": "2027-01-01", "area": 4.5}"#).unwrap();
        assert_eq!(
            weights,
            Weights {
                version: "2027-01-01".into(),
                area: 4.5,
                ..Weights::default()
            }
        );
        let unknown = serde_json::from_str::<Weights>(r#"{"areas": 4.5}"#).unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
        let round_trip: Weights =
            serde_json::from_str(&serde_json::to_string(&Weights::default()).unwrap()).unwrap();
        assert_eq!(round_trip, Weights::default());
    }

    #[test]
    fn the_version_must_be_short_printable_ascii() {
        let with = |version: &str| {
            Weights {
                version: version.into(),
                ..Weights::default()
            }
            .validate()
        };
        assert!(with("").unwrap_err().contains("must not be empty"));
        assert!(with("   ").unwrap_err().contains("must not be empty"));
        assert_eq!(with(&"v".repeat(40)), Ok(()));
        assert!(with(&"v".repeat(41)).unwrap_err().contains("at most 40"));
        assert!(
            with("2026-12-03\n")
                .unwrap_err()
                .contains("printable ASCII")
        );
        assert!(
            with("2026-12-03\t")
                .unwrap_err()
                .contains("printable ASCII")
        );
        assert!(with("été").unwrap_err().contains("printable ASCII"));
        assert_eq!(with("2026-12-03 trial (b)"), Ok(()));
    }

    /// Every weight set to `value`, one at a time, with the problem expected.
    fn each_weight_refuses(value: f64, problem: &str) {
        let names = Weights::default().named().map(|(name, _)| name);
        for name in names {
            let mut weights = Weights::default();
            let field = match name {
                "area" => &mut weights.area,
                "experience" => &mut weights.experience,
                "crime_history" => &mut weights.crime_history,
                "gender" => &mut weights.gender,
                "waiting_per_week" => &mut weights.waiting_per_week,
                "free_place" => &mut weights.free_place,
                "worked_together" => &mut weights.worked_together,
                other => panic!("untested weight {other}"),
            };
            *field = value;
            let error = weights.validate().unwrap_err();
            assert!(
                error.contains(&format!("weights.{name} ")) && error.contains(problem),
                "{name} = {value}: {error}"
            );
        }
    }

    #[test]
    fn every_weight_must_be_finite() {
        each_weight_refuses(f64::NAN, "finite");
        each_weight_refuses(f64::INFINITY, "finite");
        each_weight_refuses(f64::NEG_INFINITY, "finite");
    }

    #[test]
    fn every_weight_must_not_be_negative() {
        each_weight_refuses(-0.01, "must not be negative");
        each_weight_refuses(-3.0, "must not be negative");
    }

    #[test]
    fn every_weight_must_be_at_most_a_hundred() {
        each_weight_refuses(100.01, "at most 100");
        each_weight_refuses(1e9, "at most 100");
    }

    #[test]
    fn every_weight_must_be_a_whole_number_of_hundredths() {
        each_weight_refuses(0.001, "whole number of hundredths");
        each_weight_refuses(1.005, "whole number of hundredths");
        each_weight_refuses(1.0 / 3.0, "whole number of hundredths");
        let edges = Weights {
            area: 0.0,
            experience: 100.0,
            crime_history: 0.01,
            gender: 0.1,
            waiting_per_week: 0.07,
            free_place: 99.99,
            worked_together: 0.3,
            ..Weights::default()
        };
        assert_eq!(edges.validate(), Ok(()));
    }

    #[test]
    fn the_counts_are_bounded() {
        let weeks = Weights {
            waiting_cap_weeks: 261,
            ..Weights::default()
        };
        assert!(
            weeks
                .validate()
                .unwrap_err()
                .contains("weights.waiting_cap_weeks")
        );
        let places = Weights {
            counted_free_places: 11,
            ..Weights::default()
        };
        assert!(
            places
                .validate()
                .unwrap_err()
                .contains("weights.counted_free_places")
        );
        let edges = Weights {
            waiting_cap_weeks: 260,
            counted_free_places: 10,
            ..Weights::default()
        };
        assert_eq!(edges.validate(), Ok(()));
    }

    // Scoring.

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
        let proposal = score_pair(
            &client(),
            &a,
            &b,
            &PairHistory::default(),
            &Weights::default(),
        );
        // area 3 + experience 2 + 2 + gender 1 + two free places 1.
        assert_eq!(proposal.score, 9.0);
        assert_eq!(proposal.mentor_ids, [id(1), id(2)]);
        assert_eq!(proposal.reasons.len(), 5);
        assert!(proposal.reasons[0].contains("Mentor 1 works in the client's area (+3)"));
        assert!(proposal.reasons[1].contains("alcohol dependency (+2)"));
        assert!(proposal.reasons[2].contains("mental health (+2)"));
        assert_eq!(proposal.reasons[3], "a mentor of the client's gender (+1)");
        assert_eq!(
            proposal.reasons[4],
            "2 free place(s) counted between the pair (+1)"
        );
    }

    #[test]
    fn a_pair_scores_the_individual_scores_plus_the_pair_terms() {
        let mut rng = Rng(0x5EED_0002);
        for _ in 0..500 {
            let client = test_support::client(&mut rng);
            let (a, b) = (
                test_support::mentor(&mut rng, 1),
                test_support::mentor(&mut rng, 2),
            );
            let weights = test_support::weights(&mut rng);
            let mut history = PairHistory::default();
            let worked = rng.chance(50);
            if worked {
                history.record_worked(a.mentor_id, b.mentor_id);
            }
            let mut expected =
                individual_score(&client, &a, &weights) + individual_score(&client, &b, &weights);
            if shares_gender(&client, &a) || shares_gender(&client, &b) {
                expected += weights.gender;
            }
            if worked {
                expected += weights.worked_together;
            }
            let score = score_pair(&client, &a, &b, &history, &weights).score;
            assert!(
                (score - expected).abs() < 1e-9,
                "{score} against {expected}"
            );
        }
    }

    #[test]
    fn score_pair_is_symmetric_and_names_the_lower_id_first() {
        let a = mentor(
            7,
            "Darlington",
            Gender::Male,
            &[LivedExperience::MentalHealth],
            1,
        );
        let b = mentor(3, "Darlington", Gender::Female, &[], 2);
        let history = PairHistory::default();
        let weights = Weights::default();
        let forward = score_pair(&client(), &a, &b, &history, &weights);
        assert_eq!(forward, score_pair(&client(), &b, &a, &history, &weights));
        assert_eq!(forward.mentor_ids, [id(3), id(7)]);
        assert!(forward.reasons[0].starts_with("Mentor 3"));
    }

    #[test]
    fn a_mentor_of_several_areas_works_in_each() {
        let a = mentor(1, "East Durham+Darlington", Gender::Male, &[], 0);
        let b = mentor(2, "East Durham", Gender::Male, &[], 0);
        let proposal = score_pair(
            &client(),
            &a,
            &b,
            &PairHistory::default(),
            &Weights::default(),
        );
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
        assert_eq!(score(&client(), &a, &b), 1.5);
    }

    #[test]
    fn gender_counts_once_and_not_when_undisclosed() {
        let a = mentor(1, "Elsewhere", Gender::Female, &[], 0);
        let b = mentor(2, "Elsewhere", Gender::Female, &[], 0);
        assert_eq!(score(&client(), &a, &b), 1.0);
        let undisclosed = ClientNeeds {
            gender: Gender::Undisclosed,
            ..client()
        };
        let a = mentor(1, "Elsewhere", Gender::Undisclosed, &[], 0);
        assert_eq!(score(&undisclosed, &a, &b), 0.0);
        let proposal = score_pair(
            &undisclosed,
            &a,
            &b,
            &PairHistory::default(),
            &Weights::default(),
        );
        assert!(proposal.reasons.is_empty());
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
            &[
                LivedExperience::DomesticAbuseVictim,
                LivedExperience::DomesticAbuseVictim,
            ],
            0,
        );
        let b = mentor(2, "Elsewhere", Gender::Male, &[], 0);
        assert_eq!(score(&needs, &a, &b), 2.0, "and a repeated experience once");
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
    fn the_crime_mapping_follows_the_documented_rules() {
        use CrimeType as C;
        use LivedExperience as L;
        assert!(experience_for_crimes(&[], &[]).is_empty());
        assert!(experience_for_crimes(&[C::Unspecified], &[C::Unspecified]).is_empty());
        assert_eq!(experience_for_crimes(&[C::Theft], &[]), [L::CrimeVictim]);
        assert_eq!(
            experience_for_crimes(&[C::Rape, C::SexualAssault], &[]),
            [L::CrimeVictim, L::SexualOffenceVictim]
        );
        assert_eq!(
            experience_for_crimes(&[], &[C::DrugOffences, C::Theft]),
            [L::CriminalJusticeSystem, L::CrimePerpetrator, L::Prison]
        );
    }

    #[test]
    fn crime_history_adds_its_points() {
        let needs = ClientNeeds {
            vulnerabilities: Vec::new(),
            victim_of: vec![CrimeType::SexualAssault],
            perpetrator_of: vec![CrimeType::Theft],
            ..client()
        };
        let a = mentor(
            1,
            "Elsewhere",
            Gender::Male,
            &[
                LivedExperience::CrimeVictim,
                LivedExperience::SexualOffenceVictim,
            ],
            0,
        );
        let b = mentor(
            2,
            "Elsewhere",
            Gender::Male,
            &[
                LivedExperience::Prison,
                LivedExperience::CrimePerpetrator,
                LivedExperience::CriminalJusticeSystem,
                LivedExperience::Debt,
            ],
            0,
        );
        let proposal = score_pair(&needs, &a, &b, &PairHistory::default(), &Weights::default());
        assert_eq!(proposal.score, 10.0, "five experiences of 2");
        assert_eq!(proposal.reasons.len(), 5);
        assert_eq!(
            proposal.reasons[0],
            "Mentor 1 has lived experience of crime victim, which speaks to the client's crime history (+2)"
        );
        assert!(proposal.reasons[2].contains("Mentor 2 has lived experience of prison"));
        let weights = Weights {
            crime_history: 0.75,
            ..Weights::default()
        };
        assert_eq!(
            score_pair(&needs, &a, &b, &PairHistory::default(), &weights).score,
            3.75
        );
    }

    #[test]
    fn an_experience_counted_for_a_vulnerability_is_not_counted_again_for_crimes() {
        let needs = ClientNeeds {
            vulnerabilities: vec![
                Vulnerability::HarassmentOrStalkingVictim,
                Vulnerability::Perpetrator,
            ],
            victim_of: vec![CrimeType::HarassmentOrStalking],
            perpetrator_of: vec![CrimeType::PhysicalAssault],
            ..client()
        };
        let a = mentor(
            1,
            "Elsewhere",
            Gender::Male,
            &[
                LivedExperience::CrimeVictim,
                LivedExperience::CriminalJusticeSystem,
            ],
            0,
        );
        let b = mentor(2, "Elsewhere", Gender::Male, &[LivedExperience::Prison], 0);
        let weights = Weights {
            experience: 2.0,
            crime_history: 0.5,
            ..Weights::default()
        };
        let proposal = score_pair(&needs, &a, &b, &PairHistory::default(), &weights);
        // Crime victim and criminal justice system as vulnerabilities (2 + 2),
        // prison for the crime history only (0.5).
        assert_eq!(proposal.score, 4.5);
        assert_eq!(proposal.reasons.len(), 3);
    }

    #[test]
    fn waiting_adds_its_points_per_full_week_up_to_the_cap() {
        let waiting = |days: Option<i64>| Candidate {
            waiting_days: days,
            ..mentor(1, "Elsewhere", Gender::Male, &[], 0)
        };
        let other = mentor(2, "Elsewhere", Gender::Male, &[], 0);
        assert_eq!(score(&client(), &waiting(None), &other), 0.0);
        assert_eq!(
            score(&client(), &waiting(Some(6)), &other),
            0.0,
            "no full week"
        );
        assert_eq!(score(&client(), &waiting(Some(-30)), &other), 0.0);
        assert_eq!(score(&client(), &waiting(Some(7)), &other), 0.25);
        assert_eq!(score(&client(), &waiting(Some(20)), &other), 0.5);
        assert_eq!(
            score(&client(), &waiting(Some(84)), &other),
            3.0,
            "12 weeks"
        );
        let capped = score_pair(
            &client(),
            &waiting(Some(730)),
            &other,
            &PairHistory::default(),
            &Weights::default(),
        );
        assert_eq!(capped.score, 3.0, "two years count as the cap, 12 weeks");
        assert_eq!(
            capped.reasons,
            [
                "Mentor 1 has waited 104 full weeks for a first client since training, 12 counted (+3)"
            ]
        );
        let longer = Weights {
            waiting_cap_weeks: 52,
            ..Weights::default()
        };
        let proposal = score_pair(
            &client(),
            &waiting(Some(730)),
            &other,
            &PairHistory::default(),
            &longer,
        );
        assert_eq!(proposal.score, 13.0);
    }

    #[test]
    fn a_weight_of_zero_gives_neither_points_nor_reason() {
        let a = mentor(
            1,
            "Darlington",
            Gender::Female,
            &[LivedExperience::MentalHealth],
            2,
        );
        let b = mentor(2, "Darlington", Gender::Male, &[], 2);
        let weights = Weights {
            area: 0.0,
            free_place: 0.0,
            ..Weights::default()
        };
        let proposal = score_pair(&client(), &a, &b, &PairHistory::default(), &weights);
        assert_eq!(proposal.score, 3.0);
        assert_eq!(proposal.reasons.len(), 2, "{:?}", proposal.reasons);
    }

    #[test]
    fn a_pair_that_worked_together_rises() {
        let candidates = vec![
            mentor(
                1,
                "Darlington",
                Gender::Female,
                &[LivedExperience::MentalHealth],
                1,
            ),
            mentor(
                2,
                "Darlington",
                Gender::Male,
                &[LivedExperience::AlcoholDependency],
                1,
            ),
            mentor(
                3,
                "Darlington",
                Gender::Male,
                &[LivedExperience::MentalHealth],
                1,
            ),
            mentor(4, "Darlington", Gender::Male, &[], 1),
        ];
        // 5.5, 5.5, 5.5 and 3.5 points; 1 for the gender with mentor 1.
        let before = propose_default(&client(), &candidates, &PairHistory::default(), 10);
        assert_eq!(before[0].mentor_ids, [id(1), id(2)]);
        let rank = |proposals: &[Proposal]| {
            proposals
                .iter()
                .position(|p| p.mentor_ids == [id(3), id(4)])
                .unwrap()
        };
        assert_eq!(rank(&before), 5, "9, after [2, 4] also at 9");
        let mut history = PairHistory::default();
        history.record_worked(id(4), id(3));
        assert_eq!(history.worked, HashSet::from([[id(3), id(4)]]));
        let after = propose_default(&client(), &candidates, &history, 10);
        assert_eq!(rank(&after), 3, "9 + 1.5 passes [1, 4] at 10");
        let pair = &after[3];
        assert_eq!(pair.score, 10.5);
        assert_eq!(
            pair.reasons.last().unwrap(),
            "Mentor 3 and Mentor 4 have supported a client through to discharge together (+1.5)"
        );
        assert_eq!(after.len(), 6);
    }

    #[test]
    fn an_incompatible_pair_is_never_proposed() {
        let candidates = vec![
            mentor(
                1,
                "Darlington",
                Gender::Female,
                &[LivedExperience::MentalHealth],
                2,
            ),
            mentor(
                2,
                "Darlington",
                Gender::Female,
                &[LivedExperience::AlcoholDependency],
                2,
            ),
            mentor(3, "Darlington", Gender::Male, &[], 1),
        ];
        let mut history = PairHistory::default();
        history.record_incompatible(id(2), id(1));
        // Even when they also worked together.
        history.record_worked(id(1), id(2));
        assert!(history.is_incompatible(id(1), id(2)));
        let proposals = propose_default(&client(), &candidates, &history, 10);
        let ids: Vec<[Uuid; 2]> = proposals.iter().map(|p| p.mentor_ids).collect();
        assert_eq!(ids, [[id(1), id(3)], [id(2), id(3)]]);
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
        let history = PairHistory::default();
        let proposals = propose_default(&client(), &candidates, &history, 10);
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
        assert_eq!(
            propose_default(&client(), &candidates, &history, 2).len(),
            2
        );
        assert!(propose_default(&client(), &candidates, &history, 0).is_empty());
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
        let history = PairHistory::default();
        for proposal in propose_default(&client(), &candidates, &history, 10) {
            let find = |id: Uuid| candidates.iter().find(|c| c.mentor_id == id).unwrap();
            let (a, b) = (find(proposal.mentor_ids[0]), find(proposal.mentor_ids[1]));
            assert_eq!(
                proposal,
                score_pair(&client(), a, b, &history, &Weights::default())
            );
        }
    }

    #[test]
    fn fewer_than_two_candidates_give_no_pair() {
        let history = PairHistory::default();
        assert!(propose_default(&client(), &[], &history, 5).is_empty());
        let one = [mentor(1, "Darlington", Gender::Female, &[], 1)];
        assert!(propose_default(&client(), &one, &history, 5).is_empty());
    }

    #[test]
    fn a_repeated_mentor_id_counts_once() {
        let candidates = vec![
            mentor(1, "Darlington", Gender::Female, &[], 1),
            mentor(
                1,
                "Darlington",
                Gender::Female,
                &[LivedExperience::MentalHealth],
                1,
            ),
            mentor(2, "Darlington", Gender::Male, &[], 1),
        ];
        let proposals = propose_default(&client(), &candidates, &PairHistory::default(), 10);
        assert_eq!(proposals.len(), 1);
        assert_eq!(proposals[0].mentor_ids, [id(1), id(2)]);
        assert_eq!(
            proposals[0].score, 8.0,
            "the first entry of mentor 1, without experience"
        );
    }

    #[test]
    fn propose_matches_the_brute_force_on_random_instances() {
        let mut rng = Rng(0x5EED_0001);
        let mut compared = 0;
        for _ in 0..4_000 {
            let client = test_support::client(&mut rng);
            let count = rng.below(15);
            let candidates: Vec<Candidate> = (0..count)
                .map(|n| test_support::mentor(&mut rng, n as u128))
                .collect();
            let pairs = rng.below(count * 2 + 1);
            let history = test_support::history(&mut rng, &candidates, pairs);
            let weights = test_support::weights(&mut rng);
            assert_eq!(weights.validate(), Ok(()));
            let limit = rng.below(count * count / 2 + 3);
            let expected = brute_force(&client, &candidates, &history, &weights, limit);
            let proposals = propose(&client, &candidates, &history, &weights, limit);
            assert_eq!(
                proposals, expected,
                "{client:?} {candidates:?} {history:?} {weights:?}"
            );
            for proposal in &proposals {
                let [a, b] = proposal.mentor_ids;
                assert!(!history.is_incompatible(a, b));
            }
            compared += proposals.len();
        }
        assert!(compared > 40_000, "{compared} proposals compared");
    }

    #[test]
    fn propose_ranks_ten_thousand_candidates_without_every_pair() {
        // 9,995 plain mentors with equal scores and five strong ones whose
        // ten pairs lead, but for one incompatible pair.
        let plain = |n: u128| mentor(n, "Darlington", Gender::Male, &[], 1);
        let mut candidates: Vec<Candidate> = (100..10_095).map(plain).collect();
        for n in 1..=5u128 {
            let experience: &[LivedExperience] = if n <= 2 {
                &[
                    LivedExperience::MentalHealth,
                    LivedExperience::AlcoholDependency,
                ]
            } else {
                &[LivedExperience::MentalHealth]
            };
            candidates.push(mentor(n, "Darlington", Gender::Female, experience, 2));
        }
        assert_eq!(candidates.len(), 10_000);
        let mut history = PairHistory::default();
        history.record_incompatible(id(1), id(2));
        let proposals = propose_default(&client(), &candidates, &history, 10);
        let ids: Vec<[Uuid; 2]> = proposals.iter().map(|p| p.mentor_ids).collect();
        // Strong: 3 + 1 + experiences (4 or 2); pairs get the gender point.
        assert_eq!(
            ids,
            [
                [id(1), id(3)],
                [id(1), id(4)],
                [id(1), id(5)],
                [id(2), id(3)],
                [id(2), id(4)],
                [id(2), id(5)],
                [id(3), id(4)],
                [id(3), id(5)],
                [id(4), id(5)],
                [id(1), id(100)],
            ]
        );
        assert_eq!(proposals[0].score, 15.0);
        assert_eq!(proposals[6].score, 13.0);
        assert_eq!(proposals[9].score, 12.5, "8 + 3.5 + the gender point");
        for proposal in &proposals {
            let find = |id: Uuid| candidates.iter().find(|c| c.mentor_id == id).unwrap();
            let (a, b) = (find(proposal.mentor_ids[0]), find(proposal.mentor_ids[1]));
            assert_eq!(
                *proposal,
                score_pair(&client(), a, b, &history, &Weights::default())
            );
        }
    }

    #[test]
    fn equal_candidates_are_proposed_by_ascending_ids() {
        let candidates: Vec<Candidate> = (0..10_000u128)
            .rev()
            .map(|n| mentor(n + 1, "Darlington", Gender::Male, &[], 1))
            .collect();
        let mut history = PairHistory::default();
        history.record_incompatible(id(1), id(3));
        let proposals = propose_default(&client(), &candidates, &history, 4);
        let ids: Vec<[Uuid; 2]> = proposals.iter().map(|p| p.mentor_ids).collect();
        assert_eq!(
            ids,
            [
                [id(1), id(2)],
                [id(1), id(4)],
                [id(1), id(5)],
                [id(1), id(6)]
            ]
        );
    }
}
