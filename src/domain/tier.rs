//! A secret's tier: how carefully it is handled (`standard` or `sensitive`).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Standard,
    Sensitive,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Sensitive => "sensitive",
        }
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Tier, String> {
        match s {
            "standard" => Ok(Tier::Standard),
            "sensitive" => Ok(Tier::Sensitive),
            other => Err(format!("tier '{other}' is not one of standard, sensitive")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for t in [Tier::Standard, Tier::Sensitive] {
            assert_eq!(t.as_str().parse::<Tier>(), Ok(t));
        }
        assert!("ultra".parse::<Tier>().is_err());
    }
}
