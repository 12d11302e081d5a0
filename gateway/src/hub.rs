//! JupyterHub tokens: a caller whose token is not one of the gateway's own users' is
//! asked about at the hub (`GET /hub/api/user` with the caller's token, which answers
//! with the token's owner), so notebook users reach the gateway with the API token
//! their server already has (`JUPYTERHUB_API_TOKEN`). Answers are kept for a minute.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

/// How long a hub's answer is trusted before it is asked again.
const REMEMBER: Duration = Duration::from_secs(60);

/// The `[jupyterhub]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's URL, e.g. `http://hub:8081` (its API is under `/hub/api`).
    pub url: String,
}

/// What the hub said about tokens: by token, the user (or none) and when it was asked.
pub struct Hub {
    url: String,
    http: reqwest::Client,
    answers: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

/// Why a token could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// The hub does not know the token.
    Unknown,
    /// The hub could not be asked, or answered nonsense.
    Unreachable(String),
}

#[derive(Deserialize)]
struct HubUser {
    name: String,
    /// `user`, or `service` for a hub service's token (not a person: refused).
    #[serde(default)]
    kind: Option<String>,
}

impl Hub {
    /// Asks the hub of `config`.
    pub fn new(config: &HubConfig) -> Self {
        Self {
            url: config.url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The hub user `token` belongs to.
    pub async fn user_of(&self, token: &str) -> Result<String, HubError> {
        if let Some((user, asked)) = self.answers.lock().get(token).cloned()
            && asked.elapsed() < REMEMBER
        {
            return user.ok_or(HubError::Unknown);
        }
        let url = format!("{}/hub/api/user", self.url);
        let reply = self
            .http
            .get(&url)
            .header("Authorization", format!("token {token}"))
            .send()
            .await
            .map_err(|e| {
                HubError::Unreachable(format!("JupyterHub at {url} did not answer: {e}"))
            })?;
        let user = match reply.status().as_u16() {
            200 => {
                let user: HubUser = reply.json().await.map_err(|e| {
                    HubError::Unreachable(format!("JupyterHub at {url} sent no user: {e}"))
                })?;
                // A service's token is not a user's.
                (user.kind.as_deref().unwrap_or("user") == "user").then_some(user.name)
            }
            401 | 403 | 404 => None,
            other => {
                return Err(HubError::Unreachable(format!(
                    "JupyterHub at {url} answered {other}"
                )));
            }
        };
        let mut answers = self.answers.lock();
        answers.retain(|_, (_, asked)| asked.elapsed() < REMEMBER);
        answers.insert(token.to_string(), (user.clone(), Instant::now()));
        user.ok_or(HubError::Unknown)
    }
}

/// A hub user's name as a gateway user name (which prefixes cluster names): lowercase
/// letters, digits and '-'. A name that had to change gets a short hash of the original
/// after it, so that `a.b` and `a-b` stay apart.
pub fn local_name(hub_name: &str) -> String {
    let mut name: String = hub_name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "u-");
    }
    name.truncate(24);
    if name != hub_name {
        // FNV-1a: stable across builds and platforms.
        let hash = hub_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        name = format!("{name}-{:06x}", hash & 0xff_ffff);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_become_gateway_user_names_that_stay_apart() {
        assert_eq!(local_name("carol"), "carol");
        let dotted = local_name("a.b");
        let dashed = local_name("a-b");
        assert_eq!(dashed, "a-b");
        assert!(dotted.starts_with("a-b-") && dotted != dashed, "{dotted}");
        assert!(local_name("Alice@Example.org").starts_with("alice-example-org-"));
        assert!(local_name("7up").starts_with("u-7up-"));
        let long = local_name(&"x".repeat(100));
        assert!(long.len() <= 32, "{long}");
        for name in [dotted, long, local_name("7up")] {
            crate::spec::check_group_name(&name).unwrap();
        }
    }
}
