//! The paths of a world, each with what is there ([`Files`]): a map in the order of
//! paths, as `Path` orders them, whose keys compare at the speed of their bytes.
//!
//! `Path`'s order goes component by component. It must, for a path may be spelled more
//! than one way (`/a//b` is `/a/b`), but the paths of a real world are spelled one way,
//! and for those the order of their components is the order of their bytes with `/` below
//! every other byte. A map of `PathBuf`s compares every key it is built from with the one
//! before it, twice (to find the list sorted, then to drop repeats), each time through
//! `Path`'s parse of both: at 10,000 projects that was 140 million instructions, 12% of
//! a plan's, about 20 ms on one core after the scan. [`Files`] orders the same keys the
//! same way ([`path_order`]), from their bytes where that is the same answer (the map's
//! build: 62 million instructions).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeBounds;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::{Bytes8, Node, starts_with_name};

/// Every observed path of a world, each with what is there, in the order of paths.
///
/// It reads as a `BTreeMap<PathBuf, Node>` does, and iterates in the same order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Files(BTreeMap<Key, Node>);

/// A path as a key of [`Files`]: ordered by [`path_order`], which is `Path`'s order (and
/// equal to another as `Path` has it, by its parts, which the map's build asks of each
/// key and the one before it).
#[derive(Clone)]
struct Key(PathBuf);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        path_order(&self.0, &other.0)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A lookup by `&Path` compares with `Path`'s own order, which [`path_order`] gives too,
/// as a borrowed key must.
impl Borrow<Path> for Key {
    fn borrow(&self) -> &Path {
        &self.0
    }
}

impl Files {
    /// No paths.
    pub fn new() -> Self {
        Files::default()
    }

    /// How many paths.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no path.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What is at `path`, if it was seen.
    pub fn get(&self, path: &Path) -> Option<&Node> {
        self.0.get(path)
    }

    /// True when `path` was seen.
    pub fn contains_key(&self, path: &Path) -> bool {
        self.0.contains_key(path)
    }

    /// Records `node` at `path`, returning what was recorded there before.
    pub fn insert(&mut self, path: PathBuf, node: Node) -> Option<Node> {
        self.0.insert(Key(path), node)
    }

    /// Forgets `path`, returning what was recorded there.
    pub fn remove(&mut self, path: &Path) -> Option<Node> {
        self.0.remove(path)
    }

    /// Moves every path of `other` here (a path of both keeps `other`'s node), leaving
    /// `other` empty.
    pub fn append(&mut self, other: &mut Files) {
        self.0.append(&mut other.0);
    }

    /// Each path with its node, in the order of paths.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&PathBuf, &Node)> + ExactSizeIterator + Clone {
        self.0.iter().map(|(key, node)| (&key.0, node))
    }

    /// Each path, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &PathBuf> + ExactSizeIterator + Clone {
        self.0.keys().map(|key| &key.0)
    }

    /// The paths within `range` (as `(Bound<&Path>, Bound<&Path>)`), in order.
    pub fn range<R: RangeBounds<Path>>(&self, range: R) -> impl DoubleEndedIterator<Item = (&PathBuf, &Node)> {
        self.0.range::<Path, R>(range).map(|(key, node)| (&key.0, node))
    }
}

/// What is at `path`; panics when it was not seen, as a map's index does.
impl std::ops::Index<&Path> for Files {
    type Output = Node;

    fn index(&self, path: &Path) -> &Node {
        &self.0[path]
    }
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// As a map from path to node, in order: what a `BTreeMap<PathBuf, Node>` writes, so a
/// world's fingerprint is the same.
impl Serialize for Files {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<P: Into<PathBuf>> FromIterator<(P, Node)> for Files {
    fn from_iter<I: IntoIterator<Item = (P, Node)>>(iter: I) -> Self {
        Files(iter.into_iter().map(|(path, node)| (Key(path.into()), node)).collect())
    }
}

impl<P: Into<PathBuf>> Extend<(P, Node)> for Files {
    fn extend<I: IntoIterator<Item = (P, Node)>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(|(path, node)| (Key(path.into()), node)));
    }
}

