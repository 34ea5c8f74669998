//! What e-mails say: one template per purpose, a subject and a plain-text
//! body, configured under `[notifications.templates]` with a version
//! (defaults compiled in). A template can name only the placeholders of the
//! closed set [`Placeholder`], and [`Placeholders`] can only hold IDs,
//! dates, counts and enum labels: no name, date of birth, address or free
//! text about a client can be rendered, whatever a template says. Unknown
//! placeholders are refused when the configuration is checked.
//!
//! A version names one set of texts for good: it is recorded with its texts
//! on first use (`template_version`) and a start with other texts under the
//! same version is refused, so every e-mail's recorded version says what it
//! said.

use std::fmt::Write as _;

use chrono::NaiveDate;
use cpm_proto::v1::{
    ConcernCategory, DischargeFeedback, DischargeOutcome, MentorAlertKind, NonEngagementReason,
    NonEngagementStage, ReferralStatus, ReferralStatusChanged, RelapseSign,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of the compiled-in texts. Changing a default text means
/// changing this too.
pub const DEFAULT_VERSION: &str = "cpm-default-2";

/// What an e-mail is for: one template each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    ReferralReceived,
    UnderAssessment,
    Accepted,
    AwaitingMentors,
    SupportStarted,
    NotTakenOn,
    Discharged,
    Withdrawn,
    MentorAlert,
    UrgentConcern,
}

impl Purpose {
    pub const ALL: [Purpose; 10] = [
        Purpose::ReferralReceived,
        Purpose::UnderAssessment,
        Purpose::Accepted,
        Purpose::AwaitingMentors,
        Purpose::SupportStarted,
        Purpose::NotTakenOn,
        Purpose::Discharged,
        Purpose::Withdrawn,
        Purpose::MentorAlert,
        Purpose::UrgentConcern,
    ];

    /// Its key under `[notifications.templates]`.
    pub fn key(self) -> &'static str {
        match self {
            Purpose::ReferralReceived => "referral_received",
            Purpose::UnderAssessment => "under_assessment",
            Purpose::Accepted => "accepted",
            Purpose::AwaitingMentors => "awaiting_mentors",
            Purpose::SupportStarted => "support_started",
            Purpose::NotTakenOn => "not_taken_on",
            Purpose::Discharged => "discharged",
            Purpose::Withdrawn => "withdrawn",
            Purpose::MentorAlert => "mentor_alert",
            Purpose::UrgentConcern => "urgent_concern",
        }
    }

    /// The template telling a referrer of `status`; none for a status
    /// nobody is told of.
    pub fn for_status(status: ReferralStatus) -> Option<Purpose> {
        Some(match status {
            ReferralStatus::Received => Purpose::ReferralReceived,
            ReferralStatus::UnderAssessment => Purpose::UnderAssessment,
            ReferralStatus::Accepted => Purpose::Accepted,
            ReferralStatus::AwaitingMentors => Purpose::AwaitingMentors,
            ReferralStatus::InSupport => Purpose::SupportStarted,
            ReferralStatus::NotTakenOn => Purpose::NotTakenOn,
            ReferralStatus::Discharged => Purpose::Discharged,
            ReferralStatus::Withdrawn => Purpose::Withdrawn,
            ReferralStatus::Unspecified => return None,
        })
    }
}

/// The closed set of names a template may use between braces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    ReferralId,
    NotificationId,
    Status,
    ChangedOn,
    EstimatedStart,
    EstimatedStartLatest,
    Stage,
    Reason,
    StartedOn,
    DischargedOn,
    Contacts,
    GoalsSet,
    GoalsAchieved,
    Outcome,
    RelapseSigns,
    MentorId,
    MentorAlert,
    Since,
    ConcernId,
    ConcernCategory,
    TemplateVersion,
}

