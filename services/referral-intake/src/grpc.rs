//! `cpm.v1.ReferralIntakeService`: agencies submit, read, list and withdraw
//! their own referrals. A referrer's token names its agency; another
//! agency's referral answers NOT_FOUND, exactly as a missing one does.
//! A coordinator's token names the areas they work in; a referral in
//! another area answers NOT_FOUND to them alike, and admins see every area.
//! A submission's area must be one of the programme's (`programme.areas`).
//! Handlers scope the caller, parse, call [`crate::commands`] (or
//! [`crate::privacy`]) and answer; who may call what is [`ACCESS`].

use chrono::{DateTime, Utc};
use cpm_proto::v1::referral_intake_service_server::ReferralIntakeService;
use cpm_proto::v1::{
    Agency, ClientIdentity, DecideLinkRequest, DecideLinkResponse, Demand, EraseClientRequest,
    EraseClientResponse, ExportClientDataRequest, ExportClientDataResponse,
    GetMentorClientRecordRequest, GetMentorClientRecordResponse, GetReferralRequest,
    GetReferralResponse, ListAgenciesRequest, ListAgenciesResponse, ListPossibleLinksRequest,
    ListPossibleLinksResponse, ListReferralsRequest, ListReferralsResponse, MentorClientRecord,
    OtherProfessional, Referral, ReferralDetails, ReferralLinkState, ReferralStatus, Referrer,
    RegisterAgencyRequest, RegisterAgencyResponse, RegisterReferrerRequest,
    RegisterReferrerResponse, SubmitReferralRequest, SubmitReferralResponse,
    WithdrawReferralRequest, WithdrawReferralResponse,
};
use cpm_runtime::auth::{Caller, Role};
use cpm_runtime::bus::ServiceHandle;
use cpm_runtime::config::ProgrammeConfig;
use cpm_runtime::crypto::KeyRing;
use cpm_runtime::db::warm::WarmPool;
use cpm_runtime::grpc::FieldViolations;
use cpm_runtime::grpc::access::{AccessTable, STAFF};
use cpm_runtime::grpc::page;
use cpm_runtime::grpc::values::{
    check_text, from_timestamp, optional_timestamp, parse_id, require_id, timestamp,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::commands::{self, IntakeError};
use crate::db::{AgencyRow, ReferralFilter, ReferralRow};
use crate::domain::{
    NewAgency, NewReferral, NewReferrer, PrivacyRequest, ReadScope, SealedDetails,
};
use crate::mentor_view::{self, MentorRecordRequest, MinimalRecord};
use crate::privacy::{self, ClientVault};

/// Referrers submit and follow their agency's referrals; staff read them
/// and decide their links, a coordinator in their own areas only; admins
/// keep the agency register and answer data-protection requests; mentors
/// read only the minimal record of their own clients.
pub static ACCESS: AccessTable = AccessTable::new(&[
    ("SubmitReferral", &[Role::Referrer]),
    (
        "GetReferral",
        &[Role::Referrer, Role::Coordinator, Role::Admin],
    ),
    ("ListReferrals", &[Role::Referrer]),
    ("WithdrawReferral", &[Role::Referrer]),
    ("RegisterAgency", &[Role::Admin]),
    ("ListAgencies", STAFF),
    ("RegisterReferrer", &[Role::Admin]),
    ("ListPossibleLinks", STAFF),
    ("DecideLink", STAFF),
    ("EraseClient", &[Role::Admin]),
    ("ExportClientData", &[Role::Admin]),
    ("GetMentorClientRecord", &[Role::Mentor]),
]);

pub struct ReferralIntake {
    /// The pool, and the relay woken after each write of events.
    handle: ServiceHandle,
    /// SubmitReferral's connections, kept between submissions.
    warm: WarmPool,
    vault: ClientVault,
    /// Development only: an unknown agency is registered on its first referral.
    auto_register_agencies: bool,
    /// The programme's areas: a submission's must be one of them.
    programme: ProgrammeConfig,
}

impl ReferralIntake {
    pub fn new(
        handle: ServiceHandle,
        keys: KeyRing,
        auto_register_agencies: bool,
        programme: ProgrammeConfig,
    ) -> Self {
        Self {
            warm: WarmPool::new(handle.pool().clone()),
            handle,
            vault: ClientVault::new(keys),
            auto_register_agencies,
            programme,
        }
    }

    /// Whose referrals `caller` reads: a referrer their agency's; staff
    /// those in their areas (admins every area).
    fn read_scope<'a>(&self, caller: &'a Caller) -> Result<ReadScope<'a>, Status> {
        match caller.role {
            Role::Referrer => Ok(ReadScope::Agency(caller.agency()?)),
            Role::Coordinator | Role::Admin => Ok(ReadScope::Staff(self.staff_areas(caller))),
            _ => Err(Status::permission_denied(format!(
                "role {} may not read referrals",
                caller.role
            ))),
        }
    }

    /// The areas staff act in (`None`: every area), for the staff-only calls.
    fn staff_areas(&self, caller: &Caller) -> Option<Vec<String>> {
        self.programme
            .staff_scope(caller)
            .as_filter()
            .map(<[String]>::to_vec)
    }
}

