//! Whether a referrer's agency, the referrer and a mentor are still in good
//! standing, in every service.
//!
//! A token proves who the caller is until it expires; it cannot say that
//! their agency was suspended an hour ago or that a mentor has left. The
//! service that registers each principal (referral-intake for agencies and
//! referrers, mentor-matching for mentors) records its standing in its own
//! `principal` table and publishes `principal.status_changed`; every
//! service keeps the latest standing of each in its own `principal` table
//! (a consumer the runtime starts for every service, [`consumer`]), and the
//! guard of every service ([`crate::grpc::access::Guarded`]) asks
//! [`Standing::admit`] before any handler runs. So a suspended agency's
//! referrers, and a mentor who has left, are refused on every RPC.
//!
//! A principal nobody registered is refused too, except in development with
//! `auth.admit_unregistered` (so a laptop demo needs no registration).
//! Standings are cached for `auth.standing_cache_secs`: a suspension takes
//! effect everywhere within that time of its event being applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cpm_proto::v1::{PrincipalKind, PrincipalStatusChanged};
use sqlx::{PgConnection, PgPool};
use tonic::Status;

use crate::auth::{Caller, Role};
use crate::bus::consumer::{HandlerError, ReceivedEvent};
use crate::bus::outbox::{self, Tx};
use crate::bus::router::{On, Router};
use crate::grpc::values::{from_timestamp, timestamp};

/// A principal as the `principal` table keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub id: String,
}

impl Principal {
    pub fn agency(agency_id: &str) -> Self {
        Self {
            kind: PrincipalKind::Agency,
            id: agency_id.to_owned(),
        }
    }

    /// A referrer: the subject of their tokens, within their agency.
    pub fn referrer(agency_id: &str, subject: &str) -> Self {
        Self {
            kind: PrincipalKind::Referrer,
            id: format!("{agency_id}/{subject}"),
        }
    }

    pub fn mentor(mentor_id: &str) -> Self {
        Self {
            kind: PrincipalKind::Mentor,
            id: mentor_id.to_owned(),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            PrincipalKind::Agency => "agency",
            PrincipalKind::Referrer => "referrer",
            PrincipalKind::Mentor => "mentor",
            PrincipalKind::Unspecified => "unspecified",
        }
    }

    /// The principal an event names, or `None` for a malformed one.
    fn of_event(event: &PrincipalStatusChanged) -> Option<Self> {
        let kind = PrincipalKind::try_from(event.kind).ok()?;
        if event.principal_id.is_empty() {
            return None;
        }
        match kind {
            PrincipalKind::Agency => Some(Self::agency(&event.principal_id)),
            PrincipalKind::Mentor => Some(Self::mentor(&event.principal_id)),
            PrincipalKind::Referrer if !event.agency_id.is_empty() => {
                Some(Self::referrer(&event.agency_id, &event.principal_id))
            }
            PrincipalKind::Referrer | PrincipalKind::Unspecified => None,
        }
    }
}

/// Records `active` for `principal` as of `changed_at`, unless a later
/// change is already recorded (events may arrive out of order). Returns
/// whether it changed anything.
pub async fn record(
    connection: &mut PgConnection,
    principal: &Principal,
    active: bool,
    changed_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    // Dynamic: every schema has a principal table; search_path picks the caller's.
    let written = sqlx::query(
        "INSERT INTO principal (kind, id, active, changed_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, id) DO UPDATE SET active = $3, changed_at = $4 \
         WHERE principal.changed_at <= $4",
    )
    .bind(principal.kind_name())
    .bind(&principal.id)
    .bind(active)
    .bind(changed_at)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(written == 1)
}

/// What the registering service calls in the transaction that registers,
/// suspends or reinstates a principal: records it in its own table and
/// tells every other service.
pub async fn publish(
    tx: &mut Tx,
    producer: &str,
    principal: &Principal,
    active: bool,
) -> Result<(), sqlx::Error> {
    let changed_at = Utc::now();
    record(tx, principal, active, changed_at).await?;
    let (principal_id, agency_id) = match principal.kind {
        PrincipalKind::Referrer => {
            let (agency, subject) = principal
                .id
                .split_once('/')
                .expect("a referrer's id is agency/subject");
            (subject.to_owned(), agency.to_owned())
        }
        _ => (principal.id.clone(), String::new()),
    };
    outbox::enqueue(
        tx,
        producer,
        &PrincipalStatusChanged {
            kind: principal.kind as i32,
            principal_id,
            agency_id,
            active,
            changed_at: Some(timestamp(changed_at)),
        },
    )
    .await?;
    Ok(())
}

/// The latest standing of a principal: unknown, active or not.
async fn read(pool: &PgPool, principal: &Principal) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar("SELECT active FROM principal WHERE kind = $1 AND id = $2")
        .bind(principal.kind_name())
        .bind(&principal.id)
        .fetch_optional(pool)
        .await
}

/// The standing check of one service's guard.
#[derive(Clone)]
pub struct Standing {
    pool: PgPool,
    admit_unregistered: bool,
    cache_for: Duration,
    cache: Arc<Mutex<HashMap<Principal, Cached>>>,
}

/// A standing as read, and when.
type Cached = (Option<bool>, Instant);

