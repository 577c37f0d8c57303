//! Response redaction: this module owns `Redactor`, which replaces every value the proxy
//! injected into a request by its placeholder text wherever it comes back in the response —
//! the status line, header names and values, trailers, and a body streamed in chunks of any
//! size, with matches across chunk boundaries. The result equals a one-shot leftmost-longest
//! replacement over the whole body, while holding back only the shortest tail that could
//! still start a value. Besides the raw value it looks for every form of it `forms` lists
//! (JSON-escaped, percent-encoded, base64) and for what the request put on the wire byte for
//! byte (a whole `Basic` token). A value the upstream split, compressed or encoded in some
//! other way is not recognised: the proxy refuses compressed responses to requests that
//! carried values (`unscannable_response`). Pure: no I/O, no logging.

use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use zeroize::{Zeroize, Zeroizing};

/// Replaces every occurrence of each injected value by its placeholder text, in a stream of
/// body chunks. The values and the held-back tail live in zeroizing buffers; the automaton's
/// own tables are a copy the `aho-corasick` crate does not wipe.
pub struct Redactor {
    patterns: Arc<Patterns>,
    /// Bytes not yet emitted: a proper prefix of some value, shorter than the longest one.
    held: Zeroizing<Vec<u8>>,
}

/// What a redactor looks for, built once and shared: building the automaton is the costly
/// part, so a value's patterns are kept with the cached value and reused by every response.
/// A clone shares the automata's tables (a worker thread keeps its own copy, `local`).
#[derive(Clone)]
pub struct Patterns {
    /// Leftmost-longest over the values; pattern `i` is `needles[i]`.
    matcher: AhoCorasick,
    needles: Vec<Needle>,
    /// Placeholder text of pattern `i`.
    replacements: Vec<Box<[u8]>>,
    /// The same values in any ASCII letter case: `http` lower-cases header names, so a name
    /// that held a value holds it lower-cased.
    any_case: AhoCorasick,
    longest: usize,
}

impl Patterns {
    /// Patterns for exactly these `(bytes, placeholder text)` pairs; `None` when none is
    /// non-empty. A value listed twice is replaced by its first text.
    pub fn build(pairs: &[(&[u8], &str)]) -> Option<Arc<Patterns>> {
        Patterns::assemble(
            pairs.iter().map(|(value, text)| (Zeroizing::new(value.to_vec()), Box::from(text.as_bytes()))),
        )
    }

    /// Patterns for injected values: every form of each value (`forms::of`) is replaced by
    /// its placeholder text, and each `exact` pair (what a request wrote, what the agent sent
    /// there) by its second part.
    pub fn for_values(values: &[(&[u8], &str)], exact: &[(&[u8], &[u8])]) -> Option<Arc<Patterns>> {
        let exact = exact.iter().map(|(wrote, sent)| (Zeroizing::new(wrote.to_vec()), Box::from(*sent)));
        let derived = values.iter().flat_map(|(value, text)| {
            super::forms::of(value).into_iter().map(|form| (form, Box::from(text.as_bytes())))
        });
        Patterns::assemble(exact.chain(derived))
    }

    /// Patterns that mask every form of each value with `*` of the form's own length (a
    /// WebSocket frame's length goes out before its payload).
    pub fn masking(values: &[&[u8]]) -> Option<Arc<Patterns>> {
        Patterns::assemble(values.iter().flat_map(|value| {
            super::forms::of(value).into_iter().map(|form| {
                let stars = vec![b'*'; form.len()].into_boxed_slice();
                (form, stars)
            })
        }))
    }