impl<'f> IntoIterator for &'f Files {
    type Item = (&'f PathBuf, &'f Node);
    type IntoIter = Box<dyn DoubleEndedIterator<Item = (&'f PathBuf, &'f Node)> + 'f>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// `a.cmp(b)`, `Path`'s order, component by component, found from the bytes of both
/// where that gives the same answer, as it does for any two paths of a real world.
///
/// Both paths are the same up to their first different byte. Back from it to the
/// separator before it, the parts before are the same and parsed the same in both (that
/// separator ends a part in both), so the first part that can differ starts there in
/// each. When both paths are absolute and each of those two parts is a name (not empty,
/// as after a doubled `/`, nor `.` nor `..`):
///
/// - if the parts differ (one goes on past the byte where the other's ends, or their
///   bytes there differ), the order of the paths is that of the two names, a name before
///   the longer names it starts;
/// - if they are the same name, and one path ends with it while the other goes on with
///   another name, the one that ends comes first, as a folder before what is in it.
///
/// Otherwise `Path` decides: for no two paths spelled plainly but the root itself
/// ([`crate::model::is_plain_absolute`]).
pub(crate) fn path_order(a: &Path, b: &Path) -> Ordering {
    by_bytes(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()).unwrap_or_else(|| a.cmp(b))
}

/// The order of the paths spelled `x` and `y`, when their bytes decide it (see
/// [`path_order`]).
fn by_bytes(x: &[u8], y: &[u8]) -> Option<Ordering> {
    let at = first_difference(x, y);
    if at == x.len() && at == y.len() {
        return Some(Ordering::Equal);
    }
    // Both absolute, so a separator comes before the difference: when only `x` is, they
    // differ at their first byte, and `x`'s part there is empty.
    if x.first() != Some(&b'/') {
        return None;
    }
    let part = x[..at].iter().rposition(|&byte| byte == b'/').map_or(0, |sep| sep + 1);
    if !starts_with_name(&x[part..]) || !starts_with_name(&y[part..]) {
        return None;
    }
    // Where the part of each ends at the difference: the path's end, or a separator.
    match (x.get(at), y.get(at)) {
        (None, Some(b'/')) if starts_with_name(&y[at + 1..]) => Some(Ordering::Less),
        (Some(b'/'), None) if starts_with_name(&x[at + 1..]) => Some(Ordering::Greater),
        (None | Some(b'/'), None | Some(b'/')) => None,
        (None | Some(b'/'), _) => Some(Ordering::Less),
        (_, None | Some(b'/')) => Some(Ordering::Greater),
        (Some(p), Some(q)) => Some(p.cmp(q)),
    }
}

/// Where `x` and `y` first differ: the length of the shorter when one starts the other.
/// Eight bytes at a time ([`Bytes8`]), as most keys of a map share a long root.
fn first_difference(x: &[u8], y: &[u8]) -> usize {
    let shorter = x.len().min(y.len());
    let mut at = 0;
    while at + 8 <= shorter {
        let differ = Bytes8::at(x, at).0 ^ Bytes8::at(y, at).0;
        if differ != 0 {
            // The first byte sits lowest in the word.
            return at + (differ.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + x[at..shorter].iter().zip(&y[at..shorter]).take_while(|(a, b)| a == b).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every byte string of up to `len` bytes over `alphabet`.
    fn spellings(alphabet: &[u8], len: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..len {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |&b| [s.as_slice(), &[b]].concat())).collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    fn path(bytes: &[u8]) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(bytes))
    }

    /// A path spelled plainly, as those of a real world are, other than the root: one
    /// whose order with another such is found from their bytes alone.
    fn plain(path: &Path) -> bool {
        crate::model::is_plain_absolute(path) && path != Path::new("/")
    }

    #[test]
    fn every_pair_of_short_paths_is_ordered_as_path_orders_it() {
        // `/`, `.`, a byte below `/` and one above it: every spelling up to 5 bytes
        // (1,365 paths, each against each).
        let all = spellings(b"/.-a", 5);
        for a in &all {
            for b in &all {
                let (x, y) = (path(a), path(b));
                assert_eq!(path_order(x, y), x.cmp(y), "{x:?} against {y:?}");
                if plain(x) && plain(y) {
                    assert!(by_bytes(a, b).is_some(), "{x:?} against {y:?} are left to `Path`");
                }
            }
        }
    }

    fn long_path() -> impl Strategy<Value = Vec<u8>> {
        // Long shared roots; parts that are `.`, `..` or empty; bytes around `/`, and any.
        let part = prop_oneof![
            Just(b"srv".to_vec()),
            Just(b"trueup-root-of-some-length".to_vec()),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            Just(Vec::new()),
            proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'-'), Just(b'0'), Just(b'a'), any::<u8>()], 1..12),
        ];
        (any::<bool>(), proptest::collection::vec(part, 0..8), any::<bool>()).prop_map(|(absolute, parts, trailing)| {
            let mut bytes = if absolute { b"/".to_vec() } else { Vec::new() };
            bytes.extend(parts.join(&b'/'));
            if trailing {
                bytes.push(b'/');
            }
            bytes
        })
    }

    /// The parts of a plainly spelled path: names, some long, some with dots.
    fn plain_parts() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let name = prop_oneof![
            Just(b"srv".to_vec()),
            Just(b"trueup-root-of-some-length".to_vec()),
            Just(b"p1".to_vec()),
            Just(b"p1-x".to_vec()),
            proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'-'), Just(b'0'), Just(b'a')], 1..12).prop_map(
                |name| if matches!(name.as_slice(), b"." | b"..") { [b"a", &name[..]].concat() } else { name }
            ),
        ];
        proptest::collection::vec(name, 1..8)
    }

    fn spelled(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.iter().flat_map(|part| [&b"/"[..], part]).flatten().copied().collect()
    }

    proptest! {
        #[test]
        fn plain_paths_are_ordered_from_their_bytes_alone(a in plain_parts(), b in plain_parts(), shared in 0..8_usize) {
            // `b` starting with some of `a`'s parts: a long root, the difference late.
            let b = [&a[..shared.min(a.len())], &b].concat();
            let (a, b) = (spelled(&a), spelled(&b));
            let (x, y) = (path(&a), path(&b));
            prop_assert!(plain(x) && plain(y));
            prop_assert_eq!(by_bytes(&a, &b), Some(x.cmp(y)), "{:?} against {:?}", x, y);
            prop_assert_eq!(by_bytes(&b, &a), Some(y.cmp(x)));
        }

        #[test]
        fn long_paths_are_ordered_as_path_orders_them(a in long_path(), b in long_path(), cut in 0..40_usize) {
            // Also with `b` starting as `a` does, so the difference comes late.
            let late = [&a[..cut.min(a.len())], &b].concat();
            for b in [&b, &late] {
                let (x, y) = (path(&a), path(b));
                prop_assert_eq!(path_order(x, y), x.cmp(y), "{:?} against {:?}", x, y);
                prop_assert_eq!(path_order(y, x), y.cmp(x));
                if plain(x) && plain(y) {
                    prop_assert!(by_bytes(&a, b).is_some(), "{:?} against {:?} are left to `Path`", x, y);
                }
            }
        }

        #[test]
        fn files_hold_and_iterate_as_a_map_of_paths(paths in proptest::collection::vec(long_path(), 0..40)) {
            let map: BTreeMap<PathBuf, Node> =
                paths.iter().enumerate().map(|(i, p)| (path(p).to_owned(), node(i))).collect();
            let files: Files = paths.iter().enumerate().map(|(i, p)| (path(p), node(i))).collect();
            prop_assert!(files.iter().eq(map.iter()), "{:?}\n{:?}", files, map);
            let mut one_by_one = Files::new();
            for (i, p) in paths.iter().enumerate() {
                one_by_one.insert(path(p).to_owned(), node(i));
            }
            prop_assert_eq!(&one_by_one, &files);
            for p in &paths {
                prop_assert_eq!(files.get(path(p)), map.get(path(p)));
            }
        }
    }

    fn node(i: usize) -> Node {
        match i % 3 {
            0 => Node::Dir,
            1 => Node::File,
            _ => Node::Symlink(PathBuf::from(format!("t{i}"))),
        }
    }

    #[test]
    fn files_read_as_the_map_they_stand_for() {
        let mut files: Files =
            [("/r/p1-x", Node::Dir), ("/r/p1", Node::Dir), ("/r/p1/current", Node::File)].into_iter().collect();
        let order: Vec<_> = files.keys().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(order, ["/r/p1", "/r/p1/current", "/r/p1-x"], "by parts, not by bytes");
        assert!(Key(PathBuf::from("/r/p1/current")) < Key(PathBuf::from("/r/p1-x")));
        assert_eq!(files.insert(PathBuf::from("/r/p1//current/"), Node::Dir), Some(Node::File), "the same path");
        assert_eq!(files.get(Path::new("/r/p1/current")), Some(&Node::Dir));
        assert_eq!(files[Path::new("/r/p1")], Node::Dir);
        assert!(files.contains_key(Path::new("/r/./p1")));
        let after: Vec<_> =
            files.range((std::ops::Bound::Excluded(Path::new("/r/p1")), std::ops::Bound::Unbounded)).collect();
        assert_eq!(after.len(), 2);
        assert_eq!(files.remove(Path::new("/r/p1-x")), Some(Node::Dir));
        let mut more: Files = [("/s", Node::File), ("/r/p1", Node::File)].into_iter().collect();
        files.append(&mut more);
        assert!(more.is_empty() && !files.is_empty());
        assert_eq!((files.len(), files.get(Path::new("/r/p1"))), (3, Some(&Node::File)));
        assert_eq!(format!("{files:?}"), r#"{"/r/p1": File, "/r/p1/current": Dir, "/s": File}"#);
        let map: BTreeMap<PathBuf, Node> = files.iter().map(|(p, n)| (p.clone(), n.clone())).collect();
        assert_eq!(serde_json::to_string(&files).unwrap(), serde_json::to_string(&map).unwrap());
    }
}
