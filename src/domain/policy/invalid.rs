//! A policy file's validation failures, each at a span of the file (`Policy::parse` turns
//! it into a line), and the helpers every kind of rule parses its spanned values with.

use std::ops::Range;

use toml::Spanned;

use super::host::HostPattern;

/// Line (1-based) of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// A validation failure at a span of the file; `Policy::parse` turns it into a line.
pub(super) struct Invalid {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

pub(super) fn invalid<T>(at: &Spanned<T>, message: impl Into<String>) -> Invalid {
    Invalid { span: at.span(), message: message.into() }
}

/// Parses a spanned string with `parse`, prefixing errors with `what`.
pub(super) fn parse_at<T>(
    value: &Spanned<String>,
    what: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, Invalid> {
    parse(value.get_ref()).map_err(|why| invalid(value, format!("{what}: {why}")))
}

pub(super) fn host_pattern(value: &Spanned<String>, what: &str) -> Result<HostPattern, Invalid> {
    parse_at(value, what, HostPattern::parse)
}