    fn assemble(pairs: impl Iterator<Item = (Zeroizing<Vec<u8>>, Box<[u8]>)>) -> Option<Arc<Patterns>> {
        let mut needles: Vec<Needle> = Vec::new();
        let mut replacements = Vec::new();
        for (value, text) in pairs {
            if value.is_empty() || needles.iter().any(|n| n.bytes[..] == value[..]) {
                continue;
            }
            needles.push(Needle::new(value));
            replacements.push(text);
        }
        if needles.is_empty() {
            return None;
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(needles.iter().map(|n| &n.bytes[..]))
            // Only a pattern set beyond u32::MAX automaton states fails; values are at most
            // 64 KiB each, so that takes tens of thousands of them. Failing open is not an option.
            .expect("the value automaton builds");
        let any_case = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(needles.iter().map(|n| &n.bytes[..]))
            .expect("the value automaton builds");
        let longest = needles.iter().map(|n| n.bytes.len()).max().unwrap_or(0);
        Some(Arc::new(Patterns { matcher, needles, replacements, any_case, longest }))
    }

    /// Whether `name` (a header name, or a whole head) holds a value in any letter case. A
    /// header name cannot hold the placeholder text instead, so such a header is dropped.
    pub fn in_name(&self, name: &[u8]) -> bool {
        self.any_case.is_match(name)
    }

    /// Scrubs a header map seen whole (response headers, trailers): values are redacted,
    /// headers whose name holds a value are dropped. Returns how many were dropped.
    pub fn scrub_headers(&self, headers: &mut HeaderMap) -> usize {
        for value in headers.values_mut() {
            if let Some(clean) = self.redact_whole(value.as_bytes()) {
                *value = HeaderValue::from_bytes(&clean).unwrap_or_else(|_| HeaderValue::from_static("[redacted]"));
            }
        }
        if !headers.keys().any(|name| self.in_name(name.as_str().as_bytes())) {
            return 0;
        }
        let mut dropped = 0;
        let mut last = None;
        for (name, value) in std::mem::take(headers) {
            if name.is_some() {
                last = name;
            }
            match &last {
                Some(name) if !self.in_name(name.as_str().as_bytes()) => {
                    headers.append(name.clone(), value);
                }
                _ => dropped += 1,
            }
        }
        dropped
    }

    /// Bytes seen whole (a header value, a head, a complete body): returns `Some(redacted)`
    /// when a value occurred in them.
    pub fn redact_whole(&self, value: &[u8]) -> Option<Vec<u8>> {
        self.matcher.is_match(value).then(|| self.matcher.replace_all_bytes(value, &self.replacements))
    }
}

impl std::ops::Deref for Redactor {
    type Target = Patterns;
    fn deref(&self) -> &Patterns {
        &self.patterns
    }
}

/// One value with its KMP border table, to find how much of a tail could start it.
#[derive(Clone)]
struct Needle {
    bytes: Zeroizing<Vec<u8>>,
    /// `border[i]`: length of the longest proper prefix of `bytes[..=i]` that is also its suffix.
    border: Zeroizing<Vec<usize>>,
}

impl Needle {
    fn new(bytes: Zeroizing<Vec<u8>>) -> Needle {
        let mut border = Zeroizing::new(vec![0; bytes.len()]);
        let mut len = 0;
        for i in 1..bytes.len() {
            while len > 0 && bytes[i] != bytes[len] {
                len = border[len - 1];
            }
            if bytes[i] == bytes[len] {
                len += 1;
            }
            border[i] = len;
        }
        Needle { bytes, border }
    }

    /// Length of the longest suffix of `tail` that is a proper prefix of this value; `tail`
    /// is shorter than the value, so the answer is too.
    fn prefix_at_end(&self, tail: &[u8]) -> usize {
        let mut len = 0;
        for &b in tail {
            while len > 0 && self.bytes[len] != b {
                len = self.border[len - 1];
            }
            if self.bytes[len] == b {
                len += 1;
            }
        }
        len
    }
}

impl Redactor {
    /// A redactor for `(value, placeholder text)` pairs; `None` when there is no non-empty
    /// value to look for. A value listed twice is replaced by its first placeholder text.
    pub fn new(pairs: &[(&[u8], &str)]) -> Option<Redactor> {
        Patterns::build(pairs).map(Redactor::with)
    }

    /// A redactor (fresh stream state) over patterns built earlier.
    pub fn with(patterns: Arc<Patterns>) -> Redactor {
        Redactor { patterns, held: Zeroizing::new(Vec::new()) }
    }

