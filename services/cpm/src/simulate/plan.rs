//! The synthetic programme as a plan: a pure function of a seed, a size and
//! today's date, calibrated to the evaluation's figures (docs/simulate.md
//! lists each one and where it comes from). Counts that the evaluation
//! gives (referrals and supported per year, non-engagements by stage and
//! reason, contacts-per-client buckets) are apportioned exactly at the
//! chosen size; the rest (who is which gender, which vulnerabilities, how
//! many contacts within a bucket) is drawn from the seeded generator.

use std::collections::BTreeMap;

use chrono::{Datelike as _, Days, NaiveDate};
use cpm_proto::v1::{
    AgeBand, AgencyKind, ContactActivity, CrimeType, DischargeOutcome, Gender, LivedExperience,
    NonEngagementReason, NonEngagementStage, ReferredTo, Vulnerability,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

use super::comparison::{self, DemandTotals};
use super::mentoring;
use super::timeline::{self, Timeline};

/// Referrals per programme year (years 1-3 from the evaluation; year 4 is
/// what the 2019 totals, 545 referrals and 381 engaged, add to them).
pub const YEAR_REFERRALS: [u32; 4] = [34, 171, 56, 284];
/// Clients supported per programme year, as above.
pub const YEAR_SUPPORTED: [u32; 4] = [30, 63, 47, 241];
/// Mentors trained by 2019.
pub const FULL_MENTORS: u32 = 298;
/// The programme's cost over the 150 clients' three years, in pence (£193,000).
pub const FULL_COST_PENCE: i64 = 19_300_000;

/// One way a referral is not (or no longer) taken on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonEngagement {
    pub label: &'static str,
    pub stage: NonEngagementStage,
    pub reason: NonEngagementReason,
    pub referred_to: Option<ReferredTo>,
    /// Of the 121 referrals of years 1-3 not taken on.
    first_years: u32,
}

/// The evaluation's 121 non-engagements of years 1-3, each with the stage
/// and reason the platform records. "Declined by the project after
/// engaging" is split between the home visit and during engagement.
pub const NON_ENGAGEMENTS: [NonEngagement; 8] = [
    NonEngagement {
        label: "rejected at initial risk assessment: no will, want or capacity",
        stage: NonEngagementStage::InitialRiskAssessment,
        reason: NonEngagementReason::NoWillWantOrCapacity,
        referred_to: None,
        first_years: 35,
    },
    NonEngagement {
        label: "rejected at initial risk assessment: too volatile for volunteers",
        stage: NonEngagementStage::InitialRiskAssessment,
        reason: NonEngagementReason::RiskToVolunteers,
        referred_to: None,
        first_years: 20,
    },
    NonEngagement {
        label: "client declined to engage",
        stage: NonEngagementStage::ClientDeclined,
        reason: NonEngagementReason::ClientDeclined,
        referred_to: None,
        first_years: 24,
    },
    NonEngagement {
        label: "declined by the project after the home visit",
        stage: NonEngagementStage::HomeVisit,
        reason: NonEngagementReason::NoWillWantOrCapacity,
        referred_to: None,
        first_years: 12,
    },
    NonEngagement {
        label: "declined by the project during engagement",
        stage: NonEngagementStage::DuringEngagement,
        reason: NonEngagementReason::NoWillWantOrCapacity,
        referred_to: None,
        first_years: 10,
    },
    NonEngagement {
        label: "referred on: restorative intervention",
        stage: NonEngagementStage::OtherProfessionalsAdvice,
        reason: NonEngagementReason::ReferredOn,
        referred_to: Some(ReferredTo::RestorativeIntervention),
        first_years: 10,
    },
    NonEngagement {
        label: "referred on: mediation",
        stage: NonEngagementStage::OtherProfessionalsAdvice,
        reason: NonEngagementReason::ReferredOn,
        referred_to: Some(ReferredTo::Mediation),
        first_years: 6,
    },
    NonEngagement {
        label: "not engaged at an external organisation's request",
        stage: NonEngagementStage::ExternalOrganisationRequest,
        reason: NonEngagementReason::ExternalRequest,
        referred_to: None,
        first_years: 4,
    },
];
const CLIENT_DECLINED: usize = 2;
/// Year 4 (2019): 58 declined in all, 24 of them in years 1-3.
const YEAR4_DECLINED: u32 = 34;

/// Contacts-per-client buckets (the evaluation's 140 clients): 112 at 49 or
/// fewer (from 3), 12 at 50-99, 11 at 100-199, 5 at 200 or more (to 266).
pub const CONTACT_BUCKETS: [(u32, u32, u32); 4] =
    [(3, 49, 112), (50, 99, 12), (100, 199, 11), (200, 266, 5)];
/// The most contacts one client had.
pub const MOST_CONTACTS: u32 = 266;

