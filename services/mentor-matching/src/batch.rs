//! Whole-pool matching: one proposed pair for as many waiting clients as
//! possible, maximising the total score (the [`matching`](crate::matching)
//! score of each client's pair) under each mentor's capacity. Pure, like
//! [`matching`](crate::matching): it proposes, a coordinator decides.
//!
//! # Rules
//! - a mentor appears in at most `free_places` pairs (0 or less: none);
//! - never a mentor the caller's `eligible` refuses for a client (it covers
//!   areas and the safety rules), never an incompatible pair, never the same
//!   mentor twice in a pair;
//! - a client may be left unassigned when capacity runs out; among
//!   solutions of equal total, more assigned clients are preferred (scores
//!   are never negative);
//! - scores use each mentor's load at the start (`free_places`), as a
//!   coordinator reading each proposal now would see it.
//!
//! # Method
//! 1. **Lists.** For each client, every eligible mentor with a free place,
//!    sorted by individual score (area, lived experience, crime history,
//!    waiting, free places; descending, then mentor ID), kept as one packed
//!    integer each. A client's best pair among the mentors with room is
//!    found from the top of its list, with a bound (two individual scores
//!    plus the largest pair terms) that stops the search early.
//! 2. **Global greedy, best first, with lazy re-evaluation.** Every
//!    client's best available pair goes into a max-heap. A popped pair whose
//!    mentors still have room is assigned; otherwise the client's best pair
//!    is recomputed against the remaining capacity and pushed back. A
//!    client's best score only falls as capacity is used, so a popped pair
//!    that is still available is the best of all clients' pairs.
//! 3. **Local improvement**, until no move improves the total (or, at an
//!    equal total, the number of clients assigned). The cheap moves, in
//!    passes until none applies:
//!    - *re-pair*: a client takes its best pair among its own mentors and
//!      the mentors with spare capacity (replacing one mentor or both);
//!    - *swap*: two clients exchange one mentor each (a mentor among the
//!      first K of the client's list);
//!    - *assign*: an unassigned client takes its best pair of mentors with
//!      spare capacity (a mentor freed by the moves above).
//!
//!    Then *neighbourhoods*: for each client without its best pair
//!    (ignoring capacity), the client, the clients holding the first K
//!    mentors of its list and the unassigned clients with those mentors
//!    among their first K (breadth first, at most 8 clients) are released
//!    and assigned again by an exact branch and bound over pairs of each
//!    one's first 12 mentors with room; the result is kept when it is
//!    better. This finds what single moves cannot: leaving one client out
//!    so that two others are served, or a chain of three clients passing
//!    mentors on. The search is bounded (5,000 nodes a neighbourhood, 12
//!    million a pool: small budgets spread the effort over more
//!    neighbourhoods, which improved more than deep searches of a few), and
//!    the cheap moves run again after any improvement.
//!
//! K is [`PoolOptions::candidates_per_client`] (40 by default); it bounds
//! the work of the swaps and neighbourhoods only. An earlier version kept
//! only each client's first K mentors altogether: in a synthetic area of
//! 2,500 mentors and 500 clients every client ranks the same popular
//! mentors first, so those lists ran dry and a quarter of the clients went
//! unassigned (docs/performance.md, "Mentor matching").
//!
//! Pair terms (gender, worked together) and incompatible pairs are handled
//! exactly. Every step is in a fixed order (clients by referral ID, mentors
//! by ID), so the output is deterministic; it is sorted by referral ID.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cpm_proto::v1::Gender;
use uuid::Uuid;

use crate::matching::{
    self, Candidate, ClientNeeds, PairHistory, Points, Proposal, Wanted, Weights,
};

/// A waiting client in the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolClient {
    pub referral_id: Uuid,
    pub needs: ClientNeeds,
}

/// The pair proposed for one client.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolAssignment {
    pub referral_id: Uuid,
    pub proposal: Proposal,
}

/// How much work the local moves do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// K: how many of the first mentors of its list a client offers to
    /// swap for and brings into a neighbourhood. The greedy and the re-pair
    /// moves look at every eligible mentor whatever K is.
    pub candidates_per_client: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            candidates_per_client: 40,
        }
    }
}

/// Passes of local improvement at most; each accepted move raises the
/// total, so this only bounds pathological cases.
const MAX_PASSES: usize = 50;
/// Clients re-solved together at most.
const NEIGHBOURHOOD: usize = 8;
/// Mentors with room per client a neighbourhood pairs up (12: 66 pairs).
const FREE_MENTORS_PER_CLIENT: usize = 12;
/// Search nodes per neighbourhood at most.
const NODES_PER_NEIGHBOURHOOD: usize = 5_000;
/// Search nodes per pool at most, over every neighbourhood.
const NODES_PER_POOL: usize = 12_000_000;

/// One pair for as many clients as possible, for the largest total score,
/// with [`PoolOptions::default`]. See the module documentation.
pub fn match_pool(
    clients: &[PoolClient],
    mentors: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    eligible: impl Fn(&PoolClient, &Candidate) -> bool,
) -> Vec<PoolAssignment> {
    match_pool_with(
        clients,
        mentors,
        history,
        weights,
        eligible,
        PoolOptions::default(),
    )
}

