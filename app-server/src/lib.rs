pub mod api;
pub mod codec;
pub mod downlink_queue;
pub mod integration;
pub mod live;
pub mod measurements;
pub mod mqtt;