/// Vulnerabilities and their share of clients.
pub const VULNERABILITIES: [(Vulnerability, f64); 17] = [
    (Vulnerability::HighImpactUser, 0.65),
    (Vulnerability::VulnerableAndIsolated, 0.63),
    (Vulnerability::MentalHealth, 0.61),
    (Vulnerability::HarassmentOrStalkingVictim, 0.54),
    (Vulnerability::Perpetrator, 0.47),
    (Vulnerability::AlcoholAddiction, 0.39),
    (Vulnerability::DomesticAbuseVictim, 0.18),
    (Vulnerability::DrugAddiction, 0.16),
    (Vulnerability::SelfHarmOrSuicidal, 0.15),
    (Vulnerability::Bereavement, 0.11),
    (Vulnerability::Ailment, 0.11),
    (Vulnerability::Illness, 0.08),
    (Vulnerability::Elderly, 0.07),
    (Vulnerability::AntiSocialBehaviourVictim, 0.05),
    (Vulnerability::NeighbourDispute, 0.05),
    (Vulnerability::CoerciveControl, 0.04),
    (Vulnerability::Divorce, 0.04),
];

/// Crimes against clients, as a share of all clients (105 of 140 were victims).
pub const VICTIM_CRIMES: [(CrimeType, f64); 12] = [
    (CrimeType::HarassmentOrStalking, 0.51),
    (CrimeType::PhysicalAssault, 0.40),
    (CrimeType::CriminalDamage, 0.24),
    (CrimeType::Theft, 0.21),
    (CrimeType::Burglary, 0.17),
    (CrimeType::PublicOrder, 0.16),
    (CrimeType::Rape, 0.13),
    (CrimeType::SexualAssault, 0.07),
    (CrimeType::MaliciousCommunications, 0.06),
    (CrimeType::ThreatsToKill, 0.06),
    (CrimeType::Fraud, 0.05),
    (CrimeType::Robbery, 0.04),
];
/// Crimes clients committed, most common first (the evaluation gives no shares).
pub const PERPETRATOR_CRIMES: [CrimeType; 13] = [
    CrimeType::HarassmentOrStalking,
    CrimeType::PhysicalAssault,
    CrimeType::PublicOrder,
    CrimeType::CriminalDamage,
    CrimeType::Theft,
    CrimeType::MaliciousCommunications,
    CrimeType::ThreatsToKill,
    CrimeType::DrugOffences,
    CrimeType::SexualAssault,
    CrimeType::Burglary,
    CrimeType::PossessionOfBladedArticle,
    CrimeType::PossessionOfSexualMaterial,
    CrimeType::Robbery,
];

/// Mentors' lived experience, counted among 119 mentors (33 reported none).
pub const LIVED_EXPERIENCE: [(LivedExperience, u32); 22] = [
    (LivedExperience::AlcoholDependency, 39),
    (LivedExperience::DementiaCarer, 23),
    (LivedExperience::ArmedForces, 12),
    (LivedExperience::Bereavement, 24),
    (LivedExperience::Carer, 35),
    (LivedExperience::CrimePerpetrator, 26),
    (LivedExperience::CrimeVictim, 35),
    (LivedExperience::SexualOffenceVictim, 18),
    (LivedExperience::CriminalJusticeSystem, 32),
    (LivedExperience::Disabled, 11),
    (LivedExperience::Divorced, 35),
    (LivedExperience::DomesticAbuseVictim, 41),
    (LivedExperience::Drugs, 34),
    (LivedExperience::Debt, 15),
    (LivedExperience::Gambling, 5),
    (LivedExperience::Homelessness, 8),
    (LivedExperience::MentalHealth, 40),
    (LivedExperience::Prison, 13),
    (LivedExperience::SelfHarm, 11),
    (LivedExperience::SexualOrientation, 4),
    (LivedExperience::IdentifiedVulnerable, 34),
    (LivedExperience::LongTermUnemployed, 33),
];
const MENTORS_SURVEYED: u32 = 119;
const MENTORS_WITHOUT_EXPERIENCE: u32 = 33;

/// Days from training to a first client, as 21 of 32 mentors reported it:
/// 6 within a month, 10 in 1-2 months, 2 in 2-4, 1 in 4-6, 2 after 10-12.
pub const FIRST_CLIENT_WAITS: [(u64, u64, u32); 5] = [
    (7, 30, 6),
    (31, 60, 10),
    (61, 120, 2),
    (121, 180, 1),
    (301, 365, 2),
];

/// The referring agencies a simulated programme registers, with their share of referrals.
pub const AGENCIES: [(&str, &str, AgencyKind, u32); 8] = [
    (
        "police-neighbourhood",
        "Police neighbourhood team",
        AgencyKind::Police,
        30,
    ),
    (
        "police-domestic-abuse",
        "Police domestic-abuse investigation",
        AgencyKind::Police,
        15,
    ),
    ("council-asb", "Council ASB team", AgencyKind::Council, 15),
    ("nhs-gp", "GP surgery", AgencyKind::Nhs, 10),
    ("nhs-ae-demand", "A&E demand team", AgencyKind::Nhs, 5),
    ("probation", "Probation service", AgencyKind::Probation, 8),
    (
        "charity-mental-health",
        "Mental health charity",
        AgencyKind::Charity,
        10,
    ),
    (
        "mash",
        "Multi-Agency Safeguarding Hub",
        AgencyKind::SafeguardingHub,
        7,
    ),
];

