//! Reuse of plugin instances across requests, by isolation mode (docs/plugins.md, "Isolation"):
//!
//! - `request`: no reuse; every request gets a fresh instance (from the reserve, [`super::instance::refill`]).
//! - `tenant`: an instance is owned by the tenant of the request it was first given to — the principal that an
//!   earlier plugin set (its team when it has one, else its id) — and only ever goes back to that tenant's requests.
//!   A request without a principal when the plugin's turn comes gets a fresh instance that is not kept.
//! - `shared`: any request may get any idle instance.
//!
//! An instance goes back to the pool only when its request is over and it is healthy (never after a failure or a
//! call cut short: [`super::instance::Slot::release`]), when the request still belongs to the tenant the instance
//! is owned by (a later plugin may have changed the principal), and while it is within its [`ReuseLimits`]:
//! `max_requests` served, `memory` (its largest linear memory), and `idle` (checked when an instance is taken or put
//! back, and swept after every request the gateway completes, so a plugin that stops being used frees its
//! instances). At most `instances` idle instances are kept per plugin, all tenants together; the least recently used
//! goes first, so one tenant's burst cannot keep others' instances forever. Idle instances and the reserves of fresh
//! ones share one budget of the engine's instance slots (a quarter of `plugin_runtime.max_instances`,
//! [`super::engine::PluginEngine::reserve`]): an instance that finds no place there is dropped rather than kept, so
//! instances kept between requests never take the slots requests need.
//!
//! Instances are dropped outside the pool's lock (dropping one resets its slot in the pooling allocator).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{Isolation, ReuseLimits};
use crate::sync::Locked;

use super::engine::PluginEngine;
use super::instance::Live;
use super::types::Principal;

/// Who an instance may serve after its current request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Nobody: dropped after this request (`request` mode, or `tenant` mode without a principal).
    Nobody,
    /// Any request (`shared`).
    Anyone,
    /// Requests of this tenant only.
    Tenant(Arc<str>),
}

impl Owner {
    /// The owner an instance gets for a request whose principal is `principal` when the plugin's turn comes.
    pub fn for_request(isolation: Isolation, principal: Option<&Principal>) -> Owner {
        match (isolation, principal) {
            (Isolation::Shared, _) => Owner::Anyone,
            (Isolation::Tenant, Some(p)) => Owner::Tenant(tenant_key(p)),
            _ => Owner::Nobody,
        }
    }
}

/// The tenant of a principal: its team, or itself when it has none. The two are kept apart (`team:` / `id:`), so a
/// key whose id equals some team's name is not that team.
pub fn tenant_key(p: &Principal) -> Arc<str> {
    match &p.team {
        Some(team) => format!("team:{team}").into(),
        None => format!("id:{}", p.id).into(),
    }
}

struct Idle {
    owner: Owner,
    live: Live,
    since: Instant,
}

/// One plugin version's idle instances.
pub struct Pool {
    engine: Arc<PluginEngine>,
    limits: ReuseLimits,
    /// Largest linear memory a returning instance may have grown to.
    memory: usize,
    /// Oldest first.
    idle: Mutex<VecDeque<Idle>>,
}

/// What [`Pool::put`] did with an instance: kept it, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    Kept,
    NotOwned,
    TenantChanged,
    MaxRequests,
    Memory,
    /// The engine's budget of kept instances is spent (reserves and other pools hold it).
    NoRoom,
}

impl Pool {
    pub fn new(engine: Arc<PluginEngine>, limits: ReuseLimits, memory_cap: usize) -> Pool {
        let memory = limits.memory.unwrap_or(memory_cap / 4 * 3);
        Pool { engine, limits, memory, idle: Mutex::new(VecDeque::new()) }
    }

    /// Drops `instances` that left the pool other than to a request, giving their places back.
    fn drop_all(&self, instances: VecDeque<Idle>) {
        self.engine.unreserve(instances.len());
        drop(instances);
    }

    /// An idle instance `owner` may have (never for [`Owner::Nobody`]), the most recently used first; instances
    /// found idle for too long on the way are dropped.
    pub fn take(&self, owner: &Owner) -> Option<Live> {
        if *owner == Owner::Nobody {
            return None;
        }
        let now = Instant::now();
        let (found, expired) = {
            let mut idle = self.idle.locked();
            let expired = self.expire(&mut idle, now);
            let found = idle.iter().rposition(|i| i.owner == *owner).and_then(|at| idle.remove(at));
            (found, expired)
        };
        self.drop_all(expired);
        let found = found?;
        self.engine.unreserve(1);
        Some(found.live)
    }

