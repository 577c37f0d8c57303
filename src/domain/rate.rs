//! A rate such as `600/min`: how many events per period. Used for API rate limits and,
//! in policies, for agent egress.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// Made only by parsing (`FromStr`): at least one event per second, minute or hour, so its
/// `interval` is never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Duration,
}

impl Rate {
    /// How many events per period.
    pub fn count(&self) -> NonZeroU32 {
        self.count
    }

    /// The period: a second, a minute or an hour.
    pub fn per(&self) -> Duration {
        self.per
    }

    /// Time for one event's allowance to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("'{s}' is not a rate; write it like 100/s, 600/min or 5000/h");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count).ok_or_else(|| format!("rate '{s}' must allow at least 1 event"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        for (text, count, secs) in [("100/s", 100, 1), ("600/min", 600, 60), ("5000/h", 5000, 3600)] {
            let r: Rate = text.parse().unwrap();
            assert_eq!((r.count.get(), r.per.as_secs()), (count, secs));
            assert_eq!(r.to_string(), text);
        }
        for bad in ["", "10", "0/s", "ten/s", "10/day"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
