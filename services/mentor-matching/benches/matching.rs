//! Mentor matching bench: `cargo bench -p mentor-matching --bench matching`.
//!
//! A plain binary printing markdown tables (no harness). Synthetic mentors
//! and clients with a fixed seed, calibrated on docs/../DOMAIN.md
//! (§Mentors, §Referral): four areas, lived experience at the rates of the
//! 119 mentors surveyed, vulnerabilities and crimes at the rates of the 140
//! clients, the waits after training of the 32 mentors asked, capacities of
//! 1 to 3 free places.
//!
//! (a) `propose` with 10,000 mentors, limit 10: p50/p99 over 1,000 calls,
//!     against the old approach (score every pair and sort) measured in the
//!     same run on a few calls, with the same results.
//! (b) `match_pool` with 2,000 waiting clients and 10,000 mentors: wall
//!     time over a few runs, its total against an upper bound (each
//!     client's best pair, ignoring capacity) and against first-come greedy
//!     measured in the same run; then the effect of K (candidates per client).
//! (c) the same with 1,500 mentors: fewer free places than the clients need.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cpm_proto::v1::{CrimeType, Gender, LivedExperience, Vulnerability};
use mentor_matching::batch::{self, PoolAssignment, PoolClient, PoolOptions};
use mentor_matching::matching::{self, Candidate, ClientNeeds, PairHistory, Proposal, Weights};
use mentor_matching::safety::{self, Exclusion};
use uuid::Uuid;

const SEED: u64 = 0x00C0_FFEE_2026_1203;
const MENTORS: usize = 10_000;
const POOL_CLIENTS: usize = 2_000;
const PROPOSE_CALLS: usize = 1_000;
const BASELINE_CALLS: usize = 3;
const POOL_RUNS: usize = 3;
const LIMIT: usize = 10;
const DUAL_STEPS: usize = 1_000;
const SHORT_MENTORS: usize = 1_500;

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `numerator / denominator`.
    fn chance(&mut self, numerator: u32, denominator: u32) -> bool {
        (self.next() % u64::from(denominator)) < u64::from(numerator)
    }

    fn weighted<T: Copy>(&mut self, choices: &[(T, u32)]) -> T {
        let total: u32 = choices.iter().map(|(_, weight)| weight).sum();
        let mut roll = self.below(total as usize) as u32;
        for (value, weight) in choices {
            if roll < *weight {
                return *value;
            }
            roll -= weight;
        }
        choices[choices.len() - 1].0
    }
}

const AREAS: [&str; 4] = ["Darlington", "South Durham", "East Durham", "North Durham"];

/// Lived experience of the 119 mentors surveyed; 33 reported none, so the
/// counts are out of the 86 who reported some.
const LIVED: [(LivedExperience, u32); 22] = {
    use LivedExperience as L;
    [
        (L::AlcoholDependency, 39),
        (L::DementiaCarer, 23),
        (L::ArmedForces, 12),
        (L::Bereavement, 24),
        (L::Carer, 35),
        (L::CrimePerpetrator, 26),
        (L::CrimeVictim, 35),
        (L::SexualOffenceVictim, 18),
        (L::CriminalJusticeSystem, 32),
        (L::Disabled, 11),
        (L::Divorced, 35),
        (L::DomesticAbuseVictim, 41),
        (L::Drugs, 34),
        (L::Debt, 15),
        (L::Gambling, 5),
        (L::Homelessness, 8),
        (L::MentalHealth, 40),
        (L::Prison, 13),
        (L::SelfHarm, 11),
        (L::SexualOrientation, 4),
        (L::IdentifiedVulnerable, 34),
        (L::LongTermUnemployed, 33),
    ]
};

/// Vulnerabilities, percent of 140 clients.
const VULNERABILITIES: [(Vulnerability, u32); 17] = {
    use Vulnerability as V;
    [
        (V::HighImpactUser, 65),
        (V::VulnerableAndIsolated, 63),
        (V::MentalHealth, 61),
        (V::HarassmentOrStalkingVictim, 54),
        (V::Perpetrator, 47),
        (V::AlcoholAddiction, 39),
        (V::DomesticAbuseVictim, 18),
        (V::DrugAddiction, 16),
        (V::SelfHarmOrSuicidal, 15),
        (V::Bereavement, 11),
        (V::Ailment, 11),
        (V::Illness, 8),
        (V::Elderly, 7),
        (V::AntiSocialBehaviourVictim, 5),
        (V::NeighbourDispute, 5),
        (V::CoerciveControl, 4),
        (V::Divorce, 4),
    ]
};

