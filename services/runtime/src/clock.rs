//! The time a request acts at: the real time, or, on a development platform
//! that enables `dev.simulated_clock`, the time its caller names in the
//! `cpm-simulated-time` metadata header (RFC 3339).
//!
//! The simulated clock exists so that `cpm simulate` can replay a programme
//! of several years in a minute: a referral submitted "in" its programme
//! year, a case file opened and discharged months apart, follow-up demand
//! recorded once its window has passed. It must never move a real record's
//! time, so it is refused twice over: the configuration rules refuse the
//! setting outside the development profile ([`crate::config::PlatformConfig::validate`]),
//! and a platform without it refuses every request that carries the header
//! (rather than ignoring it, so a replay against the wrong platform stops at
//! once instead of stamping everything today).
//!
//! The guard ([`crate::grpc::access::Guarded`]) reads the header once per
//! request and attaches a [`RequestTime`]; handlers ask [`now`] and pass the
//! time on to their domain code as a parameter. A simulated time may lie in
//! the past only: a replay backdates, it never runs ahead of the real clock.

use chrono::{DateTime, TimeDelta, Utc};
use tonic::Status;

use crate::config::{PlatformConfig, Profile};
use crate::grpc::FieldViolations;

/// The metadata header naming a request's simulated time.
pub const SIMULATED_TIME_HEADER: &str = "cpm-simulated-time";

/// How far ahead of the real clock a simulated time may be: the caller's
/// and the server's clocks differ a little.
const AHEAD_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// The simulated time the guard admitted for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTime(pub DateTime<Utc>);

/// Whether this platform accepts simulated time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimulatedClock {
    enabled: bool,
}

impl SimulatedClock {
    /// On only when the setting is on and the profile is development (the
    /// configuration rules refuse the setting elsewhere; this holds even if
    /// they were bypassed).
    pub fn from_config(platform: &PlatformConfig) -> Self {
        Self {
            enabled: platform.dev.simulated_clock && platform.profile == Profile::Development,
        }
    }

    /// A clock that refuses every simulated time.
    pub fn disabled() -> Self {
        Self { enabled: false }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The simulated time `headers` ask for, `None` without the header, or
    /// why it is refused, judged against the real time `real_now`.
    pub fn read(
        &self,
        headers: &http::HeaderMap,
        real_now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, Status> {
        let Some(value) = headers.get(SIMULATED_TIME_HEADER) else {
            return Ok(None);
        };
        if !self.enabled {
            return Err(Status::failed_precondition(format!(
                "this platform does not accept `{SIMULATED_TIME_HEADER}`: the simulated clock \
                 is a development setting (dev.simulated_clock) and is off"
            )));
        }
        let mut violations = FieldViolations::new();
        let parsed = value
            .to_str()
            .ok()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc));
        match parsed {
            None => violations.add(SIMULATED_TIME_HEADER, "must be an RFC 3339 time"),
            Some(time) if time > real_now + AHEAD_TOLERANCE => {
                violations.add(SIMULATED_TIME_HEADER, "must not be in the future")
            }
            Some(_) => {}
        }
        violations.into_result()?;
        Ok(parsed)
    }
}

/// The time `request` acts at: its admitted simulated time, else the real time.
pub fn now<T>(request: &tonic::Request<T>) -> DateTime<Utc> {
    request
        .extensions()
        .get::<RequestTime>()
        .map_or_else(Utc::now, |time| time.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(SIMULATED_TIME_HEADER, value.parse().unwrap());
        headers
    }

    fn real_now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn enabled() -> SimulatedClock {
        let mut platform = PlatformConfig::default();
        platform.dev.simulated_clock = true;
        SimulatedClock::from_config(&platform)
    }

    #[test]
    fn a_past_time_is_taken_when_the_clock_is_on() {
        let time = enabled()
            .read(&headers("2019-03-04T10:30:00+01:00"), real_now())
            .unwrap();
        assert_eq!(
            time.map(|t| t.to_rfc3339()).as_deref(),
            Some("2019-03-04T09:30:00+00:00")
        );
        assert_eq!(
            enabled().read(&http::HeaderMap::new(), real_now()).unwrap(),
            None
        );
    }

    #[test]
    fn the_header_is_refused_when_the_clock_is_off() {
        for clock in [
            SimulatedClock::disabled(),
            SimulatedClock::from_config(&PlatformConfig::default()),
        ] {
            let status = clock
                .read(&headers("2019-03-04T10:30:00Z"), real_now())
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            assert!(status.message().contains("dev.simulated_clock"));
        }
        assert_eq!(
            SimulatedClock::disabled()
                .read(&http::HeaderMap::new(), real_now())
                .unwrap(),
            None
        );
    }

    #[test]
    fn production_never_enables_the_clock_even_if_validation_was_bypassed() {
        let mut platform = PlatformConfig::default();
        platform.dev.simulated_clock = true;
        platform.profile = Profile::Production;
        assert!(!SimulatedClock::from_config(&platform).is_enabled());
    }

    #[test]
    fn a_malformed_or_future_time_is_a_field_violation() {
        for value in ["yesterday", "2019-03-04", "2026-05-01T12:06:00Z"] {
            let status = enabled().read(&headers(value), real_now()).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{value}");
        }
        assert!(
            enabled()
                .read(&headers("2026-05-01T12:04:00Z"), real_now())
                .is_ok()
        );
    }

    #[test]
    fn a_request_without_a_simulated_time_acts_now() {
        let mut request = tonic::Request::new(());
        let before = Utc::now();
        assert!(now(&request) >= before);
        request
            .extensions_mut()
            .insert(RequestTime(real_now() - TimeDelta::days(900)));
        assert_eq!(now(&request), real_now() - TimeDelta::days(900));
    }
}
