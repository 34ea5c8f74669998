//! End-to-end tests through real PostgreSQL, real RabbitMQ and real gRPC
//! over TCP. One binary, one module per concern.

mod access;
mod agency_feed;
mod bus;
mod contact_logging;
mod contact_outcomes;
mod database_outage;
mod dead_lettering;
mod email;
mod flow;
mod graceful_shutdown;
mod harness;
mod import;
mod journey;
mod limits;
mod mentor_follow_up;
mod mentor_matching;
mod mentor_record;
mod metrics;
mod no_configuration;
mod notifications;
mod private_broker;
mod processes;
mod python_client;
mod referral_intake;
mod restart;
mod risk_assessment;
mod simulation;
mod standing;
mod steady_flow;
mod supervision;
mod test_env;
mod tls;
mod warm_connections;
mod webhooks;