/// Crimes clients were victims of, percent of 140 clients.
const VICTIM_OF: [(CrimeType, u32); 12] = {
    use CrimeType as C;
    [
        (C::HarassmentOrStalking, 51),
        (C::PhysicalAssault, 40),
        (C::CriminalDamage, 24),
        (C::Theft, 21),
        (C::Burglary, 17),
        (C::PublicOrder, 16),
        (C::Rape, 13),
        (C::SexualAssault, 7),
        (C::MaliciousCommunications, 6),
        (C::ThreatsToKill, 6),
        (C::Fraud, 5),
        (C::Robbery, 4),
    ]
};

/// Crimes perpetrators committed, in the order the evaluation lists them
/// (weights falling with the rank).
const PERPETRATOR_OF: [(CrimeType, u32); 13] = {
    use CrimeType as C;
    [
        (C::HarassmentOrStalking, 13),
        (C::PhysicalAssault, 12),
        (C::PublicOrder, 11),
        (C::CriminalDamage, 10),
        (C::Theft, 9),
        (C::MaliciousCommunications, 8),
        (C::ThreatsToKill, 7),
        (C::DrugOffences, 6),
        (C::SexualAssault, 5),
        (C::Burglary, 4),
        (C::PossessionOfBladedArticle, 3),
        (C::PossessionOfSexualMaterial, 2),
        (C::Robbery, 1),
    ]
};

/// Days from training to a first client of the 32 mentors asked: 6 within
/// a month, 10 in 1–2 months, 2 in 2–4, 1 in 4–6, 2 after 10–12, 11 still
/// waiting (one for two years).
const WAITS: [((i64, i64), u32); 6] = [
    ((0, 30), 6),
    ((30, 61), 10),
    ((61, 122), 2),
    ((122, 183), 1),
    ((304, 365), 2),
    ((30, 730), 11),
];

fn mentors(rng: &mut Rng) -> Vec<Candidate> {
    (0..MENTORS)
        .map(|n| {
            let area = rng.below(AREAS.len());
            let mut areas = vec![AREAS[area].to_owned()];
            if rng.chance(1, 10) {
                areas.push(AREAS[(area + 1 + rng.below(3)) % AREAS.len()].to_owned());
            }
            let lived_experience = if rng.chance(33, 119) {
                Vec::new()
            } else {
                LIVED
                    .iter()
                    .filter(|(_, count)| rng.chance(*count, 86))
                    .map(|(experience, _)| *experience)
                    .collect()
            };
            // About a third are TRAINED and never allocated.
            let waiting_days = rng.chance(1, 3).then(|| {
                let (from, to) = rng.weighted(&WAITS);
                from + rng.below((to - from) as usize) as i64
            });
            Candidate {
                mentor_id: Uuid::from_u64_pair(rng.next(), n as u64),
                display_name: format!("Mentor {n}"),
                gender: rng.weighted(&[
                    (Gender::Female, 55),
                    (Gender::Male, 40),
                    (Gender::NonBinary, 2),
                    (Gender::Transgender, 1),
                    (Gender::Undisclosed, 2),
                ]),
                areas,
                lived_experience,
                free_places: 1 + rng.below(3) as i32,
                waiting_days,
            }
        })
        .collect()
}

fn client(rng: &mut Rng) -> ClientNeeds {
    let vulnerabilities: Vec<Vulnerability> = VULNERABILITIES
        .iter()
        .filter(|(_, percent)| rng.chance(*percent, 100))
        .map(|(vulnerability, _)| *vulnerability)
        .collect();
    let victim_of = VICTIM_OF
        .iter()
        .filter(|(_, percent)| rng.chance(*percent, 100))
        .map(|(crime, _)| *crime)
        .collect();
    let perpetrator_of = if vulnerabilities.contains(&Vulnerability::Perpetrator) {
        (0..1 + rng.below(2))
            .map(|_| rng.weighted(&PERPETRATOR_OF))
            .collect()
    } else {
        Vec::new()
    };
    ClientNeeds {
        area: AREAS[rng.below(AREAS.len())].to_owned(),
        vulnerabilities,
        gender: rng.weighted(&[
            (Gender::Female, 50),
            (Gender::Male, 45),
            (Gender::NonBinary, 2),
            (Gender::Transgender, 1),
            (Gender::Undisclosed, 2),
        ]),
        victim_of,
        perpetrator_of,
    }
}

