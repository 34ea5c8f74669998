//! End-to-end tests through real PostgreSQL, real RabbitMQ and real gRPC
//! over TCP. One binary, one module per concern.

mod bus;
mod harness;
mod journey;
mod private_broker;
mod referral_intake;
mod restart;
