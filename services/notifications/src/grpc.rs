//! `cpm.v1.NotificationsService`: an agency's live stream of notifications,
//! its webhooks and their deliveries. A referrer's token names the agency;
//! nothing of another agency is ever visible.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cpm_proto::v1::notifications_service_server::NotificationsService;
use cpm_proto::v1::{
    DeleteWebhookRequest, DeleteWebhookResponse, Delivery, DisableWebhookRequest,
    DisableWebhookResponse, GetStaffAlertRecipientsRequest, GetStaffAlertRecipientsResponse,
    ListDeliveriesRequest, ListDeliveriesResponse, ListStaffAlertsRequest, ListStaffAlertsResponse,
    ListWebhooksRequest, ListWebhooksResponse, Notification, RedeliverDeliveriesRequest,
    RedeliverDeliveriesResponse, RegisterWebhookRequest, RegisterWebhookResponse,
    RotateWebhookSecretRequest, RotateWebhookSecretResponse, SetStaffAlertRecipientsRequest,
    SetStaffAlertRecipientsResponse, StaffAlert, SubscribeRequest, SubscribeResponse,
};
use cpm_proto::v1::{
    GetNotificationPreferencesRequest, GetNotificationPreferencesResponse, NotificationPreferences,
    PreferenceScope, SetNotificationPreferencesRequest, SetNotificationPreferencesResponse,
};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::grpc::access::AccessTable;
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{optional_timestamp, require_id, timestamp};
use cpm_runtime::grpc::{ApiError, FieldViolations};
use cpm_runtime::supervisor::{Supervisor, TaskSpec};
use futures::Stream;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::db::NotificationRow;
use crate::staff_alerts::{self, AlertQuery, StaffAlertRow};
use crate::stream_leases::{StreamLease, StreamLeases};
use crate::webhook_admin::{self, WebhookAdmin, webhook_to_proto};
use crate::{commands, preferences};

/// Notifications are addressed to agencies: only their referrers subscribe.
/// Staff alerts are for coordinators (of their areas) and admins.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("Subscribe", &[Role::Referrer]),
    ("RegisterWebhook", &[Role::Referrer]),
    ("ListDeliveries", &[Role::Referrer]),
    ("ListWebhooks", &[Role::Referrer]),
    ("DisableWebhook", &[Role::Referrer]),
    ("DeleteWebhook", &[Role::Referrer]),
    ("RotateWebhookSecret", &[Role::Referrer]),
    ("RedeliverDeliveries", &[Role::Referrer]),
    ("ListStaffAlerts", &[Role::Coordinator, Role::Admin]),
    ("SetStaffAlertRecipients", &[Role::Admin]),
    ("GetStaffAlertRecipients", &[Role::Coordinator, Role::Admin]),
    ("SetNotificationPreferences", &[Role::Referrer, Role::Admin]),
    ("GetNotificationPreferences", &[Role::Referrer, Role::Admin]),
]);

/// Preferences as answered: the stored ones, or the defaults of `scope`.
fn preferences_to_proto(
    scope: PreferenceScope,
    agency_id: &str,
    subject: &str,
    row: Option<preferences::PreferenceRow>,
) -> NotificationPreferences {
    let defaults = row.is_none();
    let (choice, updated_by, updated_at) = match row {
        Some(row) => (row.choice, row.updated_by, Some(timestamp(row.updated_at))),
        None if scope == PreferenceScope::Agency => {
            (preferences::Choice::agency_default(), String::new(), None)
        }
        None => (preferences::Choice::referrer_default(), String::new(), None),
    };
    NotificationPreferences {
        scope: scope as i32,
        agency_id: agency_id.to_owned(),
        referrer: subject.to_owned(),
        kinds: choice.kinds.iter().map(|kind| *kind as i32).collect(),
        channels: choice.channels.iter().map(|c| *c as i32).collect(),
        email_addresses: choice.email_addresses,
        defaults,
        updated_by,
        updated_at,
    }
}

fn staff_alert_to_proto(row: &StaffAlertRow) -> StaffAlert {
    let id = |id: Option<uuid::Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    StaffAlert {
        alert_id: row.alert_id.to_string(),
        kind: row.kind,
        area: row.area.clone(),
        raised_at: Some(timestamp(row.raised_at)),
        delivered_at: optional_timestamp(row.delivered_at),
        mentor_id: id(row.mentor_id),
        mentor_alert_kind: row.mentor_alert_kind.unwrap_or_default(),
        since: row.since.map(|day| day.to_string()).unwrap_or_default(),
        referral_id: id(row.referral_id),
        concern_category: row.concern_category.unwrap_or_default(),
    }
}