/// Pairs who worked together (within an area) and pairs who did not get on.
fn history(rng: &mut Rng, mentors: &[Candidate]) -> PairHistory {
    let mut by_area: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for mentor in mentors {
        by_area
            .entry(mentor.areas[0].as_str())
            .or_default()
            .push(mentor.mentor_id);
    }
    let mut history = PairHistory::default();
    for round in 0..2_300 {
        let area = by_area.get(AREAS[rng.below(AREAS.len())]).unwrap();
        let (a, b) = (area[rng.below(area.len())], area[rng.below(area.len())]);
        if a == b {
            continue;
        }
        if round < 2_000 {
            history.record_worked(a, b);
        } else {
            history.record_incompatible(a, b);
        }
    }
    history
}

/// The old approach: score every pair, sort them all, keep the best.
fn baseline(
    client: &ClientNeeds,
    candidates: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    limit: usize,
) -> Vec<Proposal> {
    let hundredths = |points: f64| (points * 100.0).round() as i64;
    let individual: Vec<i64> = candidates
        .iter()
        .map(|candidate| hundredths(matching::individual_score(client, candidate, weights)))
        .collect();
    let recorded = !matches!(client.gender, Gender::Unspecified | Gender::Undisclosed);
    let same: Vec<bool> = candidates
        .iter()
        .map(|candidate| recorded && candidate.gender == client.gender)
        .collect();
    // The history by candidate position, so a pair costs no hashing.
    let position: HashMap<Uuid, usize> = candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| (candidate.mentor_id, index))
        .collect();
    let mut related: Vec<Vec<(usize, bool)>> = vec![Vec::new(); candidates.len()];
    for (pairs, incompatible) in [(&history.worked, false), (&history.incompatible, true)] {
        for [a, b] in pairs {
            if let (Some(&a), Some(&b)) = (position.get(a), position.get(b)) {
                related[a].push((b, incompatible));
                related[b].push((a, incompatible));
            }
        }
    }
    let (gender, worked) = (
        hundredths(weights.gender),
        hundredths(weights.worked_together),
    );
    let mut pairs: Vec<(i64, [Uuid; 2], u32, u32)> =
        Vec::with_capacity(candidates.len() * candidates.len().saturating_sub(1) / 2);
    for first in 0..candidates.len() {
        for second in first + 1..candidates.len() {
            let mut score = individual[first] + individual[second];
            if same[first] || same[second] {
                score += gender;
            }
            let mut skip = false;
            for &(other, incompatible) in &related[first] {
                if other == second {
                    if incompatible {
                        skip = true;
                    } else {
                        score += worked;
                    }
                }
            }
            if skip {
                continue;
            }
            let ids = PairHistory::key(candidates[first].mentor_id, candidates[second].mentor_id);
            pairs.push((score, ids, first as u32, second as u32));
        }
    }
    pairs.sort_unstable_by_key(|(score, ids, _, _)| (std::cmp::Reverse(*score), *ids));
    pairs.truncate(limit);
    pairs
        .into_iter()
        .map(|(_, _, a, b)| {
            matching::score_pair(
                client,
                &candidates[a as usize],
                &candidates[b as usize],
                history,
                weights,
            )
        })
        .collect()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn bench_propose(mentors: &[Candidate], history: &PairHistory, weights: &Weights, rng: &mut Rng) {
    let clients: Vec<ClientNeeds> = (0..PROPOSE_CALLS).map(|_| client(rng)).collect();
    // Warm up caches and the allocator.
    for client in clients.iter().take(20) {
        black_box(matching::propose(client, mentors, history, weights, LIMIT));
    }
    let mut times = Vec::with_capacity(PROPOSE_CALLS);
    for client in &clients {
        let start = Instant::now();
        let proposals = matching::propose(client, mentors, history, weights, LIMIT);
        times.push(start.elapsed());
        assert_eq!(black_box(proposals).len(), LIMIT);
    }
    times.sort_unstable();
    let mut baseline_times = Vec::new();
    for client in clients.iter().take(BASELINE_CALLS) {
        let start = Instant::now();
        let expected = baseline(client, mentors, history, weights, LIMIT);
        baseline_times.push(start.elapsed());
        assert_eq!(
            matching::propose(client, mentors, history, weights, LIMIT),
            expected,
            "propose agrees with scoring every pair"
        );
    }
    baseline_times.sort_unstable();
    let p50 = percentile(&times, 0.50);
    let baseline_p50 = percentile(&baseline_times, 0.50);
    println!("## (a) propose: {} mentors, limit {LIMIT}\n", mentors.len());
    println!("| | calls | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| `propose` (frontier) | {} | {:.3} | {:.3} | {:.3} |",
        times.len(),
        millis(p50),
        millis(percentile(&times, 0.99)),
        millis(times[times.len() - 1])
    );
    println!(
        "| baseline: every pair scored and sorted | {} | {:.0} | - | {:.0} |",
        baseline_times.len(),
        millis(baseline_p50),
        millis(baseline_times[baseline_times.len() - 1])
    );
    println!(
        "\nbaseline p50 / propose p50 = {:.0}x; the baseline's {} calls returned the same proposals.\n",
        baseline_p50.as_secs_f64() / p50.as_secs_f64(),
        baseline_times.len()
    );
}