impl Placeholder {
    pub const ALL: [Placeholder; 21] = [
        Placeholder::ReferralId,
        Placeholder::NotificationId,
        Placeholder::Status,
        Placeholder::ChangedOn,
        Placeholder::EstimatedStart,
        Placeholder::EstimatedStartLatest,
        Placeholder::Stage,
        Placeholder::Reason,
        Placeholder::StartedOn,
        Placeholder::DischargedOn,
        Placeholder::Contacts,
        Placeholder::GoalsSet,
        Placeholder::GoalsAchieved,
        Placeholder::Outcome,
        Placeholder::RelapseSigns,
        Placeholder::MentorId,
        Placeholder::MentorAlert,
        Placeholder::Since,
        Placeholder::ConcernId,
        Placeholder::ConcernCategory,
        Placeholder::TemplateVersion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::ReferralId => "referral_id",
            Placeholder::NotificationId => "notification_id",
            Placeholder::Status => "status",
            Placeholder::ChangedOn => "changed_on",
            Placeholder::EstimatedStart => "estimated_start",
            Placeholder::EstimatedStartLatest => "estimated_start_latest",
            Placeholder::Stage => "stage",
            Placeholder::Reason => "reason",
            Placeholder::StartedOn => "started_on",
            Placeholder::DischargedOn => "discharged_on",
            Placeholder::Contacts => "contacts",
            Placeholder::GoalsSet => "goals_set",
            Placeholder::GoalsAchieved => "goals_achieved",
            Placeholder::Outcome => "outcome",
            Placeholder::RelapseSigns => "relapse_signs",
            Placeholder::MentorId => "mentor_id",
            Placeholder::MentorAlert => "mentor_alert",
            Placeholder::Since => "since",
            Placeholder::ConcernId => "concern_id",
            Placeholder::ConcernCategory => "concern_category",
            Placeholder::TemplateVersion => "template_version",
        }
    }

    fn parse(name: &str) -> Option<Placeholder> {
        Placeholder::ALL
            .into_iter()
            .find(|placeholder| placeholder.name() == name)
    }
}

/// The values a template is rendered with: IDs, dates, counts and enum
/// values only, by type. A value a notification does not have renders as
/// "not known".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placeholders {
    pub referral_id: Option<Uuid>,
    pub notification_id: Option<Uuid>,
    pub status: Option<ReferralStatus>,
    pub changed_on: Option<NaiveDate>,
    pub estimated_start: Option<NaiveDate>,
    pub estimated_start_latest: Option<NaiveDate>,
    pub stage: Option<NonEngagementStage>,
    pub reason: Option<NonEngagementReason>,
    pub started_on: Option<NaiveDate>,
    pub discharged_on: Option<NaiveDate>,
    pub contacts: Option<u32>,
    pub goals_set: Option<u32>,
    pub goals_achieved: Option<u32>,
    pub outcome: Option<DischargeOutcome>,
    pub relapse_signs: Vec<RelapseSign>,
    pub mentor_id: Option<Uuid>,
    pub mentor_alert: Option<MentorAlertKind>,
    pub since: Option<NaiveDate>,
    pub concern_id: Option<Uuid>,
    pub concern_category: Option<ConcernCategory>,
}

fn day_of(value: Option<&prost_types::Timestamp>) -> Option<NaiveDate> {
    cpm_runtime::grpc::values::from_timestamp(value?).map(|at| at.date_naive())
}

