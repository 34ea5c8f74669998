//! An agency's webhooks, one function per use case: register (with a
//! signing secret returned once), list, disable, delete, rotate the secret,
//! redeliver, and the delivery log. Everything is scoped to the caller's
//! agency: another agency's webhook or delivery is NOT_FOUND.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cpm_proto::v1::{
    DeliveryAttempt, DeliveryState, ListDeliveriesRequest, NotificationKind,
    RedeliverDeliveriesRequest, Webhook,
};
use cpm_runtime::auth::Caller;
use cpm_runtime::crypto::KeyRing;
use cpm_runtime::grpc::values::{from_timestamp, optional_timestamp, parse_enum_list, timestamp};
use cpm_runtime::grpc::{ApiError, FieldViolations, page};
use sqlx::PgPool;
use uuid::Uuid;

use crate::destinations::{DestinationPolicy, Lookup, REFUSED_MESSAGE, Refused};
use crate::domain::check_webhook_url;
use crate::signing::{self, WebhookSecret};
use crate::webhook_store::{self as store, AttemptRow, DeliveryQuery, DeliveryRow, WebhookView};

/// The attempts a delivery in the log shows: its latest (its `attempts`
/// counts them all), so a page stays bounded however long one was retried.
pub const MAX_ATTEMPTS_SHOWN: i64 = 50;

/// What the webhook use cases need.
#[derive(Clone)]
pub struct WebhookAdmin {
    pub pool: PgPool,
    pub keys: KeyRing,
    pub policy: Arc<DestinationPolicy>,
    pub lookup: Lookup,
    /// How long a rotated-out secret still signs.
    pub secret_overlap: Duration,
    /// Webhooks an agency may have registered (deleted ones do not count).
    pub max_webhooks: u32,
}

/// A webhook for its agency; `secret` only when just made.
pub fn webhook_to_proto(view: WebhookView, secret: Option<&WebhookSecret>) -> Webhook {
    Webhook {
        webhook_id: view.webhook_id.to_string(),
        url: view.url,
        created_at: Some(timestamp(view.created_at)),
        secret: secret
            .map(|secret| secret.expose().to_owned())
            .unwrap_or_default(),
        active: view.active,
        secret_rotated_at: optional_timestamp(view.secret_rotated_at),
        previous_secret_until: optional_timestamp(
            view.previous_secret_until
                .filter(|until| *until > Utc::now()),
        ),
        circuit_open_until: optional_timestamp(
            view.circuit_open_until.filter(|until| *until > Utc::now()),
        ),
    }
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("webhook {id}"))
}

impl WebhookAdmin {
    /// Checks the URL (form, then destination) and registers it. A URL the
    /// agency registered before is enabled again with a new secret (the
    /// previous one signs for the overlap). Any refused destination gets
    /// the one generic message, whatever the address was. An agency at its
    /// cap registers nothing more (RESOURCE_EXHAUSTED) but may register one
    /// of its URLs again.
    pub async fn register(
        &self,
        caller: &Caller,
        agency_id: &str,
        url: &str,
        allow_plain_http: bool,
    ) -> Result<(WebhookView, WebhookSecret), ApiError> {
        let mut violations = FieldViolations::new();
        check_webhook_url(url, allow_plain_http, &mut violations);
        violations.into_result()?;
        let parsed = reqwest::Url::parse(url).map_err(|error| ApiError::Internal(error.into()))?;
        if let Err(refused) = self.policy.check_url(&self.lookup, &parsed).await {
            let mut violations = FieldViolations::new();
            match refused {
                Refused::Unresolved => violations.add("url", "names a host that does not resolve"),
                Refused::Address(_) | Refused::NoHost => violations.add("url", REFUSED_MESSAGE),
            }
            tracing::info!(reason = %refused, "webhook destination refused");
            return Err(violations.into());
        }
        let secret = WebhookSecret::generate();
        let mut transaction = self.pool.begin().await?;
        store::lock_agency_webhooks(&mut transaction, agency_id).await?;
        let (live, registered) =
            store::count_live_webhooks(&mut transaction, agency_id, url).await?;
        if !registered && live >= i64::from(self.max_webhooks) {
            tracing::info!(
                live,
                cap = self.max_webhooks,
                "webhook refused: agency at its cap"
            );
            return Err(ApiError::ResourceExhausted(format!(
                "the agency already has {live} webhooks registered, the most allowed is {} \
                 (notifications.max_webhooks_per_agency); delete one first",
                self.max_webhooks
            )));
        }
        let webhook_id = Uuid::now_v7();
        let sealed = signing::seal(&self.keys, webhook_id, &secret, None);
        let view = match store::insert_webhook(
            &mut transaction,
            webhook_id,
            agency_id,
            url,
            &caller.subject,
            &sealed,
        )
        .await?
        {
            Some(view) => view,
            None => {
                let existing = store::lock_webhook_by_url(&mut transaction, agency_id, url)
                    .await?
                    .ok_or_else(|| ApiError::Unavailable("webhook changed, retry".into()))?;
                self.replace_secret(&mut transaction, &existing, &secret, !existing.deleted)
                    .await?
            }
        };
        transaction.commit().await?;
        tracing::info!(webhook_id = %view.webhook_id, "webhook registered");
        Ok((view, secret))
    }

