//! Any bytes as they might arrive from the broker: the envelope and every
//! event type decode or fail permanently (dead-lettered), never panic.
#![no_main]

use cpm_proto::v1::{
    AllocationConfirmed, AssessmentDecided, CaseDischarged, ClientErased, ContactLogged,
    EventEnvelope, ReferralLinked, ReferralStatusChanged, ReferralSubmitted, ReferralWithdrawn,
};
use cpm_runtime::bus::{HandlerError, ReceivedEvent};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fn decodes<E: cpm_proto::Event + Default>(event: &ReceivedEvent) {
    match event.decode::<E>() {
        Ok(_) => assert_eq!(event.event_type(), E::TYPE),
        Err(HandlerError::Permanent(_)) => {}
        Err(other) => panic!("a decoding failure must be permanent: {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = EventEnvelope::decode(data) else {
        return;
    };
    let event = ReceivedEvent {
        envelope,
        event_id: uuid_nil(),
        delivery_count: 0,
    };
    decodes::<ReferralSubmitted>(&event);
    decodes::<ReferralWithdrawn>(&event);
    decodes::<ReferralLinked>(&event);
    decodes::<ReferralStatusChanged>(&event);
    decodes::<AssessmentDecided>(&event);
    decodes::<AllocationConfirmed>(&event);
    decodes::<ContactLogged>(&event);
    decodes::<CaseDischarged>(&event);
    decodes::<ClientErased>(&event);
});

fn uuid_nil() -> uuid::Uuid {
    uuid::Uuid::nil()
}