pub struct Notifications {
    pool: PgPool,
    wake: watch::Receiver<u64>,
    shutdown: cpm_runtime::Shutdown,
    /// Runs each stream's pump, restarting it where it stopped if it fails.
    supervisor: Supervisor,
    allow_plain_http: bool,
    /// The webhook use cases (see [`crate::webhook_admin`]).
    webhooks: Arc<WebhookAdmin>,
    /// The programme's areas: staff alert recipients are set per area.
    programme: cpm_runtime::config::ProgrammeConfig,
    /// Subscribe streams open per agency across the deployment, capped.
    streams: StreamLeases,
}

impl Notifications {
    pub fn new(
        pool: PgPool,
        wake: watch::Receiver<u64>,
        context: &cpm_runtime::service::ServiceContext,
        allow_plain_http: bool,
        webhooks: Arc<WebhookAdmin>,
        streams: StreamLeases,
    ) -> Self {
        Self {
            streams,
            pool,
            wake,
            shutdown: context.shutdown.clone(),
            supervisor: context.supervisor.clone(),
            allow_plain_http,
            webhooks,
            programme: context.platform.programme.clone(),
        }
    }

    /// The area a staff-alert recipients request names, checked against the
    /// programme's; NOT_FOUND for a coordinator of other areas.
    fn staff_area(&self, caller: &Caller, area: &str) -> Result<String, Status> {
        let mut violations = FieldViolations::new();
        let area = self.programme.check_area("area", area, &mut violations);
        violations.into_result()?;
        let area = area.expect("validated");
        if !caller.sees_area(&area) {
            return Err(ApiError::NotFound("area".into()).into());
        }
        Ok(area)
    }
}

fn to_proto(row: &NotificationRow) -> Notification {
    Notification {
        notification_id: row.notification_id.to_string(),
        sequence: row.sequence,
        agency_id: row.agency_id.clone(),
        referral_id: row.referral_id.to_string(),
        kind: row.kind,
        status: row.status,
        created_at: Some(timestamp(row.created_at)),
        feedback: crate::body::decode_feedback(row.feedback.as_deref()),
        stage: row.stage.unwrap_or_default(),
        reason: row.reason.unwrap_or_default(),
        estimated_start: row
            .estimated_start
            .map(|day| day.to_string())
            .unwrap_or_default(),
        estimated_start_latest: row
            .estimated_start_latest
            .map(|day| day.to_string())
            .unwrap_or_default(),
    }
}