fn demand_of(row: &ReferralRow) -> Option<Demand> {
    let counts = [
        row.police_calls,
        row.ambulance_calls,
        row.nhs_111_calls,
        row.other_calls,
        row.safeguarding_reports,
    ];
    if counts.iter().all(Option::is_none) && row.police_staff_hours.is_none() {
        return None;
    }
    Some(Demand {
        police_calls: row.police_calls.unwrap_or_default(),
        ambulance_calls: row.ambulance_calls.unwrap_or_default(),
        nhs_111_calls: row.nhs_111_calls.unwrap_or_default(),
        other_calls: row.other_calls.unwrap_or_default(),
        police_staff_hours: row.police_staff_hours.unwrap_or_default(),
        safeguarding_reports: row.safeguarding_reports.unwrap_or_default(),
    })
}

/// The referral as its agency sees it; identity and details only when
/// `sealed` was opened (GetReferral, audited).
/// The referral as `viewer` may see it: `Some(agency)` for a referrer, who
/// sees a confirmed link only to their own agency's earlier referral (its
/// ID would date and place another agency's work) and no undecided one;
/// `None` for staff, who see every link and its state.
fn to_proto(row: &ReferralRow, sealed: Option<SealedDetails>, viewer: Option<&str>) -> Referral {
    let (client, details) = match sealed {
        Some(sealed) => (
            Some(ClientIdentity {
                given_name: sealed.given_name,
                family_name: sealed.family_name,
                date_of_birth: sealed.date_of_birth.to_string(),
                gender: row.client_gender,
                address: sealed.address,
                area: row.area.clone(),
                phone: sealed.phone,
                safe_contact_instructions: sealed.safe_contact_instructions,
            }),
            Some(ReferralDetails {
                referrer: Some(Referrer {
                    name: sealed.referrer_name,
                    role: sealed.referrer_role,
                    contact: sealed.referrer_contact,
                }),
                reason: sealed.reason,
                desired_outcomes: sealed.desired_outcomes,
                vulnerabilities: row.vulnerabilities.clone(),
                vulnerability_other: sealed.vulnerability_other,
                victim_of: row.victim_of.clone(),
                perpetrator_of: row.perpetrator_of.clone(),
                crime_other: sealed.crime_other,
                emergency_calls_last_12_months: row.emergency_calls_last_12_months,
                demand: demand_of(row),
                other_professionals: sealed
                    .other_professionals
                    .into_iter()
                    .map(|p| OtherProfessional {
                        role: p.role,
                        organisation: p.organisation,
                        contact: p.contact,
                    })
                    .collect(),
                referrer_will_co_visit: row.referrer_will_co_visit,
                known_risk_types: row.known_risk_types.clone(),
                known_risks: sealed.known_risks,
            }),
        ),
        None => (None, None),
    };
    let link = LinkView::of(row, viewer);
    Referral {
        referral_id: row.referral_id.to_string(),
        agency_id: row.agency_id.clone(),
        status: row.status,
        submitted_at: Some(timestamp(row.submitted_at)),
        status_changed_at: Some(timestamp(row.status_changed_at)),
        not_taken_on_stage: row.not_taken_on_stage.unwrap_or_default(),
        not_taken_on_reason: row.not_taken_on_reason.unwrap_or_default(),
        estimated_start: optional_timestamp(row.estimated_start),
        estimated_start_latest: optional_timestamp(row.estimated_start_latest),
        discharged_at: optional_timestamp(row.discharged_at),
        earlier_referral_id: link.confirmed.map(|id| id.to_string()).unwrap_or_default(),
        possible_earlier_referral_id: link.possible.map(|id| id.to_string()).unwrap_or_default(),
        link_state: link.state as i32,
        withdrawn_at_status: row.withdrawn_at_status.unwrap_or_default(),
        withdrawal_reason: String::new(),
        client,
        area: row.area.clone(),
        details,
        erased: row.erased_at.is_some(),
        discharge_feedback: row
            .discharge_feedback
            .as_deref()
            .and_then(|bytes| prost::Message::decode(bytes).ok()),
        feedback_received_at: optional_timestamp(row.feedback_received_at),
    }
}

