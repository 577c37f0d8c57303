//! `PathGlob`: the validated glob over secret paths that a secrets scope applies to —
//! its parsing, matching, the subset test the minting rule rests on, the overlap test
//! and the specificity order. Its segments are private, so every glob was parsed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use super::ScopeError;
use crate::domain::path::{SecretPath, check_length, validate_segment};

/// One non-`**` glob segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
}

impl Segment {
    fn as_str(&self) -> &str {
        match self {
            Self::Literal(literal) => literal,
            Self::Any => "*",
        }
    }

    fn matches(&self, segment: &str) -> bool {
        match self {
            Self::Literal(literal) => literal == segment,
            Self::Any => true,
        }
    }

    fn is_subset_of(&self, other: &Segment) -> bool {
        match (self, other) {
            (_, Self::Any) => true,
            (Self::Literal(a), Self::Literal(b)) => a == b,
            (Self::Any, Self::Literal(_)) => false,
        }
    }

    /// Whether some path segment matches both.
    fn meets(&self, other: &Segment) -> bool {
        match (self, other) {
            (Self::Literal(a), Self::Literal(b)) => a == b,
            _ => true,
        }
    }
}

/// A validated glob over `/`-separated segments: literals, `*` (exactly one
/// segment) and a final `**` (one or more segments).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PathGlob {
    head: Vec<Segment>,
    /// True if the glob ends with `**`.
    rest: bool,
}

impl PathGlob {
    /// `**`: every path.
    pub fn any_path() -> Self {
        Self { head: Vec::new(), rest: true }
    }

    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let invalid = |source| ScopeError::InvalidGlob { glob: s.to_owned(), source };
        check_length(s).map_err(invalid)?;
        let mut glob = Self { head: Vec::new(), rest: false };
        let mut offset = 0;
        for segment in s.split('/') {
            if glob.rest {
                return Err(ScopeError::DoubleStarNotLast(s.to_owned()));
            }
            match segment {
                "**" => glob.rest = true,
                "*" => glob.head.push(Segment::Any),
                _ if segment.contains('*') => {
                    let segment = segment.to_owned();
                    return Err(ScopeError::StarInSegment { segment, glob: s.to_owned() });
                }
                _ => {
                    validate_segment(segment, offset).map_err(invalid)?;
                    glob.head.push(Segment::Literal(segment.to_owned()));
                }
            }
            offset += segment.chars().count() + 1;
        }
        Ok(glob)
    }

    pub fn matches(&self, path: &SecretPath) -> bool {
        let mut segments = path.segments();
        let head_ok = self.head.iter().all(|g| segments.next().is_some_and(|s| g.matches(s)));
        // `**` takes one segment or more; without it the path must end here.
        head_ok && segments.next().is_some() == self.rest
    }

    /// True iff every path matched by `self` is matched by `other`.
    pub fn is_subset_of(&self, other: &PathGlob) -> bool {
        let length_ok = if other.rest {
            self.min_len() > other.head.len()
        } else {
            !self.rest && self.head.len() == other.head.len()
        };
        // When lengths line up, `self.head` reaches every position of `other.head`.
        length_ok && self.head.iter().zip(&other.head).all(|(a, b)| a.is_subset_of(b))
    }

    /// True iff some path is matched by both `self` and `other`.
    pub fn overlaps(&self, other: &PathGlob) -> bool {
        // A path long enough for both exists when neither is exact (both end in `**`), or
        // when the exact one is long enough to give the other's `**` at least one segment,
        // or when both are exact and equally long. Past the shorter head, the longer head's
        // segments fall to the shorter one's `**`, which takes anything.
        let (short, long) = if self.head.len() <= other.head.len() { (self, other) } else { (other, self) };
        let length_ok = match (short.rest, long.rest) {
            (true, true) => true,
            (true, false) => long.head.len() > short.head.len(),
            (false, true) => false,
            (false, false) => short.head.len() == long.head.len(),
        };
        length_ok && short.head.iter().zip(&long.head).all(|(a, b)| a.meets(b))
    }

    /// Orders globs from the most specific: an exact glob (no `**`) before one ending in
    /// `**`, then more segments first, then more literal segments first, then by text. A
    /// glob strictly inside another always sorts first; the order never depends on where
    /// either came from.
    pub fn cmp_specificity(&self, other: &PathGlob) -> std::cmp::Ordering {
        let literals = |g: &PathGlob| g.head.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        self.rest
            .cmp(&other.rest)
            .then_with(|| other.head.len().cmp(&self.head.len()))
            .then_with(|| literals(other).cmp(&literals(self)))
            .then_with(|| self.to_string().cmp(&other.to_string()))
    }

    /// Fewest segments a matching path can have.
    fn min_len(&self) -> usize {
        self.head.len() + usize::from(self.rest)
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = self.head.iter().map(Segment::as_str).collect();
        if self.rest {
            parts.push("**");
        }
        f.write_str(&parts.join("/"))
    }
}

impl FromStr for PathGlob {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PathGlob {
    type Error = ScopeError;

    fn try_from(s: String) -> Result<Self, ScopeError> {
        Self::parse(&s)
    }
}

impl Serialize for PathGlob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
