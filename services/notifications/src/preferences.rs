//! Who wants which notifications, on which channels. An agency's
//! preferences (set by admins: there is no agency-admin role) choose the
//! kinds sent on the stream, to its webhooks and by e-mail to the agency's
//! own addresses; each referrer chooses the kinds e-mailed to their own
//! addresses. With nothing set an agency gets every kind on the stream and
//! its webhooks, and nobody gets e-mail. The notification writer asks
//! [`channels_for`] where each notification goes.

use chrono::{DateTime, Utc};
use cpm_proto::v1::{NotificationChannel, NotificationKind, PreferenceScope};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::grpc::values::{check_entries, check_text, parse_enum, parse_enum_list};
use cpm_runtime::grpc::{ApiError, FieldViolations};
use sqlx::PgConnection;

/// The subject under which an agency's own preferences are kept.
pub const AGENCY_SUBJECT: &str = "";

/// At most this many e-mail addresses per agency or referrer.
pub const MAX_EMAIL_ADDRESSES: usize = 5;

/// What one agency or referrer chose, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub kinds: Vec<NotificationKind>,
    pub channels: Vec<NotificationChannel>,
    pub email_addresses: Vec<String>,
}

impl Choice {
    /// An agency's choice when it set none.
    pub fn agency_default() -> Self {
        Self {
            kinds: vec![
                NotificationKind::StatusChanged,
                NotificationKind::Discharged,
            ],
            channels: vec![
                NotificationChannel::Stream,
                NotificationChannel::Webhook,
                NotificationChannel::Feed,
            ],
            email_addresses: Vec::new(),
        }
    }

    /// A referrer's choice when they set none: no e-mail.
    pub fn referrer_default() -> Self {
        Self {
            kinds: Vec::new(),
            channels: Vec::new(),
            email_addresses: Vec::new(),
        }
    }

    fn sends(&self, kind: NotificationKind, channel: NotificationChannel) -> bool {
        self.kinds.contains(&kind) && self.channels.contains(&channel)
    }
}

/// A request to set preferences, parsed at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetPreferences {
    pub scope: PreferenceScope,
    pub choice: Choice,
}

/// Parses a SetNotificationPreferences request's fields, collecting every
/// violation. A referrer's own preferences may name e-mail only: the
/// stream and the webhooks belong to the agency.
pub fn parse_set(
    scope: i32,
    kinds: &[i32],
    channels: &[i32],
    email_addresses: &[String],
) -> Result<SetPreferences, FieldViolations> {
    let mut violations = FieldViolations::new();
    let scope = parse_enum::<PreferenceScope>("scope", scope, &mut violations);
    let kinds = parse_enum_list::<NotificationKind>("kinds", kinds, 8, &mut violations);
    let channels = parse_enum_list::<NotificationChannel>("channels", channels, 8, &mut violations);
    if scope == Some(PreferenceScope::Referrer) {
        for (index, channel) in channels.iter().enumerate() {
            if *channel != NotificationChannel::Email {
                violations.add(
                    format!("channels[{index}]"),
                    "a referrer chooses e-mail only; the stream and webhooks are the agency's",
                );
            }
        }
    }
    let addresses = parse_addresses("email_addresses", email_addresses, &mut violations);
    if channels.contains(&NotificationChannel::Email) && addresses.is_empty() {
        violations.add("email_addresses", "e-mail needs at least one address");
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(SetPreferences {
        scope: scope.expect("no violation means a scope"),
        choice: Choice {
            kinds,
            channels,
            email_addresses: addresses,
        },
    })
}

/// At most [`MAX_EMAIL_ADDRESSES`] valid e-mail addresses in `field`,
/// trimmed, each once (letter case aside), in the order given.
pub fn parse_addresses(
    field: &str,
    email_addresses: &[String],
    violations: &mut FieldViolations,
) -> Vec<String> {
    let mut addresses: Vec<String> = Vec::new();
    if check_entries(field, email_addresses, MAX_EMAIL_ADDRESSES, violations) {
        for (index, address) in email_addresses.iter().enumerate() {
            let entry = format!("{field}[{index}]");
            let address = address.trim();
            if check_email_address(&entry, address, violations)
                && !addresses
                    .iter()
                    .any(|known| known.eq_ignore_ascii_case(address))
            {
                addresses.push(address.to_owned());
            }
        }
    }
    addresses
}

/// An e-mail address: at most 254 characters, no spaces or control
/// characters, one `@` between a local part (at most 64 characters of the
/// usual unquoted set) and a domain of dotted labels (letters, digits,
/// hyphens; not starting or ending with a hyphen). Quoted local parts and
/// address literals are refused. True when it is valid.
pub fn check_email_address(field: &str, address: &str, violations: &mut FieldViolations) -> bool {
    let problem = email_address_problem(address);
    if let Some(problem) = problem {
        violations.add(field, problem);
        false
    } else {
        true
    }
}

fn email_address_problem(address: &str) -> Option<&'static str> {
    if address.is_empty() {
        return Some("must not be empty");
    }
    if address.len() > 254 {
        return Some("must be at most 254 characters");
    }
    if address.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("must not contain spaces or control characters");
    }
    if !address.is_ascii() {
        return Some("must be plain ASCII");
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Some("must be an address like name@agency.example");
    };
    if local.is_empty() || local.len() > 64 {
        return Some("must have a local part of 1 to 64 characters");
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Some("has a local part with characters an address cannot hold");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !domain_ok {
        return Some("must have a domain like agency.example");
    }
    if address.parse::<lettre::Address>().is_err() {
        return Some("is not an e-mail address");
    }
    None
}