    /// Puts back an instance after its request, if it may serve another: see the module doc. `tenant` is the
    /// tenant of the request as it ended.
    pub fn put(&self, mut live: Live, tenant: Option<&Principal>) -> Retired {
        let verdict = self.verdict(&live, tenant);
        if verdict != Retired::Kept {
            return verdict;
        }
        if !self.engine.reserve() {
            return Retired::NoRoom;
        }
        live.ready_for_reuse();
        let now = Instant::now();
        let owner = live.owner.clone();
        let dropped = {
            let mut idle = self.idle.locked();
            let mut dropped = self.expire(&mut idle, now);
            idle.push_back(Idle { owner, live, since: now });
            while idle.len() > self.limits.instances {
                dropped.extend(idle.pop_front());
            }
            dropped
        };
        self.drop_all(dropped);
        Retired::Kept
    }

    fn verdict(&self, live: &Live, tenant: Option<&Principal>) -> Retired {
        match &live.owner {
            Owner::Nobody => return Retired::NotOwned,
            Owner::Tenant(t) if tenant.map(tenant_key).as_ref() != Some(t) => return Retired::TenantChanged,
            _ => {}
        }
        if live.requests >= self.limits.max_requests {
            return Retired::MaxRequests;
        }
        if live.store.data().memory_peak > self.memory {
            return Retired::Memory;
        }
        Retired::Kept
    }

    /// Removes the instances idle for longer than the limit (the oldest are in front).
    fn expire(&self, idle: &mut VecDeque<Idle>, now: Instant) -> VecDeque<Idle> {
        let stale = idle.iter().take_while(|i| now.duration_since(i.since) > self.limits.idle).count();
        idle.drain(..stale).collect()
    }

    /// Drops the instances idle for longer than the limit.
    pub fn sweep(&self) {
        let now = Instant::now();
        let expired = {
            let mut idle = self.idle.locked();
            if idle.front().is_none_or(|i| now.duration_since(i.since) <= self.limits.idle) {
                return;
            }
            self.expire(&mut idle, now)
        };
        self.drop_all(expired);
    }

    /// Idle instances now (for `/admin/plugins`).
    pub fn idle(&self) -> usize {
        self.idle.locked().len()
    }

    /// Distinct tenants with an idle instance now (for `/admin/plugins`).
    pub fn tenants(&self) -> usize {
        let idle = self.idle.locked();
        let mut tenants: Vec<&Arc<str>> = idle
            .iter()
            .filter_map(|i| match &i.owner {
                Owner::Tenant(t) => Some(t),
                _ => None,
            })
            .collect();
        tenants.sort();
        tenants.dedup();
        tenants.len()
    }
}

