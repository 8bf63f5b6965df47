//! Keyed state: `stateful_by_key`'s operator.
//!
//! Keys hash into [`KEY_GROUPS`] groups (Flink's key groups: the unit of
//! re-partitioning), and replica `r` of `n` owns the contiguous run of
//! groups `g` with `g * n / KEY_GROUPS == r`. A key's state therefore lives
//! in exactly one replica for a given `n`, and changing `n` — a switch
//! between a local and a distributed replica count — hands whole groups to
//! other replicas without touching a key. Each replica sees its keys' items
//! in input order; the outputs are put back in input order through the
//! batch's route (one byte per item: its replica).
//!
//! The state crosses a switch as one archive of every group's
//! `(key, state)` pairs, validated and deserialized like any `stateful`
//! stage's state.

use crate::erased::{Erased, State};
use crate::item::Item;
use crate::op::{archive_state, restore_state, run_each, Operator, StateError};
use crate::port::Emit;
use crate::replica::Batch;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Key groups: the most replicas keyed state can be spread over, and the
/// unit that moves when the replica count changes.
pub(crate) const KEY_GROUPS: usize = 128;

/// The key group of `key`. `DefaultHasher::new()` has fixed keys, so a key
/// lands in the same group in this process and in every worker forked from
/// it.
fn group_of<K: Hash>(key: &K) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % KEY_GROUPS as u64) as usize
}

/// The replica that owns group `g` of `n`.
fn owner(g: usize, n: usize) -> usize {
    g * n / KEY_GROUPS
}

/// The first group replica `r` of `n` owns.
fn first_group(r: usize, n: usize) -> usize {
    (r * KEY_GROUPS).div_ceil(n)
}

/// One key group: the pairs, and where each key's pair is.
struct Group<K, S> {
    pairs: Vec<(K, S)>,
    index: HashMap<K, usize>,
}