/// Whose preferences a caller reads (`setting` false) or sets: a
/// referrer's own, or (reading only) their agency's; an admin's, the named
/// agency's. Returns the agency and the subject they are kept under.
pub fn addressee(
    caller: &Caller,
    scope: PreferenceScope,
    agency_id: &str,
    setting: bool,
) -> Result<(String, String), ApiError> {
    let agency_id = agency_id.trim();
    match (caller.role, scope) {
        (Role::Referrer, _) => {
            let own = caller
                .agency_id
                .as_deref()
                .ok_or_else(|| ApiError::PermissionDenied("the token names no agency".into()))?;
            if !agency_id.is_empty() && agency_id != own {
                let mut violations = FieldViolations::new();
                violations.add("agency_id", "a referrer names no agency: the token does");
                return Err(ApiError::InvalidArgument(violations));
            }
            match scope {
                PreferenceScope::Referrer => Ok((own.to_owned(), caller.subject.clone())),
                PreferenceScope::Agency if !setting => {
                    Ok((own.to_owned(), AGENCY_SUBJECT.to_owned()))
                }
                _ => Err(ApiError::PermissionDenied(
                    "an agency's preferences are set by admins".into(),
                )),
            }
        }
        (Role::Admin, PreferenceScope::Agency) => {
            let mut violations = FieldViolations::new();
            check_text("agency_id", agency_id, true, 200, &mut violations);
            violations.into_result()?;
            Ok((agency_id.to_owned(), AGENCY_SUBJECT.to_owned()))
        }
        (Role::Admin, _) => {
            let mut violations = FieldViolations::new();
            violations.add(
                "scope",
                "admins read and set an agency's preferences (AGENCY)",
            );
            Err(ApiError::InvalidArgument(violations))
        }
        _ => Err(ApiError::PermissionDenied(
            "preferences are for referrers and admins".into(),
        )),
    }
}

