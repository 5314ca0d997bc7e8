pub mod api;
pub mod mqtt;
pub mod codec;
pub mod downlink_queue;
pub mod integration;