fn total(assignments: &[PoolAssignment]) -> f64 {
    assignments
        .iter()
        .map(|assignment| assignment.proposal.score)
        .sum()
}

/// The sum of every client's best pair, ignoring capacity.
fn upper_bound(
    clients: &[PoolClient],
    mentors: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    eligible: &impl Fn(&PoolClient, &Candidate) -> bool,
) -> (f64, usize) {
    let mut bound = 0.0;
    let mut possible = 0;
    for client in clients {
        let candidates: Vec<Candidate> = mentors
            .iter()
            .filter(|mentor| eligible(client, mentor))
            .cloned()
            .collect();
        if let Some(best) = matching::propose(&client.needs, &candidates, history, weights, 1).pop()
        {
            bound += best.score;
            possible += 1;
        }
    }
    (bound, possible)
}

/// An eligible mentor of a client: position, individual score, whether
/// they share the client's gender.
type Eligible = (usize, f64, bool);
/// A client's eligible mentors, and its worked-together pairs of them.
type ClientOptions = (Vec<Eligible>, Vec<(usize, usize)>);

/// A certified upper bound on the best total under capacity: the
/// Lagrangian dual of the capacities. For any prices λ ≥ 0 on the mentors,
/// any feasible assignment scores at most Σ λ·free places + Σ over clients
/// of max(0, their best pair's score − λa − λb) (ignoring incompatible
/// pairs only loosens it). Subgradient steps (Polyak, towards `feasible`)
/// lower it; the smallest value met is returned, with the steps taken.
fn dual_bound(
    clients: &[PoolClient],
    mentors: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    eligible: &impl Fn(&PoolClient, &Candidate) -> bool,
    feasible: f64,
    steps: usize,
) -> (f64, usize) {
    let index: HashMap<Uuid, usize> = mentors
        .iter()
        .enumerate()
        .map(|(position, mentor)| (mentor.mentor_id, position))
        .collect();
    let capacity: Vec<f64> = mentors
        .iter()
        .map(|mentor| f64::from(mentor.free_places.max(0)))
        .collect();
    // Per client: (mentor, individual score, shares the gender), and the
    // worked-together pairs of two eligible mentors.
    let mut seen = vec![false; mentors.len()];
    let lists: Vec<ClientOptions> = clients
        .iter()
        .map(|client| {
            let recorded = !matches!(
                client.needs.gender,
                Gender::Unspecified | Gender::Undisclosed
            );
            let list: Vec<Eligible> = mentors
                .iter()
                .enumerate()
                .filter(|(_, mentor)| mentor.free_places > 0 && eligible(client, mentor))
                .map(|(position, mentor)| {
                    (
                        position,
                        matching::individual_score(&client.needs, mentor, weights),
                        recorded && mentor.gender == client.needs.gender,
                    )
                })
                .collect();
            for (position, _, _) in &list {
                seen[*position] = true;
            }
            let worked = history
                .worked
                .iter()
                .filter_map(|[a, b]| {
                    let (a, b) = (*index.get(a)?, *index.get(b)?);
                    (seen[a] && seen[b] && a != b).then_some((a, b))
                })
                .collect();
            for (position, _, _) in &list {
                seen[*position] = false;
            }
            (list, worked)
        })
        .collect();
    let mut price = vec![0.0_f64; mentors.len()];
    let mut reduced = vec![0.0_f64; mentors.len()];
    let mut is_same = vec![false; mentors.len()];
    let mut best = f64::INFINITY;
    let mut theta = 2.0;
    let mut since_better = 0;
    let mut taken = 0;
    for _ in 0..steps {
        taken += 1;
        let mut bound: f64 = price.iter().zip(&capacity).map(|(p, c)| p * c).sum();
        let mut usage = vec![0.0_f64; mentors.len()];
        for (list, worked) in &lists {
            // The two best reduced values, and the best of the client's gender.
            let (mut first, mut second, mut same_best) = (
                None::<(f64, usize)>,
                None::<(f64, usize)>,
                None::<(f64, usize)>,
            );
            for &(mentor, individual, shares) in list {
                let value = individual - price[mentor];
                reduced[mentor] = value;
                is_same[mentor] = shares;
                if first.is_none_or(|(v, _)| value > v) {
                    second = first;
                    first = Some((value, mentor));
                } else if second.is_none_or(|(v, _)| value > v) {
                    second = Some((value, mentor));
                }
                if shares && same_best.is_none_or(|(v, _)| value > v) {
                    same_best = Some((value, mentor));
                }
            }
            let (Some((v1, m1)), Some((v2, m2))) = (first, second) else {
                continue;
            };
            let gender = |a: usize, b: usize| {
                if is_same[a] || is_same[b] {
                    weights.gender
                } else {
                    0.0
                }
            };
            let mut top = (v1 + v2 + gender(m1, m2), m1, m2);
            if let Some((vs, ms)) = same_best {
                let (vo, mo) = if ms == m1 { (v2, m2) } else { (v1, m1) };
                if vs + vo + weights.gender > top.0 {
                    top = (vs + vo + weights.gender, ms, mo);
                }
            }
            for &(a, b) in worked {
                let value = reduced[a] + reduced[b] + gender(a, b) + weights.worked_together;
                if value > top.0 {
                    top = (value, a, b);
                }
            }
            if top.0 > 0.0 {
                bound += top.0;
                usage[top.1] += 1.0;
                usage[top.2] += 1.0;
            }
        }
        if bound < best - 1e-9 {
            best = bound;
            since_better = 0;
        } else {
            since_better += 1;
            if since_better >= 25 {
                theta /= 2.0;
                since_better = 0;
            }
        }
        let gradient: Vec<f64> = usage
            .iter()
            .zip(&capacity)
            .zip(&price)
            .map(|((u, c), p)| if *p <= 0.0 && u < c { 0.0 } else { u - c })
            .collect();
        let norm: f64 = gradient.iter().map(|g| g * g).sum();
        if norm == 0.0 || best - feasible < 1e-6 {
            break;
        }
        let step = theta * (bound - feasible).max(0.01) / norm;
        for (p, g) in price.iter_mut().zip(&gradient) {
            *p = (*p + step * g).max(0.0);
        }
    }
    (best, taken)
}