/// Preferences as stored.
#[derive(Clone, Debug)]
pub struct PreferenceRow {
    pub agency_id: String,
    pub subject: String,
    pub choice: Choice,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

struct StoredRow {
    agency_id: String,
    subject: String,
    kinds: Vec<i32>,
    channels: Vec<i32>,
    email_addresses: Vec<String>,
    updated_by: String,
    updated_at: DateTime<Utc>,
}

impl From<StoredRow> for PreferenceRow {
    fn from(row: StoredRow) -> Self {
        // Stored values were checked when set; an unknown one (a newer
        // release's) is skipped rather than guessed.
        let kinds = row
            .kinds
            .iter()
            .filter_map(|kind| NotificationKind::try_from(*kind).ok())
            .collect();
        let channels = row
            .channels
            .iter()
            .filter_map(|channel| NotificationChannel::try_from(*channel).ok())
            .collect();
        PreferenceRow {
            agency_id: row.agency_id,
            subject: row.subject,
            choice: Choice {
                kinds,
                channels,
                email_addresses: row.email_addresses,
            },
            updated_by: row.updated_by,
            updated_at: row.updated_at,
        }
    }
}

/// Sets the preferences of `subject` in `agency_id` (the agency's own
/// under [`AGENCY_SUBJECT`]).
pub async fn upsert(
    connection: &mut PgConnection,
    agency_id: &str,
    subject: &str,
    choice: &Choice,
    updated_by: &str,
) -> Result<PreferenceRow, sqlx::Error> {
    let kinds: Vec<i32> = choice.kinds.iter().map(|kind| *kind as i32).collect();
    let channels: Vec<i32> = choice.channels.iter().map(|c| *c as i32).collect();
    let row = sqlx::query_as!(
        StoredRow,
        "INSERT INTO notifications.notification_preference \
           (agency_id, subject, kinds, channels, email_addresses, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (agency_id, subject) DO UPDATE SET kinds = $3, channels = $4, \
           email_addresses = $5, updated_by = $6, updated_at = now() \
         RETURNING agency_id, subject, kinds, channels, email_addresses, updated_by, updated_at",
        agency_id,
        subject,
        &kinds,
        &channels,
        &choice.email_addresses,
        updated_by
    )
    .fetch_one(connection)
    .await?;
    Ok(row.into())
}

/// The preferences `subject` set in `agency_id`, if any.
pub async fn find(
    connection: &mut PgConnection,
    agency_id: &str,
    subject: &str,
) -> Result<Option<PreferenceRow>, sqlx::Error> {
    let row = sqlx::query_as!(
        StoredRow,
        "SELECT agency_id, subject, kinds, channels, email_addresses, updated_by, updated_at \
         FROM notifications.notification_preference WHERE agency_id = $1 AND subject = $2",
        agency_id,
        subject
    )
    .fetch_optional(connection)
    .await?;
    Ok(row.map(PreferenceRow::from))
}

/// Where one notification goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    pub stream: bool,
    pub webhook: bool,
    /// The agency feed ([`crate::feed`]).
    pub feed: bool,
    /// The addresses to e-mail, each once.
    pub email_recipients: Vec<String>,
}

/// Where a notification of `kind` for `agency_id` goes: the agency's
/// choice (or the default) for the stream, webhooks, the feed and its own
/// addresses, and the choice of the referrer who submitted the referral
/// (`submitted_by`) for theirs.
pub async fn channels_for(
    connection: &mut PgConnection,
    agency_id: &str,
    submitted_by: &str,
    kind: NotificationKind,
) -> Result<Channels, sqlx::Error> {
    let rows = sqlx::query_as!(
        StoredRow,
        "SELECT agency_id, subject, kinds, channels, email_addresses, updated_by, updated_at \
         FROM notifications.notification_preference WHERE agency_id = $1 ORDER BY subject",
        agency_id
    )
    .fetch_all(connection)
    .await?;
    let rows: Vec<PreferenceRow> = rows.into_iter().map(PreferenceRow::from).collect();
    Ok(resolve(&rows, submitted_by, kind))
}

