//! Named resource amounts: what a worker offers and what a task asks for.

use std::collections::BTreeMap;
use std::fmt;

use datafusion::common::{Result, plan_err};

/// Amounts by name (`gpu=1`, `ssd=1`, `licenses=2.5`). A worker offers some; a task that
/// asks for some runs only where they are free, and holds them while it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources(BTreeMap<String, f64>);

impl Resources {
    /// Parses `name=amount` pairs separated by commas; the empty string is no resources.
    pub fn parse(text: &str) -> Result<Self> {
        let mut map = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, amount)) = part.split_once('=') else {
                return plan_err!("invalid resource '{part}': expected NAME=AMOUNT, e.g. gpu=1");
            };
            let name = name.trim();
            let amount: f64 = match amount.trim().parse() {
                Ok(a) if a >= 0.0 && f64::is_finite(a) => a,
                _ => {
                    return plan_err!(
                        "invalid amount in resource '{part}': expected a number >= 0"
                    );
                }
            };
            if name.is_empty() {
                return plan_err!("invalid resource '{part}': the name is empty");
            }
            map.insert(name.to_string(), amount);
        }
        Ok(Self(map))
    }

    /// True when nothing is asked for or offered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The amount of `name` (0 when absent).
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// True when these amounts cover every amount of `request`.
    pub fn covers(&self, request: &Resources) -> bool {
        request
            .0
            .iter()
            .all(|(name, amount)| self.get(name) >= *amount)
    }

    /// Subtracts `request` (a task starts holding it).
    pub fn take(&mut self, request: &Resources) {
        for (name, amount) in &request.0 {
            *self.0.entry(name.clone()).or_default() -= amount;
        }
    }

    /// Adds `request` back (the task ended).
    pub fn give(&mut self, request: &Resources) {
        for (name, amount) in &request.0 {
            *self.0.entry(name.clone()).or_default() += amount;
        }
    }

    /// The amounts rounded to nine decimals (fractional amounts taken and given back many
    /// times leave float noise such as 1e-16 behind).
    pub fn rounded(mut self) -> Self {
        for amount in self.0.values_mut() {
            *amount = (*amount * 1e9).round() / 1e9;
        }
        self
    }

    /// The amounts by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl FromIterator<(String, f64)> for Resources {
    fn from_iter<I: IntoIterator<Item = (String, f64)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_drops_the_noise_of_fractional_takes() {
        let offer = Resources::parse("gpu=1").unwrap();
        let tenth = Resources::parse("gpu=0.1").unwrap();
        // Ten tasks holding a tenth each: everything is in use.
        let mut free = offer.clone();
        for _ in 0..10 {
            free.take(&tenth);
        }
        let mut used = offer.clone();
        used.take(&free);
        assert_ne!(used.get("gpu"), 1.0, "the float noise this is about");
        assert_eq!(used.rounded().get("gpu"), 1.0);
        assert_eq!(
            Resources::parse("gpu=0.3").unwrap().rounded().get("gpu"),
            0.3
        );
    }

    #[test]
    fn parse_cover_take_give() {
        let offer = Resources::parse("gpu=1, ssd=2").unwrap();
        let ask = Resources::parse("gpu=1").unwrap();
        assert!(offer.covers(&ask));
        assert!(!offer.covers(&Resources::parse("gpu=2").unwrap()));
        assert!(!Resources::default().covers(&ask));
        assert!(offer.covers(&Resources::default()));
        let mut free = offer.clone();
        free.take(&ask);
        assert!(!free.covers(&ask), "the only gpu is held");
        free.give(&ask);
        assert_eq!(free, offer);
        assert_eq!(offer.to_string(), "gpu=1,ssd=2");
        assert_eq!(Resources::default().to_string(), "none");
        assert!(Resources::parse("").unwrap().is_empty());
        let err = Resources::parse("gpu").unwrap_err().to_string();
        assert!(err.contains("expected NAME=AMOUNT"), "{err}");
        assert!(Resources::parse("gpu=-1").is_err());
        assert!(Resources::parse("=1").is_err());
    }
}