/// What the plan is made from.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub seed: u64,
    /// The share of the real programme to generate: 1.0 is its 545
    /// referrals and 298 mentors.
    pub size: f64,
    /// The programme's areas (clients and mentors are spread over them).
    pub areas: Vec<String>,
    /// Training dates count back from here.
    pub today: NaiveDate,
}

/// One contact to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedContact {
    pub activity: ContactActivity,
    pub minutes: i32,
}

/// How a referral ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Accepted, matched, supported and discharged.
    Supported {
        contacts: Vec<PlannedContact>,
        discharge: DischargeOutcome,
        goal_achieved: bool,
    },
    /// Not taken on at the decision: an index into [`NON_ENGAGEMENTS`].
    NotTakenOn(usize),
    /// Accepted and matched, then ended by a re-assessment (index as above).
    EndedDuringEngagement {
        non_engagement: usize,
        contacts: Vec<PlannedContact>,
    },
}

/// One referral of the programme.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedReferral {
    /// The programme year, 1 to 4.
    pub year: u8,
    pub area: String,
    /// An index into [`AGENCIES`].
    pub agency: usize,
    pub gender: Gender,
    pub date_of_birth: NaiveDate,
    pub vulnerabilities: Vec<Vulnerability>,
    pub victim_of: Vec<CrimeType>,
    pub perpetrator_of: Vec<CrimeType>,
    /// Demand in the 12 months before the referral.
    pub calls_before: i32,
    pub hours_before: i32,
    /// Demand in the 12 months after support ended, as the follow-up
    /// figures supplied on `timeline.follow_up_on` show it (meaningless
    /// without them): for a supported client the pilot's fall, for one of
    /// the comparison cohort the fall without support ([`comparison`]).
    pub calls_after: i32,
    pub hours_after: i32,
    pub outcome: Outcome,
    /// When each step happens.
    pub timeline: Timeline,
    /// The mentors allocated (indices into [`Programme::mentors`]; the first
    /// logs the contacts), for a referral that reaches a pair.
    pub pair: Option<[usize; 2]>,
}

impl PlannedReferral {
    pub fn supported(&self) -> bool {
        matches!(self.outcome, Outcome::Supported { .. })
    }

    pub fn contacts(&self) -> &[PlannedContact] {
        match &self.outcome {
            Outcome::Supported { contacts, .. }
            | Outcome::EndedDuringEngagement { contacts, .. } => contacts,
            Outcome::NotTakenOn(_) => &[],
        }
    }

    /// The stage and reason it was not (or no longer) taken on.
    pub fn non_engagement(&self) -> Option<&'static NonEngagement> {
        match self.outcome {
            Outcome::Supported { .. } => None,
            Outcome::NotTakenOn(index)
            | Outcome::EndedDuringEngagement {
                non_engagement: index,
                ..
            } => Some(&NON_ENGAGEMENTS[index]),
        }
    }
}

/// What a mentor does in the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MentorRole {
    /// Registered before the clients, and paired with at least one.
    Mentoring,
    /// Registered once every client is matched: still waiting for a first client.
    Waiting,
    /// Trained for another organisation; declines to volunteer here.
    Declined,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedMentor {
    pub display_name: String,
    pub gender: Gender,
    pub age_band: AgeBand,
    pub area: String,
    pub lived_experience: Vec<LivedExperience>,
    pub capacity: i32,
    /// The training cohort's month, e.g. `2025-03`.
    pub cohort: String,
    /// The cohort's format: two full days, or five evenings.
    pub two_days: bool,
    /// The day the cohort completed (see [`PlannedMentor::train`]).
    pub trained_on: NaiveDate,
    pub role: MentorRole,
}

impl PlannedMentor {
    /// Mentor number `n` of `area` with drawn attributes; `plain`: without
    /// lived experience. Trained once the plan knows when
    /// ([`mentoring::assign`]); until then `trained_on` is a placeholder.
    pub fn draw(rng: &mut StdRng, n: usize, area: &str, role: MentorRole, plain: bool) -> Self {
        let without = f64::from(MENTORS_WITHOUT_EXPERIENCE) / f64::from(MENTORS_SURVEYED);
        let lived_experience = if plain || chance(rng, without) {
            Vec::new()
        } else {
            let mut chosen: Vec<LivedExperience> = LIVED_EXPERIENCE
                .iter()
                .filter(|(_, count)| {
                    chance(
                        rng,
                        f64::from(*count)
                            / f64::from(MENTORS_SURVEYED - MENTORS_WITHOUT_EXPERIENCE),
                    )
                })
                .map(|(l, _)| *l)
                .collect();
            if chosen.is_empty() {
                chosen.push(LivedExperience::IdentifiedVulnerable);
            }
            chosen
        };
        let age = (44.0 + 13.0 * normal(rng)).round().clamp(20.0, 82.0) as i64;
        Self {
            display_name: format!("Mentor {n:03}"),
            gender: if chance(rng, 0.6) {
                Gender::Female
            } else {
                Gender::Male
            },
            age_band: age_band(age),
            area: area.to_owned(),
            lived_experience,
            capacity: rng.random_range(2..=3),
            cohort: String::new(),
            two_days: false,
            trained_on: NaiveDate::MIN,
            role,
        }
    }

