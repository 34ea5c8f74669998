//! Queries: requests that read assessments without changing them, namely
//! looking one up, listing an area's queue and counting outcomes over a
//! period. They are parsed here so the handlers get bounded, trimmed values
//! and every violation is reported at once. An area they name must be one
//! of the programme's (`ProgrammeConfig::optional_area`); whether the caller
//! works in it is decided with their scope (`AreaScope::covering`).

use chrono::{DateTime, Utc};
use cpm_proto::v1::{AssessmentStatsRequest, GetAssessmentRequest, ListQueueRequest};
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{from_timestamp, parse_id};
use uuid::Uuid;

/// Which assessment a GetAssessment request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssessmentLookup {
    Assessment(Uuid),
    Referral(Uuid),
}

impl AssessmentLookup {
    /// Exactly one of `assessment_id` and `referral_id` must be given.
    pub fn parse(request: &GetAssessmentRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let lookup = match (
            request.assessment_id.is_empty(),
            request.referral_id.is_empty(),
        ) {
            (true, true) => {
                violations.add(
                    "assessment_id",
                    "one of assessment_id or referral_id is required",
                );
                None
            }
            (false, false) => {
                violations.add("referral_id", "give assessment_id or referral_id, not both");
                None
            }
            (false, true) => parse_id("assessment_id", &request.assessment_id, &mut violations)
                .map(Self::Assessment),
            (true, false) => {
                parse_id("referral_id", &request.referral_id, &mut violations).map(Self::Referral)
            }
        };
        match lookup {
            Some(lookup) if violations.is_empty() => Ok(lookup),
            _ => Err(violations),
        }
    }
}

/// A valid ListQueue request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueQuery {
    /// A programme area in its registered spelling; `None` lists every
    /// area the caller works in.
    pub area: Option<String>,
    pub page_size: i64,
    /// Where the last assessment shown sorts (opened, ID): the queue is oldest first.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

impl QueueQuery {
    /// An area, when given, must be one of `programme`'s.
    pub fn parse(
        request: &ListQueueRequest,
        programme: &ProgrammeConfig,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let area = programme.optional_area("area", &request.area, &mut violations);
        let page_size = page::page_size(request.page_size, &mut violations);
        let after = page::time_and_id(&request.page_token, &mut violations);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            area,
            page_size,
            after,
        })
    }
}

/// A valid AssessmentStats request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// A programme area in its registered spelling; `None` counts every
    /// area the caller works in.
    pub area: Option<String>,
}

