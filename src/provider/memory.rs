//! The in-memory provider: environments that exist only as entries in a map. It runs nothing
//! (no git, no build, no processes), records every deploy and teardown, and does what it is told:
//! succeed, fail, or hang until released. With it, stories of the engine and the runners (open →
//! live → push → redeploy, newest wins, failures and the restart backoff, the capacity queue)
//! run against the real engine and store in milliseconds. The end-to-end tests keep the local
//! provider and real processes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::{DeploySpec, Deployed, ProviderError, ProviderStatus, TeardownSpec};
use crate::types::{EnvId, Sha};

/// What a deploy does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The release goes live at the spec's public URL.
    Succeed,
    /// The deploy fails with this message (as a provider `Deploy` error with a log tail).
    Fail(String),
    /// The deploy waits until [`MemoryProvider::release`] lets it go (then it succeeds), or
    /// until the runner drops it (superseded).
    Hang,
}

/// One call the provider received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A deploy started (`release` as the runner numbered it).
    Deploy {
        env: EnvId,
        sha: Sha,
        release: u32,
    },
    /// A deploy ended: `Ok` live, `Err` the failure message.
    Finished {
        env: EnvId,
        sha: Sha,
        result: Result<(), String>,
    },
    /// A deploy was dropped before it ended (a newer op superseded it).
    Cancelled {
        env: EnvId,
        sha: Sha,
    },
    Teardown {
        env: EnvId,
    },
}

#[derive(Debug, Default)]
struct State {
    default: Option<Outcome>,
    /// Outcomes for the next deploys of a commit, first first.
    scripted: BTreeMap<Sha, VecDeque<Outcome>>,
    /// Commits whose hanging deploys may go on.
    released: Vec<Sha>,
    /// What runs, per environment: the commit and release.
    running: BTreeMap<EnvId, (Sha, u32)>,
    /// Teardowns that fail, still to come.
    failing_teardowns: u32,
    calls: Vec<Call>,
}

/// See the module documentation. Clones share their state.
#[derive(Debug, Clone, Default)]
pub struct MemoryProvider {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

/// Records a deploy dropped before it ended.
struct Pending {
    provider: MemoryProvider,
    env: EnvId,
    sha: Sha,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.provider.record(Call::Cancelled {
                env: self.env.clone(),
                sha: self.sha.clone(),
            });
        }
    }
}

impl MemoryProvider {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
        self.changed.notify_waiters();
    }

    /// What every deploy does unless scripted (initially [`Outcome::Succeed`]).
    pub fn set_default(&self, outcome: Outcome) {
        self.lock().default = Some(outcome);
    }

    /// The next deploy of `sha` does `outcome` (several calls queue up, first first).
    pub fn script(&self, sha: &Sha, outcome: Outcome) {
        self.lock()
            .scripted
            .entry(sha.clone())
            .or_default()
            .push_back(outcome);
    }

    /// Let the hanging deploys of `sha` (now and later) go on: they succeed.
    pub fn release(&self, sha: &Sha) {
        self.lock().released.push(sha.clone());
        self.changed.notify_waiters();
    }

    /// The next `n` teardowns fail.
    pub fn fail_teardowns(&self, n: u32) {
        self.lock().failing_teardowns = n;
    }

    /// The environment's app stops on its own (a crash): its status becomes `Stopped`.
    pub fn stop(&self, env: &EnvId) {
        self.lock().running.remove(env);
        self.changed.notify_waiters();
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The commits deployed (started) for `env`, in order.
    pub fn deploys(&self, env: &EnvId) -> Vec<Sha> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Deploy { env: e, sha, .. } if e == env => Some(sha.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many teardowns `env` got.
    pub fn teardowns(&self, env: &EnvId) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Teardown { env: e } if e == env))
            .count()
    }

    /// What runs for `env` now: its commit and release.
    pub fn running(&self, env: &EnvId) -> Option<(Sha, u32)> {
        self.lock().running.get(env).cloned()
    }

    /// Wait until a call matching `pred` was recorded (returns at once if one was).
    pub async fn wait_for(&self, pred: impl Fn(&Call) -> bool) {
        loop {
            let changed = self.changed.notified();
            if self.lock().calls.iter().any(&pred) {
                return;
            }
            changed.await;
        }
    }

    pub async fn deploy(&self, spec: &DeploySpec) -> Result<Deployed, ProviderError> {
        let outcome = {
            let mut st = self.lock();
            st.calls.push(Call::Deploy {
                env: spec.env.clone(),
                sha: spec.sha.clone(),
                release: spec.release,
            });
            let scripted = st.scripted.get_mut(&spec.sha).and_then(VecDeque::pop_front);
            scripted
                .or_else(|| st.default.clone())
                .unwrap_or(Outcome::Succeed)
        };
        self.changed.notify_waiters();
        let mut pending = Pending {
            provider: self.clone(),
            env: spec.env.clone(),
            sha: spec.sha.clone(),
            done: false,
        };
        if outcome == Outcome::Hang {
            loop {
                let changed = self.changed.notified();
                if self.lock().released.contains(&spec.sha) {
                    break;
                }
                changed.await;
            }
        }
        pending.done = true;
        let result = match &outcome {
            Outcome::Fail(message) => Err(message.clone()),
            Outcome::Succeed | Outcome::Hang => Ok(()),
        };
        {
            let mut st = self.lock();
            if result.is_ok() {
                st.running
                    .insert(spec.env.clone(), (spec.sha.clone(), spec.release));
            }
            st.calls.push(Call::Finished {
                env: spec.env.clone(),
                sha: spec.sha.clone(),
                result: result.clone(),
            });
        }
        self.changed.notify_waiters();
        match result {
            Ok(()) => Ok(Deployed {
                url: spec.public_url.clone(),
                artifact: None,
            }),
            Err(message) => Err(ProviderError::Deploy {
                log_tail: format!("memory provider: {message}"),
                message,
            }),
        }
    }

    pub async fn teardown(&self, spec: &TeardownSpec) -> Result<(), ProviderError> {
        let failing = {
            let mut st = self.lock();
            st.calls.push(Call::Teardown {
                env: spec.env.clone(),
            });
            if st.failing_teardowns > 0 {
                st.failing_teardowns -= 1;
                true
            } else {
                st.running.remove(&spec.env);
                false
            }
        };
        self.changed.notify_waiters();
        if failing {
            return Err(ProviderError::Io(std::io::Error::other(
                "memory provider: teardown told to fail",
            )));
        }
        Ok(())
    }

    pub fn status(&self, env: &EnvId) -> ProviderStatus {
        match self.lock().running.get(env) {
            Some(_) => ProviderStatus::Running { url: String::new() },
            None => ProviderStatus::Stopped,
        }
    }
}
