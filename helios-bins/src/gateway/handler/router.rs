//! The route table: every route's pattern and methods, the [`Router`] that matches a path
//! to its route, and which permission each route needs (the table the RBAC step and the
//! authorization matrix test read).
//!
//! Invariants: patterns are distinct and valid (`Router::new` panics otherwise: a bug);
//! every route needs a token unless listed in `Route::needs_token`'s allowlist (ops
//! routes and the three ways to get a token); a route with neither a permission nor a
//! scoped permission is exempt from RBAC only by design (logout, password: checked in
//! the unit test below).

use helios_auth::rbac::perms;
use http::Method;

/// The route-level permission of the job routes decided per job (see
/// `Route::checked_per_object`): some permission on `jobs`.
const JOBS_SOME: &str = "jobs:*";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Index,
    ApiIndex,
    OpenApi,
    Healthz,
    Readyz,
    Metrics,
    Register,
    Login,
    Refresh,
    Logout,
    Me,
    Password,
    KvList,
    KvItem,
    NsKvList,
    NsKvItem,
    AdminUserKvList,
    AdminUserKvItem,
    Jobs,
    JobClaim,
    JobBatch,
    Job,
    JobAction,
    Workers,
    Worker,
    Schedules,
    Schedule,
    Queues,
    Dlq,
    DlqRedrive,
    AdminStats,
    AdminSnapshot,
    AdminRewrite,
    AdminBackup,
    AdminUsers,
    AdminUserRoles,
    AdminUserRole,
    AdminUserAction,
    AdminRoles,
    AdminRole,
    AdminRateLimits,
    AdminLockouts,
    AdminLockout,
    AdminProxyRouteList,
    AdminProxyRouteItem,
    AdminProxyBackendList,
    AdminProxyBackendItem,
    AdminProxyFeed,
}

impl Route {
    const ALL: &[Route] = &[
        Route::Index,
        Route::ApiIndex,
        Route::OpenApi,
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Register,
        Route::Login,
        Route::Refresh,
        Route::Logout,
        Route::Me,
        Route::Password,
        Route::KvList,
        Route::KvItem,
        Route::NsKvList,
        Route::NsKvItem,
        Route::AdminUserKvList,
        Route::AdminUserKvItem,
        Route::Jobs,
        Route::JobClaim,
        Route::JobBatch,
        Route::Job,
        Route::JobAction,
        Route::Workers,
        Route::Worker,
        Route::Schedules,
        Route::Schedule,
        Route::Queues,
        Route::Dlq,
        Route::DlqRedrive,
        Route::AdminStats,
        Route::AdminSnapshot,
        Route::AdminRewrite,
        Route::AdminBackup,
        Route::AdminUsers,
        Route::AdminUserRoles,
        Route::AdminUserRole,
        Route::AdminUserAction,
        Route::AdminRoles,
        Route::AdminRole,
        Route::AdminRateLimits,
        Route::AdminLockouts,
        Route::AdminLockout,
        Route::AdminProxyRouteList,
        Route::AdminProxyRouteItem,
        Route::AdminProxyBackendList,
        Route::AdminProxyBackendItem,
        Route::AdminProxyFeed,
    ];