impl<K: Hash + Eq + Clone, S> Group<K, S> {
    fn new() -> Self {
        Self {
            pairs: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// A group holding `pairs` (a decoded snapshot's).
    fn from_pairs(pairs: Vec<(K, S)>) -> Self {
        let index = pairs
            .iter()
            .enumerate()
            .map(|(at, (key, _))| (key.clone(), at))
            .collect();
        Self { pairs, index }
    }

    /// Runs `f` on `key`'s state (made by `init` the first time).
    #[inline]
    fn apply<In, Out>(
        &mut self,
        key: K,
        item: In,
        init: &impl Fn() -> S,
        f: &impl Fn(&mut S, In) -> Option<Out>,
    ) -> Option<Out> {
        let at = match self.index.get(&key) {
            Some(&at) => at,
            None => {
                self.pairs.push((key.clone(), init()));
                self.index.insert(key, self.pairs.len() - 1);
                self.pairs.len() - 1
            }
        };
        f(&mut self.pairs[at].1, item)
    }
}

/// `stateful_by_key`: `f(&mut state_of(key_fn(&item)), item)`.
pub(crate) struct KeyedOp<K, S, KF, IF, F> {
    groups: Vec<Group<K, S>>,
    key: KF,
    init: IF,
    f: F,
}

impl<K, S, KF, IF, F> KeyedOp<K, S, KF, IF, F>
where
    K: Hash + Eq + Clone,
{
    pub(crate) fn new(key: KF, init: IF, f: F) -> Self {
        Self {
            groups: (0..KEY_GROUPS).map(|_| Group::new()).collect(),
            key,
            init,
            f,
        }
    }
}

impl<In, Out, K, S, KF, IF, F> Operator<In, Out> for KeyedOp<K, S, KF, IF, F>
where
    In: Send + 'static,
    Out: Send + 'static,
    K: Item + Hash + Eq + Clone,
    S: Item,
    KF: Fn(&In) -> K + Send + Sync + 'static,
    IF: Fn() -> S + Send + Sync + 'static,
    F: Fn(&mut S, In) -> Option<Out> + Send + Sync + 'static,
{
    #[inline]
    fn process<E: Emit<Out>>(&mut self, item: In, out: &mut E) {
        let key = (self.key)(&item);
        let g = group_of(&key);
        if let Some(output) = self.groups[g].apply(key, item, &self.init, &self.f) {
            out.emit(output);
        }
    }

    const REPLICABLE: bool = true;

    const KEYED: bool = true;

    fn process_batch(
        &mut self,
        items: Vec<In>,
        pool: Option<&rayon::ThreadPool>,
        n: usize,
        out: &mut Batch<Out>,
    ) {
        let Some(pool) = pool.filter(|_| n > 1 && items.len() >= 2 * n) else {
            run_each(self, items, out);
            return;
        };
        // Deal by key group; `route[i]` is the replica of input `i`.
        let mut route = Vec::with_capacity(items.len());
        let mut parts: Vec<Vec<(usize, K, In)>> = (0..n).map(|_| Vec::new()).collect();
        for item in items {
            let key = (self.key)(&item);
            let g = group_of(&key);
            let r = owner(g, n);
            route.push(r as u8);
            parts[r].push((g, key, item));
        }
        out.dealt = parts.iter().map(Vec::len).collect();
        // Each replica gets its groups as a disjoint `&mut` slice.
        let mut shares = Vec::with_capacity(n);
        let mut rest: &mut [Group<K, S>] = &mut self.groups;
        for r in 0..n {
            let len = first_group(r + 1, n) - first_group(r, n);
            let (mine, others) = rest.split_at_mut(len);
            shares.push((first_group(r, n), mine));
            rest = others;
        }
        let mut results: Vec<Vec<Option<Out>>> = (0..n).map(|_| Vec::new()).collect();
        let (init, f) = (&self.init, &self.f);
        let run = |part: Vec<(usize, K, In)>,
                   (base, groups): (usize, &mut [Group<K, S>]),
                   result: &mut Vec<Option<Out>>| {
            result.reserve(part.len());
            for (g, key, item) in part {
                result.push(groups[g - base].apply(key, item, init, f));
            }
        };
        let mut jobs = parts.into_iter().zip(shares).zip(results.iter_mut());
        let ((first_part, first_share), first_result) = jobs.next().expect("n > 1");
        pool.in_place_scope(|scope| {
            for ((part, share), result) in jobs {
                scope.spawn(move |_| run(part, share, result));
            }
            run(first_part, first_share, first_result);
        });
        let mut results: Vec<_> = results.into_iter().map(Vec::into_iter).collect();
        out.items.reserve(route.len());
        out.ends.reserve(route.len());
        for r in route {
            if let Some(Some(output)) = results[r as usize].next() {
                out.items.push(output);
            }
            out.end_input();
        }
    }

    fn route(&self, items: &[In], n: usize) -> Option<Vec<u8>> {
        Some(
            items
                .iter()
                .map(|item| owner(group_of(&(self.key)(item)), n) as u8)
                .collect(),
        )
    }

    fn absorb(&mut self, state: Erased<State>, replica: usize, n: usize) {
        let groups = state.open::<Vec<Vec<(K, S)>>>();
        let (first, end) = (first_group(replica, n), first_group(replica + 1, n));
        for (g, pairs) in groups.into_iter().enumerate().take(end).skip(first) {
            self.groups[g] = Group::from_pairs(pairs);
        }
    }

    fn keep_only(&mut self, replica: usize, n: usize) {
        let (first, end) = (first_group(replica, n), first_group(replica + 1, n));
        for (g, group) in self.groups.iter_mut().enumerate() {
            if !(first..end).contains(&g) {
                *group = Group::new();
            }
        }
    }

    fn save_state(&self, area: &mut [u8]) -> Result<usize, StateError> {
        let pairs: Vec<&Vec<(K, S)>> = self.groups.iter().map(|g| &g.pairs).collect();
        archive_state(&Snapshot(pairs), area)
    }

    fn decode_state(&self, bytes: &[u8]) -> Result<Option<Erased<State>>, StateError> {
        let groups = restore_state::<Vec<Vec<(K, S)>>, rkyv::Archived<Vec<Vec<(K, S)>>>>(bytes)?;
        if groups.len() != KEY_GROUPS {
            return Err(StateError::Invalid {
                len: bytes.len(),
                cause: format!("{} key groups, expected {KEY_GROUPS}", groups.len()),
            });
        }
        Ok(Some(Erased::new(groups)))
    }

    fn set_state(&mut self, state: Erased<State>) {
        let groups = state.open::<Vec<Vec<(K, S)>>>();
        self.groups = groups.into_iter().map(Group::from_pairs).collect();
    }
}

/// Every group's pairs, borrowed: archives exactly as the
/// `Vec<Vec<(K, S)>>` that `decode_state` reads.
struct Snapshot<'a, K, S>(Vec<&'a Vec<(K, S)>>);

impl<K: Item, S: Item> rkyv::Archive for Snapshot<'_, K, S> {
    type Archived = rkyv::Archived<Vec<Vec<(K, S)>>>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(self.0.len(), resolver, out);
    }
}