    /// Puts the mentor in the monthly cohort completing nearest `target`
    /// and no later than `latest`. Cohorts alternate formats: two full days
    /// in even months, five evenings in odd ones.
    pub fn train(&mut self, target: NaiveDate, latest: NaiveDate) {
        let day = timeline::nearest_cohort(target, latest);
        self.trained_on = day;
        self.cohort = day.format("%Y-%m").to_string();
        self.two_days = day.month().is_multiple_of(2);
    }
}

/// The synthetic programme.
#[derive(Clone, Debug)]
pub struct Programme {
    pub seed: u64,
    pub size: f64,
    pub referrals: Vec<PlannedReferral>,
    pub mentors: Vec<PlannedMentor>,
    pub cost_pence: i64,
}

/// Splits `total` in proportion to `weights`, exactly (largest remainder;
/// ties go to the earlier weight).
pub fn apportion(total: u32, weights: &[f64]) -> Vec<u32> {
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 || total == 0 {
        return vec![0; weights.len()];
    }
    let quotas: Vec<f64> = weights.iter().map(|w| f64::from(total) * w / sum).collect();
    let mut counts: Vec<u32> = quotas.iter().map(|q| q.floor() as u32).collect();
    let mut left = total - counts.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| {
        let fa = quotas[*a] - quotas[*a].floor();
        let fb = quotas[*b] - quotas[*b].floor();
        fb.total_cmp(&fa).then(a.cmp(b))
    });
    for index in order {
        if left == 0 {
            break;
        }
        counts[index] += 1;
        left -= 1;
    }
    counts
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// An index drawn in proportion to `weights`.
fn weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let sum: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * sum;
    for (index, weight) in weights.iter().enumerate() {
        if x < *weight {
            return index;
        }
        x -= weight;
    }
    weights.len() - 1
}

/// Contacts-per-client counts for `clients` supported clients: the
/// buckets apportioned exactly, counts within a bucket heavy towards its
/// low end, and the largest client at [`MOST_CONTACTS`].
pub fn contact_counts(rng: &mut StdRng, clients: u32) -> Vec<u32> {
    let shares: Vec<f64> = CONTACT_BUCKETS
        .iter()
        .map(|(_, _, n)| f64::from(*n))
        .collect();
    let per_bucket = apportion(clients, &shares);
    let mut counts = Vec::new();
    for ((low, high, _), n) in CONTACT_BUCKETS.iter().zip(&per_bucket) {
        for _ in 0..*n {
            // Exponential within the bucket: most clients near its low end.
            let mean = match low {
                3 => 3.6,
                50 => 20.0,
                100 => 35.0,
                _ => 25.0,
            };
            let draw = -mean * rng.random_range(f64::EPSILON..1.0).ln();
            counts.push((*low + draw.round() as u32).min(*high));
        }
    }
    if per_bucket[3] > 0 {
        let top = counts.len() - 1;
        counts[top] = MOST_CONTACTS;
    }
    counts.shuffle(rng);
    counts
}

/// The activities of `count` contacts: a joint first visit (50 minutes), a
/// second visit for forms and goals (100), then follow-ups.
fn contacts(rng: &mut StdRng, count: u32) -> Vec<PlannedContact> {
    use ContactActivity as A;
    let follow_ups: [(A, f64, i32, i32); 8] = [
        (A::HomeVisit, 30.0, 65, 95),
        (A::Telephone, 28.0, 5, 30),
        (A::TextOrEmail, 18.0, 2, 10),
        (A::MeetingWithClient, 6.0, 60, 240),
        (A::ProfessionalsMeeting, 6.0, 20, 60),
        (A::Signposting, 6.0, 10, 30),
        (A::FinanceReview, 3.0, 30, 90),
        (A::CaseNotes, 3.0, 10, 20),
    ];
    let weights: Vec<f64> = follow_ups.iter().map(|f| f.1).collect();
    (0..count)
        .map(|n| match n {
            0 => PlannedContact {
                activity: A::HomeVisit,
                minutes: 50,
            },
            1 => PlannedContact {
                activity: A::HomeVisit,
                minutes: rng.random_range(95..=110),
            },
            _ => {
                let (activity, _, low, high) = follow_ups[weighted(rng, &weights)];
                PlannedContact {
                    activity,
                    minutes: rng.random_range(low..=high),
                }
            }
        })
        .collect()
}