fn check(assignments: &[PoolAssignment], mentors: &[Candidate]) {
    let mut used: HashMap<Uuid, i32> = HashMap::new();
    for assignment in assignments {
        for mentor in assignment.proposal.mentor_ids {
            *used.entry(mentor).or_default() += 1;
        }
    }
    for mentor in mentors {
        assert!(used.get(&mentor.mentor_id).copied().unwrap_or(0) <= mentor.free_places);
    }
}

fn pool_clients(rng: &mut Rng) -> Vec<PoolClient> {
    (0..POOL_CLIENTS)
        .map(|n| PoolClient {
            referral_id: Uuid::from_u64_pair(rng.next(), n as u64),
            needs: client(rng),
        })
        .collect()
}

/// `title` heads the tables; `k_table` adds the table of K.
fn bench_pool(
    title: &str,
    clients: &[PoolClient],
    mentors: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    k_table: bool,
) {
    let exclusions: Vec<Exclusion> = safety::resolve(&safety::default_rules()).unwrap();
    let eligible = |client: &PoolClient, mentor: &Candidate| {
        mentor.areas.contains(&client.needs.area)
            && safety::excluded_by(
                &exclusions,
                &client.needs.perpetrator_of,
                &mentor.lived_experience,
            )
            .is_none()
    };
    let mut times = Vec::new();
    let mut result = Vec::new();
    for _ in 0..POOL_RUNS {
        let start = Instant::now();
        result = batch::match_pool(clients, mentors, history, weights, eligible);
        times.push(start.elapsed());
    }
    check(&result, mentors);
    times.sort_unstable();
    let objective = total(&result);
    let start = Instant::now();
    let (bound, possible) = upper_bound(clients, mentors, history, weights, &eligible);
    let bound_time = start.elapsed();
    let start = Instant::now();
    let greedy = batch::first_come(clients, mentors, history, weights, &eligible);
    let greedy_time = start.elapsed();
    check(&greedy, mentors);
    let greedy_objective = total(&greedy);
    let start = Instant::now();
    let (dual, steps) = dual_bound(
        clients, mentors, history, weights, &eligible, objective, DUAL_STEPS,
    );
    let dual_time = start.elapsed();
    let places: i32 = mentors.iter().map(|mentor| mentor.free_places).sum();
    println!(
        "## {title}: {} waiting clients, {} mentors ({} free places), 4 areas\n",
        clients.len(),
        mentors.len(),
        places
    );
    println!(
        "| | wall time | clients assigned | total score | of bound 1 (capacity ignored) | of bound 2 (dual) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| `match_pool` (K = 40), {} runs | min {:.0} ms, median {:.0} ms, max {:.0} ms | {} | {:.2} | {:.3}% | {:.3}% |",
        times.len(),
        millis(times[0]),
        millis(times[times.len() / 2]),
        millis(times[times.len() - 1]),
        result.len(),
        objective,
        objective / bound * 100.0,
        objective / dual * 100.0
    );
    println!(
        "| first-come greedy (exact best pair each, in arrival order) | {:.0} ms | {} | {:.2} | {:.3}% | {:.3}% |",
        millis(greedy_time),
        greedy.len(),
        greedy_objective,
        greedy_objective / bound * 100.0,
        greedy_objective / dual * 100.0
    );
    println!(
        "| bound 1: each client's best pair, ignoring capacity | {:.0} ms | {} | {:.2} | 100% | |",
        millis(bound_time),
        possible,
        bound
    );
    println!(
        "| bound 2: Lagrangian dual of the capacities, {steps} subgradient steps | {:.0} ms | | {:.2} | | 100% |",
        millis(dual_time),
        dual
    );
    println!(
        "\nmatch_pool / first come = {:.4}; the same clients served by both: {}.\n",
        objective / greedy_objective,
        result
            .iter()
            .filter(|a| greedy.iter().any(|g| g.referral_id == a.referral_id))
            .count()
    );
    if !k_table {
        println!();
        return;
    }
    println!("### K, the candidates per client\n");
    println!("| K | wall time | clients assigned | total score | of bound 2 |");
    println!("|---:|---:|---:|---:|---:|");
    for k in [10, 20, 40, 80, 160] {
        let options = PoolOptions {
            candidates_per_client: k,
        };
        let start = Instant::now();
        let result = batch::match_pool_with(clients, mentors, history, weights, eligible, options);
        let time = start.elapsed();
        check(&result, mentors);
        let objective = total(&result);
        println!(
            "| {k} | {:.0} ms | {} | {:.2} | {:.3}% |",
            millis(time),
            result.len(),
            objective,
            objective / dual * 100.0
        );
    }
    println!();
}