impl Drop for Pool {
    /// A retired version's idle instances give their places back.
    fn drop(&mut self) {
        let n = self.idle.get_mut().map_or(0, |i| i.len());
        self.engine.unreserve(n);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::config::PluginSettings;
    use crate::plugin::registry::testing;
    use std::time::Duration;

    fn principal(id: &str, team: Option<&str>) -> Principal {
        Principal { id: id.into(), team: team.map(Into::into) }
    }

    fn plugin() -> Arc<super::super::registry::LoadedPlugin> {
        testing::load("pool", "misbehave", PluginSettings::default())
    }

    fn pool(limits: ReuseLimits) -> Pool {
        Pool::new(plugin().engine.clone(), limits, 32 << 20)
    }

    async fn live(owner: Owner) -> Live {
        let mut live = super::super::instance::fresh(&plugin(), 0).await.unwrap();
        live.owner = owner;
        live.requests = 1;
        live
    }

    #[test]
    fn tenants_are_teams_else_principals_and_the_two_never_meet() {
        assert_eq!(&*tenant_key(&principal("k1", Some("ml"))), "team:ml");
        assert_eq!(tenant_key(&principal("k1", Some("ml"))), tenant_key(&principal("k2", Some("ml"))));
        assert_ne!(tenant_key(&principal("ml", None)), tenant_key(&principal("x", Some("ml"))));
        let a = principal("a", None);
        assert_eq!(Owner::for_request(Isolation::Request, Some(&a)), Owner::Nobody);
        assert_eq!(Owner::for_request(Isolation::Tenant, None), Owner::Nobody);
        assert_eq!(Owner::for_request(Isolation::Tenant, Some(&a)), Owner::Tenant("id:a".into()));
        assert_eq!(Owner::for_request(Isolation::Shared, None), Owner::Anyone);
    }

    #[tokio::test]
    async fn an_instance_goes_back_only_to_its_own_tenant() {
        let pool = pool(ReuseLimits::default());
        let (a, b) = (principal("a", None), principal("b", None));
        let owner_a = Owner::for_request(Isolation::Tenant, Some(&a));
        assert_eq!(pool.put(live(owner_a.clone()).await, Some(&a)), Retired::Kept);
        assert!(pool.take(&Owner::for_request(Isolation::Tenant, Some(&b))).is_none(), "never to another tenant");
        assert!(pool.take(&Owner::Anyone).is_none());
        assert!(pool.take(&Owner::Nobody).is_none());
        assert!(pool.take(&owner_a).is_some());
        assert_eq!(pool.idle(), 0);
        // The request ended as another tenant's (a later plugin changed the principal): not kept for either.
        assert_eq!(pool.put(live(owner_a.clone()).await, Some(&b)), Retired::TenantChanged);
        assert_eq!(pool.put(live(owner_a).await, None), Retired::TenantChanged);
        assert_eq!(pool.put(live(Owner::Nobody).await, Some(&a)), Retired::NotOwned);
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn instances_retire_after_max_requests_memory_and_idle_time() {
        let limits = ReuseLimits { max_requests: 3, idle: Duration::from_millis(50), ..ReuseLimits::default() };
        let pool = pool(limits);
        let mut l = live(Owner::Anyone).await;
        l.requests = 3;
        assert_eq!(pool.put(l, None), Retired::MaxRequests);
        let mut l = live(Owner::Anyone).await;
        l.store.data_mut().memory_peak = 25 << 20;
        assert_eq!(pool.put(l, None), Retired::Memory, "past 3/4 of the 32 MiB cap");
        assert_eq!(pool.put(live(Owner::Anyone).await, None), Retired::Kept);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(pool.take(&Owner::Anyone).is_none(), "idle too long");
        assert_eq!(pool.idle(), 0);
        // Swept without being asked for, too.
        assert_eq!(pool.put(live(Owner::Anyone).await, None), Retired::Kept);
        pool.sweep();
        assert_eq!(pool.idle(), 1, "not idle long enough yet");
        tokio::time::sleep(Duration::from_millis(80)).await;
        pool.sweep();
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn the_least_recently_used_goes_first_when_the_pool_is_full() {
        let pool = pool(ReuseLimits { instances: 2, ..ReuseLimits::default() });
        for t in ["a", "b", "c"] {
            let l = live(Owner::Tenant(format!("id:{t}").into())).await;
            assert_eq!(pool.put(l, Some(&principal(t, None))), Retired::Kept);
        }
        assert_eq!((pool.idle(), pool.tenants()), (2, 2));
        assert!(pool.take(&Owner::Tenant("id:a".into())).is_none(), "a was the oldest");
        assert!(pool.take(&Owner::Tenant("id:c".into())).is_some());
    }

    #[tokio::test]
    async fn idle_instances_share_the_engines_budget_of_kept_instances() {
        // A pool of max_instances 8 keeps at most a quarter of it (2) off requests, reserves and idle together.
        let rt = crate::config::PluginRuntime { max_instances: 8, ..Default::default() };
        let engine = PluginEngine::new(&rt).unwrap();
        let pool = Pool::new(engine.clone(), ReuseLimits::default(), 32 << 20);
        assert!(engine.reserve(), "one place taken by a reserve");
        assert_eq!(pool.put(live(Owner::Anyone).await, None), Retired::Kept);
        assert_eq!(pool.put(live(Owner::Anyone).await, None), Retired::NoRoom);
        assert!(!engine.reserve_room());
        assert!(pool.take(&Owner::Anyone).is_some());
        assert!(engine.reserve_room(), "a taken instance gives its place back");
        assert_eq!(pool.put(live(Owner::Anyone).await, None), Retired::Kept);
        drop(pool);
        assert!(engine.reserve() && !engine.reserve_room(), "a dropped pool gives its places back");
    }
}