    /// Stores `secret` as the webhook's current one, keeping the current
    /// one as previous for the overlap when `overlap`.
    async fn replace_secret(
        &self,
        connection: &mut sqlx::PgConnection,
        existing: &store::StoredSecrets,
        secret: &WebhookSecret,
        overlap: bool,
    ) -> Result<WebhookView, ApiError> {
        let previous = match (&existing.secret_key, &existing.secret_sealed, overlap) {
            (Some(key), Some(sealed), true) => Some(
                signing::open(&self.keys, existing.webhook_id, key, sealed, None)
                    .map_err(|error| ApiError::Internal(error.into()))?
                    .0,
            ),
            _ => None,
        };
        let sealed = signing::seal(&self.keys, existing.webhook_id, secret, previous.as_ref());
        let until = previous.as_ref().map(|_| {
            Utc::now() + chrono::Duration::from_std(self.secret_overlap).unwrap_or_default()
        });
        Ok(store::store_secrets(connection, existing.webhook_id, &sealed, until).await?)
    }

    /// The agency's webhooks: registration keeps them under the cap (at
    /// most one page), so one answer holds them all; the page maximum
    /// bounds the answer even for an agency left above a cap lowered since.
    pub async fn list(&self, agency_id: &str) -> Result<Vec<WebhookView>, ApiError> {
        let mut connection = self.pool.acquire().await?;
        let limit = i64::from(page::MAX_PAGE_SIZE);
        Ok(store::list_webhooks(&mut connection, agency_id, limit).await?)
    }

    pub async fn disable(
        &self,
        agency_id: &str,
        webhook_id: Uuid,
    ) -> Result<WebhookView, ApiError> {
        let mut connection = self.pool.acquire().await?;
        let view = store::disable_webhook(&mut connection, agency_id, webhook_id)
            .await?
            .ok_or_else(|| not_found(webhook_id))?;
        tracing::info!(%webhook_id, "webhook disabled");
        Ok(view)
    }

    /// Deletes the webhook and cancels its pending deliveries; returns how
    /// many were cancelled.
    pub async fn delete(&self, agency_id: &str, webhook_id: Uuid) -> Result<u64, ApiError> {
        let mut transaction = self.pool.begin().await?;
        if !store::delete_webhook(&mut transaction, agency_id, webhook_id).await? {
            return Err(not_found(webhook_id));
        }
        let cancelled = store::cancel_pending_deliveries(&mut transaction, webhook_id).await?;
        transaction.commit().await?;
        tracing::info!(%webhook_id, cancelled, "webhook deleted");
        Ok(cancelled)
    }

    pub async fn rotate(
        &self,
        agency_id: &str,
        webhook_id: Uuid,
    ) -> Result<(WebhookView, WebhookSecret), ApiError> {
        let mut transaction = self.pool.begin().await?;
        let existing = store::lock_webhook(&mut transaction, agency_id, webhook_id)
            .await?
            .ok_or_else(|| not_found(webhook_id))?;
        let secret = WebhookSecret::generate();
        let view = self
            .replace_secret(&mut transaction, &existing, &secret, true)
            .await?;
        transaction.commit().await?;
        tracing::info!(%webhook_id, "webhook secret rotated");
        Ok((view, secret))
    }

