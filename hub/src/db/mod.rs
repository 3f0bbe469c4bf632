//! The hub's database: the schema and each device's verification state ([`store`]), the
//! derived series of aggregate values ([`series`]) and the read side shared by the pages, the
//! API and the exports ([`query`]). SQLite today, behind these three modules.

pub mod query;
pub mod series;
pub mod store;
