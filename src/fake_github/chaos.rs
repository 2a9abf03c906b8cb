//! Seeded fault injection for the chaos run (docs/reliability.md, "A flaky GitHub changes nothing
//! in the end").
//!
//! With [`Chaos`] switched on, a fraction of the API calls the fake receives is answered with a
//! fault instead of (or after) being served, and a fraction of the webhooks a test sends through
//! [`FakeGitHub::webhook_fate`] is lost. Every decision is a pure function of the seed and of
//! *which* request it is (method, path, query and how many times that same request came before;
//! for webhooks, their sequence number), never of timing or of the order in which concurrent
//! requests happen to arrive: the same seed and the same script give the same faults.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::FakeGitHub;

/// What the chaos does, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    /// Decides which requests and webhooks are hit, and how.
    pub seed: u64,
    /// The fraction (0..=1) of API calls answered with a fault.
    pub fault_rate: f64,
    /// The fraction (0..=1) of webhooks lost.
    pub webhook_loss_rate: f64,
    /// How long a "timeout" holds its answer back; longer than the client's attempt timeout,
    /// so the client gives up first.
    pub hang: Duration,
}

impl Chaos {
    /// 30% of calls faulted, 20% of webhooks lost, timeouts held for `hang`.
    pub fn new(seed: u64, hang: Duration) -> Self {
        Self {
            seed,
            fault_rate: 0.3,
            webhook_loss_rate: 0.2,
            hang,
        }
    }
}

/// How a faulted call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ChaosKind {
    /// 500 Server Error.
    Status500,
    /// 502 Bad Gateway (a proxy in between).
    Status502,
    /// No answer in time: held back for [`Chaos::hang`].
    Timeout,
    /// 403 "You have exceeded a secondary rate limit" with `Retry-After: 1`.
    SecondaryRateLimit,
}

/// One decision: what answers, and whether the fake applied the request first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChaosFault {
    /// The answer.
    pub kind: ChaosKind,
    /// `true`: the request took effect and only its answer is lost; `false`: it never happened.
    pub applied: bool,
}

/// What happens to a webhook GitHub "sends".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WebhookFate {
    /// Delivered; the answer is logged.
    Deliver,
    /// Never reaches the receiver; the log records a failed delivery.
    Lost,
    /// Reaches the receiver, but its answer does not come back: the log records a failure.
    AnswerLost,
}

/// What the chaos did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChaosStats {
    /// API calls the fake received while the chaos was on.
    pub calls: u64,
    /// Calls answered with a fault, by kind, and how many of them were applied first.
    pub faults: u64,
    /// Faulted calls the fake applied before losing the answer.
    pub applied: u64,
    /// Faults by kind (`Status500`…).
    pub by_kind: std::collections::BTreeMap<String, u64>,
    /// Webhooks asked about.
    pub webhooks: u64,
    /// Webhooks lost before the receiver saw them.
    pub webhooks_lost: u64,
    /// Webhooks the receiver saw whose answer was lost.
    pub webhook_answers_lost: u64,
}

#[derive(Debug)]
pub(super) struct ChaosState {
    pub(super) chaos: Chaos,
    /// How many times each request (method, path, query) was seen.
    seen: HashMap<String, u64>,
    pub(super) stats: ChaosStats,
}

impl ChaosState {
    pub(super) fn new(chaos: Chaos) -> Self {
        Self {
            chaos,
            seen: HashMap::new(),
            stats: ChaosStats::default(),
        }
    }

    /// The fault for this request, if it gets one.
    pub(super) fn decide(
        &mut self,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<ChaosFault> {
        let key = format!("{method} {path}?{}", query.unwrap_or(""));
        let n = self.seen.entry(key.clone()).or_default();
        *n += 1;
        let mut rng = fastrand::Rng::with_seed(mix(self.chaos.seed, &key, *n));
        self.stats.calls += 1;
        if rng.f64() >= self.chaos.fault_rate {
            return None;
        }
        let kind = match rng.u8(..4) {
            0 => ChaosKind::Status500,
            1 => ChaosKind::Status502,
            2 => ChaosKind::Timeout,
            _ => ChaosKind::SecondaryRateLimit,
        };
        // A rate limit is refused before anything happens, as GitHub does.
        let applied = kind != ChaosKind::SecondaryRateLimit && rng.bool();
        self.stats.faults += 1;
        if applied {
            self.stats.applied += 1;
        }
        *self.stats.by_kind.entry(format!("{kind:?}")).or_default() += 1;
        Some(ChaosFault { kind, applied })
    }

    fn webhook(&mut self) -> WebhookFate {
        self.stats.webhooks += 1;
        let mut rng =
            fastrand::Rng::with_seed(mix(self.chaos.seed, "webhook", self.stats.webhooks));
        if rng.f64() >= self.chaos.webhook_loss_rate {
            return WebhookFate::Deliver;
        }
        if rng.bool() {
            self.stats.webhooks_lost += 1;
            WebhookFate::Lost
        } else {
            self.stats.webhook_answers_lost += 1;
            WebhookFate::AnswerLost
        }
    }
}

/// A seed for one decision: FNV-1a over the request's identity, mixed with the seed and the
/// occurrence by splitmix64 (stable across Rust versions and platforms).
fn mix(seed: u64, key: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ seed.rotate_left(17) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl FakeGitHub {
    /// Switch the chaos on (`Some`) or off (`None`); switching on starts fresh counts.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        self.state().chaos = chaos.map(ChaosState::new);
    }

    /// What the chaos did so far (zeros when it is off).
    pub fn chaos_stats(&self) -> ChaosStats {
        self.state()
            .chaos
            .as_ref()
            .map(|c| c.stats.clone())
            .unwrap_or_default()
    }

    /// The fate of the next webhook GitHub "sends" ([`WebhookFate::Deliver`] without chaos).
    pub fn webhook_fate(&self) -> WebhookFate {
        self.state()
            .chaos
            .as_mut()
            .map_or(WebhookFate::Deliver, ChaosState::webhook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions(seed: u64) -> Vec<Option<ChaosFault>> {
        let mut st = ChaosState::new(Chaos::new(seed, Duration::from_millis(1)));
        (0..2000)
            .map(|i| {
                st.decide(
                    "POST",
                    &format!("/repos/o/r/issues/{}/comments", i % 50),
                    None,
                )
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
        assert_eq!(decisions(7), decisions(7));
        assert_ne!(decisions(7), decisions(8));
    }

    #[test]
    fn about_the_asked_fraction_is_faulted_with_every_kind_both_ways() {
        let mut st = ChaosState::new(Chaos::new(1, Duration::from_millis(1)));
        for i in 0..10_000 {
            st.decide("GET", &format!("/repos/o/r/pulls/{i}"), None);
        }
        let s = &st.stats;
        assert_eq!(s.calls, 10_000);
        assert!((2_700..3_300).contains(&s.faults), "{s:?}");
        assert_eq!(s.by_kind.len(), 4, "{s:?}");
        assert!(s.applied > 0 && s.applied < s.faults, "{s:?}");
    }

    #[test]
    fn a_repeated_request_gets_a_fresh_decision_each_time() {
        let mut st = ChaosState::new(Chaos {
            fault_rate: 0.5,
            ..Chaos::new(3, Duration::from_millis(1))
        });
        let same: Vec<_> = (0..64)
            .map(|_| st.decide("GET", "/repos/o/r", None).is_some())
            .collect();
        assert!(same.contains(&true) && same.contains(&false), "{same:?}");
    }
}