impl StatsQuery {
    /// An area, when given, must be one of `programme`'s.
    pub fn parse(
        request: &AssessmentStatsRequest,
        programme: &ProgrammeConfig,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let mut bound = |field: &str, value: &Option<prost_types::Timestamp>| match value {
            None => {
                violations.add(field, "is required");
                None
            }
            Some(value) => {
                let parsed = from_timestamp(value);
                if parsed.is_none() {
                    violations.add(field, "is not a valid time");
                }
                parsed
            }
        };
        let from = bound("from", &request.from);
        let to = bound("to", &request.to);
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            violations.add("to", "must be after from");
        }
        let area = programme.optional_area("area", &request.area, &mut violations);
        match (from, to) {
            (Some(from), Some(to)) if violations.is_empty() => Ok(Self { from, to, area }),
            _ => Err(violations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_support::fields;

    #[test]
    fn exactly_one_lookup_key_is_accepted() {
        let id = Uuid::now_v7();
        let by_assessment = GetAssessmentRequest {
            assessment_id: id.to_string(),
            referral_id: String::new(),
        };
        assert_eq!(
            AssessmentLookup::parse(&by_assessment),
            Ok(AssessmentLookup::Assessment(id))
        );
        let by_referral = GetAssessmentRequest {
            assessment_id: String::new(),
            referral_id: id.to_string(),
        };
        assert_eq!(
            AssessmentLookup::parse(&by_referral),
            Ok(AssessmentLookup::Referral(id))
        );
        let neither = GetAssessmentRequest::default();
        assert_eq!(
            fields(AssessmentLookup::parse(&neither).unwrap_err()),
            ["assessment_id"]
        );
        let both = GetAssessmentRequest {
            assessment_id: id.to_string(),
            referral_id: id.to_string(),
        };
        assert_eq!(
            fields(AssessmentLookup::parse(&both).unwrap_err()),
            ["referral_id"]
        );
        let malformed = GetAssessmentRequest {
            assessment_id: String::new(),
            referral_id: "x".into(),
        };
        assert_eq!(
            fields(AssessmentLookup::parse(&malformed).unwrap_err()),
            ["referral_id"]
        );
    }

    fn programme() -> ProgrammeConfig {
        ProgrammeConfig {
            areas: vec!["Darlington".into(), "East Durham".into()],
        }
    }

    #[test]
    fn queue_pages_default_to_fifty_and_stop_at_five_hundred() {
        let programme = programme();
        let query = QueueQuery::parse(&ListQueueRequest::default(), &programme).unwrap();
        assert_eq!(
            query,
            QueueQuery {
                area: None,
                page_size: i64::from(page::DEFAULT_PAGE_SIZE),
                after: None,
            }
        );
        let query = QueueQuery::parse(
            &ListQueueRequest {
                area: " darlington ".into(),
                page_size: 500,
                ..Default::default()
            },
            &programme,
        )
        .unwrap();
        assert_eq!(query.area.as_deref(), Some("Darlington"), "as registered");
        for page_size in [-1, 501] {
            let request = ListQueueRequest {
                area: String::new(),
                page_size,
                ..Default::default()
            };
            assert_eq!(
                fields(QueueQuery::parse(&request, &programme).unwrap_err()),
                ["page_size"]
            );
        }
    }

    #[test]
    fn a_queue_of_an_area_the_programme_does_not_register_is_refused() {
        let programme = programme();
        for area in [
            "Nowhere",
            "Darlington\u{200b}",
            "\u{200b}Darlington",
            "Darlington.",
        ] {
            let request = ListQueueRequest {
                area: area.into(),
                page_token: "not a token".into(),
                ..Default::default()
            };
            assert_eq!(
                fields(QueueQuery::parse(&request, &programme).unwrap_err()),
                ["area", "page_token"],
                "{area:?}"
            );
        }
    }

    #[test]
    fn stats_need_a_period_that_runs_forwards() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let programme = programme();
        let query = StatsQuery::parse(
            &AssessmentStatsRequest {
                from: at(1_700_000_000),
                to: at(1_710_000_000),
                area: " EAST DURHAM ".into(),
            },
            &programme,
        )
        .unwrap();
        assert_eq!(query.area.as_deref(), Some("East Durham"), "as registered");
        assert!(query.from < query.to);
        let every = StatsQuery::parse(
            &AssessmentStatsRequest {
                from: at(1_700_000_000),
                to: at(1_710_000_000),
                area: String::new(),
            },
            &programme,
        )
        .unwrap();
        assert_eq!(every.area, None, "every area the caller works in");
        assert_eq!(
            fields(StatsQuery::parse(&AssessmentStatsRequest::default(), &programme).unwrap_err()),
            ["from", "to"]
        );
        let backwards = AssessmentStatsRequest {
            from: at(1_710_000_000),
            to: at(1_700_000_000),
            area: "x".repeat(201),
        };
        assert_eq!(
            fields(StatsQuery::parse(&backwards, &programme).unwrap_err()),
            ["to", "area"]
        );
        let unregistered = AssessmentStatsRequest {
            from: at(1_700_000_000),
            to: at(1_710_000_000),
            area: "Darlington\u{200b}".into(),
        };
        assert_eq!(
            fields(StatsQuery::parse(&unregistered, &programme).unwrap_err()),
            ["area"]
        );
    }
}