/// [`channels_for`] on rows already read.
pub fn resolve(rows: &[PreferenceRow], submitted_by: &str, kind: NotificationKind) -> Channels {
    let agency = rows
        .iter()
        .find(|row| row.subject == AGENCY_SUBJECT)
        .map_or_else(Choice::agency_default, |row| row.choice.clone());
    let mut channels = Channels {
        stream: agency.sends(kind, NotificationChannel::Stream),
        webhook: agency.sends(kind, NotificationChannel::Webhook),
        feed: agency.sends(kind, NotificationChannel::Feed),
        email_recipients: Vec::new(),
    };
    let choices = std::iter::once(&agency).chain(
        // A referrer hears of their own referrals only; an event that
        // names no submitter reaches no referrer's own addresses.
        rows.iter()
            .filter(|row| row.subject != AGENCY_SUBJECT)
            .filter(|row| !submitted_by.is_empty() && row.subject == submitted_by)
            .map(|row| &row.choice),
    );
    for choice in choices.filter(|choice| choice.sends(kind, NotificationChannel::Email)) {
        for address in &choice.email_addresses {
            if !channels
                .email_recipients
                .iter()
                .any(|known| known.eq_ignore_ascii_case(address))
            {
                channels.email_recipients.push(address.clone());
            }
        }
    }
    channels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(address: &str) -> Option<&'static str> {
        email_address_problem(address)
    }

    #[test]
    fn email_addresses_are_checked() {
        for good in [
            "referrals@police.example",
            "first.last+cpm@council.gov.example",
            "a@b.co",
        ] {
            assert_eq!(problem(good), None, "{good}");
        }
        for bad in [
            "",
            "no-at-sign",
            "two@@agency.example",
            "a@b@agency.example",
            "@agency.example",
            "name@",
            "name@localhost",
            "name@-agency.example",
            "name@agency..example",
            ".name@agency.example",
            "na..me@agency.example",
            "name with space@agency.example",
            "name@agency.example\r\nBcc: x@evil.example",
            "name\u{0}@agency.example",
            "nåme@agency.example",
            "\"quoted\"@agency.example",
            "name@[127.0.0.1]",
        ] {
            assert!(problem(bad).is_some(), "{bad:?} accepted");
        }
        let long_local = format!("{}@agency.example", "a".repeat(65));
        assert!(problem(&long_local).is_some());
        let long = format!("a@{}.example", "b".repeat(250));
        assert!(problem(&long).is_some());
    }

    fn fields(result: Result<SetPreferences, FieldViolations>) -> Vec<String> {
        result
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    }

    const STATUS: i32 = NotificationKind::StatusChanged as i32;
    const DISCHARGED: i32 = NotificationKind::Discharged as i32;
    const STREAM: i32 = NotificationChannel::Stream as i32;
    const WEBHOOK: i32 = NotificationChannel::Webhook as i32;
    const EMAIL: i32 = NotificationChannel::Email as i32;
    const AGENCY: i32 = PreferenceScope::Agency as i32;
    const REFERRER: i32 = PreferenceScope::Referrer as i32;

    #[test]
    fn preferences_parse_with_repeats_dropped() {
        let parsed = parse_set(
            REFERRER,
            &[DISCHARGED, DISCHARGED],
            &[EMAIL],
            &["me@police.example".into(), " ME@police.example ".into()],
        )
        .unwrap();
        assert_eq!(parsed.scope, PreferenceScope::Referrer);
        assert_eq!(parsed.choice.kinds, vec![NotificationKind::Discharged]);
        assert_eq!(parsed.choice.email_addresses, vec!["me@police.example"]);

        let agency = parse_set(AGENCY, &[STATUS], &[STREAM, WEBHOOK], &[]).unwrap();
        assert_eq!(agency.choice.channels.len(), 2);
        // Nothing at all is a choice too: the agency hears nothing.
        assert!(parse_set(AGENCY, &[], &[], &[]).is_ok());
    }

    #[test]
    fn preferences_refuse_what_does_not_hold_together() {
        assert_eq!(fields(parse_set(0, &[], &[], &[])), vec!["scope"]);
        assert_eq!(
            fields(parse_set(AGENCY, &[0, 99], &[], &[])),
            vec!["kinds[0]", "kinds[1]"]
        );
        assert_eq!(
            fields(parse_set(
                REFERRER,
                &[STATUS],
                &[STREAM, EMAIL],
                &["a@b.example".into()]
            )),
            vec!["channels[0]"]
        );
        assert_eq!(
            fields(parse_set(REFERRER, &[STATUS], &[EMAIL], &[])),
            vec!["email_addresses"]
        );
        assert_eq!(
            fields(parse_set(AGENCY, &[STATUS], &[EMAIL], &["bad".into()])),
            vec!["email_addresses[0]", "email_addresses"]
        );
        let six: Vec<String> = (0..6).map(|n| format!("p{n}@agency.example")).collect();
        assert_eq!(
            fields(parse_set(AGENCY, &[STATUS], &[], &six)),
            vec!["email_addresses"]
        );
    }

    fn row(subject: &str, choice: Choice) -> PreferenceRow {
        PreferenceRow {
            agency_id: "agency".into(),
            subject: subject.into(),
            choice,
            updated_by: "admin".into(),
            updated_at: Utc::now(),
        }
    }

    fn caller(role: Role, agency: Option<&str>) -> Caller {
        Caller {
            subject: "someone".into(),
            role,
            agency_id: agency.map(str::to_owned),
            mentor_id: None,
            areas: vec![],
        }
    }

    #[test]
    fn referrers_keep_their_own_and_admins_the_agencys() {
        let referrer = caller(Role::Referrer, Some("police"));
        assert_eq!(
            addressee(&referrer, PreferenceScope::Referrer, "", true).unwrap(),
            ("police".into(), "someone".into())
        );
        assert_eq!(
            addressee(&referrer, PreferenceScope::Agency, "", false).unwrap(),
            ("police".into(), AGENCY_SUBJECT.into())
        );
        assert!(matches!(
            addressee(&referrer, PreferenceScope::Agency, "", true),
            Err(ApiError::PermissionDenied(_))
        ));
        assert!(matches!(
            addressee(&referrer, PreferenceScope::Referrer, "council", true),
            Err(ApiError::InvalidArgument(_))
        ));
        let admin = caller(Role::Admin, None);
        assert_eq!(
            addressee(&admin, PreferenceScope::Agency, " police ", true).unwrap(),
            ("police".into(), AGENCY_SUBJECT.into())
        );
        assert!(addressee(&admin, PreferenceScope::Agency, "", true).is_err());
        assert!(addressee(&admin, PreferenceScope::Referrer, "police", true).is_err());
        assert!(
            addressee(
                &caller(Role::Mentor, None),
                PreferenceScope::Referrer,
                "",
                false
            )
            .is_err()
        );
    }

    #[test]
    fn nothing_set_is_todays_behaviour_without_email() {
        let channels = resolve(&[], "referrer-1", NotificationKind::Discharged);
        assert_eq!(
            channels,
            Channels {
                stream: true,
                webhook: true,
                feed: true,
                email_recipients: vec![]
            }
        );
    }

    #[test]
    fn agency_and_referrer_choices_combine() {
        let rows = [
            row(
                AGENCY_SUBJECT,
                Choice {
                    kinds: vec![NotificationKind::Discharged],
                    channels: vec![NotificationChannel::Stream, NotificationChannel::Email],
                    email_addresses: vec!["team@police.example".into()],
                },
            ),
            row(
                "referrer-1",
                Choice {
                    kinds: vec![
                        NotificationKind::StatusChanged,
                        NotificationKind::Discharged,
                    ],
                    channels: vec![NotificationChannel::Email],
                    email_addresses: vec![
                        "one@police.example".into(),
                        "TEAM@police.example".into(),
                    ],
                },
            ),
        ];
        let discharged = resolve(&rows, "referrer-1", NotificationKind::Discharged);
        assert!(discharged.stream && !discharged.webhook && !discharged.feed);
        assert_eq!(
            discharged.email_recipients,
            vec!["team@police.example", "one@police.example"]
        );
        let status = resolve(&rows, "referrer-1", NotificationKind::StatusChanged);
        assert!(!status.stream && !status.webhook);
        assert_eq!(
            status.email_recipients,
            vec!["one@police.example", "TEAM@police.example"]
        );
        // Another referrer's referral: only the agency's addresses.
        let theirs = resolve(&rows, "referrer-2", NotificationKind::Discharged);
        assert_eq!(theirs.email_recipients, vec!["team@police.example"]);
        let unknown = resolve(&rows, "", NotificationKind::StatusChanged);
        assert!(unknown.email_recipients.is_empty());
    }
}
