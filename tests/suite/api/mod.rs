//! API tests against a real shop, each on SQLite and on PostgreSQL.

mod bus;
mod cart;
mod catalog;
mod checkout;
mod concurrency;
mod door;
mod gateway;
mod imports;
mod input;
mod journeys;
mod orders;
mod pages;
mod paging;
mod search;
mod sessions;
