//! The hub's database: the schema and each device's verification state ([`store`]), the
//! derived series of aggregate values ([`series`]), rejected traffic coalesced per source
//! ([`rejections`]) and the read side shared by the pages, the API and the exports
//! ([`query`]), monthly partitions and the retention rule ([`retention`]). SQLite or PostgreSQL behind one SQL layer ([`sql`]).

pub mod query;
pub mod rejections;
pub mod retention;
pub mod series;
pub mod sql;
pub mod store;