fn parse_day(value: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

fn count(value: i32) -> Option<u32> {
    u32::try_from(value).ok()
}

impl Placeholders {
    /// The values of a status change: the referral's ID, the status, the
    /// stage and reason categories, the estimated start range and the
    /// discharge proforma's dates, counts and categories. Its free-text
    /// re-referral instructions are not taken: the template says how to
    /// refer again.
    pub fn of_status_change(change: &ReferralStatusChanged) -> Self {
        let status = change.status();
        let mut values = Placeholders {
            referral_id: Uuid::parse_str(&change.referral_id).ok(),
            status: Some(status),
            changed_on: day_of(change.changed_at.as_ref()),
            ..Default::default()
        };
        match status {
            ReferralStatus::Received | ReferralStatus::AwaitingMentors => {
                values.estimated_start = day_of(change.estimated_start.as_ref());
                values.estimated_start_latest = day_of(change.estimated_start_latest.as_ref());
            }
            ReferralStatus::NotTakenOn => {
                values.stage = Some(change.stage());
                values.reason = Some(change.reason());
            }
            ReferralStatus::Discharged => {
                if let Some(feedback) = &change.feedback {
                    values.add_feedback(feedback);
                }
            }
            _ => {}
        }
        values
    }

    fn add_feedback(&mut self, feedback: &DischargeFeedback) {
        self.started_on = parse_day(&feedback.started_on);
        self.discharged_on = parse_day(&feedback.discharged_on);
        self.contacts = count(feedback.contacts);
        self.goals_set = count(feedback.goals_set);
        self.goals_achieved = count(feedback.goals_achieved);
        self.outcome = Some(feedback.outcome());
        self.relapse_signs = feedback.relapse_signs().collect();
    }

    /// The value of `placeholder`, rendered; `version` is the template
    /// version rendering it.
    fn value(&self, placeholder: Placeholder, version: &str) -> String {
        fn or_unknown<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
            value.map_or_else(|| "not known".to_owned(), show)
        }
        let day = |value: Option<NaiveDate>| or_unknown(value, |day| day.to_string());
        let id = |value: Option<Uuid>| or_unknown(value, |id| id.to_string());
        let number = |value: Option<u32>| or_unknown(value, |n| n.to_string());
        match placeholder {
            Placeholder::ReferralId => id(self.referral_id),
            Placeholder::NotificationId => id(self.notification_id),
            Placeholder::Status => or_unknown(self.status, |v| label(v.as_str_name())),
            Placeholder::ChangedOn => day(self.changed_on),
            Placeholder::EstimatedStart => day(self.estimated_start),
            Placeholder::EstimatedStartLatest => day(self.estimated_start_latest),
            Placeholder::Stage => or_unknown(self.stage, |v| label(v.as_str_name())),
            Placeholder::Reason => or_unknown(self.reason, |v| label(v.as_str_name())),
            Placeholder::StartedOn => day(self.started_on),
            Placeholder::DischargedOn => day(self.discharged_on),
            Placeholder::Contacts => number(self.contacts),
            Placeholder::GoalsSet => number(self.goals_set),
            Placeholder::GoalsAchieved => number(self.goals_achieved),
            Placeholder::Outcome => or_unknown(self.outcome, |v| label(v.as_str_name())),
            Placeholder::RelapseSigns => {
                if self.relapse_signs.is_empty() {
                    "none noted".to_owned()
                } else {
                    self.relapse_signs
                        .iter()
                        .map(|sign| label(sign.as_str_name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            }
            Placeholder::MentorId => id(self.mentor_id),
            Placeholder::MentorAlert => or_unknown(self.mentor_alert, |v| label(v.as_str_name())),
            Placeholder::Since => day(self.since),
            Placeholder::ConcernId => id(self.concern_id),
            Placeholder::ConcernCategory => {
                or_unknown(self.concern_category, |v| label(v.as_str_name()))
            }
            Placeholder::TemplateVersion => version.to_owned(),
        }
    }
}

/// An enum value's readable label: `DISCHARGE_OUTCOME_GOALS_ACHIEVED`
/// → "goals achieved". Enum names carry their type as a prefix of two
/// words at most; the one-word types (`NON_ENGAGEMENT_STAGE_` has three) are
/// listed.
fn label(name: &str) -> String {
    const PREFIXES: [&str; 8] = [
        "REFERRAL_STATUS_",
        "NON_ENGAGEMENT_STAGE_",
        "NON_ENGAGEMENT_REASON_",
        "DISCHARGE_OUTCOME_",
        "RELAPSE_SIGN_",
        "MENTOR_ALERT_KIND_",
        "CONCERN_CATEGORY_",
        "NOTIFICATION_KIND_",
    ];
    let bare = PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    bare.to_lowercase().replace('_', " ")
}

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

/// Parses `{placeholder}` references (`{{` and `}}` stand for braces);
/// refuses a name outside [`Placeholder`] and an unclosed or stray brace.
fn parse(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if c.is_ascii_lowercase() || c == '_' => name.push(c),
                        Some(_) | None => {
                            return Err(format!("unclosed or malformed placeholder `{{{name}`"));
                        }
                    }
                }
                let placeholder = Placeholder::parse(&name)
                    .ok_or_else(|| format!("unknown placeholder `{{{name}}}`"))?;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Value(placeholder));
            }
            '}' => return Err("a lone `}` (write `}}` for a brace)".to_owned()),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// One template's texts, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Text {
    pub subject: String,
    pub body: String,
}

fn text(subject: &str, body: &str) -> Text {
    Text {
        subject: subject.to_owned(),
        body: body.to_owned(),
    }
}

/// `[notifications.templates]`: the version and one [`Text`] per purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TemplatesConfig {
    pub version: String,
    pub referral_received: Text,
    pub under_assessment: Text,
    pub accepted: Text,
    pub awaiting_mentors: Text,
    pub support_started: Text,
    pub not_taken_on: Text,
    pub discharged: Text,
    pub withdrawn: Text,
    pub mentor_alert: Text,
    pub urgent_concern: Text,
}