fn main() {
    let mut rng = Rng(SEED);
    let weights = Weights::default();
    let mentors = mentors(&mut rng);
    let history = history(&mut rng, &mentors);
    println!(
        "# Mentor matching bench (seed {SEED:#x}, weights {}, {} worked-together and {} incompatible pairs)\n",
        weights.version,
        history.worked.len(),
        history.incompatible.len()
    );
    // `cargo bench -p mentor-matching --bench matching -- propose` (or
    // `pool`, `short`) runs one part; cargo adds `--bench`.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    let mut pool_rng = Rng(SEED ^ 1);
    let mut propose_rng = Rng(SEED ^ 2);
    let clients = pool_clients(&mut pool_rng);
    if run("pool") {
        bench_pool(
            "(b) match_pool",
            &clients,
            &mentors,
            &history,
            &weights,
            true,
        );
    }
    if run("short") {
        // The same clients and the first 1,500 mentors: about 3,000 free
        // places for 4,000 wanted, so clients go unassigned and the
        // neighbourhoods spend their whole budget.
        bench_pool(
            "(c) match_pool short of capacity",
            &clients,
            &mentors[..SHORT_MENTORS],
            &history,
            &weights,
            false,
        );
    }
    if run("propose") {
        bench_propose(&mentors, &history, &weights, &mut propose_rng);
    }
}