/// Sends notifications after `cursor` until the client leaves or the server
/// stops; wakes on commits, and polls in case a wake-up was missed. The
/// cursor advances with each notification handed to the stream, so a pump
/// restarted by the supervisor carries on where this one stopped.
async fn pump(
    pool: PgPool,
    agency_id: String,
    cursor: Arc<AtomicI64>,
    mut wake: watch::Receiver<u64>,
    shutdown: cpm_runtime::Shutdown,
    sender: mpsc::Sender<Result<SubscribeResponse, Status>>,
) -> anyhow::Result<()> {
    loop {
        let after = cursor.load(Ordering::SeqCst);
        match commands::notifications_after(&pool, &agency_id, after, 100).await {
            Ok(rows) => {
                let full = rows.len() == 100;
                for row in rows {
                    let message = SubscribeResponse {
                        notification: Some(to_proto(&row)),
                    };
                    if sender.send(Ok(message)).await.is_err() {
                        return Ok(());
                    }
                    cursor.store(row.sequence, Ordering::SeqCst);
                }
                if full {
                    continue;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "notification stream could not read, retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = sender.send(Err(Status::unavailable("server shutting down; resubscribe after the last sequence"))).await;
                return Ok(());
            }
            () = sender.closed() => return Ok(()),
            _ = wake.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

/// A stream's messages, holding the agency's stream slot for as long as the
/// server holds the response: tonic drops it when the client goes away, and
/// the pump's end (shutdown, or a failure given up on) ends it too.
struct SlottedStream {
    messages: ReceiverStream<Result<SubscribeResponse, Status>>,
    _lease: StreamLease,
}

impl Stream for SlottedStream {
    type Item = Result<SubscribeResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.messages).poll_next(context)
    }
}

#[tonic::async_trait]
impl NotificationsService for Notifications {
    type SubscribeStream = SubscribeStream;

    #[tracing::instrument(skip_all)]
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = Caller::of(&request)?;
        let agency_id = caller.agency()?.to_owned();
        let after = request.get_ref().after_sequence;
        if after < 0 {
            let mut violations = FieldViolations::new();
            violations.add("after_sequence", "must not be negative");
            return Err(violations.into());
        }
        let Some(lease) = self
            .streams
            .try_take(&agency_id)
            .await
            .map_err(ApiError::from)?
        else {
            tracing::info!(
                cap = self.streams.cap(),
                "notification stream refused: agency at its cap"
            );
            return Err(ApiError::ResourceExhausted(format!(
                "the agency already has {} notification streams open, the most allowed \
                 (notifications.max_streams_per_agency); close one, or resume a single stream \
                 with after_sequence",
                self.streams.cap()
            ))
            .into());
        };
        let (sender, receiver) = mpsc::channel(64);
        let cursor = Arc::new(AtomicI64::new(after));
        let (pool, wake, shutdown) = (self.pool.clone(), self.wake.clone(), self.shutdown.clone());
        self.supervisor.spawn(
            TaskSpec::per_client(crate::NAME, format!("{}.stream", crate::NAME)),
            move || {
                pump(
                    pool.clone(),
                    agency_id.clone(),
                    cursor.clone(),
                    wake.clone(),
                    shutdown.clone(),
                    sender.clone(),
                )
            },
        );
        Ok(Response::new(Box::pin(SlottedStream {
            messages: ReceiverStream::new(receiver),
            _lease: lease,
        })))
    }

    #[tracing::instrument(skip_all)]
    async fn register_webhook(
        &self,
        request: Request<RegisterWebhookRequest>,
    ) -> Result<Response<RegisterWebhookResponse>, Status> {
        let caller = Caller::of(&request)?;
        let agency_id = caller.agency()?;
        let url = request.get_ref().url.trim();
        let (view, secret) = self
            .webhooks
            .register(caller, agency_id, url, self.allow_plain_http)
            .await?;
        Ok(Response::new(RegisterWebhookResponse {
            webhook: Some(webhook_to_proto(view, Some(&secret))),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let views = self.webhooks.list(agency_id).await?;
        Ok(Response::new(ListWebhooksResponse {
            webhooks: views
                .into_iter()
                .map(|view| webhook_to_proto(view, None))
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn disable_webhook(
        &self,
        request: Request<DisableWebhookRequest>,
    ) -> Result<Response<DisableWebhookResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let webhook_id = require_id("webhook_id", &request.get_ref().webhook_id)?;
        let view = self.webhooks.disable(agency_id, webhook_id).await?;
        Ok(Response::new(DisableWebhookResponse {
            webhook: Some(webhook_to_proto(view, None)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_webhook(
        &self,
        request: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let webhook_id = require_id("webhook_id", &request.get_ref().webhook_id)?;
        let cancelled = self.webhooks.delete(agency_id, webhook_id).await?;
        Ok(Response::new(DeleteWebhookResponse {
            cancelled_deliveries: i64::try_from(cancelled).unwrap_or(i64::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let webhook_id = require_id("webhook_id", &request.get_ref().webhook_id)?;
        let (view, secret) = self.webhooks.rotate(agency_id, webhook_id).await?;
        Ok(Response::new(RotateWebhookSecretResponse {
            webhook: Some(webhook_to_proto(view, Some(&secret))),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn redeliver_deliveries(
        &self,
        request: Request<RedeliverDeliveriesRequest>,
    ) -> Result<Response<RedeliverDeliveriesResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let redelivered = self
            .webhooks
            .redeliver(agency_id, request.get_ref())
            .await?;
        Ok(Response::new(RedeliverDeliveriesResponse {
            redelivered: i64::try_from(redelivered).unwrap_or(i64::MAX),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let (query, limit) = webhook_admin::parse_delivery_query(request.get_ref())?;
        let (mut rows, mut attempts) = self.webhooks.deliveries(agency_id, &query).await?;
        let next_page_token = page::finish_page(&mut rows, limit, |row| {
            page::encode_token(&[
                &row.notification_id.to_string(),
                &row.delivery_id.to_string(),
            ])
        });
        Ok(Response::new(ListDeliveriesResponse {
            next_page_token,
            deliveries: rows
                .into_iter()
                .map(|row| Delivery {
                    attempt_log: attempts
                        .remove(&row.delivery_id)
                        .unwrap_or_default()
                        .iter()
                        .map(webhook_admin::attempt_to_proto)
                        .collect(),
                    delivery_id: row.delivery_id.to_string(),
                    webhook_id: row.webhook_id.to_string(),
                    notification_id: row.notification_id.to_string(),
                    kind: row.kind,
                    state: row.state,
                    attempts: row.attempts,
                    last_attempt_at: optional_timestamp(row.last_attempt_at),
                    last_error: row.last_error.unwrap_or_default(),
                    next_attempt_at: (row.state == crate::webhook_store::state::PENDING)
                        .then(|| timestamp(row.next_attempt_at)),
                    queued_at: Some(timestamp(row.queued_at)),
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_staff_alert_recipients(
        &self,
        request: Request<SetStaffAlertRecipientsRequest>,
    ) -> Result<Response<SetStaffAlertRecipientsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let message = request.get_ref();
        let mut violations = FieldViolations::new();
        let area = self
            .programme
            .check_area("area", &message.area, &mut violations);
        let addresses = crate::preferences::parse_addresses(
            "email_addresses",
            &message.email_addresses,
            &mut violations,
        );
        violations.into_result()?;
        let area = area.expect("validated");
        crate::staff_alerts::set_recipients(&self.pool, &area, &addresses, &caller.subject)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(SetStaffAlertRecipientsResponse {
            area,
            email_addresses: addresses,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_staff_alert_recipients(
        &self,
        request: Request<GetStaffAlertRecipientsRequest>,
    ) -> Result<Response<GetStaffAlertRecipientsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let area = self.staff_area(caller, &request.get_ref().area)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let email_addresses = crate::staff_alerts::recipients_of(&mut connection, &area)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(GetStaffAlertRecipientsResponse {
            area,
            email_addresses,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_staff_alerts(
        &self,
        request: Request<ListStaffAlertsRequest>,
    ) -> Result<Response<ListStaffAlertsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let message = request.get_ref();
        let mut violations = FieldViolations::new();
        let limit = page::page_size(message.page_size, &mut violations);
        let after =
            page::decode_cursor(&message.page_token, &mut violations, |parts| match parts {
                [raised, id] => Some((page::parse_instant(raised)?, page::parse_id(id)?)),
                _ => None,
            });
        violations.into_result()?;
        let query = AlertQuery {
            undelivered_only: message.undelivered_only,
            after,
            limit: limit + 1,
        };
        let mut rows = staff_alerts::list(&self.pool, &caller.area_scope(), &query)
            .await
            .map_err(cpm_runtime::grpc::ApiError::from)?;
        let next_page_token = page::finish_page(&mut rows, limit, |row| {
            page::encode_token(&[
                &page::instant_part(row.raised_at),
                &row.alert_id.to_string(),
            ])
        });
        Ok(Response::new(ListStaffAlertsResponse {
            alerts: rows.iter().map(staff_alert_to_proto).collect(),
            next_page_token,
        }))
    }
    #[tracing::instrument(skip_all)]
    async fn set_notification_preferences(
        &self,
        request: Request<SetNotificationPreferencesRequest>,
    ) -> Result<Response<SetNotificationPreferencesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let message = request.get_ref();
        let parsed = preferences::parse_set(
            message.scope,
            &message.kinds,
            &message.channels,
            &message.email_addresses,
        )
        .map_err(cpm_runtime::grpc::ApiError::InvalidArgument)?;
        let (agency_id, subject) =
            preferences::addressee(caller, parsed.scope, &message.agency_id, true)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let row = preferences::upsert(
            &mut connection,
            &agency_id,
            &subject,
            &parsed.choice,
            &caller.subject,
        )
        .await
        .map_err(ApiError::from)?;
        tracing::info!(
            scope = parsed.scope.as_str_name(),
            "notification preferences set"
        );
        Ok(Response::new(SetNotificationPreferencesResponse {
            preferences: Some(preferences_to_proto(
                parsed.scope,
                &agency_id,
                &subject,
                Some(row),
            )),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_notification_preferences(
        &self,
        request: Request<GetNotificationPreferencesRequest>,
    ) -> Result<Response<GetNotificationPreferencesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let message = request.get_ref();
        let mut violations = FieldViolations::new();
        let scope = cpm_runtime::grpc::values::parse_enum::<PreferenceScope>(
            "scope",
            message.scope,
            &mut violations,
        );
        violations.into_result()?;
        let scope = scope.expect("no violation means a scope");
        let (agency_id, subject) =
            preferences::addressee(caller, scope, &message.agency_id, false)?;
        let mut connection = self.pool.acquire().await.map_err(ApiError::from)?;
        let row = preferences::find(&mut connection, &agency_id, &subject)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(GetNotificationPreferencesResponse {
            preferences: Some(preferences_to_proto(scope, &agency_id, &subject, row)),
        }))
    }
}