impl Standing {
    /// Reads standings from `pool`'s `principal` table. `admit_unregistered`
    /// lets principals nobody registered through (development only).
    pub fn new(pool: PgPool, admit_unregistered: bool, cache_for: Duration) -> Self {
        Self {
            pool,
            admit_unregistered,
            cache_for,
            cache: Arc::default(),
        }
    }

    /// Whether this caller needs a standing at all: referrers and mentors.
    pub fn applies_to(caller: &Caller) -> bool {
        matches!(caller.role, Role::Referrer | Role::Mentor)
    }

    /// Refuses a caller whose agency is suspended or unknown, who is an
    /// unknown or deregistered referrer, or a mentor who has left or is
    /// unknown (PERMISSION_DENIED; UNAVAILABLE when the database does not answer).
    pub async fn admit(&self, caller: &Caller) -> Result<(), Status> {
        match caller.role {
            Role::Referrer => {
                let agency = caller.agency()?;
                self.require(&Principal::agency(agency), || {
                    format!("agency {agency} is suspended")
                })
                .await?;
                self.require(&Principal::referrer(agency, &caller.subject), || {
                    format!(
                        "referrer {} of agency {agency} is no longer registered",
                        caller.subject
                    )
                })
                .await
            }
            Role::Mentor => {
                let mentor = caller.mentor()?;
                self.require(&Principal::mentor(mentor), || {
                    format!("mentor {mentor} is no longer active in the programme")
                })
                .await
            }
            Role::Coordinator | Role::Admin | Role::Service => Ok(()),
        }
    }

    async fn require(
        &self,
        principal: &Principal,
        inactive: impl FnOnce() -> String,
    ) -> Result<(), Status> {
        match self.standing(principal).await? {
            Some(true) => Ok(()),
            Some(false) => Err(Status::permission_denied(inactive())),
            None if self.admit_unregistered => Ok(()),
            None => Err(Status::permission_denied(format!(
                "{} {} is not registered",
                principal.kind_name(),
                principal.id
            ))),
        }
    }

    async fn standing(&self, principal: &Principal) -> Result<Option<bool>, Status> {
        if let Some((standing, read_at)) = self.cache.lock().expect("not poisoned").get(principal)
            && read_at.elapsed() < self.cache_for
        {
            return Ok(*standing);
        }
        let standing = read(&self.pool, principal).await.map_err(|error| {
            tracing::warn!(%error, "a caller's standing could not be read");
            Status::unavailable("the service cannot check the caller's standing; try again")
        })?;
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(principal.clone(), (standing, Instant::now()));
        Ok(standing)
    }
}

/// Applies `principal.status_changed` to the service's `principal` table.
pub struct Standings;

impl On<PrincipalStatusChanged> for Standings {
    async fn on(
        &self,
        tx: &mut Tx,
        event: PrincipalStatusChanged,
        _: &ReceivedEvent,
    ) -> Result<(), HandlerError> {
        let principal = Principal::of_event(&event).ok_or_else(|| {
            HandlerError::Permanent("principal.status_changed names no principal".into())
        })?;
        let changed_at = event
            .changed_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| {
                HandlerError::Permanent("principal.status_changed has no time".into())
            })?;
        record(tx, &principal, event.active, changed_at).await?;
        Ok(())
    }
}

/// The `principals` consumer the runtime runs for every service.
pub fn consumer(service: &'static str) -> Router<Standings> {
    Router::new(service, "principals", Standings).on::<PrincipalStatusChanged>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: PrincipalKind, id: &str, agency: &str) -> PrincipalStatusChanged {
        PrincipalStatusChanged {
            kind: kind as i32,
            principal_id: id.into(),
            agency_id: agency.into(),
            active: true,
            changed_at: None,
        }
    }

    #[test]
    fn an_event_names_its_principal_and_a_referrer_belongs_to_an_agency() {
        assert_eq!(
            Principal::of_event(&event(PrincipalKind::Referrer, "pc-1", "police")),
            Some(Principal::referrer("police", "pc-1"))
        );
        assert_eq!(
            Principal::of_event(&event(PrincipalKind::Agency, "police", "")),
            Some(Principal::agency("police"))
        );
        assert_eq!(
            Principal::of_event(&event(PrincipalKind::Mentor, "m-1", "")),
            Some(Principal::mentor("m-1"))
        );
        for malformed in [
            event(PrincipalKind::Referrer, "pc-1", ""),
            event(PrincipalKind::Agency, "", ""),
            event(PrincipalKind::Unspecified, "x", ""),
            PrincipalStatusChanged {
                kind: 99,
                ..event(PrincipalKind::Agency, "x", "")
            },
        ] {
            assert_eq!(Principal::of_event(&malformed), None, "{malformed:?}");
        }
    }

    #[test]
    fn only_referrers_and_mentors_need_a_standing() {
        let caller = |role| Caller {
            subject: "s".into(),
            role,
            agency_id: Some("a".into()),
            mentor_id: Some("m".into()),
            areas: Vec::new(),
        };
        for role in Role::ALL {
            assert_eq!(
                Standing::applies_to(&caller(role)),
                matches!(role, Role::Referrer | Role::Mentor),
                "{role}"
            );
        }
    }
}