fn age_band(age: i64) -> AgeBand {
    match age {
        ..25 => AgeBand::Aged18To24,
        25..35 => AgeBand::Aged25To34,
        35..45 => AgeBand::Aged35To44,
        45..55 => AgeBand::Aged45To54,
        55..65 => AgeBand::Aged55To64,
        _ => AgeBand::Aged65AndOver,
    }
}

impl Programme {
    /// Generates the programme: the same options give the same programme.
    pub fn generate(options: &PlanOptions) -> Self {
        assert!(!options.areas.is_empty(), "a programme needs an area");
        let size = options.size.max(0.0);
        let mut rng = StdRng::seed_from_u64(options.seed);
        let full: u32 = YEAR_REFERRALS.iter().sum();
        let total = (f64::from(full) * size).round() as u32;
        let per_year = apportion(total, &YEAR_REFERRALS.map(f64::from));

        // Each year's outcomes, apportioned exactly.
        let first_years_nto: u32 = NON_ENGAGEMENTS.iter().map(|n| n.first_years).sum();
        let others: u32 = first_years_nto - NON_ENGAGEMENTS[CLIENT_DECLINED].first_years;
        let mut outcomes: Vec<(u8, Option<usize>)> = Vec::new();
        for (year, n) in per_year.iter().enumerate() {
            let supported = f64::from(YEAR_SUPPORTED[year]);
            let not_taken_on = f64::from(YEAR_REFERRALS[year] - YEAR_SUPPORTED[year]);
            let mut weights = vec![supported];
            for (index, kind) in NON_ENGAGEMENTS.iter().enumerate() {
                let weight = if year < 3 {
                    not_taken_on * f64::from(kind.first_years) / f64::from(first_years_nto)
                } else if index == CLIENT_DECLINED {
                    f64::from(YEAR4_DECLINED)
                } else {
                    (not_taken_on - f64::from(YEAR4_DECLINED)) * f64::from(kind.first_years)
                        / f64::from(others)
                };
                weights.push(weight);
            }
            let counts = apportion(*n, &weights);
            for (slot, count) in counts.iter().enumerate() {
                for _ in 0..*count {
                    outcomes.push((year as u8 + 1, slot.checked_sub(1)));
                }
            }
        }

        let supported_count = outcomes.iter().filter(|(_, o)| o.is_none()).count() as u32;
        let mut contact_counts = contact_counts(&mut rng, supported_count).into_iter();
        let area_weights: Vec<f64> = (0..options.areas.len())
            .map(|i| if i == 0 { 1.5 } else { 1.0 })
            .collect();
        let agency_weights: Vec<f64> = AGENCIES.iter().map(|a| f64::from(a.3)).collect();

        // Times come from a generator of their own, so they change nothing else.
        let mut time_rng = StdRng::seed_from_u64(options.seed ^ 0x7131_e11e);
        let mut referrals = Vec::with_capacity(outcomes.len());
        for (year, non_engagement) in outcomes {
            let gender = match rng.random::<f64>() {
                x if x < 0.514 => Gender::Female,
                x if x < 0.992 => Gender::Male,
                _ => Gender::Transgender,
            };
            let age = (46.0 + 16.0 * normal(&mut rng)).round().clamp(18.0, 97.0) as u64;
            // Born at least `age` years (and a little) before today; moved
            // back to the referral's date below, once that is drawn.
            let date_of_birth =
                options.today - Days::new(age * 365 + age / 4 + rng.random_range(1..360));
            let vulnerabilities: Vec<Vulnerability> = VULNERABILITIES
                .iter()
                .filter(|(_, share)| chance(&mut rng, *share))
                .map(|(v, _)| *v)
                .collect();
            // 54 victims only, 51 both, 15 perpetrators only, 20 neither (of 140).
            let (victim, perpetrator) = match weighted(&mut rng, &[54.0, 51.0, 15.0, 20.0]) {
                0 => (true, false),
                1 => (true, true),
                2 => (false, true),
                _ => (false, false),
            };
            let mut victim_of = Vec::new();
            if victim {
                victim_of = VICTIM_CRIMES
                    .iter()
                    .filter(|(_, share)| chance(&mut rng, share / 0.75))
                    .map(|(c, _)| *c)
                    .collect();
                if victim_of.is_empty() {
                    victim_of.push(CrimeType::HarassmentOrStalking);
                }
            }
            let mut perpetrator_of = Vec::new();
            if perpetrator {
                let weights: Vec<f64> = (0..PERPETRATOR_CRIMES.len())
                    .map(|i| 1.0 / (i as f64 + 1.0))
                    .collect();
                for _ in 0..rng.random_range(1..=2) {
                    let crime = PERPETRATOR_CRIMES[weighted(&mut rng, &weights)];
                    if !perpetrator_of.contains(&crime) {
                        perpetrator_of.push(crime);
                    }
                }
            }
            // Demand: high impact users call far more (median about 18 a
            // year, about 17 police staff hours a call).
            let hiu = vulnerabilities.contains(&Vulnerability::HighImpactUser);
            let calls_before = if hiu {
                (18.0 * (0.7 * normal(&mut rng)).exp()).round().max(11.0) as i32
            } else {
                rng.random_range(0..=10)
            };
            let hours_before =
                (f64::from(calls_before) * rng.random_range(8.0..25.0)).round() as i32;
            // After support: 56 of 150 never called the police again; the
            // others fell by about four fifths (calls) and nine tenths (hours).
            let (calls_after, hours_after) = if chance(&mut rng, 56.0 / 150.0) {
                (0, 0)
            } else {
                (
                    (f64::from(calls_before) * rng.random_range(0.05..0.4)).round() as i32,
                    (f64::from(hours_before) * rng.random_range(0.02..0.2)).round() as i32,
                )
            };
            let outcome = match non_engagement {
                None => {
                    let count = contact_counts
                        .next()
                        .expect("one count per supported client");
                    let discharge = match weighted(&mut rng, &[60.0, 15.0, 10.0, 15.0]) {
                        0 => DischargeOutcome::GoalsAchieved,
                        1 => DischargeOutcome::Disengaged,
                        2 => DischargeOutcome::MovedAway,
                        _ => DischargeOutcome::Other,
                    };
                    Outcome::Supported {
                        contacts: contacts(&mut rng, count),
                        discharge,
                        goal_achieved: discharge == DischargeOutcome::GoalsAchieved,
                    }
                }
                Some(index)
                    if NON_ENGAGEMENTS[index].stage == NonEngagementStage::DuringEngagement =>
                {
                    let count = rng.random_range(3..=8);
                    Outcome::EndedDuringEngagement {
                        non_engagement: index,
                        contacts: contacts(&mut rng, count),
                    }
                }
                Some(index) => Outcome::NotTakenOn(index),
            };
            let (engaged, supported, contact_count) = match &outcome {
                Outcome::Supported { contacts, .. } => (true, true, contacts.len()),
                Outcome::EndedDuringEngagement { contacts, .. } => (true, false, contacts.len()),
                Outcome::NotTakenOn(_) => (false, false, 0),
            };
            let timeline = timeline::draw(
                &mut time_rng,
                options.today,
                year,
                engaged,
                supported,
                contact_count,
            );
            let date_of_birth = date_of_birth - (options.today - timeline.referred_at.date_naive());
            referrals.push(PlannedReferral {
                year,
                area: options.areas[weighted(&mut rng, &area_weights)].clone(),
                agency: weighted(&mut rng, &agency_weights),
                gender,
                date_of_birth,
                vulnerabilities,
                victim_of,
                perpetrator_of,
                calls_before,
                hours_before,
                calls_after,
                hours_after,
                outcome,
                timeline,
                pair: None,
            });
        }
        // The comparison cohort, and who mentors whom and when they were
        // trained, each from a generator of its own, so they change nothing
        // else a seed gives.
        comparison::draw(
            &mut StdRng::seed_from_u64(options.seed ^ 0xc0_4a_41_50),
            &mut referrals,
        );
        let mut mentors = Self::mentors(&mut rng, options, size, &referrals);
        mentoring::assign(
            &mut StdRng::seed_from_u64(options.seed ^ 0x9a_14_ed),
            options.today,
            &mut referrals,
            &mut mentors,
        );
        Self {
            seed: options.seed,
            size,
            referrals,
            mentors,
            cost_pence: (FULL_COST_PENCE as f64 * size).round() as i64,
        }
    }