const SIGN_OFF: &str = "\n\nThis message carries the referral's reference only. Look the referral \
up in the CPM service for anything else.\n\nCommunity Peer Mentor programme (templates \
{template_version})\n";

impl Default for TemplatesConfig {
    fn default() -> Self {
        let body = |text: &str| format!("{text}{SIGN_OFF}");
        Self {
            version: DEFAULT_VERSION.to_owned(),
            referral_received: text(
                "Referral {referral_id} received",
                &body(
                    "We have received referral {referral_id} on {changed_on}. A coordinator will assess it. If accepted today, support in its area would be expected to start by {estimated_start} (nine in ten by {estimated_start_latest}).",
                ),
            ),
            under_assessment: text(
                "Referral {referral_id} is being assessed",
                &body(
                    "Referral {referral_id} is being risk-assessed by the area's coordinators (since {changed_on}).",
                ),
            ),
            accepted: text(
                "Referral {referral_id} accepted",
                &body(
                    "Referral {referral_id} was accepted on {changed_on}. We are finding a pair of mentors.",
                ),
            ),
            awaiting_mentors: text(
                "Referral {referral_id} accepted: waiting for mentors",
                &body(
                    "Referral {referral_id} was accepted and is waiting for a pair of mentors.\n\
                       Support is expected to start around {estimated_start}, and by {estimated_start_latest} at the latest for nine in ten such referrals.",
                ),
            ),
            support_started: text(
                "Referral {referral_id}: support started",
                &body(
                    "Support for referral {referral_id} started on {changed_on} with a pair of mentors.",
                ),
            ),
            not_taken_on: text(
                "Referral {referral_id} not taken on",
                &body(
                    "Referral {referral_id} was not taken on ({changed_on}).\n\
                       Stage: {stage}\nReason: {reason}",
                ),
            ),
            discharged: text(
                "Referral {referral_id}: support ended (discharge feedback)",
                &body(
                    "Support for referral {referral_id} has ended.\n\n\
                       Support started: {started_on}\n\
                       Discharged: {discharged_on}\n\
                       Contacts made: {contacts}\n\
                       Goals set: {goals_set}\n\
                       Goals achieved: {goals_achieved}\n\
                       Outcome: {outcome}\n\
                       Signs of relapse to watch for: {relapse_signs}\n\n\
                       To refer the client again, submit a new referral through the CPM service \
                       quoting reference {referral_id}.",
                ),
            ),
            withdrawn: text(
                "Referral {referral_id} withdrawn",
                &body("Referral {referral_id} was withdrawn on {changed_on}."),
            ),
            mentor_alert: text(
                "Mentor {mentor_id} needs attention",
                &body("Mentor {mentor_id}: {mentor_alert} (since {since})."),
            ),
            urgent_concern: text(
                "Urgent concern on referral {referral_id}",
                &body(
                    "An urgent concern ({concern_category}) was raised on referral {referral_id}: concern {concern_id}. Resolve it in contact logging.",
                ),
            ),
        }
    }
}

impl TemplatesConfig {
    fn text(&self, purpose: Purpose) -> &Text {
        match purpose {
            Purpose::ReferralReceived => &self.referral_received,
            Purpose::UnderAssessment => &self.under_assessment,
            Purpose::Accepted => &self.accepted,
            Purpose::AwaitingMentors => &self.awaiting_mentors,
            Purpose::SupportStarted => &self.support_started,
            Purpose::NotTakenOn => &self.not_taken_on,
            Purpose::Discharged => &self.discharged,
            Purpose::Withdrawn => &self.withdrawn,
            Purpose::MentorAlert => &self.mentor_alert,
            Purpose::UrgentConcern => &self.urgent_concern,
        }
    }

    /// The texts as recorded under their version.
    pub fn texts_json(&self) -> String {
        serde_json::to_string(self).expect("templates serialise")
    }
}

/// Parsed templates, ready to render.
#[derive(Clone, Debug)]
pub struct Templates {
    version: String,
    parsed: Vec<(Purpose, Vec<Piece>, Vec<Piece>)>,
}

/// A rendered e-mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub purpose: Purpose,
    pub subject: String,
    pub body: String,
    pub version: String,
}