    /// Queues one delivery again, or every dead or failed one of a webhook
    /// since a time; returns how many.
    pub async fn redeliver(
        &self,
        agency_id: &str,
        request: &RedeliverDeliveriesRequest,
    ) -> Result<u64, ApiError> {
        let target = parse_redelivery(request)?;
        let mut transaction = self.pool.begin().await?;
        let count = match target {
            Redelivery::One(delivery_id) => {
                let (state, open) =
                    store::delivery_of_agency(&mut transaction, agency_id, delivery_id)
                        .await?
                        .ok_or_else(|| ApiError::NotFound(format!("delivery {delivery_id}")))?;
                if !open {
                    return Err(ApiError::FailedPrecondition(
                        "the delivery's webhook is disabled or deleted".into(),
                    ));
                }
                if state == store::state::PENDING {
                    return Err(ApiError::FailedPrecondition(
                        "the delivery is still pending".into(),
                    ));
                }
                store::requeue_delivery(&mut transaction, delivery_id).await?
            }
            Redelivery::Since(webhook_id, since) => {
                match store::webhook_is_open(&mut transaction, agency_id, webhook_id).await? {
                    None => return Err(not_found(webhook_id)),
                    Some(false) => {
                        return Err(ApiError::FailedPrecondition(
                            "the webhook is disabled".into(),
                        ));
                    }
                    Some(true) => {}
                }
                store::requeue_deliveries_since(&mut transaction, webhook_id, since).await?
            }
        };
        crate::db::notify_committed(&mut transaction, agency_id).await?;
        transaction.commit().await?;
        tracing::info!(count, "webhook deliveries queued again");
        Ok(count)
    }

    /// One page of the delivery log with each delivery's attempts.
    pub async fn deliveries(
        &self,
        agency_id: &str,
        query: &DeliveryQuery,
    ) -> Result<(Vec<DeliveryRow>, HashMap<Uuid, Vec<AttemptRow>>), ApiError> {
        // One snapshot for both reads: a delivery and its attempts are
        // recorded together, so they must be read together, or an attempt
        // committed between the two reads shows beside a delivery row from
        // before it.
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *transaction)
            .await?;
        let rows = store::list_deliveries(&mut transaction, agency_id, query).await?;
        let ids: Vec<Uuid> = rows.iter().map(|row| row.delivery_id).collect();
        let mut attempts: HashMap<Uuid, Vec<AttemptRow>> = HashMap::new();
        for attempt in store::attempts_of(&mut transaction, &ids, MAX_ATTEMPTS_SHOWN).await? {
            attempts
                .entry(attempt.delivery_id)
                .or_default()
                .push(attempt);
        }
        transaction.commit().await?;
        Ok((rows, attempts))
    }
}

/// What a redelivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Redelivery {
    One(Uuid),
    Since(Uuid, DateTime<Utc>),
}

/// One delivery, or a webhook and a time; never both, never neither.
pub fn parse_redelivery(request: &RedeliverDeliveriesRequest) -> Result<Redelivery, ApiError> {
    let mut violations = FieldViolations::new();
    let one = !request.delivery_id.is_empty();
    let many = !request.webhook_id.is_empty() || request.since.is_some();
    let parsed = match (one, many) {
        (true, true) => {
            violations.add(
                "delivery_id",
                "give either delivery_id or webhook_id and since",
            );
            None
        }
        (false, false) => {
            violations.add(
                "delivery_id",
                "give either delivery_id or webhook_id and since",
            );
            None
        }
        (true, false) => cpm_runtime::grpc::values::parse_id(
            "delivery_id",
            &request.delivery_id,
            &mut violations,
        )
        .map(Redelivery::One),
        (false, true) => {
            let webhook = cpm_runtime::grpc::values::parse_id(
                "webhook_id",
                &request.webhook_id,
                &mut violations,
            );
            let since = match request.since.as_ref() {
                None => {
                    violations.add("since", "is required with webhook_id");
                    None
                }
                Some(at) => {
                    let parsed = from_timestamp(at);
                    if parsed.is_none() {
                        violations.add("since", "is not a valid time");
                    }
                    parsed
                }
            };
            webhook
                .zip(since)
                .map(|(webhook, since)| Redelivery::Since(webhook, since))
        }
    };
    violations.into_result()?;
    Ok(parsed.expect("no violation means a target"))
}