    /// Mentors: about 298 at full size, at least four who mentor in every
    /// area with clients (two of them without lived experience, so no
    /// safety rule leaves an area without a pair). Untrained here:
    /// [`mentoring::assign`] pairs them with clients and dates their training.
    fn mentors(
        rng: &mut StdRng,
        options: &PlanOptions,
        size: f64,
        referrals: &[PlannedReferral],
    ) -> Vec<PlannedMentor> {
        let total = (f64::from(FULL_MENTORS) * size).round() as u32;
        // 21 of 32 surveyed had had a client, 11 were waiting; some trained
        // for other organisations and never mentor here.
        let roles = apportion(total, &[60.0, 28.0, 12.0]);
        let mut planned = Vec::new();
        let mut push = |rng: &mut StdRng, area: &str, role: MentorRole, plain: bool| {
            let mentor = PlannedMentor::draw(rng, planned.len() + 1, area, role, plain);
            planned.push(mentor);
        };
        // Mentoring mentors: at least four per area with clients, the rest
        // spread in proportion to the area's clients in support.
        let matched: Vec<&str> = referrals
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::NotTakenOn(_)))
            .map(|r| r.area.as_str())
            .collect();
        let areas: Vec<&String> = options
            .areas
            .iter()
            .filter(|area| matched.contains(&area.as_str()))
            .collect();
        let mut mentoring = 0;
        for area in &areas {
            for k in 0..4 {
                push(rng, area, MentorRole::Mentoring, k < 2);
                mentoring += 1;
            }
        }
        if !areas.is_empty() {
            let weights: Vec<f64> = areas
                .iter()
                .map(|area| matched.iter().filter(|a| *a == area).count() as f64)
                .collect();
            for _ in mentoring..roles[0] {
                let area = areas[weighted(rng, &weights)].clone();
                push(rng, &area, MentorRole::Mentoring, false);
            }
        }
        for (role, count) in [
            (MentorRole::Waiting, roles[1]),
            (MentorRole::Declined, roles[2]),
        ] {
            for _ in 0..count {
                let area = options.areas[rng.random_range(0..options.areas.len())].clone();
                push(rng, &area, role, false);
            }
        }
        planned
    }

    /// The figures a report of this programme should show.
    pub fn intended(&self) -> Intended {
        let mut by_year: BTreeMap<u8, (u32, u32)> = BTreeMap::new();
        let mut not_taken_on: BTreeMap<(i32, i32), u32> = BTreeMap::new();
        let mut counts = Vec::new();
        let (mut before_pence, mut saving_pence) = (0, 0);
        let mut comparison = DemandTotals::default();
        for referral in &self.referrals {
            if !referral.supported() && referral.timeline.follow_up_on.is_some() {
                comparison.add(referral);
            }
            let year = by_year.entry(referral.year).or_default();
            year.0 += 1;
            if referral.supported() {
                year.1 += 1;
                before_pence += price(referral.calls_before, referral.hours_before);
                saving_pence += price(referral.calls_before, referral.hours_before)
                    - price(referral.calls_after, referral.hours_after);
            }
            if let Some(kind) = referral.non_engagement() {
                *not_taken_on
                    .entry((kind.stage as i32, kind.reason as i32))
                    .or_default() += 1;
            }
            if !matches!(referral.outcome, Outcome::NotTakenOn(_)) {
                counts.push(referral.contacts().len() as i64);
            }
        }
        Intended {
            referrals: self.referrals.len() as u32,
            supported: self.referrals.iter().filter(|r| r.supported()).count() as u32,
            by_year,
            not_taken_on,
            contacts: ContactFigures::of(&counts),
            before_pence,
            saving_pence,
            cost_pence: self.cost_pence,
            mentors: self.mentors.len() as u32,
            comparison,
            first_client_days: self.first_client_days(),
            waiting: self
                .mentors
                .iter()
                .filter(|m| m.role == MentorRole::Waiting)
                .count() as u32,
        }
    }

    /// Days from training to the first client of every mentor who has one, ascending.
    pub fn first_client_days(&self) -> Vec<i64> {
        let firsts = mentoring::first_clients(&self.referrals, self.mentors.len());
        let mut days: Vec<i64> = self
            .mentors
            .iter()
            .zip(firsts)
            .filter_map(|(mentor, first)| {
                Some((first?.date_naive() - mentor.trained_on).num_days())
            })
            .collect();
        days.sort_unstable();
        days
    }
}