/// What a viewer sees of a referral's link to an earlier one.
struct LinkView {
    confirmed: Option<Uuid>,
    possible: Option<Uuid>,
    state: ReferralLinkState,
}

impl LinkView {
    fn of(row: &ReferralRow, viewer: Option<&str>) -> Self {
        let state = ReferralLinkState::try_from(i32::from(row.link_state)).unwrap_or_default();
        let confirmed = (state == ReferralLinkState::Confirmed)
            .then_some(row.earlier_referral_id)
            .flatten();
        match viewer {
            None => Self {
                confirmed,
                possible: (state == ReferralLinkState::Possible)
                    .then_some(row.earlier_referral_id)
                    .flatten(),
                state,
            },
            Some(agency) => {
                let own = confirmed.filter(|_| row.earlier_agency_id.as_deref() == Some(agency));
                Self {
                    confirmed: own,
                    possible: None,
                    state: if own.is_some() {
                        ReferralLinkState::Confirmed
                    } else {
                        ReferralLinkState::Unspecified
                    },
                }
            }
        }
    }
}

fn to_mentor_record(record: MinimalRecord) -> MentorClientRecord {
    MentorClientRecord {
        referral_id: record.referral_id.to_string(),
        first_name: record.first_name,
        safe_contact_instructions: record.safe_contact_instructions,
        known_risk_types: record.known_risk_types,
        known_risks: record.known_risks,
        area: record.area,
        erased: record.erased,
    }
}

fn to_agency(row: AgencyRow) -> Agency {
    Agency {
        agency_id: row.agency_id,
        name: row.name,
        kind: row.kind,
        active: row.active,
        registered_at: Some(timestamp(row.registered_at)),
    }
}

/// A page token: where the last referral shown sorts (submission time, ID).
fn encode_page_token(row: &ReferralRow) -> String {
    page::time_and_id_token(row.submitted_at, row.referral_id)
}

/// Which of an agency's referrals a ListReferrals call asks for.
struct ReferralPage {
    size: i64,
    /// Where the last referral shown sorts: submission time, then ID.
    after: Option<(DateTime<Utc>, Uuid)>,
    filter: ReferralFilter,
}

impl ReferralPage {
    fn parse(request: &ListReferralsRequest) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let size = page::page_size(request.page_size, &mut violations);
        let after = page::time_and_id(&request.page_token, &mut violations);
        let status = match request.status {
            0 => None,
            value if ReferralStatus::try_from(value).is_ok() => Some(value),
            value => {
                violations.add("status", format!("{value} is not a known status"));
                None
            }
        };
        let mut instant = |field: &str, value: Option<&prost_types::Timestamp>| {
            let parsed = value.map(from_timestamp);
            if parsed == Some(None) {
                violations.add(field, "is not a valid timestamp");
            }
            parsed.flatten()
        };
        let filter = ReferralFilter {
            status,
            submitted_from: instant("submitted_from", request.submitted_from.as_ref()),
            submitted_to: instant("submitted_to", request.submitted_to.as_ref()),
        };
        if let (Some(from), Some(to)) = (filter.submitted_from, filter.submitted_to)
            && from >= to
        {
            violations.add("submitted_to", "must be after submitted_from");
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            size,
            after,
            filter,
        })
    }
}

