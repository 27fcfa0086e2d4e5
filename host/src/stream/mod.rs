//! Kafka: the managed local broker, topic admin, and the consume -> stages ->
//! produce -> commit loop.

pub mod broker;
pub mod kafka;
