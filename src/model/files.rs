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
//! build: 62 million instructions), and holds them in a sorted list, which a sorted scan
//! becomes with one comparison a path (the tree's build, a sort and a pass to drop
//! repeats, made two: 32 million instructions more on the same world).

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use super::{Bytes8, Node, starts_with_name};

/// Every observed path of a world, each with what is there, in the order of paths.
///
/// It reads as a `BTreeMap<PathBuf, Node>` does, and iterates in the same order. It is a
/// sorted list, not a tree: a world's paths come from a scan in their order, and a list
/// is made from them with one comparison a path, where a tree's build made two (one to
/// find the list sorted, one to drop repeats) and a node to allocate a dozen paths; a
/// lookup is a binary search, as many comparisons as a descent of the tree. Adding or
/// removing one path moves those after it, which only the in-memory effects and the
/// fixtures do, path by path, on small worlds.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Files(Vec<(PathBuf, Node)>);

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

    /// Where `path` is in the list (`Ok`), or where it would go (`Err`).
    fn find(&self, path: &Path) -> Result<usize, usize> {
        self.0.binary_search_by(|(key, _)| path_order(key, path))
    }

    /// What is at `path`, if it was seen.
    pub fn get(&self, path: &Path) -> Option<&Node> {
        self.find(path).ok().map(|at| &self.0[at].1)
    }

    /// True when `path` was seen.
    pub fn contains_key(&self, path: &Path) -> bool {
        self.find(path).is_ok()
    }

    /// Records `node` at `path`, returning what was recorded there before (the path
    /// keeps the spelling it was first recorded with, as a map's key does).
    pub fn insert(&mut self, path: PathBuf, node: Node) -> Option<Node> {
        match self.find(&path) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, node)),
            Err(at) => {
                self.0.insert(at, (path, node));
                None
            }
        }
    }

    /// Forgets `path`, returning what was recorded there.
    pub fn remove(&mut self, path: &Path) -> Option<Node> {
        self.find(path).ok().map(|at| self.0.remove(at).1)
    }

    /// Moves every path of `other` here (a path of both keeps its spelling here and takes
    /// `other`'s node, as a map's `append` does), leaving `other` empty.
    ///
    /// When `other`'s paths all go between two of these (or before or after all of them),
    /// as the sources looked up beside a scan mostly do, they go in after one search,
    /// where a merge of the two lists would compare a path of one with a path of the
    /// other for each (14 million instructions at 10,000 projects); otherwise both are
    /// merged.
    pub fn append(&mut self, other: &mut Files) {
        let more = std::mem::take(&mut other.0);
        let (Some((first, _)), Some((last, _))) = (more.first(), more.last()) else { return };
        let at = self.0.partition_point(|(path, _)| path_order(path, first) == Ordering::Less);
        if self.0.get(at).is_none_or(|(next, _)| path_order(last, next) == Ordering::Less) {
            self.0.splice(at..at, more);
            return;
        }
        let mine = std::mem::take(&mut self.0);
        let mut merged = Vec::with_capacity(mine.len() + more.len());
        let mut more = more.into_iter().peekable();
        for (path, node) in mine {
            while let Some(before) = more.next_if(|(next, _)| path_order(next, &path) == Ordering::Less) {
                merged.push(before);
            }
            let node =
                more.next_if(|(next, _)| path_order(next, &path) == Ordering::Equal).map_or(node, |(_, newer)| newer);
            merged.push((path, node));
        }
        merged.extend(more);
        self.0 = merged;
    }

    /// Each path with its node, in the order of paths.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&PathBuf, &Node)> + ExactSizeIterator + Clone {
        self.0.iter().map(|(path, node)| (path, node))
    }

    /// Each path, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &PathBuf> + ExactSizeIterator + Clone {
        self.0.iter().map(|(path, _)| path)
    }

    /// The paths within `range` (as `(Bound<&Path>, Bound<&Path>)`), in order.
    pub fn range<R: RangeBounds<Path>>(&self, range: R) -> impl DoubleEndedIterator<Item = (&PathBuf, &Node)> {
        let start = match range.start_bound() {
            Bound::Included(p) => self.0.partition_point(|(path, _)| path_order(path, p).is_lt()),
            Bound::Excluded(p) => self.0.partition_point(|(path, _)| path_order(path, p).is_le()),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(p) => self.0.partition_point(|(path, _)| path_order(path, p).is_le()),
            Bound::Excluded(p) => self.0.partition_point(|(path, _)| path_order(path, p).is_lt()),
            Bound::Unbounded => self.0.len(),
        };
        self.0[start..end.max(start)].iter().map(|(path, node)| (path, node))
    }

    /// The files of `list`, in the order of paths, a path listed twice with the later
    /// node. A list already sorted (as a scan makes it) costs one comparison a path;
    /// another is sorted, then rid of repeats.
    fn from_list(mut list: Vec<(PathBuf, Node)>) -> Self {
        if list.windows(2).all(|pair| path_order(&pair[0].0, &pair[1].0) == Ordering::Less) {
            return Files(list);
        }
        // Stable: of the paths that are the same, the later stays later, and is kept (with
        // its spelling, as a map built from the list keeps it).
        list.sort_by(|a, b| path_order(&a.0, &b.0));
        let mut files: Vec<(PathBuf, Node)> = Vec::with_capacity(list.len());
        for item in list {
            match files.last_mut() {
                Some(last) if path_order(&last.0, &item.0) == Ordering::Equal => *last = item,
                _ => files.push(item),
            }
        }
        Files(files)
    }
}

