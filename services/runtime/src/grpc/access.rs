//! Who may call which RPC, decided at the edge from one table per service.
//!
//! Each service writes an [`AccessTable`] naming, for every method of its
//! gRPC service, the roles that may call it. [`Guarded`] wraps the generated
//! server: it authenticates the bearer token, refuses a role the table does
//! not name for the method (before the request body is even decoded), and
//! hands the [`Caller`] to the handler. A method missing from the table is
//! refused for everyone, so forgetting a row fails closed; the registry's
//! tests check every table names exactly its service's methods.
//!
//! It then asks [`Standing`] whether a referrer's agency and the referrer,
//! or a mentor, are still registered and active, so a suspension or a
//! mentor leaving takes effect on every RPC of every service.
//!
//! What a handler still decides is *which* records a permitted caller may
//! touch (a referrer's own agency, a mentor's own cases, a coordinator's areas).

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::auth::{Authenticator, Caller, Role};
use crate::clock::{RequestTime, SimulatedClock};
use crate::standing::Standing;

/// Coordinators and admins: the programme's staff.
pub const STAFF: &[Role] = &[Role::Coordinator, Role::Admin];

/// The roles allowed to call each method of one gRPC service.
#[derive(Debug)]
pub struct AccessTable {
    rules: &'static [(&'static str, &'static [Role])],
}

impl AccessTable {
    /// `rules` pairs a method name as the proto spells it (`SubmitReferral`)
    /// with the roles that may call it.
    pub const fn new(rules: &'static [(&'static str, &'static [Role])]) -> Self {
        Self { rules }
    }

    /// The roles that may call `method`; `None` when the table omits it.
    pub fn roles_for(&self, method: &str) -> Option<&'static [Role]> {
        self.rules
            .iter()
            .find(|(name, _)| *name == method)
            .map(|(_, roles)| *roles)
    }

    /// The methods the table names.
    pub fn methods(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.rules.iter().map(|(name, _)| *name)
    }

    /// Admits `caller` to `method`, or says why not.
    pub fn admit(&self, method: &str, caller: &Caller) -> Result<(), Status> {
        match self.roles_for(method) {
            None => Err(Status::unimplemented(format!(
                "{method} is not served here"
            ))),
            Some(roles) if roles.contains(&caller.role) => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "role {} may not call {method}",
                caller.role
            ))),
        }
    }
}

/// A generated gRPC server behind authentication and its [`AccessTable`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    authenticator: Authenticator,
    table: &'static AccessTable,
    standing: Option<Standing>,
    clock: SimulatedClock,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, authenticator: Authenticator, table: &'static AccessTable) -> Self {
        Self {
            inner,
            authenticator,
            table,
            standing: None,
            clock: SimulatedClock::disabled(),
        }
    }

    /// Admits the simulated time a request names when `clock` allows it;
    /// without this every request naming one is refused.
    pub fn with_clock(mut self, clock: SimulatedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Also refuses callers not in good standing (every service's API;
    /// reflection, which tells nothing about anyone, goes without).
    pub fn with_standing(mut self, standing: Standing) -> Self {
        self.standing = Some(standing);
        self
    }

    /// The caller of `request`, admitted to the method its path names.
    fn admit<B>(&self, request: &http::Request<B>) -> Result<Caller, Status> {
        let caller = self.authenticator.authenticate(request.headers())?;
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        self.table.admit(method, &caller)?;
        Ok(caller)
    }

    /// The caller, and the simulated time the request acts at, if any.
    fn admit_with_time<B>(
        &self,
        request: &http::Request<B>,
    ) -> Result<(Caller, Option<RequestTime>), Status> {
        let caller = self.admit(request)?;
        let time = self.clock.read(request.headers(), chrono::Utc::now())?;
        Ok((caller, time.map(RequestTime)))
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Guarded<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let refused = |status: Status| {
            tracing::debug!(code = ?status.code(), message = status.message(), "call refused");
            Ok(status.into_http())
        };
        let caller = match self.admit_with_time(&request) {
            Ok((caller, time)) => {
                if let Some(time) = time {
                    request.extensions_mut().insert(time);
                }
                caller
            }
            Err(status) => return Box::pin(std::future::ready(refused(status))),
        };
        let standing = match &self.standing {
            Some(standing) if Standing::applies_to(&caller) => standing.clone(),
            _ => {
                request.extensions_mut().insert(caller);
                return Box::pin(self.inner.call(request));
            }
        };
        // The inner service was made ready by poll_ready; a clone takes its
        // place for the next call (the usual tower pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if let Err(status) = standing.admit(&caller).await {
                return refused(status);
            }
            request.extensions_mut().insert(caller);
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TABLE: AccessTable = AccessTable::new(&[
        ("SubmitReferral", &[Role::Referrer]),
        ("ListAgencies", STAFF),
    ]);

    fn caller(role: Role) -> Caller {
        Caller {
            subject: "someone".into(),
            role,
            agency_id: Some("agency-a".into()),
            mentor_id: Some("m-1".into()),
            areas: Vec::new(),
        }
    }

    #[test]
    fn only_the_named_roles_pass() {
        assert!(
            TABLE
                .admit("SubmitReferral", &caller(Role::Referrer))
                .is_ok()
        );
        for role in [Role::Coordinator, Role::Mentor, Role::Admin, Role::Service] {
            let status = TABLE.admit("SubmitReferral", &caller(role)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{role}");
            assert!(status.message().contains("SubmitReferral"));
        }
        assert!(TABLE.admit("ListAgencies", &caller(Role::Admin)).is_ok());
        assert!(
            TABLE
                .admit("ListAgencies", &caller(Role::Referrer))
                .is_err()
        );
    }

    #[test]
    fn a_method_the_table_omits_is_refused_to_everyone() {
        for role in Role::ALL {
            let status = TABLE.admit("EraseClient", &caller(role)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unimplemented);
        }
    }
}