/// [`match_pool`] with explicit options.
pub fn match_pool_with(
    clients: &[PoolClient],
    mentors: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    eligible: impl Fn(&PoolClient, &Candidate) -> bool,
    options: PoolOptions,
) -> Vec<PoolAssignment> {
    let points = Points::of(weights);
    // Clients by referral ID, mentors with room by ID; a repeated ID keeps
    // its first entry.
    let mut client_order: Vec<usize> = (0..clients.len()).collect();
    client_order.sort_by_key(|&index| (clients[index].referral_id, index));
    client_order.dedup_by_key(|index| clients[*index].referral_id);
    let mut mentor_order: Vec<usize> = (0..mentors.len())
        .filter(|&index| mentors[index].free_places > 0)
        .collect();
    mentor_order.sort_by_key(|&index| (mentors[index].mentor_id, index));
    mentor_order.dedup_by_key(|index| mentors[*index].mentor_id);
    if client_order.is_empty() || mentor_order.len() < 2 {
        return Vec::new();
    }
    let pool_mentors: Vec<PoolMentor<'_>> = mentor_order
        .iter()
        .map(|&index| {
            let candidate = &mentors[index];
            PoolMentor {
                candidate,
                mask: matching::experience_mask(&candidate.lived_experience),
                fixed: matching::fixed_points(&points, candidate),
            }
        })
        .collect();
    let pool_clients: Vec<&PoolClient> = client_order.iter().map(|&i| &clients[i]).collect();
    let wanted: Vec<Wanted> = pool_clients
        .iter()
        .map(|client| Wanted::of(&client.needs))
        .collect();
    let window = options.candidates_per_client.max(2);
    let mut pool = Pool {
        lists: Vec::new(),
        client_gender: pool_clients
            .iter()
            .map(|client| {
                let gender = client.needs.gender;
                (!matches!(gender, Gender::Unspecified | Gender::Undisclosed)).then_some(gender)
            })
            .collect(),
        relations: relations(&pool_mentors, history),
        spare: pool_mentors
            .iter()
            .map(|mentor| mentor.candidate.free_places)
            .collect(),
        users: vec![Vec::new(); pool_mentors.len()],
        interested: vec![Vec::new(); pool_mentors.len()],
        assigned: vec![None; pool_clients.len()],
        ideal: Vec::new(),
        gender: points.gender,
        worked: points.worked_together,
        window,
        points,
        wanted,
        clients: pool_clients,
        mentors: pool_mentors,
    };
    pool.lists = pool.lists(&eligible);
    for (client, list) in pool.lists.iter().enumerate() {
        for key in list.iter().take(window) {
            pool.interested[mentor_of(*key) as usize].push(client as u32);
        }
    }
    pool.ideal = (0..pool.clients.len())
        .map(|client| pool.best(client, |_| true).map(|pair| pair.score))
        .collect();
    pool.greedy();
    pool.improve();
    pool.assigned
        .iter()
        .enumerate()
        .filter_map(|(client, pair)| {
            let pair = (*pair)?;
            let a = pool.mentors[pool.mentor(client, pair.first) as usize].candidate;
            let b = pool.mentors[pool.mentor(client, pair.second) as usize].candidate;
            let needs = &pool.clients[client].needs;
            let proposal = matching::score_pair(needs, a, b, history, weights);
            debug_assert_eq!(proposal.score, matching::as_points(pair.score));
            Some(PoolAssignment {
                referral_id: pool.clients[client].referral_id,
                proposal,
            })
        })
        .collect()
}

struct PoolMentor<'m> {
    candidate: &'m Candidate,
    mask: u64,
    fixed: i64,
}

/// First come, first served: each client in turn (longest waiting first)
/// takes its best pair of the eligible mentors with room left. Not used to
/// match: it is the reference the batch is measured against, by the tests
/// and the bench. Sorted by referral.
pub fn first_come(
    clients: &[PoolClient],
    mentors: &[Candidate],
    history: &PairHistory,
    weights: &Weights,
    eligible: &impl Fn(&PoolClient, &Candidate) -> bool,
) -> Vec<PoolAssignment> {
    let mut free: std::collections::HashMap<Uuid, i32> = mentors
        .iter()
        .map(|mentor| (mentor.mentor_id, mentor.free_places))
        .collect();
    let mut result = Vec::new();
    for client in clients {
        let candidates: Vec<Candidate> = mentors
            .iter()
            .filter(|mentor| free[&mentor.mentor_id] > 0 && eligible(client, mentor))
            .cloned()
            .collect();
        if let Some(proposal) =
            matching::propose(&client.needs, &candidates, history, weights, 1).pop()
        {
            for mentor in proposal.mentor_ids {
                *free.get_mut(&mentor).expect("a candidate is a mentor") -= 1;
            }
            result.push(PoolAssignment {
                referral_id: client.referral_id,
                proposal,
            });
        }
    }
    result.sort_by_key(|assignment| assignment.referral_id);
    result
}

/// A mentor in a client's list, packed so that ascending order is
/// individual score descending, then mentor (that is, ID) ascending:
/// `(BIAS - individual) << 32 | mentor`.
type Key = u64;
const BIAS: i64 = u32::MAX as i64;

fn key_of(individual: i64, mentor: u32) -> Key {
    (((BIAS - individual.clamp(0, BIAS)) as u64) << 32) | u64::from(mentor)
}

fn mentor_of(key: Key) -> u32 {
    key as u32
}

fn individual_of(key: Key) -> i64 {
    BIAS - (key >> 32) as i64
}

/// A client's pair: positions in its list (`first` < `second`) and the
/// score in hundredths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    first: u32,
    second: u32,
    score: i64,
}

const WORKED: u8 = 1;
const INCOMPATIBLE: u8 = 2;

