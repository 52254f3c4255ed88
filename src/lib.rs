pub mod domain;
pub mod partners;
pub mod store;