impl<'s, K, S, Ser> rkyv::Serialize<Ser> for Snapshot<'s, K, S>
where
    K: Item,
    S: Item,
    Ser: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
    Vec<(K, S)>: rkyv::Serialize<Ser>,
{
    fn serialize(&self, serializer: &mut Ser) -> Result<Self::Resolver, Ser::Error> {
        rkyv::vec::ArchivedVec::<rkyv::Archived<Vec<(K, S)>>>::serialize_from_iter::<
            Vec<(K, S)>,
            _,
            _,
        >(self.0.iter().copied(), serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Counter =
        KeyedOp<u64, u64, fn(&u64) -> u64, fn() -> u64, fn(&mut u64, u64) -> Option<(u64, u64)>>;

    fn counter() -> Counter {
        fn key(x: &u64) -> u64 {
            x % 7
        }
        fn init() -> u64 {
            0
        }
        fn step(n: &mut u64, x: u64) -> Option<(u64, u64)> {
            *n += 1;
            Some((x, *n))
        }
        KeyedOp::new(key, init, step)
    }

    fn run(op: &mut Counter, items: std::ops::Range<u64>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for x in items {
            Operator::<u64, (u64, u64)>::process(op, x, &mut out);
        }
        out
    }

    #[test]
    fn state_round_trips_through_an_archive_and_refuses_a_small_area() {
        let mut first = counter();
        let _ = run(&mut first, 0..100);
        // 16-byte aligned, as the state area is.
        let mut words = vec![0u128; 1024];
        // SAFETY: a `u128` slice viewed as its bytes (no padding, any
        // byte pattern is a valid `u8`), borrowed exclusively here.
        let area = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 16)
        };
        let len = Operator::<u64, (u64, u64)>::save_state(&first, area).unwrap();
        let decoded = Operator::<u64, (u64, u64)>::decode_state(&first, &area[..len])
            .unwrap()
            .unwrap();
        let mut second = counter();
        Operator::<u64, (u64, u64)>::set_state(&mut second, decoded);
        // Both go on from the same counts: key 3 has seen 0..100's 14 items.
        assert_eq!(run(&mut second, 100..107), run(&mut first, 100..107));
        assert!(matches!(
            Operator::<u64, (u64, u64)>::save_state(&first, &mut area[..16]),
            Err(StateError::TooLarge { capacity: 16, .. })
        ));
        assert!(matches!(
            Operator::<u64, (u64, u64)>::decode_state(&first, &area[..8]),
            Err(StateError::Invalid { len: 8, .. })
        ));
    }

    #[test]
    fn groups_split_evenly_and_cover_every_group() {
        for n in 1..=crate::replica::MAX_REPLICAS {
            let mut seen = 0;
            for r in 0..n {
                for g in first_group(r, n)..first_group(r + 1, n) {
                    assert_eq!(owner(g, n), r, "n={n} g={g}");
                    seen += 1;
                }
            }
            assert_eq!(seen, KEY_GROUPS, "n={n}");
        }
    }
}