    /// The route's place in [`routes`]' table (the metrics' per-route series).
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn pattern(self) -> &'static str {
        match self {
            Route::Index => "/",
            Route::ApiIndex => "/api/v1",
            Route::OpenApi => "/openapi.yaml",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Register => "/api/v1/auth/register",
            Route::Login => "/api/v1/auth/login",
            Route::Refresh => "/api/v1/auth/refresh",
            Route::Logout => "/api/v1/auth/logout",
            Route::Me => "/api/v1/auth/me",
            Route::Password => "/api/v1/auth/password",
            Route::KvList => "/api/v1/kv",
            Route::KvItem => "/api/v1/kv/{key}",
            Route::NsKvList => "/api/v1/ns/{ns}/kv",
            Route::NsKvItem => "/api/v1/ns/{ns}/kv/{key}",
            Route::AdminUserKvList => "/admin/users/{id}/kv",
            Route::AdminUserKvItem => "/admin/users/{id}/kv/{key}",
            Route::Jobs => "/api/v1/jobs",
            Route::JobClaim => "/api/v1/jobs/claim",
            Route::JobBatch => "/api/v1/jobs/batch",
            Route::Job => "/api/v1/jobs/{id}",
            Route::JobAction => "/api/v1/jobs/{id}/{action}",
            Route::Workers => "/api/v1/workers",
            Route::Worker => "/api/v1/workers/{id}",
            Route::Schedules => "/api/v1/schedules",
            Route::Schedule => "/api/v1/schedules/{id}",
            Route::Queues => "/api/v1/queues",
            Route::Dlq => "/api/v1/queues/{queue}/dlq",
            Route::DlqRedrive => "/api/v1/queues/{queue}/dlq/redrive",
            Route::AdminStats => "/admin/stats",
            Route::AdminSnapshot => "/admin/snapshot",
            Route::AdminRewrite => "/admin/aof/rewrite",
            Route::AdminBackup => "/admin/backup",
            Route::AdminUsers => "/admin/users",
            Route::AdminUserRoles => "/admin/users/{id}/roles",
            Route::AdminUserRole => "/admin/users/{id}/roles/{role}",
            Route::AdminUserAction => "/admin/users/{id}/{action}",
            Route::AdminRoles => "/admin/roles",
            Route::AdminRole => "/admin/roles/{name}",
            Route::AdminRateLimits => "/admin/rate-limits",
            Route::AdminLockouts => "/admin/lockouts",
            Route::AdminLockout => "/admin/lockouts/{username}",
            Route::AdminProxyRouteList => "/admin/proxy/routes",
            Route::AdminProxyRouteItem => "/admin/proxy/routes/{id}",
            Route::AdminProxyBackendList => "/admin/proxy/backends",
            Route::AdminProxyBackendItem => "/admin/proxy/backends/{id}",
            Route::AdminProxyFeed => "/admin/proxy/feed",
        }
    }

    pub(super) fn methods(self) -> &'static [Method] {
        match self {
            Route::Index
            | Route::ApiIndex
            | Route::OpenApi
            | Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::Me
            | Route::KvList
            | Route::NsKvList
            | Route::AdminUserKvList => &[Method::GET],
            Route::Register | Route::Login | Route::Refresh | Route::Logout | Route::Password => {
                &[Method::POST]
            }
            Route::KvItem | Route::NsKvItem | Route::AdminUserKvItem => {
                &[Method::GET, Method::PUT, Method::DELETE]
            }
            Route::Jobs => &[Method::GET, Method::POST],
            Route::JobClaim | Route::JobBatch | Route::JobAction | Route::DlqRedrive => {
                &[Method::POST]
            }
            Route::Job | Route::Queues | Route::Dlq | Route::Workers => &[Method::GET],
            Route::Worker => &[Method::PUT, Method::DELETE],
            Route::Schedules => &[Method::GET, Method::POST],
            Route::Schedule => &[Method::GET, Method::DELETE],
            Route::AdminStats | Route::AdminUsers | Route::AdminRoles => &[Method::GET],
            Route::AdminSnapshot
            | Route::AdminRewrite
            | Route::AdminBackup
            | Route::AdminUserRoles
            | Route::AdminUserAction => &[Method::POST],
            Route::AdminUserRole => &[Method::DELETE],
            Route::AdminRole => &[Method::PUT, Method::DELETE],
            Route::AdminRateLimits => &[Method::GET, Method::PUT],
            Route::AdminLockouts => &[Method::GET],
            Route::AdminLockout => &[Method::DELETE],
            Route::AdminProxyRouteList | Route::AdminProxyBackendList | Route::AdminProxyFeed => {
                &[Method::GET]
            }
            Route::AdminProxyRouteItem | Route::AdminProxyBackendItem => {
                &[Method::GET, Method::PUT, Method::DELETE]
            }
        }
    }

    /// Every route needs a token except the ops endpoints and the three ways to get one
    /// (an allowlist: a new route is protected unless listed here).
    pub(super) fn needs_token(self) -> bool {
        !(self.is_ops() || matches!(self, Route::Register | Route::Login | Route::Refresh))
    }

    /// The routes that skip authentication, rate limiting and RBAC. `/metrics` is not one
    /// on the API listener (it needs `metrics:read`; `metrics_listen` serves it openly,
    /// on an address the operator chooses).
    pub(super) fn is_ops(self) -> bool {
        matches!(
            self,
            Route::Index | Route::ApiIndex | Route::OpenApi | Route::Healthz | Route::Readyz
        )
    }

    pub(super) fn permission(self, method: &Method) -> Option<&'static str> {
        match (self, method) {
            (Route::Me, _) => Some(perms::USERS_READ_SELF),
            (Route::Metrics, _) => Some(perms::METRICS_READ),
            (Route::KvList, _) | (Route::KvItem, &Method::GET) => Some(perms::KV_READ),
            (Route::KvItem, _) => Some(perms::KV_WRITE),
            (Route::AdminUserKvList, _) | (Route::AdminUserKvItem, _) => Some(perms::ADMIN_ALL),
            (Route::Jobs, &Method::POST) | (Route::Schedules, &Method::POST) => {
                Some(perms::JOBS_ENQUEUE)
            }
            // Decided per job in jobs.rs (see `checked_per_object`).
            // Decided per job in jobs.rs (see `checked_per_object`), and per worker in
            // workers.rs: `jobs:admin` lists every worker, some `jobs:work` one's own.
            // And per schedule in schedules.rs: one's own with `jobs:enqueue`, any with
            // `jobs:admin`.
            (Route::Jobs, _)
            | (Route::Job, _)
            | (Route::JobAction, _)
            | (Route::Workers, _)
            | (Route::Schedules, _)
            | (Route::Schedule, _) => Some(JOBS_SOME),
            (Route::JobClaim, _) | (Route::JobBatch, _) | (Route::Worker, _) => {
                Some(perms::JOBS_WORK)
            }
            (Route::Queues, _) | (Route::Dlq, _) | (Route::DlqRedrive, _) => {
                Some(perms::JOBS_ADMIN)
            }
            // Rate limits bind every client, admins included: setting them is admin:*'s
            // (with users:admin, a limit of one request a day on the admin's id would
            // lock the admin out).
            (Route::AdminStats, _)
            | (Route::AdminSnapshot, _)
            | (Route::AdminRewrite, _)
            | (Route::AdminBackup, _)
            | (Route::AdminRateLimits, &Method::PUT) => Some(perms::ADMIN_ALL),
            (Route::AdminUsers, _)
            | (Route::AdminUserRoles, _)
            | (Route::AdminUserRole, _)
            | (Route::AdminUserAction, _)
            | (Route::AdminRoles, _)
            | (Route::AdminRole, _)
            | (Route::AdminRateLimits, &Method::GET)
            | (Route::AdminLockouts, _)
            | (Route::AdminLockout, _) => Some(perms::USERS_ADMIN),
            (Route::AdminProxyRouteList, _)
            | (Route::AdminProxyRouteItem, _)
            | (Route::AdminProxyBackendList, _)
            | (Route::AdminProxyBackendItem, _)
            | (Route::AdminProxyFeed, _) => Some(perms::PROXY_ADMIN),
            _ => None,
        }
    }

    /// Whether the route's permission is decided per object by its handler (jobs.rs: the
    /// owner, `jobs:admin`, `jobs:work:{queue}` of the job's or the body's queue;
    /// workers.rs: the worker's owner, `jobs:admin` to list everyone's; schedules.rs: the
    /// schedule's owner, `jobs:admin` for everyone's): the RBAC
    /// step then asks only for some of [`Route::permission`] (`Auth::authorize_some`:
    /// `jobs:work:emails` is some of `jobs:work`, anything on `jobs` some of `jobs:*`), so
    /// a caller with none of it is refused before the body is read.
    pub(super) fn checked_per_object(self, method: &Method) -> bool {
        matches!(
            (self, method),
            (Route::Jobs | Route::Schedules, &Method::GET)
                | (
                    Route::Job
                        | Route::JobAction
                        | Route::JobClaim
                        | Route::JobBatch
                        | Route::Workers
                        | Route::Worker
                        | Route::Schedule,
                    _
                )
        )
    }

    /// For routes whose permission names the object in the path: the permission's
    /// `resource:action`, completed with the path's scope (`kv:read:{ns}`).
    pub(super) fn scoped_permission(self, method: &Method) -> Option<&'static str> {
        match (self, method) {
            (Route::NsKvList, _) | (Route::NsKvItem, &Method::GET) => Some(perms::KV_READ),
            (Route::NsKvItem, _) => Some(perms::KV_WRITE),
            _ => None,
        }
    }
}

