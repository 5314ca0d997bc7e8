pub mod api;
pub mod mqtt;
pub mod codec;
pub mod integration;