/// £70 a call and £57.50 a police staff hour (the agreed formula, `hiu-2019`), in pence.
pub fn price(calls: i32, hours: i32) -> i64 {
    i64::from(calls) * 7_000 + i64::from(hours) * 5_750
}

/// Contacts per case file: count, mean, max and the evaluation's buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactFigures {
    pub clients: u32,
    pub total: i64,
    pub max: i64,
    /// 49 or fewer, 50-99, 100-199, 200 or more.
    pub buckets: [u32; 4],
}

impl ContactFigures {
    pub fn of(counts: &[i64]) -> Self {
        let mut buckets = [0; 4];
        for count in counts {
            let bucket = match count {
                ..=49 => 0,
                50..=99 => 1,
                100..=199 => 2,
                _ => 3,
            };
            buckets[bucket] += 1;
        }
        Self {
            clients: counts.len() as u32,
            total: counts.iter().sum(),
            max: counts.iter().copied().max().unwrap_or(0),
            buckets,
        }
    }

    pub fn mean(&self) -> f64 {
        if self.clients == 0 {
            0.0
        } else {
            self.total as f64 / f64::from(self.clients)
        }
    }
}

/// What the plan intends a report to show.
#[derive(Clone, Debug, PartialEq)]
pub struct Intended {
    pub referrals: u32,
    pub supported: u32,
    /// Programme year → (referrals, supported).
    pub by_year: BTreeMap<u8, (u32, u32)>,
    /// (stage, reason) → referrals not (or no longer) taken on.
    pub not_taken_on: BTreeMap<(i32, i32), u32>,
    /// Over every case file: supported clients and engagements ended.
    pub contacts: ContactFigures,
    /// Supported clients' demand in the 12 months before, priced.
    pub before_pence: i64,
    /// What the fall after support would save, priced (needs follow-up figures).
    pub saving_pence: i64,
    pub cost_pence: i64,
    pub mentors: u32,
    /// The referrals not taken on with follow-up figures (the comparison cohort).
    pub comparison: DemandTotals,
    /// Days from training to a first client of the mentors who had one, ascending.
    pub first_client_days: Vec<i64>,
    /// Mentors still waiting for a first client.
    pub waiting: u32,
}