impl Templates {
    /// Checks and parses `config`; the error names the key at fault.
    pub fn new(config: &TemplatesConfig) -> Result<Self, (String, String)> {
        let version = config.version.trim();
        if version.is_empty() || version.len() > 64 || version.chars().any(char::is_control) {
            return Err((
                "notifications.templates.version".to_owned(),
                "must be 1 to 64 printable characters".to_owned(),
            ));
        }
        let mut parsed = Vec::new();
        for purpose in Purpose::ALL {
            let text = config.text(purpose);
            let key = |field: &str| format!("notifications.templates.{}.{field}", purpose.key());
            if text.subject.trim().is_empty() || text.subject.len() > 200 {
                return Err((key("subject"), "must be 1 to 200 characters".to_owned()));
            }
            if text.subject.chars().any(char::is_control) {
                return Err((key("subject"), "must be one line".to_owned()));
            }
            if text.body.trim().is_empty() || text.body.len() > 10_000 {
                return Err((key("body"), "must be 1 to 10000 characters".to_owned()));
            }
            let subject = parse(&text.subject).map_err(|problem| (key("subject"), problem))?;
            let body = parse(&text.body).map_err(|problem| (key("body"), problem))?;
            parsed.push((purpose, subject, body));
        }
        Ok(Self {
            version: version.to_owned(),
            parsed,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `purpose`'s subject and body with `values`.
    pub fn render(&self, purpose: Purpose, values: &Placeholders) -> Rendered {
        let (_, subject, body) = self
            .parsed
            .iter()
            .find(|(candidate, _, _)| *candidate == purpose)
            .expect("every purpose has a template");
        let fill = |pieces: &[Piece]| {
            let mut out = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Value(placeholder) => {
                        let _ = write!(out, "{}", values.value(*placeholder, &self.version));
                    }
                }
            }
            out
        };
        Rendered {
            purpose,
            subject: fill(subject),
            body: fill(body),
            version: self.version.clone(),
        }
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new(&TemplatesConfig::default()).expect("the default templates are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discharge_values() -> Placeholders {
        let change = ReferralStatusChanged {
            referral_id: "0190f5a2-7c1e-7b6e-9f00-000000000001".into(),
            agency_id: "agency".into(),
            status: ReferralStatus::Discharged as i32,
            feedback: Some(DischargeFeedback {
                referral_id: "0190f5a2-7c1e-7b6e-9f00-000000000001".into(),
                started_on: "2024-01-05".into(),
                discharged_on: "2024-09-30".into(),
                contacts: 31,
                outcome: DischargeOutcome::GoalsAchieved as i32,
                relapse_signs: vec![
                    RelapseSign::Isolation as i32,
                    RelapseSign::EmergencyCallsRising as i32,
                ],
                how_to_re_refer: "call Jane Doe at 1 Secret Street".into(),
                goals_set: 4,
                goals_achieved: 3,
            }),
            ..Default::default()
        };
        Placeholders::of_status_change(&change)
    }

    #[test]
    fn every_template_renders_with_no_placeholder_left() {
        let templates = Templates::default();
        let values = discharge_values();
        for purpose in Purpose::ALL {
            let rendered = templates.render(purpose, &values);
            for text in [&rendered.subject, &rendered.body] {
                assert!(!text.is_empty(), "{purpose:?}");
                assert!(
                    !text.contains('{') && !text.contains('}'),
                    "{purpose:?}: {text}"
                );
            }
            assert!(rendered.body.contains(DEFAULT_VERSION), "{purpose:?}");
            assert_eq!(rendered.version, DEFAULT_VERSION);
        }
    }

    #[test]
    fn the_discharge_template_carries_the_proforma_and_no_free_text() {
        let rendered = Templates::default().render(Purpose::Discharged, &discharge_values());
        for expected in [
            "0190f5a2-7c1e-7b6e-9f00-000000000001",
            "Support started: 2024-01-05",
            "Discharged: 2024-09-30",
            "Contacts made: 31",
            "Goals set: 4",
            "Goals achieved: 3",
            "Outcome: goals achieved",
            "isolation, emergency calls rising",
        ] {
            assert!(
                rendered.body.contains(expected),
                "{expected}: {}",
                rendered.body
            );
        }
        assert!(
            !rendered.body.contains("Jane"),
            "re-referral free text never rendered"
        );
    }

    #[test]
    fn status_templates_carry_their_ranges_and_categories() {
        let templates = Templates::default();
        let mut change = ReferralStatusChanged {
            referral_id: Uuid::nil().to_string(),
            status: ReferralStatus::AwaitingMentors as i32,
            estimated_start: Some(prost_types::Timestamp {
                seconds: 1_717_200_000,
                nanos: 0,
            }),
            estimated_start_latest: Some(prost_types::Timestamp {
                seconds: 1_722_470_400,
                nanos: 0,
            }),
            ..Default::default()
        };
        let waiting = templates.render(
            Purpose::AwaitingMentors,
            &Placeholders::of_status_change(&change),
        );
        assert!(
            waiting.body.contains("around 2024-06-01"),
            "{}",
            waiting.body
        );
        assert!(waiting.body.contains("by 2024-08-01"), "{}", waiting.body);
        change.status = ReferralStatus::NotTakenOn as i32;
        change.stage = NonEngagementStage::HomeVisit as i32;
        change.reason = NonEngagementReason::NoWillWantOrCapacity as i32;
        let not_taken_on = templates.render(
            Purpose::NotTakenOn,
            &Placeholders::of_status_change(&change),
        );
        assert!(not_taken_on.body.contains("Stage: home visit"));
        assert!(
            not_taken_on
                .body
                .contains("Reason: no will want or capacity")
        );
        assert_eq!(
            Purpose::for_status(ReferralStatus::InSupport),
            Some(Purpose::SupportStarted)
        );
        assert_eq!(Purpose::for_status(ReferralStatus::Unspecified), None);
    }

    #[test]
    fn missing_values_render_as_not_known() {
        let rendered = Templates::default().render(Purpose::Discharged, &Placeholders::default());
        assert!(rendered.body.contains("Contacts made: not known"));
        assert!(rendered.body.contains("watch for: none noted"));
    }

    #[test]
    fn a_malformed_feedback_date_is_not_rendered() {
        let mut change = ReferralStatusChanged {
            status: ReferralStatus::Discharged as i32,
            feedback: Some(DischargeFeedback {
                started_on: "Jane Doe".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(Placeholders::of_status_change(&change).started_on, None);
        change.referral_id = "not an id".into();
        assert_eq!(Placeholders::of_status_change(&change).referral_id, None);
    }

    #[test]
    fn placeholders_outside_the_closed_set_are_refused() {
        assert!(
            parse("Hello {client_name}")
                .unwrap_err()
                .contains("unknown")
        );
        assert!(parse("Hello {referral_id").is_err());
        assert!(parse("Hello {Referral_Id}").is_err());
        assert!(parse("a } b").is_err());
        assert!(parse("{}").is_err());
        assert_eq!(
            parse("{{literal}} {referral_id}").unwrap(),
            vec![
                Piece::Text("{literal} ".into()),
                Piece::Value(Placeholder::ReferralId)
            ]
        );
        for placeholder in Placeholder::ALL {
            assert_eq!(Placeholder::parse(placeholder.name()), Some(placeholder));
        }
    }

    #[test]
    fn configured_templates_are_checked_by_key() {
        let mut config = TemplatesConfig::default();
        config.discharged.body = "Dear {client_name}".into();
        let (key, problem) = Templates::new(&config).unwrap_err();
        assert_eq!(key, "notifications.templates.discharged.body");
        assert!(problem.contains("client_name"));

        let mut config = TemplatesConfig::default();
        config.accepted.subject = "two\nlines".into();
        assert_eq!(
            Templates::new(&config).unwrap_err().0,
            "notifications.templates.accepted.subject"
        );

        let mut config = TemplatesConfig::default();
        config.withdrawn.body = String::new();
        assert_eq!(
            Templates::new(&config).unwrap_err().0,
            "notifications.templates.withdrawn.body"
        );

        let config = TemplatesConfig {
            version: " ".into(),
            ..Default::default()
        };
        assert_eq!(
            Templates::new(&config).unwrap_err().0,
            "notifications.templates.version"
        );
    }

    #[test]
    fn templates_parse_from_configuration_with_defaults_for_the_rest() {
        let config: TemplatesConfig = toml::from_str(
            "version = \"2025-2\"\n[accepted]\nsubject = \"Accepted {referral_id}\"\nbody = \"Yes.\"\n",
        )
        .unwrap();
        assert_eq!(config.version, "2025-2");
        assert_eq!(config.accepted.body, "Yes.");
        assert_eq!(config.discharged, TemplatesConfig::default().discharged);
        let templates = Templates::new(&config).unwrap();
        let rendered = templates.render(Purpose::Accepted, &Placeholders::default());
        assert_eq!(rendered.subject, "Accepted not known");
        assert_eq!(rendered.version, "2025-2");
    }
}