/// For each mentor, the mentors they worked with or must not be paired
/// with (history pairs of two mentors in the pool).
fn relations(mentors: &[PoolMentor<'_>], history: &PairHistory) -> Vec<Vec<(u32, u8)>> {
    let mut relations = vec![Vec::new(); mentors.len()];
    let find = |id: Uuid| {
        mentors
            .binary_search_by_key(&id, |mentor| mentor.candidate.mentor_id)
            .ok()
    };
    let mut add = |pair: &[Uuid; 2], flag: u8| {
        let (Some(a), Some(b)) = (find(pair[0]), find(pair[1])) else {
            return;
        };
        if a == b {
            return;
        }
        for (from, to) in [(a, b), (b, a)] {
            let list: &mut Vec<(u32, u8)> = &mut relations[from];
            match list.iter_mut().find(|(other, _)| *other == to as u32) {
                Some((_, flags)) => *flags |= flag,
                None => list.push((to as u32, flag)),
            }
        }
    };
    for pair in &history.worked {
        add(pair, WORKED);
    }
    for pair in &history.incompatible {
        add(pair, INCOMPATIBLE);
    }
    relations
}

struct Pool<'a> {
    clients: Vec<&'a PoolClient>,
    mentors: Vec<PoolMentor<'a>>,
    points: Points,
    wanted: Vec<Wanted>,
    /// Each client's recorded gender.
    client_gender: Vec<Option<Gender>>,
    /// Each client's eligible mentors, sorted keys.
    lists: Vec<Vec<Key>>,
    relations: Vec<Vec<(u32, u8)>>,
    gender: i64,
    worked: i64,
    window: usize,
    /// Free places left per mentor.
    spare: Vec<i32>,
    /// The clients each mentor is in the pair of.
    users: Vec<Vec<u32>>,
    /// The clients with each mentor among the first K of their list.
    interested: Vec<Vec<u32>>,
    assigned: Vec<Option<Pair>>,
    /// Each client's best pair ignoring capacity.
    ideal: Vec<Option<i64>>,
}