pub(super) fn route_name(r: Route) -> &'static str {
    r.pattern()
}

/// The route table.
#[derive(Debug)]
pub(in crate::gateway) struct Router {
    pub(super) inner: matchit::Router<Route>,
}

impl Router {
    pub(in crate::gateway) fn new() -> Self {
        let mut inner = matchit::Router::new();
        for &r in Route::ALL {
            // The patterns above are distinct and valid: a failure is a bug.
            inner
                .insert(r.pattern(), r)
                .expect("route patterns are valid and distinct");
        }
        Self { inner }
    }
}

/// The patterns and methods the router serves (the OpenAPI test compares them).
pub fn routes() -> Vec<(&'static str, Vec<Method>)> {
    Route::ALL
        .iter()
        .map(|r| (r.pattern(), r.methods().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_segments_win_and_permissions() {
        let r = Router::new();
        assert_eq!(
            *r.inner.at("/api/v1/jobs/claim").unwrap().value,
            Route::JobClaim
        );
        assert_eq!(
            *r.inner.at("/api/v1/jobs/batch").unwrap().value,
            Route::JobBatch
        );
        assert_eq!(*r.inner.at("/api/v1/jobs/abc").unwrap().value, Route::Job);
        assert_eq!(
            *r.inner.at("/api/v1/workers").unwrap().value,
            Route::Workers
        );
        assert_eq!(
            *r.inner.at("/api/v1/workers/w-1").unwrap().value,
            Route::Worker
        );
        assert_eq!(
            Route::JobClaim.permission(&Method::POST),
            Some(perms::JOBS_WORK)
        );
        // Job routes decided per job; enqueue and the queue admin routes are not.
        assert!(Route::Job.checked_per_object(&Method::GET));
        assert!(Route::JobAction.checked_per_object(&Method::POST));
        assert!(Route::Jobs.checked_per_object(&Method::GET));
        assert!(!Route::Jobs.checked_per_object(&Method::POST));
        assert!(!Route::Dlq.checked_per_object(&Method::GET));
        // Batches, like single actions, need some `jobs:work`, then the job's queue.
        assert_eq!(
            Route::JobBatch.permission(&Method::POST),
            Some(perms::JOBS_WORK)
        );
        assert!(Route::JobBatch.checked_per_object(&Method::POST));
        // The registry: some `jobs:work` to register or remove, any `jobs` to list (the
        // handler lets `jobs:admin` see everyone's, a worker its own).
        for m in [Method::PUT, Method::DELETE] {
            assert_eq!(Route::Worker.permission(&m), Some(perms::JOBS_WORK));
            assert!(Route::Worker.checked_per_object(&m));
        }
        assert_eq!(Route::Workers.permission(&Method::GET), Some(JOBS_SOME));
        assert!(Route::Workers.checked_per_object(&Method::GET));
        // Schedules: creating one is enqueueing (checked by the router); reading and
        // deleting are decided per schedule (owner or `jobs:admin`).
        assert_eq!(
            *r.inner.at("/api/v1/schedules").unwrap().value,
            Route::Schedules
        );
        assert_eq!(
            *r.inner.at("/api/v1/schedules/0190").unwrap().value,
            Route::Schedule
        );
        assert_eq!(
            Route::Schedules.permission(&Method::POST),
            Some(perms::JOBS_ENQUEUE)
        );
        assert!(!Route::Schedules.checked_per_object(&Method::POST));
        assert_eq!(Route::Schedules.permission(&Method::GET), Some(JOBS_SOME));
        assert!(Route::Schedules.checked_per_object(&Method::GET));
        for m in [Method::GET, Method::DELETE] {
            assert_eq!(Route::Schedule.permission(&m), Some(JOBS_SOME));
            assert!(Route::Schedule.checked_per_object(&m));
        }
    }

    #[test]
    fn a_routes_index_is_its_place_in_the_table() {
        let table = routes();
        for (i, &r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            assert_eq!(table[i].0, r.pattern());
        }
    }

    #[test]
    fn every_route_but_ops_and_login_needs_a_token_and_most_a_permission() {
        for &r in Route::ALL {
            let open = matches!(
                r,
                Route::Index
                    | Route::ApiIndex
                    | Route::OpenApi
                    | Route::Healthz
                    | Route::Readyz
                    | Route::Register
                    | Route::Login
                    | Route::Refresh
            );
            assert_eq!(r.needs_token(), !open, "{r:?}");
            for m in r.methods() {
                let exempt = open || r == Route::Logout || r == Route::Password;
                let guarded = r.permission(m).is_some() || r.scoped_permission(m).is_some();
                assert_eq!(guarded, !exempt, "{r:?} {m}");
            }
        }
    }
}