/// The plan the unit tests draw: the four Durham areas, as of 1 May 2026.
#[cfg(test)]
pub(crate) fn test_options(size: f64, seed: u64) -> PlanOptions {
    PlanOptions {
        seed,
        size,
        areas: ["Darlington", "South Durham", "East Durham", "North Durham"]
            .map(str::to_owned)
            .to_vec(),
        today: NaiveDate::from_ymd_opt(2026, 5, 1).expect("a date"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(size: f64) -> PlanOptions {
        test_options(size, 7)
    }

    #[test]
    fn apportioning_is_exact_and_proportional() {
        assert_eq!(apportion(10, &[1.0, 1.0, 2.0]), [3, 2, 5]);
        assert_eq!(
            apportion(545, &YEAR_REFERRALS.map(f64::from)),
            YEAR_REFERRALS
        );
        assert_eq!(apportion(0, &[1.0]), [0]);
        assert_eq!(apportion(5, &[0.0, 0.0]), [0, 0]);
    }

    #[test]
    fn the_full_programme_has_the_evaluations_volumes_and_outcomes() {
        let programme = Programme::generate(&options(1.0));
        let intended = programme.intended();
        assert_eq!(intended.referrals, 545);
        assert_eq!(intended.supported, 381);
        for (year, (referrals, supported)) in &intended.by_year {
            let y = usize::from(*year) - 1;
            assert_eq!(*referrals, YEAR_REFERRALS[y], "year {year}");
            assert_eq!(*supported, YEAR_SUPPORTED[y], "year {year}");
        }
        let declined = intended.not_taken_on[&(
            NonEngagementStage::ClientDeclined as i32,
            NonEngagementReason::ClientDeclined as i32,
        )];
        assert_eq!(declined, 58, "58 declined by 2019");
        assert_eq!(intended.not_taken_on.values().sum::<u32>(), 164);
        assert_eq!(programme.mentors.len(), 298);
        assert_eq!(programme.cost_pence, FULL_COST_PENCE);
    }

    #[test]
    fn contacts_per_client_are_heavy_tailed_like_the_evaluations() {
        let mut rng = StdRng::seed_from_u64(11);
        let counts: Vec<i64> = contact_counts(&mut rng, 140)
            .into_iter()
            .map(i64::from)
            .collect();
        let figures = ContactFigures::of(&counts);
        assert_eq!(figures.buckets, [112, 12, 11, 5]);
        assert_eq!(figures.max, 266);
        assert!(counts.iter().all(|c| *c >= 3));
        let mean = figures.mean();
        assert!((27.0..=35.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn the_client_profile_follows_the_shares() {
        let programme = Programme::generate(&options(1.0));
        let n = programme.referrals.len() as f64;
        let share = |f: &dyn Fn(&PlannedReferral) -> bool| {
            programme.referrals.iter().filter(|r| f(r)).count() as f64 / n
        };
        let female = share(&|r| r.gender == Gender::Female);
        assert!((0.45..0.58).contains(&female), "female {female}");
        let hiu = share(&|r| r.vulnerabilities.contains(&Vulnerability::HighImpactUser));
        assert!((0.58..0.72).contains(&hiu), "hiu {hiu}");
        let victims = share(&|r| !r.victim_of.is_empty());
        assert!((0.68..0.82).contains(&victims), "victims {victims}");
        assert!(programme.referrals.iter().all(|r| {
            r.timeline
                .referred_at
                .date_naive()
                .years_since(r.date_of_birth)
                .is_some_and(|age| age >= 18)
        }));
    }

    #[test]
    fn the_same_seed_gives_the_same_programme_and_another_seed_another() {
        let a = Programme::generate(&options(0.1));
        let b = Programme::generate(&options(0.1));
        assert_eq!(a.referrals, b.referrals);
        assert_eq!(a.mentors, b.mentors);
        let c = Programme::generate(&PlanOptions {
            seed: 8,
            ..options(0.1)
        });
        assert_ne!(a.referrals, c.referrals);
        // The apportioned counts do not depend on the seed.
        assert_eq!(a.intended().by_year, c.intended().by_year);
        assert_eq!(a.intended().not_taken_on, c.intended().not_taken_on);
    }

    #[test]
    fn a_small_programme_keeps_a_tail_and_mentors_in_every_area_with_clients() {
        let programme = Programme::generate(&options(0.1));
        let intended = programme.intended();
        assert_eq!(intended.referrals, 55);
        assert_eq!(intended.contacts.max, 266);
        for referral in &programme.referrals {
            if !matches!(referral.outcome, Outcome::NotTakenOn(_)) {
                let mentoring = programme
                    .mentors
                    .iter()
                    .filter(|m| m.area == referral.area && m.role == MentorRole::Mentoring)
                    .count();
                assert!(mentoring >= 4, "{} has {mentoring}", referral.area);
            }
        }
        assert!(
            programme
                .mentors
                .iter()
                .all(|m| m.trained_on < options(0.1).today)
        );
    }
}