impl Pool<'_> {
    /// Each client's list: its eligible mentors, sorted.
    fn lists(&self, eligible: &impl Fn(&PoolClient, &Candidate) -> bool) -> Vec<Vec<Key>> {
        let mut keys: Vec<Key> = Vec::with_capacity(self.mentors.len());
        (0..self.clients.len())
            .map(|client| {
                keys.clear();
                for (mentor, entry) in self.mentors.iter().enumerate() {
                    if eligible(self.clients[client], entry.candidate) {
                        let mentor = mentor as u32;
                        keys.push(key_of(self.individual(client, mentor), mentor));
                    }
                }
                keys.sort_unstable();
                keys.to_vec()
            })
            .collect()
    }

    fn individual(&self, client: usize, mentor: u32) -> i64 {
        let entry = &self.mentors[mentor as usize];
        matching::individual_points(
            &self.points,
            self.wanted[client],
            matching::works_in_area(&self.clients[client].needs.area, entry.candidate),
            entry.mask,
            entry.fixed,
        )
    }

    fn mentor(&self, client: usize, position: u32) -> u32 {
        mentor_of(self.lists[client][position as usize])
    }

    /// The position of an eligible mentor in a client's list.
    fn position(&self, client: usize, mentor: u32) -> Option<u32> {
        let key = key_of(self.individual(client, mentor), mentor);
        self.lists[client]
            .binary_search(&key)
            .ok()
            .map(|position| position as u32)
    }

    fn same_gender(&self, client: usize, mentor: u32) -> bool {
        self.client_gender[client]
            .is_some_and(|gender| self.mentors[mentor as usize].candidate.gender == gender)
    }

    fn relation(&self, a: u32, b: u32) -> u8 {
        let (list, other) = if self.relations[a as usize].len() <= self.relations[b as usize].len()
        {
            (&self.relations[a as usize], b)
        } else {
            (&self.relations[b as usize], a)
        };
        list.iter()
            .find(|(mentor, _)| *mentor == other)
            .map_or(0, |(_, flags)| *flags)
    }

    /// The score of two mentors for a client from their individual
    /// scores, unless incompatible.
    fn score(&self, client: usize, a: (u32, i64), b: (u32, i64)) -> Option<i64> {
        let relation = self.relation(a.0, b.0);
        if relation & INCOMPATIBLE != 0 {
            return None;
        }
        let mut score = a.1 + b.1;
        if self.same_gender(client, a.0) || self.same_gender(client, b.0) {
            score += self.gender;
        }
        if relation & WORKED != 0 {
            score += self.worked;
        }
        Some(score)
    }

    /// The pair of two positions in a client's list, unless incompatible.
    fn pair(&self, client: usize, x: u32, y: u32) -> Option<Pair> {
        if x == y {
            return None;
        }
        let (first, second) = (x.min(y), x.max(y));
        let list = &self.lists[client];
        let (a, b) = (list[first as usize], list[second as usize]);
        let score = self.score(
            client,
            (mentor_of(a), individual_of(a)),
            (mentor_of(b), individual_of(b)),
        )?;
        Some(Pair {
            first,
            second,
            score,
        })
    }

    /// The client's best pair of mentors that `usable` admits; the first in
    /// list order among equal scores.
    fn best(&self, client: usize, usable: impl Fn(u32) -> bool) -> Option<Pair> {
        let list = &self.lists[client];
        let bonus = self.gender + self.worked;
        let mut best: Option<Pair> = None;
        for x in 0..list.len() {
            let individual = individual_of(list[x]);
            if let (Some(found), Some(next)) = (best, list.get(x + 1))
                && individual + individual_of(*next) + bonus <= found.score
            {
                break;
            }
            if !usable(mentor_of(list[x])) {
                continue;
            }
            for (y, key) in list.iter().enumerate().skip(x + 1) {
                if let Some(found) = best
                    && individual + individual_of(*key) + bonus <= found.score
                {
                    break;
                }
                if !usable(mentor_of(*key)) {
                    continue;
                }
                if let Some(pair) = self.pair(client, x as u32, y as u32)
                    && best.is_none_or(|found| pair.score > found.score)
                {
                    best = Some(pair);
                }
            }
        }
        best
    }

    fn best_available(&self, client: usize) -> Option<Pair> {
        self.best(client, |mentor| self.spare[mentor as usize] > 0)
    }

    fn take(&mut self, client: usize, pair: Pair) {
        for position in [pair.first, pair.second] {
            let mentor = self.mentor(client, position) as usize;
            debug_assert!(self.spare[mentor] > 0);
            self.spare[mentor] -= 1;
            self.users[mentor].push(client as u32);
        }
        self.assigned[client] = Some(pair);
    }

    fn release(&mut self, client: usize) -> Option<Pair> {
        let pair = self.assigned[client].take()?;
        for position in [pair.first, pair.second] {
            let mentor = self.mentor(client, position) as usize;
            self.spare[mentor] += 1;
            let users = &mut self.users[mentor];
            if let Some(found) = users.iter().position(|user| *user == client as u32) {
                users.remove(found);
            }
        }
        Some(pair)
    }

    fn greedy(&mut self) {
        let mut heap: BinaryHeap<(i64, Reverse<usize>, u32, u32)> = (0..self.clients.len())
            .filter_map(|client| {
                self.best_available(client)
                    .map(|pair| (pair.score, Reverse(client), pair.first, pair.second))
            })
            .collect();
        while let Some((score, Reverse(client), first, second)) = heap.pop() {
            let available = [first, second]
                .iter()
                .all(|position| self.spare[self.mentor(client, *position) as usize] > 0);
            if available {
                self.take(
                    client,
                    Pair {
                        first,
                        second,
                        score,
                    },
                );
            } else if let Some(pair) = self.best_available(client) {
                heap.push((pair.score, Reverse(client), pair.first, pair.second));
            }
        }
    }

    /// The cheap moves until none improves, then a pass of neighbourhoods;
    /// again while that improves.
    fn improve(&mut self) {
        let mut budget = NODES_PER_POOL;
        for _ in 0..MAX_PASSES {
            let mut improved = self.repair_pass();
            improved |= self.swap_pass();
            improved |= self.assign_pass();
            if !improved && !self.neighbourhood_pass(&mut budget) {
                break;
            }
        }
    }

    /// Each assigned client takes its best pair of its own mentors and
    /// mentors with spare capacity, when strictly better.
    fn repair_pass(&mut self) -> bool {
        let mut improved = false;
        for client in 0..self.clients.len() {
            let Some(old) = self.release(client) else {
                continue;
            };
            match self.best_available(client) {
                Some(pair) if pair.score > old.score => {
                    self.take(client, pair);
                    improved = true;
                }
                _ => self.take(client, old),
            }
        }
        improved
    }

    /// Each assigned client makes the best improving exchange of one of its
    /// mentors for one of the first K of its list, held by another client.
    fn swap_pass(&mut self) -> bool {
        let mut improved = false;
        for one in 0..self.clients.len() {
            let Some(own) = self.assigned[one] else {
                continue;
            };
            let own_mentors = [self.mentor(one, own.first), self.mentor(one, own.second)];
            let mut best: Option<(i64, usize, Pair, Pair)> = None;
            for (wanted_position, key) in self.lists[one].iter().enumerate().take(self.window) {
                let wanted = mentor_of(*key);
                if own_mentors.contains(&wanted) {
                    continue;
                }
                for &other in &self.users[wanted as usize] {
                    let other = other as usize;
                    let Some(theirs) = self.assigned[other] else {
                        continue;
                    };
                    let (kept_by_them, given) = if self.mentor(other, theirs.first) == wanted {
                        (theirs.second, theirs.first)
                    } else {
                        (theirs.first, theirs.second)
                    };
                    debug_assert_eq!(self.mentor(other, given), wanted);
                    let their_kept = self.mentor(other, kept_by_them);
                    let kept_key = self.lists[other][kept_by_them as usize];
                    for (mine_given, mine_kept) in
                        [(own.first, own.second), (own.second, own.first)]
                    {
                        let mentor_given = self.mentor(one, mine_given);
                        if mentor_given == their_kept {
                            continue;
                        }
                        let Some(mine) = self.pair(one, mine_kept, wanted_position as u32) else {
                            continue;
                        };
                        // Their score with the mentor given, before looking
                        // the mentor up in their list (they may not be
                        // eligible): the lookup is the costly part.
                        let individual = self.individual(other, mentor_given);
                        let Some(their_score) = self.score(
                            other,
                            (mentor_given, individual),
                            (their_kept, individual_of(kept_key)),
                        ) else {
                            continue;
                        };
                        let gain = mine.score + their_score - own.score - theirs.score;
                        if gain <= 0 || best.is_some_and(|(found, ..)| gain <= found) {
                            continue;
                        }
                        let Some(their_position) = self.position(other, mentor_given) else {
                            continue;
                        };
                        let new_theirs = Pair {
                            first: kept_by_them.min(their_position),
                            second: kept_by_them.max(their_position),
                            score: their_score,
                        };
                        best = Some((gain, other, mine, new_theirs));
                    }
                }
            }
            if let Some((_, other, mine, theirs)) = best {
                self.release(one);
                self.release(other);
                self.take(one, mine);
                self.take(other, theirs);
                improved = true;
            }
        }
        improved
    }

    /// Each unassigned client takes its best pair of mentors with spare
    /// capacity: the total does not fall and one more client is assigned.
    fn assign_pass(&mut self) -> bool {
        let mut improved = false;
        for client in 0..self.clients.len() {
            if self.assigned[client].is_some() {
                continue;
            }
            if let Some(pair) = self.best_available(client) {
                self.take(client, pair);
                improved = true;
            }
        }
        improved
    }

    /// Re-solves, exactly, small neighbourhoods of clients who do not have
    /// their best pair: see [`Pool::reoptimise`]. True when one improved.
    fn neighbourhood_pass(&mut self, budget: &mut usize) -> bool {
        let mut improved = false;
        for seed in 0..self.clients.len() {
            let Some(ideal) = self.ideal[seed] else {
                continue;
            };
            if self.assigned[seed].is_some_and(|pair| pair.score >= ideal) {
                continue;
            }
            if *budget == 0 {
                break;
            }
            let set = self.neighbourhood(seed);
            improved |= self.reoptimise(&set, budget);
        }
        improved
    }

    /// The seed, then the clients holding the first K mentors of its list
    /// and the unassigned clients with those mentors among their first K,
    /// breadth first, at most [`NEIGHBOURHOOD`] clients.
    fn neighbourhood(&self, seed: usize) -> Vec<usize> {
        let mut set = vec![seed];
        let mut next = 0;
        while next < set.len() && set.len() < NEIGHBOURHOOD {
            let client = set[next];
            next += 1;
            for key in self.lists[client].iter().take(self.window) {
                let mentor = mentor_of(*key) as usize;
                let holders = self.users[mentor].iter();
                let waiting = self.interested[mentor]
                    .iter()
                    .filter(|other| self.assigned[**other as usize].is_none());
                for other in holders.chain(waiting) {
                    let other = *other as usize;
                    if !set.contains(&other) {
                        set.push(other);
                        if set.len() == NEIGHBOURHOOD {
                            return set;
                        }
                    }
                }
            }
        }
        set
    }

    /// Releases the clients of `set` and assigns them again by branch and
    /// bound over the pairs of each one's first
    /// [`FREE_MENTORS_PER_CLIENT`] mentors with room, keeping the new
    /// assignment only when it raises (total, clients assigned). Spends at
    /// most [`NODES_PER_NEIGHBOURHOOD`] nodes of `budget`.
    fn reoptimise(&mut self, set: &[usize], budget: &mut usize) -> bool {
        let old: Vec<Option<Pair>> = set.iter().map(|client| self.release(*client)).collect();
        let old_value = (
            old.iter().flatten().map(|pair| pair.score).sum::<i64>(),
            old.iter().flatten().count(),
        );
        let options: Vec<Vec<(Pair, u32, u32)>> =
            set.iter().map(|&client| self.free_pairs(client)).collect();
        let mut bound = vec![0; set.len() + 1];
        for index in (0..set.len()).rev() {
            bound[index] = bound[index + 1] + options[index].first().map_or(0, |o| o.0.score);
        }
        let nodes = (*budget).min(NODES_PER_NEIGHBOURHOOD);
        let mut search = Search {
            options: &options,
            bound: &bound,
            spare: &mut self.spare,
            nodes,
            current: vec![None; set.len()],
            best: old_value,
            found: None,
        };
        search.run(0, 0, 0);
        *budget -= nodes - search.nodes;
        let chosen = search.found.take().unwrap_or(old);
        let improved = chosen.iter().flatten().count() != old_value.1
            || chosen.iter().flatten().map(|pair| pair.score).sum::<i64>() != old_value.0;
        for (client, pair) in set.iter().zip(chosen) {
            if let Some(pair) = pair {
                self.take(*client, pair);
            }
        }
        improved
    }

    /// The pairs of the client's first [`FREE_MENTORS_PER_CLIENT`] mentors
    /// with room, with their mentors, best first.
    fn free_pairs(&self, client: usize) -> Vec<(Pair, u32, u32)> {
        let list = &self.lists[client];
        let free: Vec<u32> = (0..list.len() as u32)
            .filter(|position| self.spare[mentor_of(list[*position as usize]) as usize] > 0)
            .take(FREE_MENTORS_PER_CLIENT)
            .collect();
        let mut pairs = Vec::with_capacity(free.len() * free.len() / 2);
        for (index, &x) in free.iter().enumerate() {
            for &y in &free[index + 1..] {
                if let Some(pair) = self.pair(client, x, y) {
                    pairs.push((pair, self.mentor(client, x), self.mentor(client, y)));
                }
            }
        }
        pairs.sort_unstable_by_key(|(pair, _, _)| (Reverse(pair.score), pair.first, pair.second));
        pairs
    }
}