/// The log's filters and page from a request; `limit` is one more than
/// the page, to tell whether another follows.
pub fn parse_delivery_query(
    request: &ListDeliveriesRequest,
) -> Result<(DeliveryQuery, i64), ApiError> {
    let mut violations = FieldViolations::new();
    let limit = page::page_size(request.page_size, &mut violations);
    // Where the last delivery shown sorts: its notification, then itself
    // (newest first).
    let after = page::decode_cursor(&request.page_token, &mut violations, |parts| match parts {
        [notification, delivery] => {
            Some((page::parse_id(notification)?, page::parse_id(delivery)?))
        }
        _ => None,
    });
    let webhook_id = (!request.webhook_id.is_empty())
        .then(|| {
            cpm_runtime::grpc::values::parse_id("webhook_id", &request.webhook_id, &mut violations)
        })
        .flatten();
    let states: Vec<DeliveryState> = parse_enum_list("states", &request.states, 8, &mut violations);
    let kinds: Vec<NotificationKind> = parse_enum_list("kinds", &request.kinds, 8, &mut violations);
    let since = request.since.as_ref().and_then(|at| {
        let parsed = from_timestamp(at);
        if parsed.is_none() {
            violations.add("since", "is not a valid time");
        }
        parsed
    });
    violations.into_result()?;
    Ok((
        DeliveryQuery {
            webhook_id,
            states: states.into_iter().map(|state| state as i32).collect(),
            kinds: kinds.into_iter().map(|kind| kind as i32).collect(),
            since,
            after,
            limit: limit + 1,
        },
        limit,
    ))
}

pub fn attempt_to_proto(row: &AttemptRow) -> DeliveryAttempt {
    DeliveryAttempt {
        attempted_at: Some(timestamp(row.attempted_at)),
        channel: row.channel.clone(),
        status_code: row.status_code,
        latency_ms: row.latency_ms,
        error: row.error_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<impl std::fmt::Debug, ApiError>) -> Vec<String> {
        match result.expect_err("refused") {
            ApiError::InvalidArgument(violations) => {
                violations.fields().map(str::to_owned).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_redelivery_names_one_delivery_or_a_webhook_and_a_time() {
        let id = Uuid::now_v7();
        let since = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(
            parse_redelivery(&RedeliverDeliveriesRequest {
                delivery_id: id.to_string(),
                ..Default::default()
            })
            .unwrap(),
            Redelivery::One(id)
        );
        assert!(matches!(
            parse_redelivery(&RedeliverDeliveriesRequest {
                webhook_id: id.to_string(),
                since: Some(since),
                ..Default::default()
            }),
            Ok(Redelivery::Since(webhook, _)) if webhook == id
        ));
        assert_eq!(
            fields(parse_redelivery(&RedeliverDeliveriesRequest::default())),
            ["delivery_id"]
        );
        assert_eq!(
            fields(parse_redelivery(&RedeliverDeliveriesRequest {
                delivery_id: id.to_string(),
                webhook_id: id.to_string(),
                since: Some(since),
            })),
            ["delivery_id"]
        );
        assert_eq!(
            fields(parse_redelivery(&RedeliverDeliveriesRequest {
                webhook_id: "x".into(),
                ..Default::default()
            })),
            ["webhook_id", "since"]
        );
    }

    #[test]
    fn delivery_filters_are_checked() {
        let ok = parse_delivery_query(&ListDeliveriesRequest {
            states: vec![DeliveryState::Dead as i32, DeliveryState::Dead as i32],
            kinds: vec![NotificationKind::Discharged as i32],
            ..Default::default()
        })
        .unwrap()
        .0;
        assert_eq!(ok.states, [DeliveryState::Dead as i32]);
        assert_eq!(ok.kinds, [NotificationKind::Discharged as i32]);
        assert_eq!(
            fields(parse_delivery_query(&ListDeliveriesRequest {
                webhook_id: "nope".into(),
                states: vec![0, 99],
                kinds: vec![42],
                since: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1
                }),
                ..Default::default()
            })),
            ["webhook_id", "states[0]", "states[1]", "kinds[0]", "since"]
        );
    }
}