    /// Returns the bytes that are safe to emit now; holds back at most (longest value − 1)
    /// bytes: the longest tail that is a proper prefix of some value.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.held.is_empty() {
            return self.redact_stream(chunk);
        }
        let mut joined = Zeroizing::new(Vec::with_capacity(self.held.len() + chunk.len()));
        joined.extend_from_slice(&self.held);
        joined.extend_from_slice(chunk);
        self.held.zeroize();
        self.redact_stream(&joined)
    }

    /// Emits the rest at end of stream.
    pub fn finish(&mut self) -> Bytes {
        let tail = std::mem::replace(&mut self.held, Zeroizing::new(Vec::new()));
        Bytes::from(self.matcher.replace_all_bytes(&tail, &self.replacements))
    }

    /// Redacts `buf` (held bytes already in front), emitting what is final and holding back
    /// the tail from which a longer stream could still produce a different match.
    fn redact_stream(&mut self, buf: &[u8]) -> Bytes {
        // A match that starts before this cannot be extended or preceded by one that needs
        // more bytes, since no value is longer than `longest`.
        let surely_final = buf.len().saturating_sub(self.longest - 1);
        let mut out = Vec::with_capacity(buf.len());
        let mut at = 0;
        loop {
            let next = self.matcher.find(Input::new(buf).range(at..));
            let settled = next.filter(|m| m.start() < surely_final || m.start() < self.held_from(buf, at));
            let Some(found) = settled else { break };
            out.extend_from_slice(&buf[at..found.start()]);
            out.extend_from_slice(&self.replacements[found.pattern()]);
            at = found.end();
        }
        let hold = self.held_from(buf, at);
        out.extend_from_slice(&buf[at..hold]);
        self.held.extend_from_slice(&buf[hold..]);
        Bytes::from(out)
    }

    /// The earliest position `p >= from` where `buf[p..]` is a proper prefix of some value,
    /// or `buf.len()` when there is none.
    fn held_from(&self, buf: &[u8], from: usize) -> usize {
        let shortest_start = |needle: &Needle| {
            let start = from.max(buf.len().saturating_sub(needle.bytes.len() - 1));
            buf.len() - needle.prefix_at_end(&buf[start..])
        };
        self.needles.iter().map(shortest_start).min().unwrap_or(buf.len())
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("values", &self.needles.len())
            .field("held_bytes", &self.held.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-shot leftmost-longest replacement, written plainly as the oracle.
    fn naive(body: &[u8], pairs: &[(&[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let longest = pairs
                .iter()
                .filter(|(value, _)| !value.is_empty() && body[at..].starts_with(value))
                .max_by_key(|(value, _)| value.len());
            match longest {
                Some((value, text)) => {
                    out.extend_from_slice(text.as_bytes());
                    at += value.len();
                }
                None => {
                    out.push(body[at]);
                    at += 1;
                }
            }
        }
        out
    }

    /// Feeds `chunks` one by one, checking after each push that the output so far is a
    /// prefix of the expected one and that the held tail is short and could start a value.
    fn streamed(pairs: &[(&[u8], &str)], chunks: &[&[u8]], expected: &[u8]) -> Vec<u8> {
        let mut redactor = Redactor::new(pairs).unwrap();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&redactor.push(chunk));
            assert!(expected.starts_with(&out), "output so far is not a prefix of the one-shot result");
            assert!(redactor.held.len() < redactor.longest);
            let held = &redactor.held[..];
            assert!(
                held.is_empty() || pairs.iter().any(|(value, _)| value.len() > held.len() && value.starts_with(held))
            );
        }
        out.extend_from_slice(&redactor.finish());
        assert!(redactor.held.is_empty());
        out
    }

    /// `(value, placeholder text)` pairs, as `Redactor::new` takes them.
    type Pairs<'a> = &'a [(&'a [u8], &'a str)];

    const CASES: &[(&str, Pairs, &[u8])] = &[
        ("single value", &[(b"sk-live-42", "{{secret:p/k}}")], b"token=sk-live-42; again sk-live-42!"),
        ("back to back", &[(b"abc", "{{secret:a}}")], b"abcabcabc-abcab-cabc"),
        (
            "value is a prefix of another",
            &[(b"abc", "{{secret:short}}"), (b"abcdef", "{{secret:long}}")],
            b"abcdef abc abcde abcdefabc abcdabcdef",
        ),
        ("self-overlapping value", &[(b"aab", "[X]")], b"aaab aabaab aaaab aa"),
        ("two values", &[(b"key-1", "[K]"), (b"pass:word", "[P]")], b"pass:key-1word key-1pass:word-key-"),
        ("no occurrence", &[(b"secret", "[S]")], b"a body with no sec here, ending in secre"),
        ("empty body", &[(b"xyz", "[X]")], b""),
        ("value equals body", &[(b"whole", "[W]")], b"whole"),
    ];

    #[test]
    fn every_two_chunk_split_matches_one_shot() {
        for (name, pairs, body) in CASES {
            let expected = naive(body, pairs);
            for cut in 0..=body.len() {
                let got = streamed(pairs, &[&body[..cut], &body[cut..]], &expected);
                assert_eq!(got, expected, "{name}, split at {cut}");
            }
        }
    }

    #[test]
    fn every_three_chunk_split_matches_one_shot() {
        for (name, pairs, body) in CASES {
            let expected = naive(body, pairs);
            for first in 0..=body.len() {
                for second in first..=body.len() {
                    let chunks = [&body[..first], &body[first..second], &body[second..]];
                    assert_eq!(streamed(pairs, &chunks, &expected), expected, "{name}, {first}/{second}");
                }
            }
        }
    }

    #[test]
    fn byte_at_a_time_matches_one_shot() {
        for (name, pairs, body) in CASES {
            let expected = naive(body, pairs);
            let chunks: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(streamed(pairs, &chunks, &expected), expected, "{name}");
        }
    }

    #[test]
    fn generated_bodies_match_one_shot_at_every_split() {
        // A small alphabet makes partial matches, overlaps and near misses common.
        let mut state: u32 = 0x2545_f491;
        let mut next = move |n: u32| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state % n
        };
        for _ in 0..80 {
            let mut word = |len: u32| (0..len).map(|_| b"ab"[next(2) as usize]).collect::<Vec<u8>>();
            let values = [word(3), word(4), word(2)];
            let body = word(24);
            let pairs: Vec<(&[u8], &str)> = values.iter().map(|v| (&v[..], "<>")).collect();
            let expected = naive(&body, &pairs);
            for cut in 0..=body.len() {
                for width in 1..=4 {
                    let mut chunks: Vec<&[u8]> = vec![&body[..cut]];
                    chunks.extend(body[cut..].chunks(width));
                    assert_eq!(streamed(&pairs, &chunks, &expected), expected, "{values:?} in {body:?}");
                }
            }
        }
    }

    #[test]
    fn holds_back_only_a_tail_that_could_start_a_value() {
        let value: &[u8] = b"secret-value";
        let mut redactor = Redactor::new(&[(value, "[S]")]).unwrap();
        let table: [(&[u8], &[u8], usize); 6] = [
            (b"plain text, no match here", b"plain text, no match here", 0),
            (b"ends with s", b"ends with ", 1),
            (b"ecret-val", b"", 10),
            (b"xyz", b"secret-valxyz", 0),
            (b"secret-valu", b"", 11),
            (b"e!", b"[S]!", 0),
        ];
        for (chunk, emitted, held) in table {
            assert_eq!(&redactor.push(chunk)[..], emitted, "{:?}", String::from_utf8_lossy(chunk));
            assert_eq!(redactor.held.len(), held, "{:?}", String::from_utf8_lossy(chunk));
        }
        assert_eq!(&redactor.push(b"secret-")[..], b"");
        assert_eq!(&redactor.finish()[..], b"secret-");
    }

    #[test]
    fn large_chunk_without_match_is_passed_through() {
        let mut redactor = Redactor::new(&[(b"sk-abcdef", "[S]")]).unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        assert_eq!(redactor.push(&chunk).len(), chunk.len());
        assert!(redactor.finish().is_empty());
    }

    #[test]
    fn header_values() {
        let redactor = Redactor::new(&[(b"sk-1", "{{secret:a/k}}"), (b"", "{{secret:empty}}")]).unwrap();
        assert_eq!(redactor.redact_whole(b"Bearer sk-1"), Some(b"Bearer {{secret:a/k}}".to_vec()));
        assert_eq!(redactor.redact_whole(b"sk-1,sk-1"), Some(b"{{secret:a/k}},{{secret:a/k}}".to_vec()));
        assert_eq!(redactor.redact_whole(b"Bearer sk-2"), None);
        assert_eq!(redactor.redact_whole(b""), None);
    }

    #[test]
    fn nothing_to_redact_is_none() {
        assert!(Redactor::new(&[]).is_none());
        assert!(Redactor::new(&[(b"", "{{secret:a}}")]).is_none());
    }

    #[test]
    fn debug_shows_no_value() {
        let mut redactor = Redactor::new(&[(b"hunter2-secret", "{{secret:a}}")]).unwrap();
        redactor.push(b"xx hunter2");
        let debug = format!("{redactor:?}");
        assert_eq!(debug, "Redactor { values: 1, held_bytes: 7, .. }");
        assert!(!debug.contains("hunter2"));
    }
}