/// Branch and bound over the clients of a neighbourhood: each takes one of
/// its options whose mentors have room, or none.
struct Search<'s> {
    options: &'s [Vec<(Pair, u32, u32)>],
    /// The best the clients from an index on could add, ignoring capacity.
    bound: &'s [i64],
    spare: &'s mut Vec<i32>,
    /// Nodes left.
    nodes: usize,
    current: Vec<Option<Pair>>,
    /// The value to beat: (total, clients assigned).
    best: (i64, usize),
    found: Option<Vec<Option<Pair>>>,
}

impl Search<'_> {
    fn run(&mut self, index: usize, total: i64, assigned: usize) {
        if self.nodes == 0 {
            return;
        }
        self.nodes -= 1;
        let clients = self.options.len();
        if index == clients {
            if (total, assigned) > self.best {
                self.best = (total, assigned);
                self.found = Some(self.current.clone());
            }
            return;
        }
        let rest = clients - index - 1;
        for option in 0..self.options[index].len() {
            let (pair, a, b) = self.options[index][option];
            let reach = (
                total + pair.score + self.bound[index + 1],
                assigned + 1 + rest,
            );
            if reach <= self.best {
                break;
            }
            let (a, b) = (a as usize, b as usize);
            if self.spare[a] > 0 && self.spare[b] > 0 {
                self.spare[a] -= 1;
                self.spare[b] -= 1;
                self.current[index] = Some(pair);
                self.run(index + 1, total + pair.score, assigned + 1);
                self.current[index] = None;
                self.spare[a] += 1;
                self.spare[b] += 1;
            }
        }
        if (total + self.bound[index + 1], assigned + rest) > self.best {
            self.run(index + 1, total, assigned);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use cpm_proto::v1::{Gender, LivedExperience, Vulnerability};

    use super::*;
    use crate::matching::test_support::{self, Rng};
    use crate::matching::{propose, score_pair, works_in_area};

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn hundredths(score: f64) -> i64 {
        (score * 100.0).round() as i64
    }

    fn total(assignments: &[PoolAssignment]) -> i64 {
        assignments
            .iter()
            .map(|assignment| hundredths(assignment.proposal.score))
            .sum()
    }

    fn in_area(client: &PoolClient, mentor: &Candidate) -> bool {
        works_in_area(&client.needs.area, mentor)
    }

    /// Every rule of a result: sorted by referral, each proposal the pair's
    /// own score, eligible and distinct mentors, no incompatible pair, no
    /// mentor beyond their free places.
    fn check_rules(
        clients: &[PoolClient],
        mentors: &[Candidate],
        history: &PairHistory,
        weights: &Weights,
        eligible: &impl Fn(&PoolClient, &Candidate) -> bool,
        result: &[PoolAssignment],
    ) {
        let mut used: HashMap<Uuid, i32> = HashMap::new();
        for window in result.windows(2) {
            assert!(
                window[0].referral_id < window[1].referral_id,
                "sorted, once each"
            );
        }
        for assignment in result {
            let client = clients
                .iter()
                .find(|client| client.referral_id == assignment.referral_id)
                .expect("a client of the pool");
            let [a, b] = assignment.proposal.mentor_ids;
            assert!(a < b, "two distinct mentors, ascending");
            let find = |id: Uuid| mentors.iter().find(|m| m.mentor_id == id).unwrap();
            let (a, b) = (find(a), find(b));
            assert!(
                eligible(client, a) && eligible(client, b),
                "eligible mentors only"
            );
            assert!(!history.is_incompatible(a.mentor_id, b.mentor_id));
            assert_eq!(
                assignment.proposal,
                score_pair(&client.needs, a, b, history, weights)
            );
            for mentor in [a, b] {
                *used.entry(mentor.mentor_id).or_default() += 1;
            }
        }
        for (mentor, count) in used {
            let free = mentors
                .iter()
                .find(|m| m.mentor_id == mentor)
                .unwrap()
                .free_places;
            assert!(count <= free, "{mentor}: {count} pairs, {free} free places");
        }
    }

    /// The best (total, clients assigned) by branch and bound over every
    /// client's every pair.
    struct Exact {
        options: Vec<Vec<(i64, usize, usize)>>,
        /// The best each client and those after it could add, ignoring capacity.
        bound: Vec<i64>,
        free: Vec<i32>,
        best: (i64, usize),
    }

    impl Exact {
        fn optimum(
            clients: &[PoolClient],
            mentors: &[Candidate],
            history: &PairHistory,
            weights: &Weights,
            eligible: &impl Fn(&PoolClient, &Candidate) -> bool,
        ) -> (i64, usize) {
            let options: Vec<Vec<(i64, usize, usize)>> = clients
                .iter()
                .map(|client| {
                    let mut options = Vec::new();
                    for (x, a) in mentors.iter().enumerate() {
                        for (y, b) in mentors.iter().enumerate().skip(x + 1) {
                            if a.free_places > 0
                                && b.free_places > 0
                                && eligible(client, a)
                                && eligible(client, b)
                                && !history.is_incompatible(a.mentor_id, b.mentor_id)
                            {
                                let proposal = score_pair(&client.needs, a, b, history, weights);
                                options.push((hundredths(proposal.score), x, y));
                            }
                        }
                    }
                    options.sort_by_key(|option| Reverse(option.0));
                    options
                })
                .collect();
            let mut bound = vec![0; clients.len() + 1];
            for client in (0..clients.len()).rev() {
                bound[client] = bound[client + 1] + options[client].first().map_or(0, |o| o.0);
            }
            let mut exact = Exact {
                options,
                bound,
                free: mentors.iter().map(|m| m.free_places).collect(),
                best: (0, 0),
            };
            exact.search(0, 0, 0);
            exact.best
        }

        fn search(&mut self, client: usize, total: i64, assigned: usize) {
            if client == self.options.len() {
                self.best = self.best.max((total, assigned));
                return;
            }
            let left = self.options.len() - client;
            if (total + self.bound[client], assigned + left) <= self.best {
                return;
            }
            for option in 0..self.options[client].len() {
                let (score, a, b) = self.options[client][option];
                if self.free[a] > 0 && self.free[b] > 0 {
                    self.free[a] -= 1;
                    self.free[b] -= 1;
                    self.search(client + 1, total + score, assigned + 1);
                    self.free[a] += 1;
                    self.free[b] += 1;
                }
            }
            self.search(client + 1, total, assigned);
        }
    }

    struct Instance {
        clients: Vec<PoolClient>,
        mentors: Vec<Candidate>,
        history: PairHistory,
        weights: Weights,
        excluded: HashSet<(Uuid, Uuid)>,
    }

    impl Instance {
        fn random(rng: &mut Rng, clients: usize, mentors: usize, most_free: usize) -> Self {
            const AREAS: [&str; 2] = ["Darlington", "East Durham"];
            let clients: Vec<PoolClient> = (0..clients)
                .map(|n| PoolClient {
                    referral_id: id(1_000 + (n as u128 * 7_919) % 1_009),
                    needs: ClientNeeds {
                        area: rng.pick(&AREAS).to_owned(),
                        ..test_support::client(rng)
                    },
                })
                .collect();
            let mentors: Vec<Candidate> = (0..mentors)
                .map(|n| {
                    let mut areas = vec![rng.pick(&AREAS).to_owned()];
                    if rng.chance(30) {
                        areas.push(rng.pick(&AREAS).to_owned());
                    }
                    Candidate {
                        areas,
                        free_places: 1 + rng.below(most_free) as i32,
                        ..test_support::mentor(rng, n as u128)
                    }
                })
                .collect();
            let pairs = rng.below(mentors.len() + 1);
            let history = test_support::history(rng, &mentors, pairs);
            let weights = test_support::weights(rng);
            let mut excluded = HashSet::new();
            for client in &clients {
                for mentor in &mentors {
                    if rng.chance(15) {
                        excluded.insert((client.referral_id, mentor.mentor_id));
                    }
                }
            }
            Self {
                clients,
                mentors,
                history,
                weights,
                excluded,
            }
        }

        fn eligible(&self) -> impl Fn(&PoolClient, &Candidate) -> bool + '_ {
            |client, mentor| {
                in_area(client, mentor)
                    && !self
                        .excluded
                        .contains(&(client.referral_id, mentor.mentor_id))
            }
        }

        fn solve(&self) -> Vec<PoolAssignment> {
            let result = match_pool(
                &self.clients,
                &self.mentors,
                &self.history,
                &self.weights,
                self.eligible(),
            );
            check_rules(
                &self.clients,
                &self.mentors,
                &self.history,
                &self.weights,
                &self.eligible(),
                &result,
            );
            result
        }
    }

    #[test]
    fn match_pool_is_within_one_percent_of_the_optimum_on_small_instances() {
        let mut rng = Rng(0xBA7C_0001);
        let (mut instances, mut optimal, mut fewer_assigned) = (0, 0, 0);
        let mut below = Vec::new();
        let (mut worst, mut first_come_worst, mut first_come_optimal) = (1.0_f64, 1.0_f64, 0);
        for _ in 0..2_500 {
            let clients = 1 + rng.below(6);
            let mentors = rng.below(9);
            let instance = Instance::random(&mut rng, clients, mentors, 2);
            let result = instance.solve();
            let (best, assigned) = Exact::optimum(
                &instance.clients,
                &instance.mentors,
                &instance.history,
                &instance.weights,
                &instance.eligible(),
            );
            let got = total(&result);
            assert!(got <= best, "never above the optimum");
            if best == 0 {
                assert_eq!(got, 0);
                continue;
            }
            instances += 1;
            let ratio = got as f64 / best as f64;
            worst = worst.min(ratio);
            if got == best {
                optimal += 1;
                if result.len() < assigned {
                    fewer_assigned += 1;
                }
            }
            if ratio < 0.99 {
                below.push(format!(
                    "{got} of {best} ({ratio:.4}): {:?} {:?} {:?} {:?}",
                    instance.clients, instance.mentors, instance.history, instance.weights
                ));
            }
            let greedy = total(&first_come(
                &instance.clients,
                &instance.mentors,
                &instance.history,
                &instance.weights,
                &instance.eligible(),
            ));
            first_come_worst = first_come_worst.min(greedy as f64 / best as f64);
            if greedy == best {
                first_come_optimal += 1;
            }
        }
        eprintln!(
            "match_pool: {optimal} of {instances} instances optimal ({fewer_assigned} of them \
             with fewer clients assigned than possible), worst {:.2}% of the optimum; \
             first come: {first_come_optimal} optimal, worst {:.2}%",
            worst * 100.0,
            first_come_worst * 100.0
        );
        assert!(instances > 1_000);
        assert!(
            below.is_empty(),
            "{} below 99%, first: {}",
            below.len(),
            below[0]
        );
    }

    fn mentor(n: u128, experience: &[LivedExperience], free: i32) -> Candidate {
        Candidate {
            mentor_id: id(n),
            display_name: format!("Mentor {n}"),
            gender: Gender::Undisclosed,
            areas: vec!["Darlington".into()],
            lived_experience: experience.to_vec(),
            free_places: free,
            waiting_days: None,
        }
    }

    fn client(n: u128, vulnerabilities: &[Vulnerability]) -> PoolClient {
        PoolClient {
            referral_id: id(n),
            needs: ClientNeeds {
                area: "Darlington".into(),
                vulnerabilities: vulnerabilities.to_vec(),
                gender: Gender::Undisclosed,
                victim_of: Vec::new(),
                perpetrator_of: Vec::new(),
            },
        }
    }

    fn pairs(result: &[PoolAssignment]) -> Vec<(Uuid, [Uuid; 2])> {
        result
            .iter()
            .map(|assignment| (assignment.referral_id, assignment.proposal.mentor_ids))
            .collect()
    }

    #[test]
    fn first_come_greedy_loses_where_match_pool_does_not() {
        use LivedExperience as L;
        // The first client likes mentors 11 and 12 best (5.5 each); the
        // second needs mentor 11 much more (7.5 against 3.5 to 4).
        let clients = [
            client(1, &[Vulnerability::AlcoholAddiction]),
            client(
                2,
                &[Vulnerability::MentalHealth, Vulnerability::DrugAddiction],
            ),
        ];
        let mentors = [
            mentor(11, &[L::AlcoholDependency, L::MentalHealth, L::Drugs], 1),
            mentor(12, &[L::AlcoholDependency], 1),
            mentor(13, &[], 2),
            mentor(14, &[], 1),
        ];
        let history = PairHistory::default();
        let weights = Weights::default();
        let eligible = |_: &PoolClient, _: &Candidate| true;
        let greedy = first_come(&clients, &mentors, &history, &weights, &eligible);
        assert_eq!(
            pairs(&greedy),
            [(id(1), [id(11), id(12)]), (id(2), [id(13), id(14)])]
        );
        assert_eq!(total(&greedy), 1_850);
        let result = match_pool(&clients, &mentors, &history, &weights, eligible);
        check_rules(&clients, &mentors, &history, &weights, &eligible, &result);
        assert_eq!(
            pairs(&result),
            [(id(1), [id(12), id(13)]), (id(2), [id(11), id(13)])]
        );
        assert_eq!(total(&result), 2_100);
        assert_eq!(
            Exact::optimum(&clients, &mentors, &history, &weights, &eligible),
            (2_100, 2)
        );
    }

    #[test]
    fn capacity_limits_the_clients_assigned() {
        let clients: Vec<PoolClient> = (1..=5).map(|n| client(n, &[])).collect();
        let mentors = [
            mentor(11, &[], 1),
            mentor(12, &[], 1),
            mentor(13, &[], 2),
            mentor(14, &[], 0),
            mentor(15, &[], -1),
        ];
        let history = PairHistory::default();
        let weights = Weights::default();
        let eligible = |_: &PoolClient, _: &Candidate| true;
        let result = match_pool(&clients, &mentors, &history, &weights, eligible);
        check_rules(&clients, &mentors, &history, &weights, &eligible, &result);
        assert_eq!(result.len(), 2, "four places make two pairs");
        let used: Vec<Uuid> = result
            .iter()
            .flat_map(|assignment| assignment.proposal.mentor_ids)
            .collect();
        assert!(!used.contains(&id(14)) && !used.contains(&id(15)));
        assert_eq!(used.iter().filter(|m| **m == id(13)).count(), 2);
    }

    #[test]
    fn an_ineligible_mentor_or_an_incompatible_pair_is_never_proposed() {
        use LivedExperience as L;
        let clients = [
            client(1, &[Vulnerability::MentalHealth]),
            client(2, &[Vulnerability::MentalHealth]),
        ];
        let mentors = [
            mentor(11, &[L::MentalHealth], 2),
            mentor(12, &[L::MentalHealth], 2),
            mentor(13, &[L::MentalHealth], 2),
            mentor(14, &[], 2),
            mentor(15, &[], 2),
        ];
        let mut history = PairHistory::default();
        history.record_incompatible(id(11), id(12));
        history.record_worked(id(11), id(12));
        // Mentor 13 is not for client 1 (say a safety rule).
        let eligible = |client: &PoolClient, mentor: &Candidate| {
            !(client.referral_id == id(1) && mentor.mentor_id == id(13))
        };
        let weights = Weights::default();
        let result = match_pool(&clients, &mentors, &history, &weights, eligible);
        check_rules(&clients, &mentors, &history, &weights, &eligible, &result);
        assert_eq!(result.len(), 2);
        let first = pairs(&result)[0].1;
        assert!(
            first.contains(&id(11)) ^ first.contains(&id(12)),
            "{first:?}"
        );
        assert!(!first.contains(&id(13)));
        assert!(!pairs(&result)[1].1.contains(&id(11)) || !pairs(&result)[1].1.contains(&id(12)));
    }

    #[test]
    fn empty_inputs_give_no_assignments() {
        let history = PairHistory::default();
        let weights = Weights::default();
        let all = |_: &PoolClient, _: &Candidate| true;
        let mentors = [mentor(11, &[], 1), mentor(12, &[], 1)];
        let clients = [client(1, &[])];
        assert!(match_pool(&[], &mentors, &history, &weights, all).is_empty());
        assert!(match_pool(&clients, &[], &history, &weights, all).is_empty());
        assert!(match_pool(&clients, &mentors[..1], &history, &weights, all).is_empty());
        let full = [mentor(11, &[], 0), mentor(12, &[], 1)];
        assert!(match_pool(&clients, &full, &history, &weights, all).is_empty());
        let none = |_: &PoolClient, _: &Candidate| false;
        assert!(match_pool(&clients, &mentors, &history, &weights, none).is_empty());
        assert_eq!(
            match_pool(&clients, &mentors, &history, &weights, all).len(),
            1
        );
    }

    #[test]
    fn the_result_does_not_depend_on_the_order_of_the_inputs() {
        let mut rng = Rng(0xBA7C_0002);
        for _ in 0..6 {
            let instance = Instance::random(&mut rng, 30, 45, 3);
            let result = instance.solve();
            let mut shuffled = Instance {
                clients: instance.clients.clone(),
                mentors: instance.mentors.clone(),
                history: instance.history.clone(),
                weights: instance.weights.clone(),
                excluded: instance.excluded.clone(),
            };
            shuffled.clients.reverse();
            shuffled.mentors.rotate_left(17);
            assert_eq!(shuffled.solve(), result);
        }
    }

    #[test]
    fn a_larger_pool_keeps_every_rule_and_beats_first_come() {
        let mut rng = Rng(0xBA7C_0003);
        let (mut pool_total, mut first_total) = (0, 0);
        for _ in 0..5 {
            let instance = Instance::random(&mut rng, 150, 200, 3);
            let result = instance.solve();
            let upper: i64 = instance
                .clients
                .iter()
                .map(|client| {
                    let candidates: Vec<Candidate> = instance
                        .mentors
                        .iter()
                        .filter(|m| instance.eligible()(client, m))
                        .cloned()
                        .collect();
                    propose(
                        &client.needs,
                        &candidates,
                        &instance.history,
                        &instance.weights,
                        1,
                    )
                    .first()
                    .map_or(0, |p| hundredths(p.score))
                })
                .sum();
            assert!(total(&result) <= upper);
            pool_total += total(&result);
            first_total += total(&first_come(
                &instance.clients,
                &instance.mentors,
                &instance.history,
                &instance.weights,
                &instance.eligible(),
            ));
        }
        assert!(
            pool_total >= first_total,
            "{pool_total} against {first_total}"
        );
    }

    #[test]
    fn a_small_window_still_serves_everyone() {
        let clients: Vec<PoolClient> = (1..=3).map(|n| client(n, &[])).collect();
        let mentors: Vec<Candidate> = (11..=16).map(|n| mentor(n, &[], 1)).collect();
        let history = PairHistory::default();
        let weights = Weights::default();
        let eligible = |_: &PoolClient, _: &Candidate| true;
        let options = PoolOptions {
            candidates_per_client: 2,
        };
        let result = match_pool_with(&clients, &mentors, &history, &weights, eligible, options);
        check_rules(&clients, &mentors, &history, &weights, &eligible, &result);
        // Every client's first two mentors are 11 and 12; the greedy still
        // looks further.
        assert_eq!(
            pairs(&result),
            [
                (id(1), [id(11), id(12)]),
                (id(2), [id(13), id(14)]),
                (id(3), [id(15), id(16)])
            ]
        );
    }
}