/// What is at `path`; panics when it was not seen, as a map's index does.
impl std::ops::Index<&Path> for Files {
    type Output = Node;

    fn index(&self, path: &Path) -> &Node {
        self.get(path).expect("no such path in the files")
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
        Files::from_list(iter.into_iter().map(|(path, node)| (path.into(), node)).collect())
    }
}

impl<P: Into<PathBuf>> Extend<(P, Node)> for Files {
    fn extend<I: IntoIterator<Item = (P, Node)>>(&mut self, iter: I) {
        self.append(&mut iter.into_iter().collect());
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
pub(super) fn first_difference(x: &[u8], y: &[u8]) -> usize {
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
    use std::collections::BTreeMap;

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

        #[test]
        fn files_change_as_the_map_they_stand_for(
            a in proptest::collection::vec(long_path(), 0..30),
            b in proptest::collection::vec(long_path(), 0..30),
            bounds in (0..60_usize, 0..60_usize, 0..3_u8, 0..3_u8),
        ) {
            // Each pair with its spelling: a map keeps the spelling it was given last, as
            // the files must.
            let spelled = |files: &Files| files.iter().map(|(p, n)| (p.as_os_str().to_owned(), n.clone())).collect::<Vec<_>>();
            let spelled_map = |map: &BTreeMap<PathBuf, Node>| map.iter().map(|(p, n)| (p.as_os_str().to_owned(), n.clone())).collect::<Vec<_>>();
            let pairs = |paths: &[Vec<u8>], from: usize| paths.iter().enumerate().map(move |(i, p)| (path(p).to_owned(), node(from + i))).collect::<Vec<_>>();
            let (a, b) = (pairs(&a, 0), pairs(&b, 100));
            let mut files: Files = a.iter().cloned().collect();
            let mut map: BTreeMap<PathBuf, Node> = a.iter().cloned().collect();
            prop_assert_eq!(spelled(&files), spelled_map(&map));

            let mut more: Files = b.iter().cloned().collect();
            let mut more_map: BTreeMap<PathBuf, Node> = b.iter().cloned().collect();
            files.append(&mut more);
            map.append(&mut more_map);
            prop_assert!(more.is_empty());
            prop_assert_eq!(spelled(&files), spelled_map(&map));

            // Extended, a path already there takes the new node (its spelling is a map's
            // choice, not compared).
            let mut extended: Files = a.iter().cloned().collect();
            let mut extended_map: BTreeMap<PathBuf, Node> = a.iter().cloned().collect();
            extended.extend(b.iter().cloned());
            extended_map.extend(b.iter().cloned());
            prop_assert!(extended.iter().eq(extended_map.iter()));

            // A range between two of the paths, each bound included, excluded or open.
            let keys: Vec<PathBuf> = map.keys().cloned().collect();
            if !keys.is_empty() {
                let (i, j) = (bounds.0 % keys.len(), bounds.1 % keys.len());
                let (lo, hi) = (&keys[i.min(j)], &keys[i.max(j)]);
                fn bound(kind: u8, at: &Path) -> Bound<&Path> {
                    match kind {
                    0 => Bound::Included(at),
                    1 => Bound::Excluded(at),
                    _ => Bound::Unbounded,
                }
                }
                let range = (bound(bounds.2, lo), bound(bounds.3, hi));
                // A map refuses a range that excludes its only path at both ends.
                if !(lo == hi && bounds.2 == 1 && bounds.3 == 1) {
                    prop_assert!(files.range(range).eq(map.range::<Path, _>(range)), "{:?}", range);
                }
            }

            for (p, _) in a.iter().chain(&b).step_by(2) {
                prop_assert_eq!(files.remove(p), map.remove(p.as_path()));
            }
            prop_assert_eq!(spelled(&files), spelled_map(&map));
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
    fn appended_files_go_in_one_piece_where_they_fit_and_are_merged_where_not() {
        let files = |paths: &[&str], node: Node| -> Files { paths.iter().map(|p| (*p, node.clone())).collect() };
        let keys = |files: &Files| files.keys().map(|p| p.to_str().unwrap().to_owned()).collect::<Vec<_>>();
        let scan = ["/r/a", "/r/a/current", "/r/b", "/r/c"];
        // Between two paths, before all, after all, in among them, or on a path of both.
        // `/r/a-x` goes after `/r/a/current` as a path, though `-` is below `/` as a byte.
        for block in [&["/r/a-x", "/r/a-y"][..], &["/o/u1", "/o/u2"], &["/s/u"], &["/r/a-x", "/r/bb"], &["/r/b"], &[]] {
            let mut into = files(&scan, Node::Dir);
            into.append(&mut files(block, Node::File));
            let mut want: Vec<&str> = scan.iter().chain(block).copied().collect();
            want.sort_by(|a, b| path_order(Path::new(a), Path::new(b)));
            want.dedup();
            assert_eq!(keys(&into), want, "{block:?}");
            for path in block {
                assert_eq!(into.get(Path::new(path)), Some(&Node::File), "the appended node at {path}");
            }
        }
    }

    #[test]
    fn files_read_as_the_map_they_stand_for() {
        let mut files: Files =
            [("/r/p1-x", Node::Dir), ("/r/p1", Node::Dir), ("/r/p1/current", Node::File)].into_iter().collect();
        let order: Vec<_> = files.keys().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(order, ["/r/p1", "/r/p1/current", "/r/p1-x"], "by parts, not by bytes");
        assert_eq!(path_order(Path::new("/r/p1/current"), Path::new("/r/p1-x")), Ordering::Less);
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