#[tonic::async_trait]
impl ReferralIntakeService for ReferralIntake {
    #[tracing::instrument(skip_all, fields(referral_id))]
    async fn submit_referral(
        &self,
        request: Request<SubmitReferralRequest>,
    ) -> Result<Response<SubmitReferralResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let agency_id = caller.agency()?;
        let now = cpm_runtime::clock::now(&request);
        let mut request = request.into_inner();
        let referral = NewReferral::parse(&mut request, now, &self.programme)?;
        let submitted = commands::submit_referral(
            &self.handle,
            &self.warm,
            &self.vault,
            self.auto_register_agencies,
            &caller,
            agency_id,
            &referral,
        )
        .await?;
        Ok(Response::new(SubmitReferralResponse {
            referral: Some(to_proto(&submitted.row, None, Some(agency_id))),
            replayed: submitted.replayed,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn get_referral(
        &self,
        request: Request<GetReferralRequest>,
    ) -> Result<Response<GetReferralResponse>, Status> {
        let caller = Caller::of(&request)?;
        let scope = self.read_scope(caller)?;
        let referral_id = require_id("referral_id", &request.get_ref().referral_id)?;
        let (row, sealed, withdrawal_reason) =
            commands::get_referral(&self.handle, &self.vault, caller, &scope, referral_id).await?;
        Ok(Response::new(GetReferralResponse {
            referral: Some(Referral {
                withdrawal_reason,
                ..to_proto(&row, sealed, scope.agency())
            }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_referrals(
        &self,
        request: Request<ListReferralsRequest>,
    ) -> Result<Response<ListReferralsResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let page = ReferralPage::parse(request.get_ref())?;
        let mut rows = commands::list_referrals(
            &self.handle,
            agency_id,
            &page.filter,
            page.after,
            page.size + 1,
        )
        .await?;
        let next_page_token = page::finish_page(&mut rows, page.size, encode_page_token);
        Ok(Response::new(ListReferralsResponse {
            referrals: rows
                .iter()
                .map(|row| to_proto(row, None, Some(agency_id)))
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn withdraw_referral(
        &self,
        request: Request<WithdrawReferralRequest>,
    ) -> Result<Response<WithdrawReferralResponse>, Status> {
        let agency_id = Caller::of(&request)?.agency()?;
        let request = request.get_ref();
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        check_text(
            "reason",
            &request.reason,
            false,
            crate::domain::MAX_TEXT,
            &mut violations,
        );
        violations.into_result()?;
        let referral_id = referral_id.expect("no violation means an ID");
        let reason = request.reason.trim();
        let row =
            commands::withdraw_referral(&self.handle, &self.vault, agency_id, referral_id, reason)
                .await?;
        Ok(Response::new(WithdrawReferralResponse {
            referral: Some(to_proto(&row, None, Some(agency_id))),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_possible_links(
        &self,
        request: Request<ListPossibleLinksRequest>,
    ) -> Result<Response<ListPossibleLinksResponse>, Status> {
        let areas = self.staff_areas(Caller::of(&request)?);
        let mut violations = FieldViolations::new();
        let size = page::page_size(request.get_ref().page_size, &mut violations);
        let after = page::time_and_id(&request.get_ref().page_token, &mut violations);
        violations.into_result()?;
        let mut rows =
            commands::list_possible_links(&self.handle, areas.as_deref(), after, size + 1).await?;
        let next_page_token = page::finish_page(&mut rows, size, encode_page_token);
        Ok(Response::new(ListPossibleLinksResponse {
            referrals: rows.iter().map(|row| to_proto(row, None, None)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn decide_link(
        &self,
        request: Request<DecideLinkRequest>,
    ) -> Result<Response<DecideLinkResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.get_ref();
        let mut violations = FieldViolations::new();
        let referral_id = parse_id("referral_id", &request.referral_id, &mut violations);
        let earlier = parse_id(
            "earlier_referral_id",
            &request.earlier_referral_id,
            &mut violations,
        );
        violations.into_result()?;
        let (Some(referral_id), Some(earlier)) = (referral_id, earlier) else {
            unreachable!("no violation means both IDs");
        };
        let areas = self.staff_areas(caller);
        let row = commands::decide_link(
            &self.handle,
            caller,
            areas.as_deref(),
            referral_id,
            earlier,
            request.confirm,
        )
        .await?;
        Ok(Response::new(DecideLinkResponse {
            referral: Some(to_proto(&row, None, None)),
        }))
    }

    #[tracing::instrument(skip_all, fields(agency_id = %request.get_ref().agency_id))]
    async fn register_agency(
        &self,
        request: Request<RegisterAgencyRequest>,
    ) -> Result<Response<RegisterAgencyResponse>, Status> {
        let caller = Caller::of(&request)?;
        let agency = NewAgency::parse(request.get_ref())?;
        let row = commands::register_agency(&self.handle, caller, &agency).await?;
        Ok(Response::new(RegisterAgencyResponse {
            agency: Some(to_agency(row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_agencies(
        &self,
        request: Request<ListAgenciesRequest>,
    ) -> Result<Response<ListAgenciesResponse>, Status> {
        let request = request.get_ref();
        let mut violations = FieldViolations::new();
        let page_size = page::page_size(request.page_size, &mut violations);
        // Where the last agency shown sorts: its ID.
        let after =
            page::decode_cursor(&request.page_token, &mut violations, |parts| match parts {
                [agency_id] => Some(agency_id.to_string()),
                _ => None,
            });
        violations.into_result()?;
        let mut rows =
            commands::list_agencies(&self.handle, after.as_deref(), page_size + 1).await?;
        let next_page_token = page::finish_page(&mut rows, page_size, |row| {
            page::encode_token(&[&row.agency_id])
        });
        Ok(Response::new(ListAgenciesResponse {
            agencies: rows.into_iter().map(to_agency).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(agency_id = %request.get_ref().agency_id))]
    async fn register_referrer(
        &self,
        request: Request<RegisterReferrerRequest>,
    ) -> Result<Response<RegisterReferrerResponse>, Status> {
        let referrer = NewReferrer::parse(request.get_ref())?;
        let referrer_id = commands::register_referrer(&self.handle, &referrer).await?;
        Ok(Response::new(RegisterReferrerResponse {
            referrer_id: referrer_id.to_string(),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn erase_client(
        &self,
        request: Request<EraseClientRequest>,
    ) -> Result<Response<EraseClientResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let erasure = PrivacyRequest::parse(&body.referral_id, &body.reason)?;
        let erased = privacy::erase_client(&self.handle, caller, &erasure).await?;
        Ok(Response::new(EraseClientResponse {
            erased_referral_ids: erased.iter().map(Uuid::to_string).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn export_client_data(
        &self,
        request: Request<ExportClientDataRequest>,
    ) -> Result<Response<ExportClientDataResponse>, Status> {
        let caller = Caller::of(&request)?;
        let body = request.get_ref();
        let access = PrivacyRequest::parse(&body.referral_id, &body.reason)?;
        let document = privacy::export_client(&self.handle, &self.vault, caller, &access).await?;
        Ok(Response::new(ExportClientDataResponse {
            document_json: serde_json::to_string_pretty(&document)
                .map_err(|error| IntakeError::Internal(error.into()))?,
        }))
    }

    #[tracing::instrument(skip_all, fields(referral_id = %request.get_ref().referral_id))]
    async fn get_mentor_client_record(
        &self,
        request: Request<GetMentorClientRecordRequest>,
    ) -> Result<Response<GetMentorClientRecordResponse>, Status> {
        let caller = Caller::of(&request)?;
        let asked = MentorRecordRequest::parse(caller, request.get_ref())?;
        let record =
            mentor_view::get_mentor_client_record(&self.handle, &self.vault, caller, &asked)
                .await?;
        Ok(Response::new(GetMentorClientRecordResponse {
            record: Some(to_mentor_record(record)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ReferralRow {
        ReferralRow {
            referral_id: Uuid::now_v7(),
            agency_id: "a".into(),
            request_hash: vec![],
            submitted_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            area: "x".into(),
            client_gender: 1,
            vulnerabilities: vec![],
            earlier_referral_id: None,
            status: 1,
            status_changed_at: Utc::now(),
            not_taken_on_stage: None,
            not_taken_on_reason: None,
            estimated_start: None,
            estimated_start_latest: None,
            discharged_at: None,
            emergency_calls_last_12_months: 0,
            victim_of: vec![],
            perpetrator_of: vec![],
            known_risk_types: vec![],
            referrer_will_co_visit: false,
            police_calls: None,
            ambulance_calls: None,
            nhs_111_calls: None,
            other_calls: None,
            police_staff_hours: None,
            safeguarding_reports: None,
            erased_at: None,
            link_state: 0,
            earlier_agency_id: None,
            withdrawn_at_status: None,
            withdrawal_reason_sealed: None,
            discharge_feedback: None,
            feedback_received_at: None,
        }
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let row = row();
        let token = encode_page_token(&row);
        let mut violations = FieldViolations::new();
        assert_eq!(
            page::time_and_id(&token, &mut violations),
            Some((row.submitted_at, row.referral_id))
        );
        assert!(violations.is_empty());
        assert_eq!(page::time_and_id("garbage", &mut violations), None);
        assert_eq!(
            page::time_and_id(&page::encode_token(&["soon", "x"]), &mut violations),
            None
        );
        assert_eq!(violations.fields().count(), 2);
    }

    fn linked(state: ReferralLinkState, earlier_agency: &str) -> ReferralRow {
        ReferralRow {
            earlier_referral_id: Some(Uuid::now_v7()),
            link_state: state as i16,
            earlier_agency_id: Some(earlier_agency.into()),
            ..row()
        }
    }

    #[test]
    fn a_referrer_sees_only_a_confirmed_link_within_their_agency() {
        let own = linked(ReferralLinkState::Confirmed, "agency-a");
        let view = LinkView::of(&own, Some("agency-a"));
        assert_eq!(view.confirmed, own.earlier_referral_id);
        assert_eq!(view.state, ReferralLinkState::Confirmed);

        let other = linked(ReferralLinkState::Confirmed, "agency-b");
        let view = LinkView::of(&other, Some("agency-a"));
        assert_eq!((view.confirmed, view.possible), (None, None));
        assert_eq!(view.state, ReferralLinkState::Unspecified);

        let possible = linked(ReferralLinkState::Possible, "agency-a");
        let view = LinkView::of(&possible, Some("agency-a"));
        assert_eq!((view.confirmed, view.possible), (None, None));
    }

    #[test]
    fn only_an_undecided_link_to_the_named_earlier_referral_is_decided() {
        let possible = linked(ReferralLinkState::Possible, "agency-b");
        let earlier = possible.earlier_referral_id.unwrap();
        assert!(possible.has_possible_link_to(earlier));
        assert!(!possible.has_possible_link_to(possible.referral_id));
        for state in [ReferralLinkState::Confirmed, ReferralLinkState::Rejected] {
            let decided = ReferralRow {
                earlier_referral_id: Some(earlier),
                ..linked(state, "agency-b")
            };
            assert!(!decided.has_possible_link_to(earlier), "{state:?}");
        }
        assert!(!row().has_possible_link_to(earlier), "no link at all");
    }

    #[test]
    fn staff_see_every_link_and_only_a_confirmed_one_counts() {
        let possible = linked(ReferralLinkState::Possible, "agency-b");
        let view = LinkView::of(&possible, None);
        assert_eq!(view.confirmed, None);
        assert_eq!(view.possible, possible.earlier_referral_id);
        assert_eq!(view.state, ReferralLinkState::Possible);
        let rejected = linked(ReferralLinkState::Rejected, "agency-b");
        let view = LinkView::of(&rejected, None);
        assert_eq!((view.confirmed, view.possible), (None, None));
        assert_eq!(view.state, ReferralLinkState::Rejected);
        let confirmed = linked(ReferralLinkState::Confirmed, "agency-b");
        assert_eq!(
            LinkView::of(&confirmed, None).confirmed,
            confirmed.earlier_referral_id
        );
    }
}
